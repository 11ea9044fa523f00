"""Best/target tracking of a monitored metric, and the cost of the run up to that point.

"To convergence" means: the run's totals at the end of the *earliest* epoch that reached the best value of the
monitored metric so far (ties keep the earlier epoch: a later equal value did not improve anything). "To target"
means: the totals at the end of the first epoch whose value reached ``target`` (``<=`` in min mode, ``>=`` in max
mode). Both are updated every epoch, so they are also the numbers of an interrupted run.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from green_callbacks.core.wording import CALLBACK, FrontEnd

__all__ = [
    "VALIDATION_LOSS_NAMES",
    "ConvergencePoint",
    "ConvergenceTracker",
    "MonitorWatch",
    "Totals",
    "closest_name",
    "default_monitor",
    "infer_mode",
]

Mode = Literal["min", "max"]

# Like Keras' MonitorCallback: names that mean "higher is better".
_MAX_HINTS = ("acc", "auc", "precision", "recall", "f1", "fmeasure", "bleu", "rouge", "map", "iou", "dice",
              "r2", "score", "top_k", "top1", "top5", "mcc", "matthews", "spearman", "pearson", "exact_match")
_MIN_HINTS = ("loss", "error", "err", "mse", "mae", "rmse", "mape", "perplexity", "ppl", "wer", "cer",
              "energy", "emissions", "flops", "time")


VALIDATION_LOSS_NAMES: tuple[str, ...] = (
    "val_loss", "eval_loss", "val/loss", "eval/loss", "validation_loss", "valid_loss", "validation/loss",
)
"""The names frameworks and common scripts give the validation loss (Lightning and Keras ``val_loss``, the HF
Trainer ``eval_loss``): the metric convergence follows when neither the user nor the framework names one."""


def default_monitor(names: Iterable[str]) -> str | None:
    """The validation loss among an epoch's metric ``names`` (the first of :data:`VALIDATION_LOSS_NAMES` present)."""
    present = set(names)
    return next((n for n in VALIDATION_LOSS_NAMES if n in present), None)


def closest_name(name: str, names: Iterable[str]) -> str | None:
    """The metric name most like ``name`` (a typo, ``val_accuracy`` for ``val_acc``), or ``None`` if none is close."""
    found = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return found[0] if found else None


def infer_mode(monitor: str, front_end: FrontEnd = CALLBACK) -> Mode:
    """``"min"`` or ``"max"`` from the metric's name, like Keras does; a clear error when the name says neither
    (in ``front_end``'s words: ``mode='min'`` to ``GreenCallback(...)`` or to ``Tracker(...)``)."""
    name = monitor.lower().rsplit("/", 1)[-1]
    if any(hint in name for hint in _MIN_HINTS):
        return "min"
    if any(hint in name for hint in _MAX_HINTS):
        return "max"
    where = "" if front_end.flags else f" to {front_end.name}(...)"
    raise ValueError(
        f"cannot tell whether {monitor!r} should be minimised or maximised from its name; pass "
        f"{front_end.setting('mode', 'min')} or {front_end.setting('mode', 'max')}{where}."
    )


@dataclass(frozen=True)
class Totals:
    """Cumulative numbers of the run at the end of an epoch (energy before PUE, emissions after).

    ``None`` means a part of the sum was not measured (FLOPs not counted in some epoch, all energy unavailable):
    a total is never silently a partial one reported as complete.
    """

    epochs: int | None = 0
    time_s: float | None = 0.0
    """``None`` only in a record read back that lacks them (the engine always knows both)."""
    train_flops: float | None = 0.0
    eval_flops: float | None = 0.0
    energy_j: float | None = 0.0
    emissions_gco2e: float | None = 0.0
    energy_low_j: float | None = None
    energy_high_j: float | None = None
    emissions_low_gco2e: float | None = None
    emissions_high_gco2e: float | None = None
    """The range the true totals lie in (95 %, docs/uncertainty.md); ``None``: no basis for an interval."""


@dataclass(frozen=True)
class ConvergencePoint:
    """Where the monitored metric reached its best (or the target): the epoch and the run's totals then."""

    epoch: int
    value: float
    totals: Totals

    def to_record(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "value": self.value, **vars(self.totals)}

    @staticmethod
    def from_record(data: dict[str, Any]) -> ConvergencePoint:
        fields = {k: data[k] for k in Totals.__dataclass_fields__ if k in data}
        return ConvergencePoint(int(data["epoch"]), float(data["value"]), Totals(**fields))


class ConvergenceTracker:
    """Follows one metric over epochs; :attr:`best` and :attr:`at_target` hold the convergence points."""

    def __init__(
        self, monitor: str, mode: str | None = None, target: float | None = None, *, front_end: FrontEnd = CALLBACK
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
        if mode is None:
            mode = infer_mode(monitor, front_end)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if target is not None and (isinstance(target, bool) or not math.isfinite(float(target))):
            raise ValueError(f"target must be a finite number or None, got {target!r}")
        self.monitor = monitor
        self.mode: Mode = mode  # type: ignore[assignment]
        self.target = None if target is None else float(target)
        self.best: ConvergencePoint | None = None
        self.at_target: ConvergencePoint | None = None

    def _better(self, value: float, than: float) -> bool:
        return value < than if self.mode == "min" else value > than

    def _reaches_target(self, value: float) -> bool:
        assert self.target is not None
        return value <= self.target if self.mode == "min" else value >= self.target

    def update(self, epoch: int, value: float | None, totals: Totals) -> None:
        """Take the monitored value of ``epoch`` (``None``/NaN when it was not logged that epoch)."""
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self.best is None or self._better(value, self.best.value):
            self.best = ConvergencePoint(epoch, value, totals)
        if self.target is not None and self.at_target is None and self._reaches_target(value):
            self.at_target = ConvergencePoint(epoch, value, totals)

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "target": self.target,
            "best": None if self.best is None else self.best.to_record(),
            "at_target": None if self.at_target is None else self.at_target.to_record(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, at_target = state.get("best"), state.get("at_target")
        self.best = None if best is None else ConvergencePoint.from_record(best)
        self.at_target = None if at_target is None else ConvergencePoint.from_record(at_target)


class MonitorWatch:
    """Which metric convergence follows, and the one message a user needs about it.

    Called at every epoch's end with the names of the user's metrics of that epoch:

    * nothing names a metric (no ``monitor=``, no early-stopping or best-model metric): the validation loss is
      adopted the first epoch it appears (:func:`default_monitor`), and said once, with how to choose another;
      while it has not appeared, one message says there is no validation metric (the ``*_to_convergence`` keys
      stay NaN, honestly);
    * a named metric that is not among the first epoch's metrics (``"val_losss"``, or ``"val_accuracy"`` while the
      model logs ``val_acc``): one warning naming it, the metrics that were logged and the closest match.
    """

    def __init__(self, front_end: FrontEnd = CALLBACK) -> None:
        self._first_epoch_seen = False
        self._said_no_validation = False
        self._say = front_end
        """How the messages tell the user to name the metric; a front end without ``monitor`` (``measure``, which
        has no metrics) hears nothing about it."""

    def observe(
        self, tracker: ConvergenceTracker | None, names: Iterable[str], epoch: int
    ) -> tuple[ConvergenceTracker | None, str | None]:
        """The tracker to use from this epoch on (a new one when the validation loss is adopted now), and the
        message to give the user now, if any (the driver says it, on global rank zero)."""
        names = sorted(names)
        first, self._first_epoch_seen = not self._first_epoch_seen, True
        speak = self._say.has("monitor")
        monitor_option = self._say.passing(self._say.setting("monitor", "...", literal=True))
        mode_option = self._say.passing(self._say.setting("monitor", "...", literal=True),
                                        self._say.setting("mode", "...", literal=True))
        if tracker is not None:
            if first and tracker.monitor not in names and speak:
                close = closest_name(tracker.monitor, names)
                hint = f"; did you mean {close!r}?" if close else ""
                return tracker, (
                    f"green_callbacks: the monitored metric {tracker.monitor!r} was not logged in epoch {epoch} "
                    f"(logged: {', '.join(map(repr, names)) or 'none'}){hint} The green/*_to_convergence keys stay "
                    f"NaN until it appears; check {monitor_option} or the framework's monitor."
                )
            return tracker, None
        chosen = default_monitor(names)
        if chosen is not None:
            return ConvergenceTracker(chosen, "min", None), None if not speak else (
                f"green_callbacks: convergence (green/*_to_convergence) follows {chosen!r} (min), the validation "
                f"loss, because no metric was named; pass {mode_option} to follow another metric."
            )
        if not self._said_no_validation and speak:
            self._said_no_validation = True
            return None, (
                f"green_callbacks: no validation metric was logged in epoch {epoch} (logged: "
                f"{', '.join(map(repr, names)) or 'none'}), so green/*_to_convergence stay NaN; validate during the "
                f"fit (a validation loss such as {VALIDATION_LOSS_NAMES[0]!r} or {VALIDATION_LOSS_NAMES[1]!r} is "
                f"followed by default) or pass {monitor_option} to name the metric that defines convergence."
            )
        return None, None

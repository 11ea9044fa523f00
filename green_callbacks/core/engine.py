"""What every adapter drives: one :class:`Engine` per ``GreenCallback``, one :class:`Session` per ``fit``.

The engine holds what the three adapters would otherwise each carry: the guard with fixed part names (so one fault
degrades the same way in every framework), the status of an exception (``interrupted`` or ``failed``), the reset
of a session a previous ``fit`` left open, the filter of the framework's metrics, and the one FLOP wrapper
(:class:`FlopTap`). An adapter maps its hooks to these calls and logs what ``epoch_end`` returns; it computes
nothing. Guard parts: ``start``, ``epoch``, ``eval``, ``flops``, ``throughput``, ``finish``, ``checkpoint``,
``logging``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.metric_keys import nan_metrics
from green_callbacks.core.phase_session import PhaseTap
from green_callbacks.core.session import Session, status_for

__all__ = ["PARTS", "Engine", "FlopTap", "batch_signature"]

T = TypeVar("T")
PARTS = ("start", "epoch", "eval", "flops", "throughput", "finish", "checkpoint", "logging")
"""The guard's part names, identical in every adapter (the record's ``lost`` names them)."""

Count = Callable[[str, Any, Any, tuple[Any, ...]], "float | None"]
"""``count(kind, module, batch, index)``: FLOPs of one step of ``kind`` (``"train"``/``"eval"``); ``None`` when
this run's steps cannot be counted (e.g. Lightning's manual optimization): counting is then off, without error."""


def batch_signature(obj: Any) -> Any:
    """A cheap hashable description of a batch: shapes and dtypes of its arrays, its containers' structure,
    small config-like values (ints, bools, strings) by value, anything else by type. No device synchronisation."""
    shape = getattr(obj, "shape", None)
    if shape is not None and not isinstance(obj, type):  # torch.Size and NumPy shapes are tuples: hashable as is
        return (shape, getattr(obj, "dtype", None), getattr(obj, "requires_grad", False))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, *(batch_signature(v) for v in obj))
    if isinstance(obj, Mapping):
        return (type(obj).__name__, *((k, batch_signature(v)) for k, v in obj.items()))
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return type(obj).__name__


class FlopTap:
    """The one FLOP wrapper of all three adapters: ``engine.flops.step(kind, module, batch, *index)`` per batch.

    Each batch signature is counted once per epoch by the adapter's counting function (set with :meth:`use`;
    the FLOP engine behind it keeps its own cache across epochs, keyed also by the model's structure); every other
    step of the epoch is a dictionary look-up. The memo is cleared at each epoch start, so a model changed between
    epochs (layers frozen, say) is counted afresh. A failure switches the ``flops`` part off (FLOPs: NaN).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._count: Count | None = None
        self._memo: dict[Any, float] = {}
        self._busy = False
        self.active = False

    def use(self, count: Count | None) -> None:
        """The adapter's counting function (``None``: FLOPs are not counted)."""
        self._count = count

    def new_epoch(self) -> None:
        self._memo.clear()
        self.active = self._count is not None and self._engine.session.flops_available

    def stop(self) -> None:
        self.active = False

    @property
    def counting(self) -> bool:
        """A count is running the model (on a meta copy): its forwards are not training steps."""
        return self._busy

    def step(self, kind: str, module: Any, batch: Any, *index: Any) -> None:
        """FLOPs of one step of ``kind`` on ``batch``, added to the epoch (``index``: the step's extra positional
        arguments, of which all but the first, the batch index, distinguish steps)."""
        if not self.active or self._busy:
            return
        key = (kind, id(module), index[1:], batch_signature(batch))
        try:
            flops = self._memo.get(key)
        except TypeError:  # a leaf whose shape or dtype is not hashable (symbolic shapes): describe it as text
            key = (kind, id(module), repr(index[1:]), repr(key[3]))
            flops = self._memo.get(key)
        if flops is None:
            flops = self._count_new(kind, module, batch, index)
            if flops is None:
                return
            self._memo[key] = flops
        self._engine.session.add_step_flops(kind, flops)

    def add(self, train: float = 0.0, eval: float = 0.0) -> None:
        """FLOPs counted by the adapter itself (Keras counts its noted batch signatures at the epoch's end)."""
        if self._engine.running:
            self._engine.session.add_flops(train=train, eval=eval)

    def _count_new(self, kind: str, module: Any, batch: Any, index: tuple[Any, ...]) -> float | None:
        assert self._count is not None
        self._busy = True  # the count runs the model: a forward hook must not count inside it
        try:
            result = self._engine.guard("flops", self._count, kind, module, batch, index)
        finally:
            self._busy = False
        if result is None:
            self.active = False
            return None
        return float(result)


class Engine:
    """The framework-neutral part of ``GreenCallback``; see the module docstring.

    Args:
        config: the validated settings.
        framework: ``"lightning"``, ``"keras"``, ``"transformers"`` (the record's ``framework``).
        sensors: sensors to use instead of the machine's (advanced; tests).
    """

    def __init__(self, config: GreenConfig, *, framework: str, sensors: Sequence[Any] | None = None) -> None:
        self.config = config
        self.framework = framework
        self._sensors = None if sensors is None else list(sensors)
        self.session = self._new_session()
        self.flops = FlopTap(self)
        self.phases = PhaseTap(config, framework=framework, sensors=self._sensors, training=lambda: self.session)
        """test / validate / predict / evaluate outside ``fit`` (see :mod:`green_callbacks.core.phase_session`)."""

    def _new_session(self, dist: DistInfo | None = None) -> Session:
        return Session(self.config, framework=self.framework, sensors=self._sensors, dist=dist)

    # ------------------------------------------------------------------ state, read-only
    @property
    def running(self) -> bool:
        return self.session.running

    @property
    def in_epoch(self) -> bool:
        return self.session.in_epoch

    @property
    def in_eval(self) -> bool:
        return self.session.in_eval

    @property
    def should_stop(self) -> bool:
        return self.session.should_stop

    @property
    def record_path(self) -> Path | None:
        return self.session.record_path

    @property
    def last_metrics(self) -> dict[str, float]:
        return self.session.last_metrics

    @staticmethod
    def status_for(error: BaseException | str | None) -> str:
        return status_for(error)

    def guard(self, part: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``fn(*args, **kwargs)``, or ``None`` when ``part`` failed now or before (warned once, then off)."""
        return self.session.guard.call(part, fn, *args, **kwargs)

    # ------------------------------------------------------------------ lifecycle
    def begin_fit(self, dist: DistInfo | None = None) -> None:
        """A new ``fit``: a session a previous fit left running is closed ``failed`` (it ended where no hook saw
        it), and a used one replaced by a fresh one; ``dist`` when the framework knows the ranks."""
        if self.session.running:
            self.session.finish("failed", "a new fit() began before the previous one ended")
        if self.session.status != "created" or dist is not None:
            self.session = self._new_session(dist)
        self.flops.stop()

    def restart(self) -> None:
        """Drop the session (not started yet) for a fresh one, e.g. after unreadable saved totals."""
        self.session = self._new_session()

    def start(self, **kwargs: Any) -> None:
        """:meth:`Session.start` under the ``start`` guard."""
        self.guard("start", self.session.start, **kwargs)

    def set_planned_epochs(self, epochs: float | None, *, first_epoch: int = 0) -> None:
        """The run's planned epochs; ``first_epoch``: a fit that starts later (Keras' ``initial_epoch``) runs
        ``epochs - first_epoch`` of them. Only before the first completed epoch when ``first_epoch`` is given."""
        if first_epoch and self.session.epochs_done:
            return
        self.session.set_planned_epochs(None if epochs is None else epochs - first_epoch)

    def epoch_start(self, epoch: int | None = None) -> None:
        if self.session.running:
            self.guard("epoch", self.session.epoch_start, epoch)
            self.flops.new_epoch()

    def add_batch(self, batch: Any) -> None:
        """A training step ran on ``batch``: its samples and tokens (read from shapes) go to the epoch's throughput."""
        if self.session.in_epoch and not self.flops.counting:
            self.guard("throughput", self.session.add_batch, batch)

    def add_samples(self, samples: int | None = None, tokens: int | None = None) -> None:
        """Samples and tokens of training steps the adapter counted itself."""
        if self.session.in_epoch:
            self.guard("throughput", self.session.add_samples, samples=samples, tokens=tokens)

    def eval_start(self) -> None:
        if self.session.in_epoch:
            self.guard("eval", self.session.eval_start)

    def eval_end(self) -> None:
        if self.session.in_epoch:
            self.guard("eval", self.session.eval_end)

    def epoch_end(self, metrics: Mapping[str, Any] | None = None) -> dict[str, float] | None:
        """Close the open epoch; its ``green/...`` metrics (every key: NaN where lost), or ``None`` when no epoch is
        open (nothing to log)."""
        if not self.session.in_epoch:
            return None
        self.flops.stop()
        found = self.guard("epoch", self.session.epoch_end, metrics)
        return nan_metrics() if found is None else found

    def finish(
        self, status: str = "completed", error: BaseException | str | None = None, *, stop_reason: str | None = None
    ) -> None:
        """Close the run (no-op unless running) with ``status``; its record is written in full now."""
        self.flops.stop()
        if self.session.running:
            self.guard("finish", self.session.finish, status, error, stop_reason=stop_reason)

    def fail(self, error: BaseException) -> None:
        """The fit raised ``error``: close the run ``interrupted`` or ``failed`` accordingly."""
        self.finish(status_for(error), error)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return self.guard("checkpoint", self.session.state_dict) or {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self.guard("checkpoint", self.session.load_state_dict, state)

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
from green_callbacks.core.fingerprint import data_signature, model_fingerprint
from green_callbacks.core.metric_keys import nan_metrics
from green_callbacks.core.phase_session import PhaseTap
from green_callbacks.core.record_sections import FlopInfo
from green_callbacks.core.saved_state import read_state_beside, write_state_beside
from green_callbacks.core.session import Session, status_for
from green_callbacks.core.throughput import batch_counts
from green_callbacks.core.wording import CALLBACK, FrontEnd, warn_user

__all__ = ["PARTS", "Engine", "FlopTap"]

T = TypeVar("T")
_MAX_SIGNATURES = 4096
"""Batch signatures whose samples and tokens are kept (then forgotten and read again)."""
PARTS = ("start", "epoch", "eval", "flops", "throughput", "finish", "checkpoint", "logging")
"""The guard's part names, identical in every adapter (the record's ``lost`` names them)."""

class FlopTap:
    """The one FLOP wrapper of all three adapters, around the core :class:`~green_callbacks.core.flops.FlopTracker`.

    Per batch: ``begin(kind, module, batch)`` before the framework runs the step and ``end()`` after its backward
    (training) or forward (evaluation); ``discard()`` for a step that was skipped. The first step of each new batch
    signature is watched by the FLOP counter while it runs (nothing is re-run: the training computes what it would
    without the callback); later ones are cache hits or exact predictions (docs/flops.md). ``replay``: for a
    compiled model, ``forward(model, batch)`` to count new signatures on a meta copy of the uncompiled model.

    The epoch's sums go to the session when the epoch ends (and when the run finishes in the middle of one), with
    the tracker's :meth:`~green_callbacks.core.flops.FlopTracker.describe` (a ``FlopInfo``) in the record as
    ``flops``. A failure switches the ``flops`` part off (FLOPs: NaN).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.tracker: Any = None
        self.active = False
        self.record_info: FlopInfo | None = None  # what the adapter adds to the record's "flops" (Keras: its backend)
        self._batch_counts: dict[Any, tuple[int | None, int | None]] = {}  # signature -> (samples, tokens)
        self._last_key: Any = None  # the last step's signature and its counts: found by identity, not hashed
        self._last_counts: tuple[int | None, int | None] = (None, None)
        self._before: tuple[int | None, int | None] | None = None  # throughput counts before the open step
        self._batches: Any = None  # the session's BatchCounter while an epoch is open

    def use(self, tracker: Any) -> None:
        """The run's tracker (a :class:`~green_callbacks.core.flops.FlopTracker`; ``None``: FLOPs not counted)."""
        if self.tracker is not None:
            self.tracker.discard()
        self.tracker = tracker
        if tracker is not None:  # flops="every-step": every step of a signature is watched (docs/flops.md)
            tracker.every_step = self._engine.config.flops == "every-step"
        self.active = tracker is not None and self._engine.session.in_epoch and self._engine.session.flops_available

    def new_epoch(self, model: Any = None) -> None:
        session = self._engine.session
        # where begin(counted=...) adds the samples and tokens of training steps (None: outside an epoch, or lost)
        self._batches = session.batches if session.in_epoch and session.guard.enabled("throughput") else None
        self.active = self.tracker is not None and self._engine.session.flops_available
        if self.active:
            self.tracker.discard()
            self.tracker.reset_epoch()  # steps seen outside an epoch are not this epoch's
            if model is not None:
                self._engine.guard("flops", self.tracker.refresh, model)
                self.active = self._engine.session.flops_available

    @property
    def in_step(self) -> bool:
        return self.tracker is not None and self.tracker.in_step

    @property
    def counting(self) -> bool:
        """A count is running the model on a meta copy (a compiled model's new signature): its forwards are not
        training steps."""
        return self.tracker is not None and self.tracker.replaying

    # begin() and end() run on every step: the guard is inlined (Guard.absorb) rather than called through
    def begin(self, kind: str, module: Any, batch: Any, replay: Any = None, counted: Any = None) -> bool:
        """A step of ``kind`` (``"train"``/``"eval"``) on ``batch`` is about to run. True when it is watched (a new
        signature, counted while it runs): only such a step needs :meth:`backward_done`, so an adapter attaches
        its before-optimizer hook for that step alone (:meth:`GreenCallbackBase._watch_backward`).

        ``counted``: the part of the batch whose samples and tokens the epoch's throughput counts (training steps;
        ``None``: not counted). It is read once per batch signature, not on every step; :meth:`discard` takes the
        open step's samples back with its FLOPs.
        """
        key = None
        tracker = self.tracker
        if self.active:  # (a step already open: the tracker's begin returns None)
            try:
                key = tracker.begin(kind, module, batch, replay)
            except Exception as err:
                self.active = False
                self._engine.session.guard.absorb("flops", err)
        if counted is not None and self._batches is not None and not self.counting:
            if self._engine._model_info is not None:
                self._engine.note_batch(counted)
            self._count(counted, key)
        return key is not None and tracker.watching

    def begin_forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], replay: Any = None) -> bool:
        """A torch module's forward begins a step (a forward pre-hook, where the framework has no per-step event):
        a training step when the module is in training mode with gradients on (its samples counted), else an
        evaluation step. True for a watched training step (see :meth:`begin`)."""
        import torch

        kind = "train" if module.training and torch.is_grad_enabled() else "eval"
        counted = (kwargs or args) if kind == "train" else None
        return self.begin(kind, module, (args, kwargs), replay, counted) and kind == "train"

    def forward_done(self, module: Any) -> None:
        """The forward of :meth:`begin_forward` returned: an evaluation step is whole (a training step ends after
        its backward)."""
        if not module.training:
            self.end()

    def _count(self, batch: Any, key: Any) -> None:
        batches = self._batches
        try:
            if key is not None and key is self._last_key:  # the previous step's signature (the same key object)
                counts = self._last_counts
            else:
                counts = self._batch_counts.get(key) if key is not None else None
                if counts is None:
                    counts = batch_counts(batch)
                    if key is not None:
                        if len(self._batch_counts) >= _MAX_SIGNATURES:
                            self._batch_counts.clear()
                        self._batch_counts[key] = counts
                if key is not None:
                    self._last_key, self._last_counts = key, counts
            if self._before is None:  # the open step's first count: what discard() restores
                self._before = (batches.samples, batches.tokens)
            batches.add(*counts)
        except Exception as err:
            self._batches = None
            self._engine.session.guard.absorb("throughput", err)

    def end(self) -> None:
        """The step opened by :meth:`begin` has run its backward (training) or forward (evaluation)."""
        self._before = None
        tracker = self.tracker
        if tracker is not None:  # (nothing open: the tracker's end returns at once)
            try:
                tracker.end()
            except Exception as err:
                self.active = False
                self._engine.session.guard.absorb("flops", err)

    def backward_done(self) -> None:
        """The open training step's backward ran: a FLOP counter watching it (a new signature) stops before the
        optimizer steps; the step still ends with :meth:`end` (counted) or :meth:`discard` (skipped)."""
        tracker = self.tracker
        if tracker is not None:
            try:
                tracker.pause()
            except Exception as err:
                self.active = False
                self._engine.session.guard.absorb("flops", err)

    def before_optimizer(self, apply: Callable[..., Any]) -> Callable[..., Any]:
        """``apply`` (an optimizer's update, called inside the framework's step: Keras' ``optimizer.apply``) that
        first stops a counter watching the step, so the optimizer's own work (Muon's matmuls) is never in the
        model FLOPs; for a step not watched it costs one call."""

        def call(*args: Any, **kwargs: Any) -> Any:
            self.backward_done()
            return apply(*args, **kwargs)

        return call

    def discard(self) -> None:
        """The open step was skipped or raised: nothing is added (what :meth:`begin` added is taken back)."""
        before, self._before = self._before, None
        if before is not None and self._batches is not None:
            self._batches.samples, self._batches.tokens = before
        if self.tracker is not None:
            self.tracker.discard()

    def stop(self) -> None:
        """The epoch (or the run) ends: its FLOPs go to the session; counting is off until the next epoch."""
        self.discard()
        self._batches = None
        if self.active and self._engine.session.in_epoch and self._engine.session.flops_available:
            epoch = self.tracker.take_epoch()
            self._engine.session.add_flops(train=epoch.train_flops, eval=epoch.eval_flops,
                                           train_hardware=epoch.train_hardware_flops)
            self._engine.session.update_info("flops", self.tracker.describe().beside(self.record_info))
        self.active = False

    def describe(self, info: FlopInfo) -> None:
        """What the adapter adds to the record's ``flops`` (Keras: its backend, method and figures per signature),
        given anew when it changes: the record holds it until the tracker's description joins it at an epoch's
        end."""
        session = self._engine.session
        if self.record_info is not None and session.info.get("flops") is self.record_info:
            session.update_info("flops", info)  # (not yet joined by the tracker's: the adapter's alone)
        self.record_info = info

    def add(self, train: float = 0.0, eval: float = 0.0) -> None:
        """FLOPs counted by the adapter itself (Keras on JAX/TensorFlow counts its noted batch signatures at the
        epoch's end)."""
        if self._engine.running:
            self._engine.session.add_flops(train=train, eval=eval)


class Engine:
    """The framework-neutral part of ``GreenCallback``; see the module docstring.

    Args:
        config: the validated settings.
        framework: ``"lightning"``, ``"keras"``, ``"transformers"`` (the record's ``framework``).
        sensors: sensors to use instead of the machine's (advanced; tests).
        front_end: how messages tell the user to set an option (:mod:`green_callbacks.core.wording`).
    """

    def __init__(
        self, config: GreenConfig, *, framework: str, sensors: Sequence[Any] | None = None,
        front_end: FrontEnd = CALLBACK,
    ) -> None:
        self.config = config
        self.framework = framework
        self.front_end = front_end
        self._sensors = None if sensors is None else list(sensors)
        self.session = self._new_session()
        self._model_info: dict[str, Any] | None = None  # the record's model section while its data signature is due
        self.flops = FlopTap(self)
        self.phases = PhaseTap(config, framework=framework, sensors=self._sensors, training=lambda: self.session)
        """test / validate / predict / evaluate outside ``fit`` (see :mod:`green_callbacks.core.phase_session`)."""

    def _new_session(self, dist: DistInfo | None = None) -> Session:
        previous = getattr(self, "session", None)  # one not started yet hands on its intensity (and its request)
        carbon = previous.carbon_choice if previous is not None and previous.status == "created" else None
        return Session(self.config, framework=self.framework, sensors=self._sensors, dist=dist,
                       front_end=self.front_end, carbon=carbon)

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

    @property
    def status(self) -> str:
        return self.session.status

    @property
    def epochs_done(self) -> int:
        return self.session.epochs_done

    @property
    def flops_available(self) -> bool:
        """FLOPs are counted in this run (not switched off by a failure or a known limitation)."""
        return self.session.flops_available

    @property
    def is_global_zero(self) -> bool:
        return self.session.dist.is_global_zero

    @staticmethod
    def status_for(error: BaseException | str | None) -> str:
        return status_for(error)

    def guard(self, part: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``fn(*args, **kwargs)``, or ``None`` when ``part`` failed now or before (warned once, then off)."""
        return self.session.guard.call(part, fn, *args, **kwargs)

    def unavailable(self, part: str, reason: str) -> None:
        """Switch ``part`` off for a known limitation (said once, as it is, and kept in the record's ``lost``)."""
        self.session.guard.unavailable(part, reason)

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

    def start(self, *, model: Any = None, **kwargs: Any) -> None:
        """:meth:`Session.start` under the ``start`` guard; ``model``: the model trained, whose fingerprint
        (architecture and parameter count, :mod:`~green_callbacks.core.fingerprint`) the record keeps under
        ``model``, with the first training batch's data signature once a batch is seen."""
        self._model_info = None
        info = None if model is None else self.guard("fingerprint", model_fingerprint, model)
        if info is not None:
            info["data_signature"] = None  # filled by the first training batch (note_batch)
            self._model_info = info
            kwargs["extra"] = {**(kwargs.get("extra") or {}), "model": info}
        self.guard("start", self.session.start, **kwargs)

    def note_batch(self, batch: Any) -> None:
        """The first training batch's shapes and dtypes go into the record's ``model`` section (once a run)."""
        info = self._model_info
        if info is not None and info.get("data_signature") is None:
            info["data_signature"] = self.guard("fingerprint", data_signature, batch)
            self._model_info = None  # once

    def set_planned_epochs(self, epochs: float | None, *, first_epoch: int = 0) -> None:
        """The run's planned epochs; ``first_epoch``: a fit that starts later (Keras' ``initial_epoch``) runs
        ``epochs - first_epoch`` of them. Only before the first completed epoch when ``first_epoch`` is given."""
        if first_epoch and self.session.epochs_done:
            return
        self.session.set_planned_epochs(None if epochs is None else epochs - first_epoch)

    def epoch_start(self, epoch: int | None = None, model: Any = None) -> None:
        """Open an epoch; ``model``: the module whose FLOPs are counted (its module lists are re-read)."""
        if self.session.running:
            self.guard("epoch", self.session.epoch_start, epoch)
            self.flops.new_epoch(model)

    def add_batch(self, batch: Any) -> None:
        """A training step ran on ``batch``: its samples and tokens (read from shapes) go to the epoch's throughput."""
        if self._model_info is not None:
            self.note_batch(batch)
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

    def resume(self, read: Callable[[], Mapping[str, Any] | None], where: str) -> None:
        """Continue a saved run in the fit about to start: ``read()`` returns what the checkpoint kept (``None``:
        nothing). A state that cannot be read starts new totals and a new run record, said once."""
        try:
            state = read()
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.restart()
            warn_user(f"green_callbacks: the totals saved in {where} could not be read ({type(err).__name__}: "
                      f"{err}); this fit starts new totals and a new run record.")
            return
        if state:
            self.load_state_dict(state)

    def resume_beside(self, folder: str, epochs_done: Callable[[], int]) -> None:
        """:meth:`resume` from the state :meth:`save_beside` kept in ``folder``; ``epochs_done()`` reads how many
        epochs the framework completed before its backup (where it resumes)."""
        self.resume(lambda: read_state_beside(folder, epochs_done()), folder)

    def save_beside(self, folder: str) -> None:
        """Keep the run's state in ``folder`` (a framework's own backup folder), on rank zero."""
        if self.session.dist.is_global_zero:
            self.guard("checkpoint", lambda: write_state_beside(folder, self.session.state_dict()))

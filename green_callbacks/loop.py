"""Any training loop: ``Tracker``, the same engine as the three callbacks, driven by hand.

::

    from green_callbacks.loop import Tracker

    tracker = Tracker(country="FR", model=model, log=writer.add_scalar)   # the callbacks' keywords, plus a few
    with tracker:                                    # start … finish ("completed" / "failed" / "interrupted")
        for epoch in range(3):
            with tracker.epoch() as ep:              # one epoch: the green/ keys are logged when it closes
                for batch in train_loader:
                    ...                              # your step
                    tracker.step(batch)              # samples, tokens and (with model=) training FLOPs
                with tracker.evaluation():
                    for batch in val_loader:
                        ...
                        tracker.eval_step(batch)
                ep.metrics["val_loss"] = val_loss    # the monitored metric, for "to convergence"
            if tracker.should_stop:                  # a budget would be exceeded
                break

Every number comes from :class:`~green_callbacks.core.session.Session` — the same keys, record, report and
never-break guard as ``GreenCallback`` in Lightning, Keras and transformers. ``log=`` takes any logging callable:
``wandb.log``, ``SummaryWriter.add_scalar``, ``accelerator.log``, ``fabric.log_dict``, ``mlflow.log_metrics``, or
your own ``print``-like function (see :class:`LogHook`). Under ``torch.distributed`` (DDP, FSDP, Fabric,
Accelerate) every rank drives its tracker alike; values are summed over ranks, the node-level parts (CPU package,
RAM) counted once per node, and only global rank zero logs and writes the record.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from green_callbacks._adapter import METRIC_KEYS, GreenCallbackBase
from green_callbacks.core.devices import module_device, torch_devices
from green_callbacks.core.metric_keys import nan_metrics
from green_callbacks.core.throughput import batch_counts
from green_callbacks.core.wording import TRACKER

__all__ = ["METRIC_KEYS", "Epoch", "LogHook", "Tracker"]

Forward = Callable[[Any, Any], Any]

_SCALAR_NAMES = (("tag", "name", "key"), ("scalar_value", "value", "val", "scalar"))
_STEP_NAMES = ("step", "global_step")


class LogHook:
    """Calls a user's logging function with one epoch's ``green/`` metrics.

    Two shapes are recognised from the callable's signature:

    * **a mapping at once** (``wandb.log(d)``, ``accelerator.log(d, step=)``, ``fabric.log_dict(d, step=)``,
      ``mlflow.log_metrics(d, step=)``, ``print``): called once per epoch with the dict;
    * **one scalar at a time** (``SummaryWriter.add_scalar(tag, value, global_step)``, ``fabric.log(name, value,
      step)``): its first two parameters are named like ``tag``/``name`` and ``value``/``scalar_value``; called
      once per key.

    ``step``: the epoch number is passed as ``step=`` / ``global_step=`` when the callable takes one (or takes
    only ``**kwargs``, as ``accelerator.log`` does behind its decorator), except to ``wandb.log``, whose step must keep
    growing with your own per-batch logging (W&B drops smaller steps). ``step=True`` / ``False`` forces it either way.
    """

    def __init__(self, fn: Callable[..., Any], step: bool | None = None) -> None:
        if not callable(fn):
            raise ValueError(
                f"log= must be a callable such as wandb.log, writer.add_scalar, accelerator.log or fabric.log_dict, "
                f"got {fn!r} ({type(fn).__name__})"
            )
        if step not in (None, True, False):
            raise ValueError(f"log_step must be True, False or None (automatic), got {step!r}")
        self.fn = fn
        params = _parameters(fn)
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.scalar = len(names) >= 2 and names[0] in _SCALAR_NAMES[0] and names[1] in _SCALAR_NAMES[1]
        self.step_name = next((p.name for p in params if p.name in _STEP_NAMES), None)
        if self.step_name is None and any(p.kind is p.VAR_KEYWORD for p in params):
            self.step_name = "step"  # a wrapper hiding its signature (accelerate's ``@on_main_process`` log)
        module = str(getattr(fn, "__module__", "") or "")
        wants_step = not module.startswith("wandb") if step is None else step
        if wants_step and self.step_name is None and step:
            raise ValueError(f"log_step=True, but {_name(fn)} takes no step= or global_step= argument")
        self.pass_step = bool(wants_step and self.step_name is not None)

    def __call__(self, metrics: Mapping[str, float], step: int) -> None:
        extra = {self.step_name: step} if self.pass_step and self.step_name else {}
        if self.scalar:
            for key, value in metrics.items():
                self.fn(key, value, **extra)
        else:
            self.fn(dict(metrics), **extra)


def _parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature (e.g. print on some versions)
        return []


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)


class Epoch:
    """The epoch a ``with tracker.epoch() as ep:`` block measures.

    Put the epoch's own metrics into ``ep.metrics`` (``val_loss``, ``accuracy``): the monitored one drives
    "to convergence", and all numbers go into the run record. After the block, ``ep.green`` holds the ``green/``
    metrics that were logged.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.metrics: dict[str, Any] = {}
        self.green: dict[str, float] = {}


class Tracker(GreenCallbackBase):
    """Energy, emissions, FLOPs and throughput of any training loop, with the callbacks' keys and record.

    Takes every keyword of the callbacks (``country=``, ``carbon_intensity=``, ``pue=``, ``monitor=``,
    ``budget_kwh=``, ``output_dir=`` …; see :class:`~green_callbacks._adapter.GreenCallbackBase`) and these:

    Args:
        model: the ``torch.nn.Module`` you call; with it, :meth:`step` and :meth:`eval_step` count FLOPs by watching
            the model run the first step of each batch signature (nothing of yours is re-run, no random generator
            moved; see :mod:`green_callbacks.core.flops.step_watch`). Wrappers (DDP, Fabric, Accelerate, DeepSpeed)
            work as passed; a ``torch.compile``d model gets FLOPs NaN (watching would turn its compilation off).
        forward: accepted for compatibility, never called (the tracker used to replay it on a meta copy).
        log: any logging callable, called with the ``green/`` metrics at every epoch end (see :class:`LogHook`).
        log_step: pass the epoch number as the logger's step (``None``: automatic, see :class:`LogHook`).
        dtype: the compute dtype, for the MFU peak (``"bf16"``, ``"fp16"``, ``"tf32"``, ``"fp32"``, a
            ``torch.dtype``); default ``"fp32"``.
        device: the device this process trains on (default: the model's); picks the GPU(s) whose energy is measured.
        planned_epochs: how many epochs the run will last, for the projection and budgets.
        hyperparameters: kept in the run record.
    """

    framework = "loop"
    front_end = TRACKER

    def __init__(
        self,
        *,
        model: Any = None,
        forward: Forward | None = None,
        log: Callable[..., Any] | None = None,
        log_step: bool | None = None,
        dtype: Any = None,
        device: Any = None,
        planned_epochs: float | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        GreenCallbackBase.__init__(self, **kwargs)
        if forward is not None and not callable(forward):
            raise ValueError(f"forward must be callable as forward(model, batch), got {forward!r}")
        if planned_epochs is not None and (isinstance(planned_epochs, bool) or not isinstance(
                planned_epochs, (int, float)) or not planned_epochs > 0):
            raise ValueError(f"planned_epochs must be a positive number, got {planned_epochs!r}")
        if dtype is not None:
            from green_callbacks.core.flops.peaks import normalize_dtype

            normalize_dtype(dtype)  # a clear ValueError now, not a NaN later
        self._model_ref = None if model is None else weakref.ref(model)
        self._forward = forward or default_forward
        self._log = None if log is None else LogHook(log, log_step)
        self._dtype = dtype
        self._device = device
        self._planned_epochs = planned_epochs
        self._hyperparameters = dict(hyperparameters or {})
        self._epoch: Epoch | None = None
        self._lock = threading.Lock()  # per-step state shared by threads that call step() at once
        self._watch: Any = None  # the run's StepWatch (with model=): FLOPs of the steps it sees run

    # ------------------------------------------------------------------ run
    @property
    def model(self) -> Any:
        return None if self._model_ref is None else self._model_ref()

    @property
    def should_stop(self) -> bool:
        """True once a budget would be exceeded (``budget_action="stop"``): end your loop after this epoch."""
        return self._engine.should_stop

    @property
    def running(self) -> bool:
        return self._engine.running

    def start(self) -> Tracker:
        """Begin the run (``with tracker:`` does it for you). A finished tracker starts a new run."""
        if self.running:
            return self
        if self._engine.status != "created":
            self._engine.begin_fit()
        self._close_watch()
        self._engine.flops.use(None if self.model is None else self._new_flop_tracker())
        self._engine.start(
            hyperparameters=self._hyperparameters,
            model=self.model,
            **torch_devices(self._device if self._device is not None else module_device(self.model)).start_kwargs(),
            planned_epochs=self._planned_epochs,
            compute_dtype=self._dtype,
            extra={"loop": {"model": None if self.model is None else type(self.model).__name__,
                            "logger": None if self._log is None else _name(self._log.fn)}},
        )
        if self.model is not None and self.running and self._engine.flops_available:
            if _compiled(self.model):
                self._engine.unavailable(
                    "flops", "FLOPs of a torch.compile'd model are not counted by the loop Tracker (FLOPs are NaN): "
                    "watching its step would turn compilation off for it, and counting on a copy would run your "
                    "model's code again. Count them on a run of the uncompiled model.")
            else:
                self._watch = self._engine.guard("flops", self._new_watch, self.model)
        return self

    def finish(self, status: str = "completed", error: BaseException | str | None = None) -> Any:
        """End the run and write the final record; returns its path. Safe to call more than once."""
        self._end_epoch_flops()
        self._close_watch()
        self._engine.finish(status, error)
        return self.record_path

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._end_epoch_flops()
        self._close_watch()
        if exc is None:
            self._engine.finish("completed")
        else:
            self._engine.fail(exc)

    def _new_watch(self, model: Any) -> Any:
        from green_callbacks._sharded import flop_model
        from green_callbacks.core.flops.step_watch import StepWatch

        return StepWatch(self._engine, model, flop_model, self._lock)

    def _end_epoch_flops(self) -> None:
        if self._engine.in_epoch:
            self._boundary(epoch_end=True)

    def _close_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            self._engine.guard("flops", watch.close)

    # ------------------------------------------------------------------ epochs
    def epoch_start(self, epoch: int | None = None) -> Epoch:
        """Open an epoch (``epoch``: your epoch number; default: the count so far). Starts the run if needed."""
        if not self.running:
            self.start()
        index = epoch if epoch is not None else (self._epoch.index + 1 if self._epoch is not None else
                                                 self._engine.epochs_done)
        self._epoch = Epoch(index)
        self._boundary(in_eval=False)
        self._engine.epoch_start(index, None if self._watch is None else self._watch.key_model)
        return self._epoch

    def epoch_end(self, metrics: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Close the epoch: the ``green/`` metrics (every key, NaN where unknown), logged through ``log=``.

        Under ``torch.distributed`` this is a collective call: every rank must make it.
        """
        epoch = self._epoch or Epoch(self._engine.epochs_done)
        epoch.metrics.update(metrics or {})
        self._end_epoch_flops()
        values = self._engine.epoch_end(epoch.metrics)
        if values is None:  # no epoch open (the run did not start): every key all the same
            values = nan_metrics()
        epoch.green = dict(values)
        if self._log is not None and self._engine.is_global_zero:
            self._engine.guard("logging", self._log, values, epoch.index)
        return dict(values)

    @contextmanager
    def epoch(self, epoch: int | None = None) -> Iterator[Epoch]:
        """``with tracker.epoch() as ep:`` — :meth:`epoch_start` on entry, :meth:`epoch_end` on a normal exit.

        An exception inside the block leaves the epoch open (no collective call on a failure path); the run's
        ``with tracker:`` then records it as the partial epoch of a failed run.
        """
        current = self.epoch_start(epoch)
        yield current
        self.epoch_end()

    def eval_start(self) -> None:
        """Open an evaluation window inside the epoch (its energy is reported apart; several are summed)."""
        self._engine.eval_start()
        self._boundary(in_eval=True)

    def eval_end(self) -> None:
        self._engine.eval_end()
        self._boundary(in_eval=False)

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """``with tracker.evaluation():`` around your validation loop."""
        self.eval_start()
        try:
            yield
        finally:
            self.eval_end()

    # ------------------------------------------------------------------ steps
    def step(self, batch: Any = None, *, samples: int | None = None, tokens: int | None = None) -> _Step:
        """One training step on ``batch``: counts its samples, tokens and (with ``model=``) its FLOPs.

        Call it once after the step's backward, or use it around the step's forward and backward,
        ``with tracker.step(batch): loss_of(model, batch).backward()``; both count the same. FLOPs are counted by
        watching the model run the first step of each batch signature, and a few later ones as checks (after the
        step: nothing is re-run; see :mod:`green_callbacks.core.flops.step_watch`). Under gradient accumulation,
        once per micro-batch.
        ``samples``/``tokens`` override what is read from the batch's shapes (see
        :func:`green_callbacks.core.throughput.batch_counts`). Safe to call from several threads at once.
        """
        with self._lock:
            if samples is not None or tokens is not None or batch is None:
                read = batch_counts(batch) if batch is not None else (None, None)
                self._engine.add_samples(read[0] if samples is None else samples,
                                         read[1] if tokens is None else tokens)
            else:
                self._engine.add_batch(batch)
        return self._flops("train", batch)

    def eval_step(self, batch: Any = None) -> _Step:
        """One evaluation step on ``batch``: counts its forward FLOPs (with ``model=``); ``with`` or a plain call
        after the step's forward."""
        return self._flops("eval", batch)

    def _flops(self, kind: str, batch: Any) -> _Step:
        watch = self._watch
        if watch is None:
            return _Step(None, kind, None)
        return _Step(watch, kind, self._engine.guard("flops", watch.step, kind, batch))

    def _boundary(self, **kwargs: Any) -> None:
        if self._watch is not None:
            self._engine.guard("flops", self._watch.boundary, **kwargs)

    def _new_flop_tracker(self) -> Any:
        from green_callbacks.core.flops import FlopTracker

        return FlopTracker()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Save with your checkpoint; :meth:`load_state_dict` before :meth:`start` continues the run's totals."""
        return self._engine.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            if self._engine.status != "created":
                self._engine.restart()
            self._engine.load_state_dict(state)


def _compiled(model: Any) -> bool:
    """``torch.compile(model)`` (an ``OptimizedModule``) or ``model.compile()`` anywhere in the module tree."""
    if type(model).__name__ == "OptimizedModule":
        return True
    modules = model.modules() if hasattr(model, "modules") else ()
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in modules)


class _Step:
    """What :meth:`Tracker.step` returns: usable as ``with tracker.step(batch): ...`` around the step, or ignored.

    Around the step, a new batch signature is counted while the block runs (the step itself, watched)."""

    __slots__ = ("_key", "_kind", "_watch")

    def __init__(self, watch: Any, kind: str, key: Any) -> None:
        self._watch, self._kind, self._key = watch, kind, key

    def __enter__(self) -> _Step:
        if self._watch is not None:
            self._watch.guarded(self._watch.enter, self._kind, self._key)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.guarded(self._watch.exit, self._kind, failed=exc[0] is not None)
        return None


def default_forward(model: Any, batch: Any) -> Any:
    """``model(**batch)`` for a mapping, ``model(batch[0])`` for a tuple/list (``(inputs, targets)``), else
    ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(batch[0])
    return model(batch)

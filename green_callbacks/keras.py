"""Keras 3 adapter: ``model.fit(..., callbacks=[GreenCallback()])``.

Hooks → session calls → ``logs``. Every epoch the ``green/...`` keys are written into the shared ``logs`` dict from
epoch 0 on, so ``History``, the progress bar and every logger that runs after this callback see them. At
``on_train_begin`` the callback moves itself in ``fit``'s callback list just before the first Keras logger or
monitor that precedes it (``CSVLogger``, ``TensorBoard``, ``EarlyStopping``, ``ModelCheckpoint``, ...), so their
order in ``callbacks=[...]`` does not matter; other callbacks before it that have an ``on_epoch_end`` are named in a
warning. See docs/keras.md.

No per-batch hook is overridden (that would switch off Keras' asynchronous batch dispatch). Instead the model's
``train_function``/``test_function`` are wrapped for the duration of ``fit``: the wrapper notes each batch's shapes
(no device synchronisation) and, since Keras has no exception hook, closes the run record with status ``failed`` /
``interrupted`` when a step raises. FLOPs are counted once per batch signature at the end of the epoch.

``model.evaluate(..., callbacks=[callback])`` and ``model.predict(..., callbacks=[callback])`` outside ``fit`` are
measured as phases (``engine.phases``), per batch through a wrapped ``test_function`` / ``predict_function`` (torch:
the batch and its FLOPs, observed on the real step; JAX: the batches its iterator yields; TensorFlow runs its steps
inside a graph: batches and per-sample figures unavailable). What ``evaluate`` returns is Keras' own, untouched; the
``green/evaluate_...`` keys reach the callbacks after this one (``on_test_end``'s ``logs``), the progress line shows
the phase's Wh and gCO2e (``console="all"``: every key); all figures are in ``callback.last_phase_metrics`` and the
phase's record. See docs/inference.md.

Resume: Keras callbacks have no checkpoint hook, so when ``fit`` has a ``BackupAndRestore`` the callback keeps its
totals in a small JSON file beside that backup (``green_callbacks_state.json``) at each epoch end; a ``fit`` that
``BackupAndRestore`` resumes after a crash continues those totals and the same run record.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from green_callbacks._adapter import GreenCallbackBase
from green_callbacks.core.devices import CPU, UNKNOWN, Devices, jax_devices, tensorflow_devices, torch_devices
from green_callbacks.core.flops.keras_backends import KERAS_FLOP_METHODS
from green_callbacks.core.flops.noted_steps import NotedSteps
from green_callbacks.core.metric_keys import console_view, nan_metrics
from green_callbacks.core.patches import InstancePatches, PeekingIterator, find_in_callers
from green_callbacks.core.record_sections import FlopInfo

__all__ = ["GreenCallback"]

_INSTALL = 'pip install "green-callbacks[keras]"'


def _import_keras() -> Any:
    try:
        import keras
    except ModuleNotFoundError as err:
        if err.name == "keras":
            raise ImportError(f"green_callbacks.keras needs Keras 3; install it with {_INSTALL}") from err
        chosen = os.environ.get("KERAS_BACKEND")
        backend = f"KERAS_BACKEND={chosen}" if chosen else "its default backend (tensorflow, or ~/.keras/keras.json)"
        raise ImportError(
            f"Keras could not load {backend}: {err}. Choose an installed backend before keras is first imported, "
            "with KERAS_BACKEND=torch|jax|tensorflow (in the shell, or os.environ['KERAS_BACKEND'] = 'torch' at the "
            f"top of the script), and install it: {_INSTALL} plus torch, jax or tensorflow."
        ) from err
    if int(str(keras.__version__).split(".")[0]) < 3:
        raise ImportError(f"green_callbacks.keras needs Keras 3, found {keras.__version__}; {_INSTALL}")
    return keras


keras = _import_keras()
_END_OF_DATA = ("StopIteration", "OutOfRangeError")  # how Keras' step functions say "no more batches"
_KINDS = {"train_function": "train", "test_function": "eval"}


def _nothing() -> None:
    """A dead weak reference (no model)."""


def _find_fit_locals(callback: Any) -> dict[str, Any] | None:
    """The local variables of the ``fit`` call running this callback: its ``CallbackList`` and epoch iterator."""

    def runs_callback(local: Any) -> bool:
        cbl = local.get("callbacks")
        return isinstance(cbl, keras.callbacks.CallbackList) and any(c is callback for c in cbl.callbacks)

    found = find_in_callers(runs_callback, depth=17)  # (this frame, then the 16 above the hook)
    return None if found is None else dict(found)


def _reads_logs(cb: Any) -> bool:
    c = keras.callbacks
    readers = (c.CSVLogger, c.TensorBoard, c.EarlyStopping, c.ModelCheckpoint, c.ReduceLROnPlateau, c.RemoteMonitor,
               c.LambdaCallback, c.History, c.ProgbarLogger)
    return isinstance(cb, readers)


def _backup_dir(callbacks: list[Any]) -> str | None:
    """The folder of the fit's ``BackupAndRestore`` (where Keras keeps what a crashed fit resumes from), if any."""
    backup = next((c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)), None)
    return None if backup is None else str(backup.backup_dir)


def _backup_epochs(backup_dir: str) -> int:
    """The epochs Keras completed before its backup in ``backup_dir`` (it resumes there; 0: no backup)."""
    meta_path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(meta_path):
        return 0
    with open(meta_path, encoding="utf-8") as handle:
        return int(json.load(handle)["epoch"])


def _devices(model: Any) -> Devices:
    """The devices this process trains on (see :mod:`green_callbacks.core.devices`)."""
    backend = keras.backend.backend()
    if backend == "torch":
        weights = model.trainable_weights
        return torch_devices(weights[0].value.device) if weights else CPU
    if backend == "jax":
        return jax_devices()
    if backend == "tensorflow":
        return tensorflow_devices()
    return CPU


class GreenCallback(GreenCallbackBase, keras.callbacks.Callback):
    """Energy, emissions and FLOPs of a Keras 3 ``fit``, logged every epoch as ``green/...`` keys.

    Takes the keyword-only arguments of :class:`green_callbacks._adapter.GreenCallbackBase`. Convergence follows
    ``monitor=``, else the ``EarlyStopping`` passed to the same ``fit``. The run record goes to ``output_dir``
    (default ``./green_runs``).
    """

    framework = "keras"

    def _init_adapter(self) -> None:
        self._steps = NotedSteps()  # tensorflow: steps noted by signature, counted at the epoch's end
        self._fit_model: Any = _nothing  # the model whose step functions are watched (a weak reference)
        self._phase_model: Any = _nothing  # an evaluate()/predict()'s model (_nothing: FLOPs not observed)
        self._backend = "torch"
        self._epoch_iterator: Any = None
        self._flops_info = FlopInfo()
        self._trackers: dict[str, Any] = {}  # backend -> its core.flops.FlopTracker (torch, jax), kept across fits:
        # a later fit reuses its cache
        self._warned_order = False
        self._backup_dir: str | None = None
        self._console = InstancePatches()  # an evaluate()'s progress line, compact (one call, then put back)

    # ------------------------------------------------------------------ fit begin / end
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._engine.begin_fit()
        self._steps = NotedSteps()
        self._engine.guard("start", self._train_begin, _find_fit_locals(self))

    def _train_begin(self, fit_locals: dict[str, Any] | None) -> None:
        callbacks = None if fit_locals is None else fit_locals["callbacks"].callbacks
        self._epoch_iterator = None if fit_locals is None else fit_locals.get("epoch_iterator")
        self._put_before_loggers(callbacks)
        for bar in (c for c in callbacks or [] if isinstance(c, keras.callbacks.ProgbarLogger)):
            self._patches.wrap(bar, "on_epoch_end", self._compact)
        stopper = next((c for c in callbacks or [] if isinstance(c, keras.callbacks.EarlyStopping)), None)
        backend = keras.backend.backend()
        self._flops_info = FlopInfo(backend=backend, **KERAS_FLOP_METHODS.get(backend, {"method": "unavailable"}))
        tracker = self._trackers.get(backend)
        if tracker is None and backend in ("torch", "jax"):
            tracker = self._trackers[backend] = _new_tracker(backend)
        if backend == "jax":  # each new signature counted by XLA, once: its figures per shape (filled as counted)
            self._flops_info = replace(self._flops_info, per_step=tracker.engine.per_step)
        elif backend != "torch":
            self._flops_info = replace(self._flops_info, per_step=self._steps.per_step)
        self._engine.flops.use(tracker)
        self._engine.flops.record_info = self._flops_info
        self._backup_dir = None if callbacks is None else _backup_dir(callbacks)
        if self._backup_dir is not None:  # resuming a crashed fit with BackupAndRestore: the totals go on
            self._engine.resume_beside(self._backup_dir, functools.partial(_backup_epochs, self._backup_dir))
        devices = self._engine.guard("start", _devices, self.model) or UNKNOWN
        self._engine.start(
            hyperparameters=_hyperparameters(self.model, self.params),
            model=self.model,
            **devices.start_kwargs(),
            monitor=None if stopper is None else stopper.monitor,
            mode=None if stopper is None or stopper.mode not in ("min", "max") else stopper.mode,
            planned_epochs=self.params.get("epochs"),
            extra={"keras": {"version": keras.__version__, "backend": backend}, "flops": self._flops_info},
            compute_dtype=keras.config.dtype_policy().compute_dtype,
        )
        self._wrap(self.model, "train_function")
        if backend == "torch" and getattr(self.model, "optimizer", None) is not None:  # its work is not model FLOPs
            self._patches.wrap(self.model.optimizer, "apply", self._engine.flops.before_optimizer)

    def _compact(self, on_epoch_end: Any) -> Any:
        """The progress line's ``on_epoch_end``, shown the compact view of the logs (``console=``)."""
        console = self.config.console

        def shown(epoch: int, logs: dict[str, Any] | None = None) -> Any:
            return on_epoch_end(epoch, None if logs is None else console_view(logs, console))

        return shown

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._unwrap()
        self._engine.finish("completed")

    # ------------------------------------------------------------------ epochs
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._engine.set_planned_epochs(self.params.get("epochs"), first_epoch=epoch)  # fit(initial_epoch=...)
        self._engine.epoch_start(epoch)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._engine.in_epoch:  # validation inside fit
            self._wrap(self.model, "test_function")
            self._engine.eval_start()
        else:  # model.evaluate(..., callbacks=[callback])
            self._phase_begin("evaluate", "test_function")

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._engine.eval_end()
        metrics = self._phase_end()
        if metrics and logs is not None:  # the callbacks after this one see them (a copy of what evaluate returns)
            logs.update(metrics)

    # ------------------------------------------------------------------ evaluate / predict outside fit
    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._phase_begin("predict", "predict_function")

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        """Keras does not log predictions: the figures are in ``callback.last_phase`` and the record."""
        self._phase_end()

    def _phase_begin(self, kind: str, attr: str) -> None:
        model = self.model
        if model is None:
            return
        backend = keras.backend.backend()
        devices = self._engine.phases.guard.call("phase devices", _devices, model) or UNKNOWN
        begun = self._engine.phases.begin(
            kind,
            **devices.start_kwargs(),
            extra={"keras": {"version": keras.__version__, "backend": backend}},
            sees_batches=backend in ("torch", "jax"),  # tensorflow: the steps run inside a graph
            times_batches=backend == "torch",  # jax dispatches steps asynchronously: no per-batch latency
        )
        if begun and backend in ("torch", "jax"):
            self._wrap_phase(model, attr, backend)
        if begun and kind == "evaluate":
            self._engine.phases.guard.call("phase logging", self._compact_evaluate_line, _find_fit_locals(self))

    def _compact_evaluate_line(self, call_locals: dict[str, Any] | None) -> None:
        """The progress line ``evaluate`` prints at its end shows the compact view of its logs (``console=``): the
        phase's Wh and gCO2e instead of every ``green/evaluate_...`` key. Put back once it has printed."""
        self._console.restore()
        if call_locals is None:
            return
        console, patches = self.config.console, self._console

        def make(on_test_end: Any) -> Any:
            def shown(logs: dict[str, Any] | None = None) -> Any:
                patches.restore()
                return on_test_end(None if logs is None else console_view(logs, console))

            return shown

        for bar in (c for c in call_locals["callbacks"].callbacks if isinstance(c, keras.callbacks.ProgbarLogger)):
            patches.wrap(bar, "on_test_end", make)

    def _phase_end(self) -> dict[str, float] | None:
        if not self._engine.phases.running:
            return None
        self._unwrap()
        return self._engine.phases.end()

    def _wrap_phase(self, model: Any, attr: str, backend: str) -> None:
        """Note each batch of ``evaluate``/``predict``: a clock read before and after, the batch's shapes and (torch)
        its FLOPs, observed while the real step runs; an exception closes the phase's record. Torch:
        ``test_function(data)``, ``data[0]`` the batch; JAX: ``test_function(state, iterator)``, the batches are
        noted as the iterator yields them (several per call with ``steps_per_execution``)."""
        # torch.compile'd step functions (jit_compile=True) hide their ops from an observing counter: FLOPs NaN
        self._phase_model = weakref.ref(model) if not getattr(model, "jit_compile", False) else _nothing
        self._backend = backend
        self._patches.around(model, attr, before=self._phase_step_begin, after=self._phase_step_end,
                             failed=self._phase_step_failed)

    def _phase_step_begin(self, attr: str, *args: Any, **kwargs: Any) -> tuple[Any, ...] | None:
        phases = self._engine.phases
        if self._backend == "torch":
            phases.batch_start(args[0][0], self._phase_model())
            return None
        return (args[0], PeekingIterator(args[1], _next_batch(phases)), *args[2:])

    def _phase_step_end(self, attr: str, result: Any, *args: Any, **kwargs: Any) -> None:
        self._engine.phases.batch_end()

    def _phase_step_failed(self, attr: str, err: BaseException) -> None:
        if type(err).__name__ in _END_OF_DATA:
            self._engine.phases.batch_end()
            return
        self._unwrap()
        self._console.restore()
        self._engine.phases.fail(err)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._engine.in_epoch and self._steps.counts:
            self._engine.guard("flops", self._add_noted_flops)
        if keras.backend.backend() == "torch" and "torch" in self._trackers:
            self._flops_info = replace(self._flops_info, per_step=self._trackers["torch"].per_signature())
            self._engine.flops.describe(self._flops_info)
        metrics = self._engine.epoch_end(logs or {})
        if metrics is not None and self._backup_dir is not None:  # BackupAndRestore: the totals go beside its backup
            self._engine.save_beside(self._backup_dir)
        if logs is not None:  # every key, every epoch: CSVLogger fixes its columns at epoch 0
            logs.update(metrics or nan_metrics())
        if self._engine.should_stop and self.model is not None:
            self.model.stop_training = True

    # ------------------------------------------------------------------ order of callbacks
    def _put_before_loggers(self, callbacks: list[Any] | None) -> None:
        """Move this callback just before the first Keras logger/monitor that precedes it.

        Called while ``CallbackList.on_train_begin`` iterates ``callbacks``: moving an element from index k to an
        earlier index leaves every index after k unchanged, so the iteration goes on with the right callback.
        """
        if callbacks is None:
            self._warn_order("GreenCallback could not find the callback list of this fit(); list it first in "
                             "callbacks=[...] so that CSVLogger, TensorBoard and EarlyStopping see the green/ keys.")
            return
        index = next(i for i, c in enumerate(callbacks) if c is self)
        first_reader = next((i for i, c in enumerate(callbacks[:index]) if _reads_logs(c)), None)
        if first_reader is not None:
            callbacks.insert(first_reader, callbacks.pop(index))
            index = first_reader
        hidden = [type(c).__name__ for c in callbacks[:index] if not getattr(c.on_epoch_end, "_is_default", False)]
        if hidden:
            self._warn_order(
                f"{', '.join(hidden)} run(s) before GreenCallback in callbacks=[...] and will not see the green/ "
                "keys. If it logs or monitors metrics, list GreenCallback before it; if it computes a metric you "
                "monitor, this order is right.")

    def _warn_order(self, message: str) -> None:
        if not self._warned_order:
            self._warned_order = True
            warnings.warn(f"green_callbacks: {message}", UserWarning, stacklevel=5)

    # ------------------------------------------------------------------ step functions: batches and failures
    def _wrap(self, model: Any, attr: str) -> None:
        self._fit_model = weakref.ref(model)  # (the model holds the replacement: no strong cycle)
        self._backend = keras.backend.backend()
        self._patches.around(model, attr, before=self._step_begin, after=self._step_end, failed=self._step_failed)

    def _step_begin(self, attr: str, *args: Any, **kwargs: Any) -> tuple[Any, ...] | None:
        kind = _KINDS[attr]
        backend = self._backend
        if backend == "torch":  # train_function(data): data[0] is the batch; the call runs the step
            batch = args[0][0]  # (the model is the one whose function runs: Callback.model costs an import a call)
            self._engine.flops.begin(kind, self._fit_model(), batch, counted=batch if kind == "train" else None)
        elif not (self._engine.in_epoch and self._engine.flops_available):
            return None
        elif backend == "jax":  # train_function(state, iterator): the batches come out of the iterator
            return (args[0], PeekingIterator(args[1], lambda data: self._note_jax(kind, data)), *args[2:])
        elif backend == "tensorflow":  # train_function(iterator) runs inside tf.function: note the call only
            self._steps.add(kind, None, 1)
        return None

    def _step_end(self, attr: str, result: Any, *args: Any, **kwargs: Any) -> None:
        self._engine.flops.end()  # the call ran the step (forward, backward, optimizer's elementwise update)

    def _step_failed(self, attr: str, err: BaseException) -> None:
        self._engine.flops.discard()
        if type(err).__name__ not in _END_OF_DATA:
            self._unwrap()
            self._engine.fail(err)

    def _note_jax(self, kind: str, data: Any) -> None:
        """A batch the JAX step function takes: handed to the FLOP tracker (a new signature is counted by XLA on its
        shapes, the others are cache hits) and, for training, to the throughput."""
        flops = self._engine.flops
        flops.begin(kind, self._fit_model(), data, replay=_COUNTED_BY_XLA)
        flops.end()
        if kind == "train":
            self._engine.add_batch(data)

    def _unwrap(self) -> None:
        self._patches.restore()

    # ------------------------------------------------------------------ FLOPs of the tensorflow backend
    def _add_noted_flops(self) -> None:
        """Steps noted by signature (tensorflow: inside a graph, only the calls are seen), counted at the epoch's end
        by the backend's engine."""
        model, iterator = self.model, self._epoch_iterator
        totals = self._steps.take_epoch(lambda kind, example, calls: _tf_batches(calls, kind, iterator, model),
                                        lambda kind, batch: _count_tf_step(model, kind, batch))
        self._engine.flops.add(train=totals["train"], eval=totals["eval"])


_COUNTED_BY_XLA = "XLA cost analysis"
"""The JAX tracker's ``replay``: its engine counts a new signature itself (``JaxStepEngine``); no forward is run."""


def _new_tracker(backend: str) -> Any:
    """The FLOP tracker of a backend: torch observes the real step; JAX counts each new batch signature by XLA's
    cost analysis of the traced step (every shape counted: no polynomial over XLA's all-ops counts)."""
    from green_callbacks.core.flops import FlopTracker

    if backend == "jax":
        from green_callbacks.core.flops.keras_backends import JaxStepEngine

        return FlopTracker(JaxStepEngine(), interpolate=False)
    return FlopTracker()


def _count_tf_step(model: Any, kind: str, batch: Any) -> Any:
    from green_callbacks.core.flops import keras_backends

    return keras_backends.count_tf_step(model, batch, kind)  # type: ignore[arg-type]


def _next_batch(phases: Any) -> Callable[[Any], None]:
    """What a phase notes when the JAX iterator yields a batch: the batch before it is done, this one begins."""

    def note(data: Any) -> None:
        phases.batch_end()
        phases.batch_start(data)

    return note


def _hyperparameters(model: Any, params: dict[str, Any]) -> dict[str, Any]:
    optimizer = getattr(model, "optimizer", None)
    hyper: dict[str, Any] = {
        "epochs": params.get("epochs"),
        "steps_per_epoch": params.get("steps"),
        "optimizer": None if optimizer is None else type(optimizer).__name__,
    }
    try:
        hyper["learning_rate"] = float(keras.ops.convert_to_numpy(getattr(optimizer, "learning_rate", None)))
    except Exception:
        hyper["learning_rate"] = None
    return hyper




def _tf_batches(calls: int, kind: str, epoch_iterator: Any, model: Any) -> list[tuple[Any, int]]:
    """TensorFlow runs its steps inside a ``tf.function``: the batch sizes come from the data adapter."""
    import tensorflow as tf

    iterator = epoch_iterator if kind == "train" else getattr(model, "_eval_epoch_iterator", None)
    adapter = getattr(iterator, "data_adapter", None)
    if adapter is None:
        raise RuntimeError("TensorFlow backend: the data adapter of this fit() is unknown, FLOPs are unavailable")
    spec = adapter.get_tf_dataset().element_spec
    steps = min(calls * int(model.steps_per_execution), int(adapter.num_batches or 0) or calls)
    batch_size = getattr(adapter, "batch_size", None)
    partial = getattr(adapter, "partial_batch_size", None)
    if batch_size is None:
        raise RuntimeError("TensorFlow backend: the batch size of this dataset is unknown, FLOPs are unavailable")

    def with_batch(size: int) -> Any:
        return tf.nest.map_structure(lambda s: tf.TensorSpec([size, *s.shape[1:]], s.dtype), spec)

    full = steps - (1 if partial and steps == adapter.num_batches else 0)
    out = [(with_batch(int(batch_size)), full)] if full > 0 else []
    if full < steps:
        out.append((with_batch(int(partial)), 1))
    return out

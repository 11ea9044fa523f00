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

import json
import os
import sys
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from green_callbacks._adapter import GreenCallbackBase
from green_callbacks.core.metric_keys import console_view, nan_metrics
from green_callbacks.core.patches import InstancePatches
from green_callbacks.core.record_writer import write_json_atomic
from green_callbacks.core.sensors.accelerators import jax_device_type, torch_device_type

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


def _signature(data: Any) -> tuple[Any, ...]:
    """Shapes and dtypes of a batch's leaves (metadata only: no device synchronisation)."""
    if isinstance(data, (list, tuple)):
        return tuple(_signature(d) for d in data)
    if isinstance(data, dict):
        return tuple((k, _signature(v)) for k, v in sorted(data.items()))
    shape = getattr(data, "shape", None)
    return ("leaf", None if shape is None else tuple(shape), str(getattr(data, "dtype", type(data).__name__)))


class _Steps:
    """How many steps of each batch signature ran (per kind), with one example batch per new signature."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, Any], int] = {}
        self.examples: dict[tuple[str, Any], Any] = {}

    def add(self, kind: str, batch: Any, n: int = 1) -> None:
        key = (kind, _signature(batch))
        if key not in self.counts:
            self.examples[key] = batch
            self.counts[key] = 0
        self.counts[key] += n

    def reset(self) -> None:
        self.counts = {}
        self.examples = {}


class _PeekingIterator:
    """Passes the JAX trainer's batch iterator through, noting each batch it yields."""

    def __init__(self, iterator: Any, note: Callable[[Any], None]) -> None:
        self._iterator = iterator
        self._note = note

    def __iter__(self) -> _PeekingIterator:
        return self

    def __next__(self) -> Any:
        data = next(self._iterator)
        self._note(data)
        return data


def _find_fit_locals(callback: Any) -> dict[str, Any] | None:
    """The local variables of the ``fit`` call running this callback: its ``CallbackList`` and epoch iterator."""
    frame = sys._getframe(1)
    for _ in range(16):
        if frame is None:
            return None
        local = frame.f_locals
        cbl = local.get("callbacks")
        if isinstance(cbl, keras.callbacks.CallbackList) and any(c is callback for c in cbl.callbacks):
            return dict(local)
        frame = frame.f_back
    return None


def _reads_logs(cb: Any) -> bool:
    c = keras.callbacks
    readers = (c.CSVLogger, c.TensorBoard, c.EarlyStopping, c.ModelCheckpoint, c.ReduceLROnPlateau, c.RemoteMonitor,
               c.LambdaCallback, c.History, c.ProgbarLogger)
    return isinstance(cb, readers)


_STATE_FILE = "green_callbacks_state.json"


def _backup_dir(callbacks: list[Any]) -> str | None:
    """The folder of the fit's ``BackupAndRestore`` (where Keras keeps what a crashed fit resumes from), if any."""
    backup = next((c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore)), None)
    return None if backup is None else str(backup.backup_dir)


def _restored_state(backup_dir: str) -> dict[str, Any] | None:
    """The session state saved beside ``BackupAndRestore``'s backup, when Keras resumes from that backup."""
    meta_path, state_path = os.path.join(backup_dir, "training_metadata.json"), os.path.join(backup_dir, _STATE_FILE)
    if not (os.path.exists(meta_path) and os.path.exists(state_path)):
        return None
    with open(meta_path, encoding="utf-8") as handle:
        epochs = int(json.load(handle)["epoch"])  # epochs Keras completed before the backup: it resumes there
    with open(state_path, encoding="utf-8") as handle:
        state = json.load(handle)
    if epochs <= 0:
        return None
    if state.get("epoch_index") != epochs:  # the process died between the two saves of one epoch end
        warnings.warn(
            f"green_callbacks: the saved totals cover {state.get('epoch_index')} epochs but Keras resumes after "
            f"{epochs}; this fit starts new totals and a new run record.",
            UserWarning,
            stacklevel=3,
        )
        return None
    return state


def _devices(model: Any) -> tuple[str, list[int]]:
    """The device type and ordinals this process trains on (``("cpu", [])`` on CPU); see
    :mod:`green_callbacks.core.sensors.accelerators` for the device types."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        weights = model.trainable_weights
        if not weights:
            return "cpu", []
        device = weights[0].value.device
        kind = torch_device_type(device)
        if kind == "cpu":
            return "cpu", []
        if device.index is None and kind in ("cuda", "rocm"):
            return kind, [torch.cuda.current_device()]
        return kind, [device.index or 0]
    if backend == "jax":
        import jax

        accelerators = [d for d in jax.local_devices() if d.platform != "cpu"]
        if not accelerators:
            return "cpu", []
        first = accelerators[0]
        version = str(getattr(getattr(first, "client", None), "platform_version", ""))
        return jax_device_type(first.platform, version), [d.id for d in accelerators]
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        if not tf.distribute.has_strategy():  # the default strategy places ops on the first visible GPU
            indices = [0] if tf.config.list_physical_devices("GPU") else []
        else:
            devices = strategy.extended.worker_devices
            indices = sorted({int(d.rsplit(":", 1)[1]) for d in devices if "GPU:" in d.upper()})
        return ("cuda" if indices else "cpu"), indices
    return "cpu", []


class GreenCallback(GreenCallbackBase, keras.callbacks.Callback):
    """Energy, emissions and FLOPs of a Keras 3 ``fit``, logged every epoch as ``green/...`` keys.

    Takes the keyword-only arguments of :class:`green_callbacks._adapter.GreenCallbackBase`. Convergence follows
    ``monitor=``, else the ``EarlyStopping`` passed to the same ``fit``. The run record goes to ``output_dir``
    (default ``./green_runs``).
    """

    framework = "keras"

    def _init_adapter(self) -> None:
        self._steps = _Steps()  # batch signatures of backends whose steps cannot be counted one by one (jax, tf)
        self._wrapped: list[tuple[Any, str, Any]] = []
        self._epoch_iterator: Any = None
        self._flops_info: dict[str, Any] = {}
        self._torch_tracker: Any = None  # core.flops.FlopTracker, kept across fits: a later fit reuses its cache
        self._warned_order = False
        self._backup_dir: str | None = None
        self._console = InstancePatches()  # an evaluate()'s progress line, compact (one call, then put back)

    # ------------------------------------------------------------------ fit begin / end
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._engine.begin_fit()
        self._steps.reset()
        self._engine.guard("start", self._train_begin, _find_fit_locals(self))

    def _train_begin(self, fit_locals: dict[str, Any] | None) -> None:
        callbacks = None if fit_locals is None else fit_locals["callbacks"].callbacks
        self._epoch_iterator = None if fit_locals is None else fit_locals.get("epoch_iterator")
        self._put_before_loggers(callbacks)
        for bar in (c for c in callbacks or [] if isinstance(c, keras.callbacks.ProgbarLogger)):
            self._patches.wrap(bar, "on_epoch_end", self._compact)
        stopper = next((c for c in callbacks or [] if isinstance(c, keras.callbacks.EarlyStopping)), None)
        backend = keras.backend.backend()
        self._flops_info = {"backend": backend, **_FLOP_METHODS.get(backend, {"method": "unavailable"})}
        if backend == "torch" and self._torch_tracker is None:
            from green_callbacks.core.flops import FlopTracker

            self._torch_tracker = FlopTracker()
        self._engine.flops.use(self._torch_tracker if backend == "torch" else None)
        self._engine.flops.record_info = self._flops_info
        self._backup_dir = None if callbacks is None else _backup_dir(callbacks)
        if self._backup_dir is not None:  # resuming a crashed fit with BackupAndRestore: the totals go on
            self._resume(self._backup_dir)
        device_type, device_indices = self._engine.guard("start", _devices, self.model) or ("cuda", None)
        self._engine.start(
            hyperparameters=_hyperparameters(self.model, self.params),
            device_indices=device_indices,
            device_type=device_type,
            monitor=None if stopper is None else stopper.monitor,
            mode=None if stopper is None or stopper.mode not in ("min", "max") else stopper.mode,
            planned_epochs=self.params.get("epochs"),
            extra={"keras": {"version": keras.__version__, "backend": backend}, "flops": self._flops_info},
            compute_dtype=keras.config.dtype_policy().compute_dtype,
        )
        self._wrap(self.model, "train_function", "train")
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
            self._wrap(self.model, "test_function", "eval")
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
        device_type, device_indices = self._engine.phases.guard.call("phase devices", _devices, model) or ("cuda", None)
        begun = self._engine.phases.begin(
            kind,
            device_type=device_type,
            device_indices=device_indices,
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
        original = getattr(model, attr, None)
        if original is None or getattr(original, "_green_callback", None) is not None:
            return
        ref, model_ref = weakref.ref(self), weakref.ref(model)
        # torch.compile'd step functions (jit_compile=True) hide their ops from an observing counter: FLOPs NaN
        counted = not getattr(model, "jit_compile", False)

        def watched(*args: Any, **kwargs: Any) -> Any:
            this = ref()
            if this is None:
                return original(*args, **kwargs)
            phases = this._engine.phases
            if backend == "torch":
                phases.batch_start(args[0][0], model_ref() if counted else None)
            else:
                args = (args[0], _PeekingIterator(args[1], _next_batch(phases)), *args[2:])
            try:
                out = original(*args, **kwargs)
            except BaseException as err:
                if type(err).__name__ not in _END_OF_DATA:
                    this._unwrap()
                    this._console.restore()
                    phases.fail(err)
                else:
                    phases.batch_end()
                raise
            phases.batch_end()
            return out

        watched._green_callback = ref  # type: ignore[attr-defined]
        setattr(model, attr, watched)
        self._wrapped.append((model, attr, original))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._engine.in_epoch and self._steps.counts:
            self._engine.guard("flops", self._add_noted_flops)
        if self._torch_tracker is not None and keras.backend.backend() == "torch":
            self._flops_info["per_step"] = self._torch_tracker.per_signature()
        metrics = self._engine.epoch_end(logs or {})
        if metrics is not None and self._backup_dir is not None:
            self._engine.guard("checkpoint", self._save_state)
        if logs is not None:  # every key, every epoch: CSVLogger fixes its columns at epoch 0
            logs.update(metrics or nan_metrics())
        if self._engine.should_stop and self.model is not None:
            self.model.stop_training = True

    def _resume(self, backup_dir: str) -> None:
        try:
            state = _restored_state(backup_dir)
            if state is not None:
                self._engine.session.load_state_dict(state)
        except (OSError, ValueError, KeyError, TypeError) as err:  # an unreadable state file: start afresh
            self._engine.restart()
            warnings.warn(
                f"green_callbacks: the totals saved in {backup_dir} could not be read ({type(err).__name__}: {err}); "
                "this fit starts new totals and a new run record.",
                UserWarning,
                stacklevel=3,
            )

    def _save_state(self) -> None:
        """Keep the session's totals beside ``BackupAndRestore``'s backup, for a resumed fit to continue them."""
        if self._backup_dir is not None and self._engine.session.dist.is_global_zero:
            write_json_atomic(os.path.join(self._backup_dir, _STATE_FILE), self._engine.session.state_dict())

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
    def _wrap(self, model: Any, attr: str, kind: str) -> None:
        original = getattr(model, attr, None)
        if original is None or getattr(original, "_green_callback", None) is not None:
            return
        ref, model_ref = weakref.ref(self), weakref.ref(model)  # (the model holds this wrapper: no strong cycle)
        backend = keras.backend.backend()

        def watched(*args: Any, **kwargs: Any) -> Any:
            this = ref()
            try:
                if this is not None:
                    args = this._note_batches(backend, kind, args, model_ref())
                out = original(*args, **kwargs)
            except BaseException as err:
                if this is not None:
                    this._engine.flops.discard()
                    if type(err).__name__ not in _END_OF_DATA:
                        this._unwrap()
                        this._engine.fail(err)
                raise
            if this is not None:
                this._engine.flops.end()  # the call ran the step (forward, backward, optimizer's elementwise update)
            return out

        watched._green_callback = ref  # type: ignore[attr-defined]
        setattr(model, attr, watched)
        self._wrapped.append((model, attr, original))

    def _note_batches(self, backend: str, kind: str, args: tuple[Any, ...], model: Any) -> tuple[Any, ...]:
        if backend == "torch":  # train_function(data): data[0] is the batch; the call runs the step
            batch = args[0][0]  # (the model is the one whose function runs: Callback.model costs an import a call)
            self._engine.flops.begin(kind, model, batch, counted=batch if kind == "train" else None)
        elif not (self._engine.in_epoch and self._engine.session.flops_available):
            return args
        elif backend == "jax":  # train_function(state, iterator): the batches come out of the iterator
            return (args[0], _PeekingIterator(args[1], lambda data: self._note_jax(kind, data)), *args[2:])
        elif backend == "tensorflow":  # train_function(iterator) runs inside tf.function: note the call only
            self._steps.add(kind, None, 1)
        return args

    def _note_jax(self, kind: str, data: Any) -> None:
        self._steps.add(kind, data)
        if kind == "train":
            self._engine.add_batch(data)

    def _unwrap(self) -> None:
        self._patches.restore()
        for model, attr, original in reversed(self._wrapped):
            if getattr(getattr(model, attr, None), "_green_callback", None) is not None:
                setattr(model, attr, original)
        self._wrapped = []

    # ------------------------------------------------------------------ FLOPs of the jax and tensorflow backends
    def _add_noted_flops(self) -> None:
        """Steps noted by signature (jax, tensorflow), counted at the epoch's end by the backend's engine."""
        backend = keras.backend.backend()
        totals = {"train": 0.0, "eval": 0.0}
        for (kind, signature), count in self._steps.counts.items():
            example = self._steps.examples.get((kind, signature))
            for batch, steps in _batches(backend, example, count, kind, self._epoch_iterator, self.model):
                totals[kind] += steps * self._backend_step_flops(backend, kind, batch)
        self._steps.reset()
        self._engine.flops.add(train=totals["train"], eval=totals["eval"])

    def _backend_step_flops(self, backend: str, kind: str, batch: Any) -> float:
        cache = self._flops_info.setdefault("per_step", {})
        key = f"{kind} {_describe(batch)}"
        if key not in cache:
            from green_callbacks.core.flops import keras_backends

            if backend == "jax":
                result = keras_backends.count_jax_step(self.model, batch, kind)  # type: ignore[arg-type]
            else:
                result = keras_backends.count_tf_step(self.model, batch, kind)  # type: ignore[arg-type]
            cache[key] = {"flops": result.flops, "matmul_flops": result.matmul_flops}
        return float(cache[key]["flops"])


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


_FLOP_METHODS: dict[str, dict[str, str]] = {
    "torch": {"method": "torch-flop-counter (green_callbacks.core.flops, observed on the real step)",
              "convention": "matmul-only"},
    "jax": {"method": "xla-cost-analysis", "convention": "all-ops"},
    "tensorflow": {"method": "tf-profiler", "convention": "all-ops (ops with a registered FLOP statistic)"},
}


def _describe(batch: Any) -> str:
    def shapes(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [shapes(v) for v in value]
        if isinstance(value, dict):
            return {k: shapes(v) for k, v in value.items()}
        return list(getattr(value, "shape", ()))

    return str(shapes(batch))


def _batches(
    backend: str, example: Any, count: int, kind: str, epoch_iterator: Any, model: Any
) -> list[tuple[Any, int]]:
    """(abstract batch, number of steps) pairs for one noted signature, ready for the backend's counter."""
    if backend == "jax":
        import jax

        abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(tuple(a.shape), a.dtype), example)
        return [(abstract, count)]
    return _tf_batches(count, kind, epoch_iterator, model)


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

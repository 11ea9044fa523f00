"""PyTorch Lightning adapter: ``Trainer(callbacks=[GreenCallback()])``.

The callback only maps Lightning's hooks to calls of its :class:`~green_callbacks.core.engine.Engine` and logs what
it returns; every number comes from the engine. Hook → engine call:

========================================  =================================================================
``setup("fit")``                          ``begin_fit`` (a fresh session with the trainer's ranks)
``load_state_dict`` / ``state_dict``      resume: the session's totals and convergence go on
``on_fit_start``                          ``start`` (log dir, hparams, device, framework monitor)
``on_train_epoch_start``                  ``epoch_start``
``on_train_batch_start`` … ``_end``       ``flops.begin("train", …, counted=batch)`` … ``end()`` (a watched step
                                          pauses at ``on_before_optimizer_step``, attached for that step only;
                                          a skipped one: ``discard()``)
``on_validation_start/batch_*/end``       ``eval_start`` / ``flops.begin("eval", …)``, ``end()`` / ``eval_end``
``on_train_epoch_end``                    ``epoch_end`` → every logger, ``trainer.callback_metrics`` (monitors),
                                          the progress bar
``teardown`` / ``on_exception``           ``finish("completed")`` / ``fail(exception)``
``on_{test,validation,predict}_start``    outside ``fit``: ``phases.begin("test" | "validate" | "predict")``
``on_…_batch_start`` / ``on_…_batch_end`` ``phases.batch_start(batch, pl_module)`` / ``phases.batch_end()``
                                          (the first batch of each shape is watched for FLOPs)
``on_{test,validation}_epoch_end``        ``phases.end`` → every logger (not ``trainer.test()``'s results)
``on_predict_end``                        ``phases.end`` (Lightning logs no predictions: ``last_phase``, record)
========================================  =================================================================

Works with both ``lightning.pytorch`` and ``pytorch_lightning``: Lightning calls hooks by name and the adapter
uses no ``isinstance`` check against one namespace, so either Trainer accepts the callback.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from typing import Any

from green_callbacks._adapter import GreenCallbackBase, progress_bar_metrics
from green_callbacks.core.budget import plan_epochs_from_batches
from green_callbacks.core.devices import torch_devices
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.patches import nan_tolerant


def _import_lightning() -> Any:
    """The Lightning namespace the user already imported (``lightning.pytorch`` if both or neither), else the other."""
    names = ["lightning.pytorch", "pytorch_lightning"]
    if "pytorch_lightning" in sys.modules and "lightning.pytorch" not in sys.modules:
        names.reverse()
    for name in names:
        try:
            return __import__(name, fromlist=["Callback"])
        except ImportError:
            continue
    raise ImportError(
        "green_callbacks.lightning needs PyTorch Lightning (lightning or pytorch-lightning); "
        'install it with: pip install "green-callbacks[lightning]"'
    )


_pl = _import_lightning()
import torch  # noqa: E402  (after the Lightning check, whose error message is the useful one)

__all__ = ["GreenCallback"]

_SYNC_HINT = r".*self\.log\('(green/[^']*|Wh|gCO2e)', \.\.\., sync_dist=True\)"  # Lightning's hint, for our keys
_STATE_KEY_FIELDS = ("monitor", "mode", "target", "country", "region", "carbon_intensity", "pue", "output_dir")


class GreenCallback(GreenCallbackBase, _pl.Callback):
    """Measures energy, emissions, FLOPs and convergence of a Lightning ``fit`` and logs them every epoch.

    Takes the keyword arguments of :class:`~green_callbacks._adapter.GreenCallbackBase` (``country=``,
    ``carbon_intensity=``, ``pue=``, ``monitor=``, ``output_dir=``, …). Every training epoch the ``green/...``
    metrics go where ``self.log`` in ``on_train_epoch_end`` would put them: to every logger (at the step of the
    epoch's own metrics), ``trainer.logged_metrics`` and ``trainer.callback_metrics`` (``EarlyStopping`` /
    ``ModelCheckpoint`` can monitor them) and the progress bar. The run record is written to ``trainer.log_dir``
    unless ``output_dir=``.
    """

    framework = "lightning"

    #: Checkpoint key: two callbacks with different settings (e.g. two grids) keep separate states. A plain attribute
    #: set once (the settings are frozen), not Lightning's property: Lightning reads it at every hook call.
    state_key: str = ""

    def _init_adapter(self) -> None:
        self.state_key = self._generate_state_key(**{k: getattr(self.config, k) for k in _STATE_KEY_FIELDS})

    # ------------------------------------------------------------------ start, resume
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        self._engine.begin_fit(DistInfo(trainer.global_rank, trainer.local_rank, trainer.world_size))
        from green_callbacks.core.flops import FlopTracker

        self._engine.flops.use(FlopTracker())  # one per fit: it owns every FLOP cache
        if trainer.world_size > 1:  # our values are already summed over ranks: Lightning's sync_dist hint is moot
            warnings.filterwarnings("ignore", message=_SYNC_HINT, category=Warning)

    def state_dict(self) -> dict[str, Any]:
        return self._engine.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._engine.load_state_dict(state_dict)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        for logger in trainer.loggers:  # Lightning calls them outside this callback: a refusal of NaN must not end
            name = str(getattr(logger, "name", None) or type(logger).__name__)
            self._patches.wrap(logger, "log_metrics", lambda log, name=name: nan_tolerant(log, name))
        monitor, mode = _framework_monitor(trainer)
        self._engine.start(
            output_dir=trainer.log_dir or trainer.default_root_dir,  # log_dir broadcasts: every rank calls it
            hyperparameters=dict(getattr(pl_module, "hparams", {}) or {}),
            model=pl_module,
            **torch_devices(trainer.strategy.root_device).start_kwargs(),
            monitor=monitor,
            mode=mode,
            extra={"lightning": {"strategy": type(trainer.strategy).__name__, "precision": str(trainer.precision),
                                 "num_nodes": trainer.num_nodes, "devices_per_node": trainer.num_devices}},
            handle_signals=False,  # Lightning turns SIGTERM into SIGTERMException -> on_exception
            compute_dtype=str(trainer.precision),
        )

    # ------------------------------------------------------------------ epochs
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._engine.set_planned_epochs(plan_epochs_from_batches(
            trainer.max_epochs, trainer.max_steps, trainer.num_training_batches, trainer.accumulate_grad_batches))
        self._engine.epoch_start(trainer.current_epoch, pl_module)

    # FLOPs: the first real step of each batch signature is watched by the counter (nothing re-run; docs/flops.md)
    def _flops_begin(self, kind: str, pl_module: Any, batch: Any, *index: int, counted: Any = None) -> None:
        """The step's FLOPs (and, with ``counted``, its samples) before it runs; see :meth:`FlopTap.begin`."""
        flops = self._engine.flops
        if flops.active and not pl_module.automatic_optimization:  # the step calls the optimizers itself
            flops.use(None)
            self._engine.unavailable("flops", "FLOPs are not counted under manual optimization; they are reported "
                                     "unavailable (NaN).")
        if not flops.active or not getattr(pl_module, "_compiler_ctx", None):
            if flops.begin(kind, pl_module, batch, counted=counted) and kind == "train":
                self._watch_backward("on_before_optimizer_step")
            return
        # fit(torch.compile(model)): compiled kernels hide their ops from an observing counter, so a new signature is
        # counted on a meta copy of the uncompiled module (trainer detached: self.log is a no-op there)
        name = "training_step" if kind == "train" else "validation_step"
        extra = _index_args(getattr(pl_module, name), index)
        trainer = pl_module._trainer
        pl_module.trainer = None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*`self.trainer` reference is not registered")
                flops.begin(kind, pl_module, batch, lambda module, b: getattr(module, name)(b, *extra), counted)
        finally:
            pl_module.trainer = trainer

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        flops = self._engine.flops
        if flops.active and (not pl_module.automatic_optimization or getattr(pl_module, "_compiler_ctx", None)):
            self._flops_begin("train", pl_module, batch, batch_idx, counted=batch)
        elif flops.begin("train", pl_module, batch, counted=batch):  # the common case, on every step: one call
            self._watch_backward("on_before_optimizer_step")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if outputs is None or (not outputs and pl_module.automatic_optimization):
            self._engine.flops.discard()  # training_step returned None: Lightning skipped backward and optimizer
        else:
            self._engine.flops.end()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if _stage(trainer) == "validate":
            self._phase_begin(trainer, "validate")
        elif not trainer.sanity_checking:
            self._engine.eval_start()

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._engine.phases.batch_start(batch, _phase_model(pl_module))
        if not trainer.sanity_checking:
            self._flops_begin("eval", pl_module, batch, batch_idx, dataloader_idx)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._engine.phases.running:
            self._engine.phases.batch_end()
        else:
            self._engine.flops.end()

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._phase_end(trainer, log=True)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._engine.eval_end()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        metrics = self._engine.epoch_end(trainer.callback_metrics)  # a collective under DDP: every rank gets here
        if metrics is None:
            return
        self._engine.guard("logging", _log_epoch, trainer, pl_module, metrics, self.config.console)
        if self._engine.should_stop:
            trainer.should_stop = True

    # ------------------------------------------------------------------ test / validate / predict outside fit
    def _phase_begin(self, trainer: Any, kind: str) -> None:
        self._engine.phases.begin(
            kind,
            output_dir=trainer.log_dir or trainer.default_root_dir,
            **torch_devices(trainer.strategy.root_device).start_kwargs(),
            dist=DistInfo(trainer.global_rank, trainer.local_rank, trainer.world_size),
            extra={"lightning": {"strategy": type(trainer.strategy).__name__, "precision": str(trainer.precision)}},
            handle_signals=False,  # Lightning turns SIGTERM into SIGTERMException -> on_exception
        )

    def _phase_end(self, trainer: Any, *, log: bool) -> None:
        """Close the phase; test / validate send its figures to every logger directly, never through
        ``pl_module.log``: the results ``trainer.test()`` / ``trainer.validate()`` return and print stay the user's
        own (``console="all"`` prints the figures on their own, on rank zero)."""
        phases = self._engine.phases
        if not phases.running:
            return
        metrics = phases.end()
        if metrics and log:
            phases.guard.call("phase logging", _log_phase, trainer, metrics, self.config.console)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._phase_begin(trainer, "test")

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._engine.phases.batch_start(batch, _phase_model(pl_module))

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._engine.phases.batch_end()

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._phase_end(trainer, log=True)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._phase_begin(trainer, "predict")

    def on_predict_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._engine.phases.batch_start(batch, _phase_model(pl_module))

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._engine.phases.batch_end()

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self._phase_end(trainer, log=False)

    # ------------------------------------------------------------------ end
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._patches.restore()
            self._engine.finish("completed", stop_reason=_stop_reason(trainer))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._patches.restore()
        self._engine.phases.fail(exception)
        self._engine.fail(exception)


def _log(pl_module: Any, metrics: dict[str, float], console: str = "compact") -> None:
    """To every logger (float64 CPU tensors: exact values, no device copies; already summed over ranks, so no
    ``sync_dist``), and to the progress bar the running totals (``console="compact"``) or every key (``"all"``)."""
    as_tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in metrics.items()}
    pl_module.log_dict(as_tensors, on_step=False, on_epoch=True, prog_bar=console == "all", sync_dist=False)
    bar = {k: torch.tensor(v, dtype=torch.float64) for k, v in progress_bar_metrics(metrics).items()}
    pl_module.log_dict(bar, on_step=False, on_epoch=True, prog_bar=True, logger=False, sync_dist=False)


def _log_epoch(trainer: Any, pl_module: Any, metrics: dict[str, float], console: str) -> None:
    """An epoch's figures, where ``self.log(..., on_epoch=True)`` in ``on_train_epoch_end`` would put them, at a
    fraction of its cost (~0.1 ms in all instead of ~1 ms per key: ``self.log`` builds an aggregator per key).

    Every logger gets one ``log_metrics`` call (then ``save()``) at the step and with the ``epoch`` key Lightning
    gives its own epoch-end metrics; ``trainer.logged_metrics`` and ``trainer.callback_metrics`` (what EarlyStopping
    and ModelCheckpoint monitor) get float64 tensors, the progress bar the running totals (``console="compact"``) or
    every key (``"all"``). A Lightning without the trainer internals this needs gets :func:`_log`. The values are
    already summed over ranks; loggers write on rank 0 only, as always.
    """
    connector = getattr(trainer, "_logger_connector", None)
    stepped = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "_batches_that_stepped", None)
    names = ("_callback_metrics", "_logged_metrics", "_progress_bar_metrics")
    if not isinstance(stepped, int) or not all(isinstance(getattr(connector, n, None), dict) for n in names):
        _log(pl_module, metrics, console)
        return
    bar = progress_bar_metrics(metrics)
    if console == "all":
        bar = {**metrics, **bar}
    shown = {**metrics, **bar}
    # one tensor for all the values, one 0-dim view each (a tensor per key costs ~4 µs, ~0.1 ms an epoch)
    tensors = dict(zip(shown, torch.tensor(list(shown.values()), dtype=torch.float64).unbind(), strict=True))
    connector._callback_metrics.update(tensors)
    connector._logged_metrics.update({k: tensors[k] for k in metrics})  # also with Trainer(logger=False)
    connector._progress_bar_metrics.update(bar)
    # Lightning logs epoch-end metrics at the last optimizer step of the epoch (its fit loop steps back by one)
    scalars = {**metrics, "epoch": trainer.current_epoch}
    for logger in trainer.loggers:
        logger.log_metrics(metrics=scalars, step=stepped - 1)
        logger.save()


def _log_phase(trainer: Any, metrics: dict[str, float], console: str) -> None:
    """A test / validate phase's figures to every logger (rank zero writes, as always), at the trainer's global
    step; nothing into ``self.log``'s results, which ``trainer.test()`` returns and prints. With ``console="all"``
    they are printed on rank zero, as one table of their own (``"compact"``: nothing is printed)."""
    for logger in trainer.loggers:  # a logger that refuses NaN (unavailable) gets the call without those keys
        name = str(getattr(logger, "name", None) or type(logger).__name__)
        nan_tolerant(logger.log_metrics, name)(metrics=dict(metrics), step=trainer.global_step)
        logger.save()
    if console == "all" and trainer.is_global_zero:
        width = max(map(len, metrics))
        print("\n".join(f"{key:<{width}}  {value:.6g}" for key, value in metrics.items()))


def _phase_model(pl_module: Any) -> Any:
    """The module whose phase FLOPs are observed; ``None`` for a compiled one (inductor's fused kernels hide their
    ops from an observing counter: its phase FLOPs are unavailable rather than wrong)."""
    return None if getattr(pl_module, "_compiler_ctx", None) else pl_module


def _stage(trainer: Any) -> str | None:
    """The user-facing call running now: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return None if fn is None else str(getattr(fn, "value", fn))


def _stop_reason(trainer: Any) -> str | None:
    """Why the trainer stopped early (its EarlyStopping's message), when it did."""
    if not trainer.should_stop:
        return None
    reasons = [getattr(cb, "stopping_reason_message", None) for cb in trainer.early_stopping_callbacks]
    return next((r for r in reasons if r), "trainer.should_stop")


def _framework_monitor(trainer: Any) -> tuple[str | None, str | None]:
    """The metric of the trainer's EarlyStopping, else of its ModelCheckpoint (``green/`` keys are skipped)."""
    for cb in [*trainer.early_stopping_callbacks, *trainer.checkpoint_callbacks]:
        monitor = getattr(cb, "monitor", None)
        if monitor and not monitor.startswith("green/"):
            return monitor, getattr(cb, "mode", None)
    return None, None


def _index_args(step: Any, index: tuple[int, ...]) -> tuple[int, ...]:
    """As many of ``(batch_idx, dataloader_idx)`` as the step takes, passed positionally as Lightning does."""
    params = inspect.signature(step).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return index[:1]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return index[: max(len(positional) - 1, 0)]

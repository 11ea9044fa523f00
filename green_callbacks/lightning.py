"""PyTorch Lightning adapter: ``Trainer(callbacks=[GreenCallback()])``.

The callback only reads the trainer's state, calls the :class:`~green_callbacks.core.session.Session` and logs what
it returns; every number comes from the session. Hook → session call:

========================================  =================================================================
``setup("fit")``                          a fresh session with the trainer's ranks
``load_state_dict`` / ``state_dict``      resume: the session's totals and convergence go on
``on_fit_start``                          ``session.start`` (log dir, hparams, device, framework monitor)
``on_train_epoch_start``                  ``session.epoch_start``
``on_train_batch_end``                    ``session.add_flops(train=…)`` (cached count per batch signature)
``on_validation_start/batch_end/end``     ``session.eval_start`` / ``add_flops(eval=…)`` / ``eval_end``
``on_train_epoch_end``                    ``session.epoch_end`` → ``pl_module.log_dict`` (all loggers, monitors)
``teardown`` / ``on_exception``           ``session.finish("completed" | "interrupted" | "failed")``
========================================  =================================================================

Works with both ``lightning.pytorch`` and ``pytorch_lightning``: Lightning calls hooks by name and the adapter
uses no ``isinstance`` check against one namespace, so either Trainer accepts the callback.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
from typing import Any

from green_callbacks._adapter import GreenCallbackBase, progress_bar_metrics
from green_callbacks._phases import PhaseMixin
from green_callbacks.core.budget import plan_epochs
from green_callbacks.core.distributed import DistInfo


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

_INTERRUPTS = ("KeyboardInterrupt", "SIGTERMException")
_SYNC_HINT = r".*self\.log\('(green/[^']*|Wh|gCO2e)', \.\.\., sync_dist=True\)"  # Lightning's hint, for our keys
_STATE_KEY_FIELDS = ("monitor", "mode", "target", "country", "region", "carbon_intensity", "pue", "output_dir")


class GreenCallback(_pl.Callback, GreenCallbackBase, PhaseMixin):
    """Measures energy, emissions, FLOPs and convergence of a Lightning ``fit`` and logs them every epoch.

    Takes the keyword arguments of :class:`~green_callbacks._adapter.GreenCallbackBase` (``country=``,
    ``carbon_intensity=``, ``pue=``, ``monitor=``, ``output_dir=``, …). Every training epoch the ``green/...``
    metrics go through ``pl_module.log_dict``: every logger receives them and ``EarlyStopping`` /
    ``ModelCheckpoint`` can monitor them. The run record is written to ``trainer.log_dir`` unless ``output_dir=``.
    """

    framework = "lightning"

    def __init__(self, **kwargs: Any) -> None:
        _pl.Callback.__init__(self)
        GreenCallbackBase.__init__(self, **kwargs)
        self._flop_counter: _FlopCounter | None = None
        self._phase_init()
        self._phase_flop_counter: dict[str, Any] = {}
        # Lightning reads state_key at every hook call; the settings are frozen, so it is computed once
        self._state_key = self._generate_state_key(**{k: getattr(self.config, k) for k in _STATE_KEY_FIELDS})

    @property
    def state_key(self) -> str:
        """Checkpoint key: two callbacks with different settings (e.g. two grids) keep separate states."""
        return self._state_key

    def _guard(self, part: str, fn: Any, *args: Any) -> Any:
        return self.session.guard.call(part, fn, *args)

    # ------------------------------------------------------------------ start, resume
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._guard("setup", self._setup, trainer)

    def _setup(self, trainer: Any) -> None:
        dist = DistInfo(rank=trainer.global_rank, local_rank=trainer.local_rank, world_size=trainer.world_size)
        self.session = self._new_session(dist)
        self._flop_counter = _FlopCounter(distributed=trainer.world_size > 1)
        if trainer.world_size > 1:  # our values are already summed over ranks: Lightning's sync_dist hint is moot
            warnings.filterwarnings("ignore", message=_SYNC_HINT, category=Warning)

    def state_dict(self) -> dict[str, Any]:
        return self._guard("checkpoint", self.session.state_dict) or {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._guard("checkpoint", self.session.load_state_dict, state_dict)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._guard("start", self._start, trainer, pl_module)

    def _start(self, trainer: Any, pl_module: Any) -> None:
        monitor, mode = _framework_monitor(trainer)
        device = trainer.strategy.root_device
        self.session.start(
            output_dir=trainer.log_dir or trainer.default_root_dir,  # log_dir broadcasts: every rank calls it
            hyperparameters=dict(getattr(pl_module, "hparams", {}) or {}),
            device_indices=[device.index or 0] if device.type == "cuda" else [],
            monitor=monitor,
            mode=mode,
            extra={"lightning": {"strategy": type(trainer.strategy).__name__, "precision": str(trainer.precision),
                                 "num_nodes": trainer.num_nodes, "devices_per_node": trainer.num_devices}},
            handle_signals=False,  # Lightning turns SIGTERM into SIGTERMException -> on_exception
        )

    # ------------------------------------------------------------------ epochs
    def _running(self) -> bool:
        return self.session.status == "running"

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self._running():
            self._guard("budget", self._plan, trainer)
            self._guard("epoch", self.session.epoch_start, trainer.current_epoch)

    def _plan(self, trainer: Any) -> None:
        """``max_epochs``, or fewer when ``max_steps`` ends the run first (batches are known only from here on)."""
        batches = trainer.num_training_batches
        steps = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else None
        self.session.set_planned_epochs(plan_epochs(trainer.max_epochs, trainer.max_steps, steps))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.session.in_epoch and outputs is not None:  # None: the step was skipped, no backward ran
            self._guard("flops", self._add_flops, pl_module, batch, "train", batch_idx)

    def _in_fit_validation(self, trainer: Any) -> bool:
        return self.session.in_epoch and not trainer.sanity_checking

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._in_fit_validation(trainer):
            self._guard("eval", self.session.eval_start)
        elif _stage(trainer) == "validate":
            self._phase_start(trainer, "validate")

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.phase_running:
            self._phase_batch_start(batch)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self.phase_running:
            self._phase_batch_end()
        elif self._in_fit_validation(trainer):
            self._guard("flops", self._add_flops, pl_module, batch, "eval", batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._phase_log_end(pl_module)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._in_fit_validation(trainer):
            self._guard("eval", self.session.eval_end)

    def _add_flops(self, pl_module: Any, batch: Any, kind: str, *index: int) -> None:
        if self._flop_counter is None:
            return
        if not pl_module.automatic_optimization:  # the step calls the optimizers itself: not replayable
            self._flop_counter = None
            warnings.warn("green_callbacks: FLOPs are not counted under manual optimization; they are reported "
                          "unavailable (NaN).", UserWarning, stacklevel=2)
            return
        self.session.add_flops(**{kind: self._flop_counter.count(pl_module, batch, kind, *index)})

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.session.in_epoch:
            self._guard("epoch", self._epoch_end, trainer, pl_module)

    def _epoch_end(self, trainer: Any, pl_module: Any) -> None:
        scalars = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.numel(torch.as_tensor(v)) == 1}
        metrics = self.session.epoch_end(scalars)  # a collective under DDP: every rank gets here
        self.last_metrics = metrics
        # float64 CPU tensors: exact values, no device copies; already summed over ranks, so no sync_dist
        as_tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in metrics.items()}
        pl_module.log_dict(as_tensors, on_step=False, on_epoch=True, sync_dist=False)
        bar = {k: torch.tensor(v, dtype=torch.float64) for k, v in progress_bar_metrics(metrics).items()}
        pl_module.log_dict(bar, on_step=False, on_epoch=True, prog_bar=True, logger=False, sync_dist=False)
        if self.session.should_stop:
            trainer.should_stop = True

    # ------------------------------------------------------------------ test / validate / predict outside fit
    def _phase_start(self, trainer: Any, kind: str) -> None:
        device = trainer.strategy.root_device
        self._phase_begin(
            kind,
            output_dir=trainer.log_dir or trainer.default_root_dir,
            device_indices=[device.index or 0] if device.type == "cuda" else [],
            dist=DistInfo(rank=trainer.global_rank, local_rank=trainer.local_rank, world_size=trainer.world_size),
            extra={"lightning": {"strategy": type(trainer.strategy).__name__, "precision": str(trainer.precision)}},
        )

    def _phase_close(self, pl_module: Any) -> dict[str, float] | None:
        phase = self._phase
        if phase is None or phase.status != "running":
            return None
        step = {"test": "test_step", "validate": "validation_step", "predict": "predict_step"}[phase.kind]
        return self._phase_finish(lambda example: self._phase_flops(pl_module, step, example))

    def _phase_log_end(self, pl_module: Any) -> None:
        """test / validate: close the phase at its epoch end, where ``pl_module.log`` still reaches every logger
        and the results ``trainer.test()`` / ``trainer.validate()`` return."""
        metrics = self._phase_close(pl_module)
        if metrics:
            as_tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in metrics.items()}
            pl_module.log_dict(as_tensors, on_step=False, on_epoch=True, sync_dist=False)

    def _phase_flops(self, pl_module: Any, step: str, batch: Any) -> float | None:
        """Forward FLOPs of one ``<step>(batch, …)`` on a meta copy (the trainer detached, so ``self.log`` in the
        step is a no-op); one counter per callback, so repeated phases hit its cache."""
        if not self.session.guard.enabled("flops"):
            return None
        counter = self._phase_flop_counter.get(step)
        if counter is None:
            from green_callbacks.core.flops import TorchFlopCounter

            counter = self._phase_flop_counter[step] = TorchFlopCounter(fallback_to_real_step=False)
        extra = _index_args(getattr(pl_module, step), (0, 0))
        trainer = pl_module._trainer
        pl_module.trainer = None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*`self.trainer` reference is not registered")
                forward = lambda module, b: getattr(module, step)(b, *extra)  # noqa: E731
                return float(counter.count_eval_step(pl_module, forward, batch).flops)
        finally:
            pl_module.trainer = trainer

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._phase_start(trainer, "test")

    def on_test_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._phase_batch_start(batch)

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._phase_batch_end()

    def on_test_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._phase_log_end(pl_module)

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self._phase_start(trainer, "predict")

    def on_predict_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._phase_batch_start(batch)

    def on_predict_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._phase_batch_end()

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        """Lightning does not log predictions: the figures are in ``callback.last_phase`` and the record."""
        self._phase_close(pl_module)

    # ------------------------------------------------------------------ end
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self._running():
            self._guard("finish", self._finish_completed, trainer)

    def _finish_completed(self, trainer: Any) -> None:
        if trainer.should_stop and self.session.stop_reason is None:
            reasons = [getattr(cb, "stopping_reason_message", None) for cb in trainer.early_stopping_callbacks]
            self.session.stop_reason = next((r for r in reasons if r), "trainer.should_stop")
        self.session.finish("completed")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.phase_running:
            status = "interrupted" if type(exception).__name__ in _INTERRUPTS else "failed"
            self._phase_abort(status, exception)
        if self._running():
            status = "interrupted" if type(exception).__name__ in _INTERRUPTS else "failed"
            self._guard("finish", self.session.finish, status, exception)


def _stage(trainer: Any) -> str | None:
    """The user-facing call running now: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return None if fn is None else str(getattr(fn, "value", fn))


def _framework_monitor(trainer: Any) -> tuple[str | None, str | None]:
    """The metric of the trainer's EarlyStopping, else of its ModelCheckpoint (``green/`` keys are skipped)."""
    for cb in [*trainer.early_stopping_callbacks, *trainer.checkpoint_callbacks]:
        monitor = getattr(cb, "monitor", None)
        if monitor and not monitor.startswith("green/"):
            return monitor, getattr(cb, "mode", None)
    return None, None


class _FlopCounter:
    """FLOPs of the module's ``training_step`` (forward + backward) or ``validation_step`` (forward) on ``batch``.

    The engine runs the step on a meta-device copy, once per batch signature (cached). The trainer is detached
    meanwhile, so ``self.log`` in the step is a no-op; a real-step fallback (when the meta run fails, e.g. on
    ``.item()``) is allowed only in a single process, where it cannot touch a collective.
    """

    def __init__(self, *, distributed: bool = False) -> None:
        from green_callbacks.core.flops import TorchFlopCounter

        self.engine = TorchFlopCounter(fallback_to_real_step=not distributed)

    def count(self, pl_module: Any, batch: Any, kind: str, *index: int) -> float:
        hit = self.engine.cached(kind, pl_module, batch)  # the common path: no preparation needed
        if hit is not None:
            return float(hit.flops)
        name = "training_step" if kind == "train" else "validation_step"
        extra = _index_args(getattr(pl_module, name), index)
        count = self.engine.count_train_step if kind == "train" else self.engine.count_eval_step
        trainer = pl_module._trainer
        pl_module.trainer = None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*`self.trainer` reference is not registered")
                return float(count(pl_module, lambda module, b: getattr(module, name)(b, *extra), batch).flops)
        finally:
            pl_module.trainer = trainer


def _index_args(step: Any, index: tuple[int, ...]) -> tuple[int, ...]:
    """As many of ``(batch_idx, dataloader_idx)`` as the step takes, passed positionally as Lightning does."""
    params = inspect.signature(step).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return index[:1]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return index[: max(len(positional) - 1, 0)]

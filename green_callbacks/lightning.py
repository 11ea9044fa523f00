"""PyTorch Lightning adapter: ``Trainer(callbacks=[GreenCallback()])``.

The callback only reads the trainer's state, calls the :class:`~green_callbacks.core.session.Session` and logs what
it returns; every number comes from the session. Hook → session call:

========================================  =================================================================
``setup("fit")``                          a fresh session with the trainer's ranks
``load_state_dict`` / ``state_dict``      resume: the session's totals and convergence go on
``on_fit_start``                          ``session.start`` (log dir, hparams, device, framework monitor)
``on_train_epoch_start``                  ``session.epoch_start``
``on_train_batch_start`` … ``_end``       ``flops.begin("train", …)`` … ``end()`` (or ``on_before_optimizer_step``)
``on_validation_start/batch_*/end``       ``session.eval_start`` / ``flops.begin("eval", …)``, ``end()`` / ``eval_end``
``on_train_epoch_end``                    ``session.add_flops`` + ``session.epoch_end`` → ``pl_module.log_dict``
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


class GreenCallback(_pl.Callback, GreenCallbackBase):
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
        self._flops: Any = None  # core.flops.FlopTracker, one per fit
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
        from green_callbacks.core.flops import FlopTracker

        self._flops = FlopTracker()
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
            if self._flops is not None:
                self._guard("flops", self._flops.refresh, pl_module)

    def _plan(self, trainer: Any) -> None:
        """``max_epochs``, or fewer when ``max_steps`` ends the run first (batches are known only from here on)."""
        batches = trainer.num_training_batches
        steps = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else None
        self.session.set_planned_epochs(plan_epochs(trainer.max_epochs, trainer.max_steps, steps))

    # FLOPs: the tracker watches the first real step of each batch signature (nothing is re-run; docs/flops.md)
    def _counting(self, pl_module: Any) -> bool:
        if self._flops is None or not self.session.guard.enabled("flops"):
            return False
        if not pl_module.automatic_optimization:  # the step calls the optimizers itself: its FLOPs include theirs
            self._flops = None
            warnings.warn("green_callbacks: FLOPs are not counted under manual optimization; they are reported "
                          "unavailable (NaN).", UserWarning, stacklevel=3)
            return False
        return True

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.session.in_epoch and self._counting(pl_module):
            self._guard("flops", self._begin, pl_module, batch, "train", batch_idx)

    def _begin(self, pl_module: Any, batch: Any, kind: str, *index: int) -> None:
        if not getattr(pl_module, "_compiler_ctx", None):
            self._flops.begin(kind, pl_module, batch)
            return
        # fit(torch.compile(model)): inductor's fused kernels hide ops from an observing counter, so a new signature
        # is counted on a meta copy of the uncompiled module (trainer detached: self.log is a no-op there)
        name = "training_step" if kind == "train" else "validation_step"
        extra = _index_args(getattr(pl_module, name), index)
        trainer = pl_module._trainer
        pl_module.trainer = None
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*`self.trainer` reference is not registered")
                self._flops.begin(kind, pl_module, batch, lambda module, b: getattr(module, name)(b, *extra))
        finally:
            pl_module.trainer = trainer

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self._flops is not None and self._flops.in_step:  # backward done: the optimizer's own work is not counted
            self._guard("flops", self._flops.end)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._flops is not None and self._flops.in_step:
            if outputs is None:  # the step was skipped, no backward ran
                self._flops.discard()
            else:
                self._guard("flops", self._flops.end)

    def _in_fit_validation(self, trainer: Any) -> bool:
        return self.session.in_epoch and not trainer.sanity_checking

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._in_fit_validation(trainer):
            self._guard("eval", self.session.eval_start)

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._in_fit_validation(trainer) and self._counting(pl_module):
            self._guard("flops", self._begin, pl_module, batch, "eval", batch_idx, dataloader_idx)

    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._flops is not None and self._flops.in_step:
            self._guard("flops", self._flops.end)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._in_fit_validation(trainer):
            self._guard("eval", self.session.eval_end)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.session.in_epoch:
            self._guard("epoch", self._epoch_end, trainer, pl_module)

    def _epoch_end(self, trainer: Any, pl_module: Any) -> None:
        scalars = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.numel(torch.as_tensor(v)) == 1}
        if self._flops is not None and self.session.guard.enabled("flops"):
            flops = self._flops.take_epoch()
            self.session.add_flops(train=flops.train_flops, eval=flops.eval_flops)
            self.session.info["flops"] = self._flops.info()  # how they were counted, into the run record
        metrics = self.session.epoch_end(scalars)  # a collective under DDP: every rank gets here
        self.last_metrics = metrics
        # float64 CPU tensors: exact values, no device copies; already summed over ranks, so no sync_dist
        as_tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in metrics.items()}
        pl_module.log_dict(as_tensors, on_step=False, on_epoch=True, sync_dist=False)
        bar = {k: torch.tensor(v, dtype=torch.float64) for k, v in progress_bar_metrics(metrics).items()}
        pl_module.log_dict(bar, on_step=False, on_epoch=True, prog_bar=True, logger=False, sync_dist=False)
        if self.session.should_stop:
            trainer.should_stop = True

    # ------------------------------------------------------------------ end
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._flops is not None:
            self._flops.discard()  # a step that never ended (an exception): leave no counter behind
        if stage == "fit" and self._running():
            self._guard("finish", self._finish_completed, trainer)

    def _finish_completed(self, trainer: Any) -> None:
        if trainer.should_stop and self.session.stop_reason is None:
            reasons = [getattr(cb, "stopping_reason_message", None) for cb in trainer.early_stopping_callbacks]
            self.session.stop_reason = next((r for r in reasons if r), "trainer.should_stop")
        self.session.finish("completed")

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self._flops is not None:
            self._flops.discard()
            if self.session.in_epoch and self.session.guard.enabled("flops"):  # the partial epoch keeps its FLOPs
                flops = self._flops.take_epoch()
                self.session.add_flops(train=flops.train_flops, eval=flops.eval_flops)
        if self._running():
            status = "interrupted" if type(exception).__name__ in _INTERRUPTS else "failed"
            self._guard("finish", self.session.finish, status, exception)


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

"""HuggingFace transformers adapter: ``Trainer(..., callbacks=[GreenCallback()])``.

How the Trainer's events drive the session (see docs/transformers.md for the why):

* ``on_epoch_begin`` opens the session epoch. The Trainer runs its epoch-end log, evaluation and checkpoint *after*
  ``on_epoch_end``, so the epoch is closed at the last of those that precedes the checkpoint: after the evaluation
  (``on_evaluate``) when one follows, else after the epoch-end training log (``on_log``), else in ``on_epoch_end``
  itself. The checkpoint written next therefore already holds this epoch (resume continues the totals).
* Evaluation gets its own window, opened where ``control.should_evaluate`` is set (``on_step_end``/``on_epoch_end``,
  right before the Trainer evaluates) and closed in ``on_evaluate``.
* The ``green/...`` metrics go out through :meth:`transformers.Trainer.log`, the Trainer's own public logging call:
  they reach every ``report_to`` integration *and* ``state.log_history``, whatever the callback order (a key added
  to ``logs`` in ``on_log`` would not: the integrations run before user callbacks). ``control.should_log`` is
  restored around the call so the Trainer's own loss log is never suppressed.
* No event receives the Trainer, so it is found once on the call stack of ``on_init_end``/``on_train_begin`` (the
  Trainer is the caller of its callback handler). Its ``train`` is wrapped to learn of exceptions (the Trainer has
  no exception event): the record then ends ``failed`` or ``interrupted``.
* FLOPs: a forward pre-hook on the model hands each step's inputs to the engine's FLOP wrapper (training when the
  model is in training mode with gradients on, evaluation otherwise). The first step of each new input signature
  is watched by the counter while it runs (nothing is re-run); the step ends at ``on_substep_end`` /
  ``on_pre_optimizer_step`` (training, before the optimizer; that event is attached for a watched step only) or at
  the forward hook (evaluation). With
  ``torch_compile`` new signatures are counted on a meta copy of the uncompiled model and the hooks are kept out
  of dynamo's trace.
* The session's state is kept in the checkpoint (``ExportableState``) and read back on resume, with or without
  ``restore_callback_states_from_checkpoint``.
* ``trainer.evaluate()`` / ``trainer.predict()`` called outside ``train`` are measured as phases
  (``engine.phases``): the Trainer has no event at their start, so both are wrapped like ``train``; each batch runs
  from the model's forward (a pre-hook, which also sees the inputs' ``attention_mask``) to ``on_prediction_step``,
  and the first batch of each input signature is watched for its FLOPs while it runs (nothing re-run).
  ``evaluate``'s figures go through ``Trainer.log`` (``log_history``, ``report_to``; the printed log shows the
  phase's Wh and gCO2e); the dicts ``evaluate`` and ``predict`` return stay the Trainer's own. Every figure is in
  ``callback.last_phase_metrics`` and the phase's record. See docs/inference.md.
"""

from __future__ import annotations

import functools
import math
import uuid
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

from green_callbacks._adapter import METRIC_KEYS, GreenCallbackBase
from green_callbacks.core.devices import Devices, torch_devices
from green_callbacks.core.forward_hooks import hook_forward
from green_callbacks.core.metric_keys import console_view
from green_callbacks.core.patches import InstancePatches, find_in_callers

try:
    import transformers
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState
except ImportError as _err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "green_callbacks.transformers needs HuggingFace transformers: pip install \"green-callbacks[transformers]\""
    ) from _err

__all__ = ["HF_TOTAL_FLOS_KEY", "METRIC_KEYS", "GreenCallback"]

HF_TOTAL_FLOS_KEY = "green/hf_total_flos"
"""The Trainer's own cumulative ``total_flos`` estimate (6 x parameters x input numel), logged beside ours."""

_STATE_ATTRIBUTE = "green_state"
_LIVE: weakref.WeakValueDictionary[str, GreenCallback] = weakref.WeakValueDictionary()


def _find_trainer(max_depth: int = 10) -> Any:
    """The ``transformers.Trainer`` whose callback handler is calling us, found on the call stack (or ``None``)."""
    found = find_in_callers(lambda local: isinstance(local.get("self"), transformers.Trainer), depth=max_depth + 1)
    return None if found is None else found["self"]


def _monitor_of(args: Any) -> tuple[str | None, str | None]:
    """The Trainer's best-model metric (``EarlyStoppingCallback`` requires it too), ``eval_``-prefixed like HF."""
    name = getattr(args, "metric_for_best_model", None)
    if not name:
        return None, None
    if not name.startswith("eval_"):
        name = f"eval_{name}"
    greater = getattr(args, "greater_is_better", None)
    return name, None if greater is None else ("max" if greater else "min")


def _devices(args: Any) -> Devices:
    """The devices this process trains on: ``args.device``, all visible GPUs under ``nn.DataParallel``."""
    return torch_devices(args.device, count=args.n_gpu)


def _compute_dtype(args: Any) -> str:
    """The dtype the Trainer's matmuls run in, for the MFU peak: ``bf16``/``fp16`` mixed precision, else TF32
    when switched on, else FP32."""
    if getattr(args, "bf16", False):
        return "bf16"
    if getattr(args, "fp16", False):
        return "fp16"
    return "tf32" if getattr(args, "tf32", None) else "fp32"


def _hyperparameters(args: Any, state: Any, model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": type(model).__name__ if model is not None else None,
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "num_train_epochs": args.num_train_epochs,
        "max_steps": state.max_steps,
        "world_size": args.world_size,
        "seed": args.seed,
    }
    if model is not None and hasattr(model, "num_parameters"):
        out["num_parameters"] = int(model.num_parameters())
    return out


def _step_loss(model: Any, batch: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
    """Run the model as the Trainer did; its loss, or (labels popped by the Trainer) its first output summed.

    The backward FLOPs through the model do not depend on which scalar it starts from.
    """
    args, kwargs = batch
    output = model(*args, **kwargs)
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if loss is not None:
        return loss
    first = next(iter(output.values())) if isinstance(output, Mapping) else output
    if isinstance(first, (tuple, list)):
        first = first[0]
    return first.float().sum()


def _generated_tokens(trainer: Any, generated: Any, inputs: Any) -> Any:
    """The non-padding tokens a ``Seq2SeqTrainer`` generated for one batch (a device scalar, summed lazily): the
    sequences less the decoder's start token (encoder-decoder) or the prompt (decoder-only), padding not counted."""
    model = trainer.model
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        new = generated[:, 1:]
    else:
        prompt = inputs.get("input_ids") if isinstance(inputs, Mapping) else None
        new = generated[:, prompt.shape[-1]:] if prompt is not None else generated
    pad = getattr(trainer.processing_class, "pad_token_id", None) if trainer.processing_class is not None else None
    if pad is None:
        pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    if pad is None:
        pad = getattr(config, "pad_token_id", None)
    return new.numel() if pad is None else (new != pad).sum()


class GreenCallback(GreenCallbackBase, TrainerCallback, ExportableState):
    """Measures energy, emissions and FLOPs of a ``transformers.Trainer`` run and logs them every epoch.

    ``Trainer(..., callbacks=[GreenCallback()])`` is all it takes; the arguments are those of
    :class:`~green_callbacks._adapter.GreenCallbackBase`. Each epoch (the last, fractional one too) the
    ``green/...`` metrics of :data:`METRIC_KEYS` plus ``green/hf_total_flos`` are logged through
    ``Trainer.log``: they appear in ``trainer.state.log_history`` and in every ``report_to`` integration
    (TensorBoard shows them as ``train/green/...``). The run record is written into ``args.output_dir`` unless
    ``output_dir=`` is given.
    """

    framework = "transformers"

    def _init_adapter(self) -> None:
        self._token = uuid.uuid4().hex
        _LIVE[self._token] = self
        self.green_state: dict[str, Any] | None = None  # set by HF when it rebuilds us from a checkpoint
        self._adopted_by: GreenCallback | None = None
        self._trainer_ref: weakref.ReferenceType[Any] | None = None
        self._hook: Any = None
        self._compiled = False
        self._pending: str | None = None  # "evaluate" | "log": what the open epoch still waits for
        self._epoch_metrics: dict[str, Any] = {}
        self._logging = False
        self._warned_no_trainer = False
        self._hf_total_flos = math.nan
        self._phase_hook: Any = None  # removes the phase's forward hook
        self._phase_counted = False  # its FLOPs are observed
        self._phase_opened: list[bool] = []  # per evaluate()/predict() call in progress: whether it opened the phase
        self._phase_patches = InstancePatches()  # prediction_step, for one phase

    @property
    def last_metrics(self) -> dict[str, float]:
        """The ``green/...`` metrics of the last completed epoch, with the Trainer's own ``green/hf_total_flos``."""
        metrics = self._engine.last_metrics
        return {**metrics, HF_TOTAL_FLOS_KEY: self._hf_total_flos} if metrics else metrics

    # ------------------------------------------------------------------ binding to the Trainer
    @property
    def trainer(self) -> Any:
        """The Trainer this callback logs through (``None`` until found)."""
        return None if self._trainer_ref is None else self._trainer_ref()

    def attach(self, trainer: Any) -> None:
        """Bind to ``trainer`` explicitly (only needed if the automatic look-up failed; it warns when it does)."""
        self._trainer_ref = weakref.ref(trainer)
        self._wrap_train(trainer)
        self._wrap_phases(trainer)
        self._wrap_model_card(trainer)

    def _wrap_train(self, trainer: Any) -> None:
        """Learn of exceptions escaping ``trainer.train`` (the Trainer has no exception event). Kept across fits (it
        must be in place before the next ``train()`` begins); the trainer is held weakly (a trainer kept by a cycle
        keeps its persistent DataLoader workers until the garbage collector runs, and they then time out, 5 s each)."""
        self._patches.around(trainer, "train", after=self._train_returned, failed=self._train_failed, keep=True)

    def _train_failed(self, name: str, err: BaseException) -> None:
        target = self._adopted_by or self
        target._remove_hook()
        target._engine.fail(err)

    def _train_returned(self, name: str, result: Any, *args: Any, **kwargs: Any) -> None:
        (self._adopted_by or self)._engine.finish("completed")  # a trial's run, left open by on_train_end

    def _ends_with_train(self) -> bool:
        """A ``hyperparameter_search`` trial's run ends when ``train()`` returns or raises, not at ``on_train_end``:
        HF ends a pruned trial with ``on_train_end`` and only then raises ``TrialPruned`` out of ``train()`` (the
        wrapper of :meth:`_wrap_train` sees it, so the record says ``pruned``)."""
        trainer = self.trainer
        return trainer is not None and getattr(trainer, "_trial", None) is not None

    def _wrap_model_card(self, trainer: Any) -> None:
        """The run's emissions go into the card ``create_model_card`` (and so ``push_to_hub``) writes; kept across
        fits (a card is written after ``train()``)."""
        self._patches.around(trainer, "create_model_card", after=self._card_written, keep=True)

    def _card_written(self, name: str, result: Any, *args: Any, **kwargs: Any) -> None:
        from green_callbacks.report.card import add_to_trainer_card

        add_to_trainer_card(self.trainer, (self._adopted_by or self).record_path)

    def _bind(self) -> None:
        trainer = _find_trainer()
        if trainer is not None and trainer is not self.trainer:
            self.attach(trainer)

    # ------------------------------------------------------------------ ExportableState
    def state(self) -> dict[str, Any]:
        """What the Trainer writes into each checkpoint's ``trainer_state.json``."""
        saved = {**self._engine.state_dict(), "instance": self._token}
        return {"args": self._json_arguments(), "attributes": {_STATE_ATTRIBUTE: saved}}

    def _stored_state(self, state: Any) -> dict[str, Any] | None:
        """This run's saved state when the Trainer resumed from a checkpoint, else ``None``."""
        if state.global_step <= 0:
            return None
        stored = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(stored, list):
            stored = stored[0] if stored else None
        if isinstance(stored, Mapping):
            found = stored.get("attributes", {}).get(_STATE_ATTRIBUTE)
            if found:
                return dict(found)
        return self.green_state

    def _adopt_original(self) -> None:
        """HF rebuilt us from a checkpoint (``restore_callback_states_from_checkpoint=True``) and dropped the user's
        instance: share that instance's engine, so the user's reference stays live."""
        trainer = self.trainer
        if self.green_state is None or trainer is None:
            return
        registered = trainer.callback_handler.callbacks
        original = next((cb for cb in _LIVE.values() if cb is not self and cb.trainer is trainer
                         and cb not in registered and type(cb) is type(self)), None)
        if original is None:
            return
        self.config, self._engine = original.config, original._engine
        original._adopted_by = self

    # ------------------------------------------------------------------ events
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._engine.guard("logging", self._bind)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._engine.guard("logging", self._bind)
        self._engine.guard("start", self._train_begin, args, state, model)
        if self.trainer is None and not self._warned_no_trainer:
            self._warned_no_trainer = True
            warnings.warn(
                "green_callbacks: GreenCallback could not find its Trainer; the green/ metrics go to "
                "state.log_history and the run record only, not to report_to integrations. Call "
                "callback.attach(trainer) before trainer.train() to fix this.",
                RuntimeWarning,
                stacklevel=2,
            )

    def _train_begin(self, args: Any, state: Any, model: Any) -> None:
        self._adopt_original()
        self._engine.begin_fit()
        self._engine.resume(functools.partial(self._stored_state, state), "the Trainer's checkpoint")
        monitor, mode = _monitor_of(args)
        self._engine.start(
            output_dir=args.output_dir,
            hyperparameters=_hyperparameters(args, state, model),
            model=model,
            **_devices(args).start_kwargs(),
            monitor=monitor,
            mode=mode,
            planned_epochs=float(args.num_train_epochs) if args.max_steps <= 0 else None,
            extra={"transformers": {"version": transformers.__version__, "trainer": type(self.trainer).__name__}},
            compute_dtype=_compute_dtype(args),
            trial=getattr(self.trainer, "_trial", None),  # hyperparameter_search's trial (core/trial.py)
        )
        self._pending = None
        self._epoch_metrics = {}
        from green_callbacks.core.flops import FlopTracker

        self._engine.flops.use(FlopTracker())  # one per run: it owns every FLOP cache
        # compiled: inductor's fused kernels hide ops from an observing counter; count the uncompiled model on meta
        self._compiled = bool(getattr(args, "torch_compile", False)) or type(model).__name__ == "OptimizedModule"
        self._install_hook(model)
        self._compact_printers()

    def _compact_printers(self) -> None:
        """The Trainer's printed log (``PrinterCallback``/``ProgressCallback``) shows the compact view of our
        epoch logs (``console=``); ``log_history`` and every ``report_to`` integration still get every key."""
        trainer = self.trainer
        if trainer is None:
            return
        console = self.config.console
        printers = (transformers.trainer_callback.PrinterCallback, transformers.trainer_callback.ProgressCallback)
        for printer in (c for c in trainer.callback_handler.callbacks if isinstance(c, printers)):

            def make(on_log: Any) -> Any:
                def shown(args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
                    if isinstance(logs, Mapping):
                        logs = console_view(logs, console)
                    return on_log(args, state, control, logs=logs, **kwargs)

                return shown

            self._patches.wrap(printer, "on_log", make)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._engine.in_epoch:  # an epoch whose closing event never came (e.g. no evaluation after all)
            self._close_epoch(state, control)
        self._pending = None
        self._epoch_metrics = {}
        self._engine.epoch_start(model=kwargs.get("model"))

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._engine.flops.end()  # a gradient-accumulation micro-batch ran its backward

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._engine.flops.end()
        if control.should_evaluate:
            self._engine.eval_start()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._engine.in_epoch:
            return
        if control.should_evaluate:  # the Trainer evaluates right after this event: keep the epoch open
            self._pending = "evaluate"
            self._engine.eval_start()
        elif control.should_log:  # the epoch-end loss log follows: close after it, with the epoch's loss
            self._pending = "log"
        else:
            self._close_epoch(state, control)

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._engine.phases.batch_end()  # the batch of an evaluate()/predict() outside train (no-op otherwise)
        self._engine.eval_start()  # an evaluation we were not told of (no-op when one is open)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if not self._engine.in_epoch:
            return
        self._engine.eval_end()
        self._epoch_metrics.update(metrics or {})
        if self._pending == "evaluate":
            self._close_epoch(state, control)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        self._engine.eval_end()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self._logging or not self._engine.in_epoch or not logs:
            return
        self._epoch_metrics.update(logs)
        if self._pending == "log" and "loss" in logs:
            self._close_epoch(state, control)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._engine.in_epoch:
            self._close_epoch(state, control)
        self._remove_hook()
        if not self._ends_with_train():
            self._engine.finish("completed")

    # ------------------------------------------------------------------ closing an epoch and logging
    def _close_epoch(self, state: Any, control: Any) -> None:
        self._pending = None
        metrics = self._engine.epoch_end({**self._epoch_metrics, "epoch": state.epoch})
        if metrics is None:
            return
        self._hf_total_flos = self._engine.guard("logging", self._trainer_total_flos, state) or math.nan
        self._engine.guard("logging", self._log, state, control, {**metrics, HF_TOTAL_FLOS_KEY: self._hf_total_flos})
        if self._engine.should_stop:  # a budget would be exceeded (budget_action="stop")
            control.should_training_stop = True

    def _trainer_total_flos(self, state: Any) -> float:
        """The Trainer's own estimate so far; its pending per-process count is folded in first (all ranks).

        NaN, not 0, when the Trainer cannot estimate (a model without ``num_parameters``, e.g. a plain
        ``nn.Module``: its ``floating_point_ops`` then returns 0 for every step).
        """
        trainer = self.trainer
        if trainer is None:
            return math.nan
        trainer.store_flos()
        if float(state.total_flos) == 0.0 and not hasattr(trainer.model, "num_parameters"):
            return math.nan
        return float(state.total_flos)

    def _log(self, state: Any, control: Any, metrics: dict[str, float]) -> None:
        trainer = self.trainer
        if trainer is None:
            state.log_history.append({**metrics, "epoch": state.epoch, "step": state.global_step})
            return
        saved = control.should_log
        self._logging = True
        try:
            trainer.log(dict(metrics))
        finally:
            self._logging = False
            control.should_log = saved  # CallbackHandler.on_log resets it: the Trainer's own loss log must stay
            trainer.control.should_log = saved

    # ------------------------------------------------------------------ evaluate / predict outside train
    def _wrap_phases(self, trainer: Any) -> None:
        """Measure ``trainer.evaluate()`` / ``trainer.predict()`` called outside ``train``: the phase opens when
        the call begins and closes when it returns (kept across calls, like ``train``)."""
        for kind in ("evaluate", "predict"):
            self._patches.around(trainer, kind, before=self._phase_call, after=self._phase_return,
                                 failed=self._phase_raised, keep=True)

    def _phase_call(self, kind: str, *args: Any, **kwargs: Any) -> None:
        self._phase_opened.append(False)
        self._phase_opened[-1] = bool(self._engine.phases.guard.call("phase", self._phase_open, kind))

    def _phase_return(self, kind: str, output: Any, *args: Any, **kwargs: Any) -> None:
        if self._phase_opened.pop():
            self._engine.phases.guard.call("phase", self._phase_close, output, kind)

    def _phase_raised(self, kind: str, err: BaseException) -> None:
        if self._phase_opened and self._phase_opened.pop():
            self._remove_phase_hook()
            self._engine.phases.fail(err)

    def _phase_open(self, kind: str) -> bool:
        trainer = self.trainer
        if len(self._phase_opened) > 1 or trainer is None:  # evaluate() over a dict of datasets calls itself
            return False
        args = trainer.args
        begun = self._engine.phases.begin(
            kind,
            output_dir=args.output_dir,
            **_devices(args).start_kwargs(),
            extra={"transformers": {"version": transformers.__version__, "trainer": type(trainer).__name__}},
        )
        if begun:
            generating = bool(getattr(args, "predict_with_generate", False))
            # FLOPs: generation runs the model once per new token (a batch's count is not its signature's), and
            # inductor's fused kernels hide ops from an observing counter: unavailable rather than wrong
            compiled = bool(getattr(args, "torch_compile", False)) or type(trainer.model).__name__ == "OptimizedModule"
            self._install_phase_hook(trainer.model, counted=not (generating or compiled))
            if generating:  # Seq2SeqTrainer: the generated tokens are exposed, per batch, by its prediction_step
                self._phase_patches.around(trainer, "prediction_step", after=self._generated)
        return begun

    def _generated(self, name: str, out: Any, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> None:
        """The non-padding tokens ``trainer.prediction_step`` generated for one batch."""
        generated = out[1] if isinstance(out, tuple) and len(out) > 1 else None
        trainer = self.trainer
        if generated is not None and trainer is not None:
            self._engine.phases.add_tokens_out(_generated_tokens(trainer, generated, inputs))

    def _phase_close(self, output: Any, kind: str) -> None:
        """Close the phase; ``evaluate``'s figures go through ``Trainer.log`` (the Trainer logs evaluate()'s metrics,
        not predict()'s). Nothing is added to what the call returns: a caller that computes from it (the default
        objective of ``hyperparameter_search`` sums ``evaluate()``'s metrics) gets the Trainer's own dict."""
        self._remove_phase_hook()
        trainer = self.trainer
        metrics = self._engine.phases.end()
        if metrics and kind == "evaluate" and trainer is not None:
            self._engine.phases.guard.call("phase logging", self._log_phase, trainer, metrics)

    def _log_phase(self, trainer: Any, metrics: dict[str, float]) -> None:
        """``Trainer.log`` with the printed log compact for this one call (``console=``)."""
        self._compact_printers()
        try:
            self._log(trainer.state, trainer.control, metrics)
        finally:
            self._patches.restore()

    def _install_phase_hook(self, model: Any, *, counted: bool) -> None:
        self._remove_phase_hook()
        self._phase_counted = counted
        self._phase_hook = hook_forward(model, before=self._phase_forward)

    def _phase_forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        batch = (args, kwargs) if args else kwargs  # the kwargs alone when possible: where attention_mask is found
        self._engine.phases.batch_start(batch, module if self._phase_counted else None)

    def _remove_phase_hook(self) -> None:
        if self._phase_hook is not None:
            self._phase_hook()
            self._phase_hook = None
        self._phase_patches.restore()

    # ------------------------------------------------------------------ FLOPs
    def _install_hook(self, model: Any) -> None:
        self._remove_hook()
        self._hook = hook_forward(model, before=self._forward, after=self._forwarded, eager=self._compiled)

    def _forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._engine.flops.begin_forward(module, args, kwargs, _step_loss if self._compiled else None):
            self._watch_backward("on_pre_optimizer_step")

    def _forwarded(self, module: Any, args: Any, output: Any) -> None:
        self._engine.flops.forward_done(module)  # evaluation: the forward is the whole step

    def _remove_hook(self) -> None:
        self._patches.restore()
        self._engine.flops.discard()
        if self._hook is not None:
            self._hook()
            self._hook = None

"""FLOPs of a hand-driven loop's steps, counted by watching the model run: the loop ``Tracker``'s FLOP counting.

A callback is told when the framework's step begins and when its backward is done; a hand-written loop tells the
``Tracker`` only ``tracker.step(batch)``, usually *after* the step ran. So the model itself is watched: a forward
pre-hook on the module the user calls (``model=``) opens torch's ``FlopCounterMode`` (through the engine's
:meth:`~green_callbacks.core.flops.torch_engine.TorchFlopCounter.start_observing`) at the first forward of an
input signature (kind, training flag, grad mode, argument shapes) not seen in a counted step before; the next
``tracker.step(batch)`` / ``eval_step(batch)`` of that thread closes it and the count becomes the batch signature's
(a step's FLOPs then stay in the :class:`~green_callbacks.core.flops.FlopTracker`'s cache, with its interpolation).
Later steps get the tracker's checks: when the signature's next step is due one (its 2nd, 4th, 8th, ... step; 1 in
8 once it is data-dependent) the thread's next forward is watched too, and its count is compared with the cached one
(:meth:`~green_callbacks.core.flops.FlopTracker.add_checked`: a differing one makes the signature ``sampled``).
Activation checkpointing's recompute is counted apart (hardware FLOPs). The counter stops early at the first
optimizer step of the window (a global optimizer step pre-hook, attached while a window is open), so the optimizer's
own work is not counted. ``with tracker.step(batch): ...`` opens the counter around the block instead, for a new
signature only (no later checks in that form).

**Nothing of the user's is run.** No forward is replayed, no meta copy is made, no random generator is touched: a
loop with the tracker computes bit-identical weights and calls the user's code exactly as often as without it.

**Thread-safe.** Counters are per thread (torch's dispatch modes are thread-local); the caches, the epoch's sums
and the pending steps are shared under one lock. A step whose signature is new but whose run was not watched (the
call made before the step, a forward of another module) is *pending*: its FLOPs are added once the signature is
counted in the same epoch (the next forward of that thread is watched), otherwise the epoch's FLOPs miss it, which
is warned once and recorded (the record's ``flops.counts.unobserved_steps``, ``flops.lower_bound``).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Hashable
from typing import Any

from green_callbacks.core.flops.result import FlopCountWarning

__all__ = ["StepWatch"]


class _Window:
    """One thread's open counter: the kind it counts, the engine's handle, the epoch/evaluation generation it
    belongs to, its ``(model FLOPs, recompute FLOPs)`` once paused (``None`` while counting), and the forward
    signature that opened it."""

    __slots__ = ("flops", "generation", "handle", "inputs", "kind")

    def __init__(self, kind: str, handle: Any, generation: int, inputs: Hashable | None) -> None:
        self.kind = kind
        self.handle = handle
        self.generation = generation
        self.flops: tuple[int, int] | None = None
        self.inputs = inputs


class StepWatch:
    """Counts the FLOPs of a hand-driven loop's steps by watching ``model`` run (see the module docstring).

    Args:
        engine: the run's :class:`~green_callbacks.core.engine.Engine`: its ``flops`` tap holds the run's
            :class:`~green_callbacks.core.flops.FlopTracker`; its guard switches FLOPs off on a failure.
        model: the module the user calls (its forward pre-hook is the watch).
        key_model: ``key_model(model)`` is the module step signatures are computed on (``model`` without wrappers;
            a sharded model's unsharded twin, whose parameters do not change between sharded and gathered), found
            again at every epoch and evaluation boundary (its train/eval flags are copied then).
        lock: the lock shared with the caller's own per-step state (samples, tokens).
    """

    def __init__(self, engine: Any, model: Any, key_model: Any, lock: threading.Lock) -> None:
        self._engine = engine
        self._tap = engine.flops
        self._model = model
        self._key_model_of = key_model
        self.key_model = key_model(model)
        self._lock = lock
        self._local = threading.local()
        self._seen: set[Hashable] = set()  # forward signatures already inside a counted step
        self._inputs_of: dict[Hashable, Hashable | None] = {}  # batch signature -> the forward signature counted
        self._pending: dict[Hashable, int] = {}  # this epoch's steps of signatures not counted yet
        self._blocks = {"train": False, "eval": False}  # ``with tracker.step(batch):`` seen: blocks are watched
        self._generation = 0
        self._open = 0  # windows open in all threads (the optimizer hook is attached while any is)
        self._optimizer_hook: Any = None
        self.in_eval = False
        self._warned = False
        import torch

        from green_callbacks.core.flops.torch_engine import _batch_facts, _signature

        self._facts, self._signature = _batch_facts, _signature
        self._is_compiling = torch.compiler.is_compiling
        self._grad_enabled = torch.is_grad_enabled
        self._hook: Any = model.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    # -- hooks (run inside the user's forward and optimizer step: never raise there) ----------------------------

    def _before_forward(self, module: Any, args: Any, kwargs: Any) -> None:
        if self._is_compiling():  # traced into a compiled caller: a no-op there (its FLOPs stay unobserved)
            return None
        local = self._local
        if not self._tap.active or getattr(local, "window", None) is not None or getattr(local, "entered", False):
            return None
        kind = "eval" if self.in_eval else "train"
        if self._blocks[kind]:
            return None
        try:
            # what the forward's FLOPs may depend on: its arguments' tensor shapes, dtypes and flags, containers and
            # config-like scalars (the engine's cheap facts of a flat container, else its full signature)
            facts = self._facts(args, 0)
            inputs = (kind, module.training, self._grad_enabled(), self._signature(args) if facts is None else facts,
                      self._signature(kwargs) if kwargs else None)
            if inputs in self._seen and not getattr(local, "armed", False):
                return None
            local.armed = False
            self._open_window(local, kind, inputs)
        except Exception as err:
            self._fail(err)
        return None

    def _before_optimizer(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        window = getattr(self._local, "window", None)
        if window is None or window.flops is not None:
            return None
        try:
            window.flops = self._stop(window)
        except Exception as err:
            self._fail(err)
        return None

    # -- windows ------------------------------------------------------------------------------------------------

    def _open_window(self, local: Any, kind: str, inputs: Hashable | None) -> None:
        with self._lock:
            if self._optimizer_hook is None:
                from torch.optim.optimizer import register_optimizer_step_pre_hook

                self._optimizer_hook = register_optimizer_step_pre_hook(self._before_optimizer)
            self._open += 1
            try:
                handle = self._tap.tracker.engine.start_observing()  # last: nothing left entered if a step fails
            except BaseException:
                self._open -= 1
                raise
            local.window = _Window(kind, handle, self._generation, inputs)

    def _stop(self, window: _Window) -> tuple[int, int]:
        with self._lock:
            step = self._tap.tracker.engine.stop_observing(window.handle, window.kind)
        return int(step.flops), int(getattr(step, "recompute_flops", 0))

    def _close(self, local: Any) -> _Window | None:
        """This thread's window, closed (its ``flops`` set), or ``None`` when none was open."""
        window = getattr(local, "window", None)
        if window is None:
            return None
        local.window = None
        try:
            if window.flops is None:
                window.flops = self._stop(window)
        finally:
            with self._lock:
                self._open -= 1
                if self._open <= 0 and self._optimizer_hook is not None:
                    self._optimizer_hook.remove()
                    self._optimizer_hook = None
        return window

    # -- steps --------------------------------------------------------------------------------------------------

    def step(self, kind: str, batch: Any) -> Hashable | None:
        """A step of ``kind`` on ``batch`` (its run already watched, or known, or pending). Its signature when its
        FLOPs are not known yet (a ``with`` block around the step, :meth:`enter`, can then watch it), else ``None``."""
        window = self._close(self._local)
        if batch is None or not self._tap.active:
            if window is not None and window.inputs is not None:
                self._seen.add(window.inputs)
            return None
        with self._lock:
            tracker = self._tap.tracker
            key, found = tracker.lookup(kind, self.key_model, batch)
            # the window's kind is the hook's guess (inside an evaluation window or not): what ran is what counts
            if window is not None and window.generation == self._generation:
                if window.inputs is not None:
                    self._seen.add(window.inputs)
                if found is None:  # a new signature, counted on this step (and this epoch's pending steps of it)
                    self._inputs_of[key] = window.inputs
                    due = tracker.add_observed(kind, key, *window.flops, steps=1 + self._pending.pop(key, 0))
                elif window.inputs == self._inputs_of.get(key, window.inputs):  # a later check of a known one
                    due = tracker.add_checked(kind, key, *window.flops)
                else:  # the watched run was another signature's (the step told before it ran): not a check
                    due = tracker.add_known(kind, key, found)
            elif found is not None:
                due = tracker.add_known(kind, key, found)
            else:
                self._pending[key] = self._pending.get(key, 0) + 1
                self._local.armed = True  # the next forward of this thread is watched, whatever its signature
                return key
            if due:  # the signature's next step is a later check: the next forward of this thread is watched
                self._local.armed = True
            return None

    def enter(self, kind: str, key: Hashable | None) -> None:
        """``with tracker.step(batch):`` — the block is the step: a pending (new) signature ``key`` is watched in it."""
        local = self._local
        local.entered = True
        if not self._tap.active:
            return
        with self._lock:
            self._blocks[kind] = True
            if key is None:
                return
            left = self._pending.get(key, 0) - 1
            if left < 0:
                return
            if left:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)
        local.armed = False
        self._open_window(local, kind, None)
        local.block_key = key

    def exit(self, kind: str, *, failed: bool = False) -> None:
        """The ``with`` block ended; ``failed``: it raised (its count is dropped)."""
        local = self._local
        local.entered = False
        key, local.block_key = getattr(local, "block_key", None), None
        window = self._close(local)
        if window is None or key is None or failed:
            return
        with self._lock:
            if window.generation != self._generation or not self._tap.active:
                return
            steps = self._pending.pop(key, 0) + 1  # this step too
            self._inputs_of[key] = window.inputs
            self._tap.tracker.add_observed(kind, key, *window.flops, steps=steps)

    # -- boundaries ---------------------------------------------------------------------------------------------

    def boundary(self, *, in_eval: bool | None = None, epoch_end: bool = False) -> None:
        """An epoch or evaluation window opens or closes: counters open before are dropped (this thread's closed
        now, other threads' at their next step); at an epoch's end its pending steps are given up."""
        try:
            self._close(self._local)
        finally:
            with self._lock:
                self._generation += 1
                self.key_model = self._key_model_of(self._model)
                if in_eval is not None:
                    self.in_eval = in_eval
                if epoch_end and self._pending:
                    missed = sum(self._pending.values())
                    self._pending.clear()
                    self._tap.tracker.add_unobserved(missed)
                    if not self._warned:
                        self._warned = True
                        warnings.warn(
                            f"FLOPs: {missed} step(s) of this epoch had a batch signature whose run the tracker did "
                            "not see (tracker.step(batch) called before the step, or the step ran a module other "
                            "than model=, or a compiled one); their FLOPs are not in the epoch's, a lower bound "
                            "(the record's flops.counts.unobserved_steps). Call tracker.step(batch) after the step's "
                            "backward, or use `with tracker.step(batch):` around its forward and backward.",
                            FlopCountWarning,
                            stacklevel=4,
                        )

    def close(self) -> None:
        """The run ends: the hooks are removed (this thread's counter is closed)."""
        try:
            self._close(self._local)
        finally:
            self._hook.remove()
            with self._lock:
                if self._optimizer_hook is not None:
                    self._optimizer_hook.remove()
                    self._optimizer_hook = None

    def guarded(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` under the ``flops`` guard (``None`` once it failed)."""
        return self._engine.guard("flops", fn, *args, **kwargs)

    def _fail(self, err: BaseException) -> None:
        """A failure inside the user's forward or optimizer step: FLOPs are switched off (re-raised when strict)."""
        self._tap.active = False
        self._engine.session.guard.absorb("flops", err)

"""Torch's fused inference fast paths under autocast, run inside a FLOP counter exactly as they run outside it.

In eval mode ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` call one fused op
(``aten._transformer_encoder_layer_fwd``, ``aten._native_multi_head_attention``) whose kernel dispatches its own
linears and matmuls. Autocast has no kernel for the fused op, so the op falls through it and its inner linears are
autocast: under CPU autocast (which does not switch the fast path off: ``torch.is_autocast_enabled()`` without a
device reads CUDA's flag) they run in bfloat16 and so does the layer's output.

A ``TorchDispatchMode`` (``FlopCounterMode`` watching a real step) handles ops below the autocast keys, with every
key above its own excluded, autocast included: when it runs the fused op, the inner linears run without autocast.
The layer then computes in float32 instead of bfloat16 — or fails with ``expected m1 and m2 to have the same
dtype`` when its input is already bfloat16 (the output of an autocast linear): observing would change, or crash,
the step it watches.

Inside the mode the autocast state of the call cannot be read (it is excluded whatever it was), so it is read
where it can be: while a counter is entered, a global forward pre-hook notes which devices have autocast enabled
when such a module's forward starts. torch's own forward calls the fused op with no user code in between, so that
is the state of the call; the counter then runs the fused op with autocast re-enabled for the op's device (dtype
and cast cache are untouched by the exclusion), which reproduces the dispatch the op gets without a counter,
bit for bit. The count itself is unchanged: the fused ops have FLOP formulas (``formulas.py``).

Global hooks, not hooks on the layers: the encoder layer's fast path is switched off by hooks on its own modules.
A fused op called from anywhere else (user code calling ``torch._native_multi_head_attention`` itself) runs as the
counter has always run it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

__all__ = ["FUSED_OP_NAMES", "WatchFusedModules", "fused_ops", "has_fused_modules", "restore_mode", "run_fused"]

FUSED_OP_NAMES = ("_transformer_encoder_layer_fwd", "_native_multi_head_attention")
"""aten ops of torch's fast paths whose kernels dispatch inner ops that autocast would cast."""

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")

_local = threading.local()  # .stack: [(module, devices with autocast enabled at its forward's start), ...]
_lock = threading.Lock()
_installed: list[Any] = []  # hook handles while at least one counter is entered
_users = 0


@functools.lru_cache(maxsize=1)
def fused_ops() -> frozenset[Any]:
    """The fused ops' default overloads in this torch (those it has)."""
    import torch

    found = []
    for name in FUSED_OP_NAMES:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None and hasattr(packet, "default"):
            found.append(packet.default)
    return frozenset(found)


@functools.lru_cache(maxsize=1)
def _fused_module_types() -> tuple[type, ...]:
    import torch

    return torch.nn.TransformerEncoderLayer, torch.nn.MultiheadAttention


def has_fused_modules(model: Any) -> bool:
    """Whether ``model`` holds a module whose forward may call a fused op (the hooks are needed only then: while
    they are installed every module call takes ``nn.Module``'s slower path, about 2-4 µs more per call)."""
    modules = getattr(model, "modules", None)
    if modules is None:
        return True
    types = _fused_module_types()
    return any(isinstance(m, types) for m in modules())


def _autocast_enabled(device: str) -> bool:
    import torch

    try:
        return bool(torch.is_autocast_enabled(device))
    except TypeError:  # pragma: no cover - torch < 2.4: one flag per device, read by its own function
        if device == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return device == "cuda" and bool(torch.is_autocast_enabled())
    except RuntimeError:  # a device type this torch does not know
        return False


def _set_autocast_enabled(device: str, enabled: bool) -> None:
    import torch

    try:
        torch.set_autocast_enabled(device, enabled)
    except TypeError:  # pragma: no cover - torch < 2.4
        if device == "cpu":
            torch.set_autocast_cpu_enabled(enabled)
        else:
            torch.set_autocast_enabled(enabled)


def _enabled_devices() -> tuple[str, ...]:
    import torch

    is_any = getattr(torch._C, "_is_any_autocast_enabled", None)
    if is_any is not None and not is_any():
        return ()
    return tuple(d for d in _AUTOCAST_DEVICES if _autocast_enabled(d))


def _stack() -> list[tuple[Any, tuple[str, ...]]]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _before(module: Any, args: Any) -> None:
    if isinstance(module, _fused_module_types()):
        _stack().append((module, _enabled_devices()))


def _after(module: Any, args: Any, output: Any) -> None:
    stack = getattr(_local, "stack", None)
    if stack and stack[-1][0] is module:
        stack.pop()


class WatchFusedModules:
    """While entered (by every counter that runs real ops), note the autocast state at each fused-path module's
    forward. Re-entrant and shared: the global hooks are installed by the first entry and removed by the last."""

    def __enter__(self) -> WatchFusedModules:
        global _users
        from torch.nn.modules import module as nn_module

        with _lock:
            if _users == 0:
                _installed.append(nn_module.register_module_forward_pre_hook(_before))
                _installed.append(nn_module.register_module_forward_hook(_after, always_call=True))
            _users += 1
        return self

    def __exit__(self, *exc: object) -> None:
        global _users
        with _lock:
            _users -= 1
            if _users == 0:
                while _installed:
                    _installed.pop().remove()
                _stack().clear()  # a forward left by an exception the forward hook did not see


@functools.lru_cache(maxsize=64)
def _falls_through_autocast(func: Any, device: str) -> bool:
    """Autocast has no kernel of its own for ``func`` on ``device``: without a counter the op falls through autocast
    and its inner ops are autocast (an op with such a kernel runs its inner ops with autocast off, as the mode does)."""
    import torch

    key = f"Autocast{device.upper()}"
    try:
        return not torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)
    except (RuntimeError, ValueError):  # pragma: no cover - a key this torch does not have
        return True


def run_fused(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a fused op (one of :func:`fused_ops`) from a dispatch mode's handler as it runs without the mode: with
    autocast enabled for its device when it was enabled at the forward of the module that called it."""
    stack = getattr(_local, "stack", None)
    device = getattr(getattr(args[0], "device", None), "type", None) if args else None
    if not stack or device is None or device not in stack[-1][1] or not _falls_through_autocast(func, device):
        return func(*args, **kwargs)
    _set_autocast_enabled(device, True)
    try:
        return func(*args, **kwargs)
    finally:
        _set_autocast_enabled(device, False)


def restore_mode() -> Any:
    """A dispatch mode to enter *below* a counter whose own handler cannot call :func:`run_fused` (torch without
    ``flop_counter._FlopCounterMode``): it runs the fused ops with :func:`run_fused`, every other op as it is."""
    return _restore_class()()


@functools.lru_cache(maxsize=1)
def _restore_class() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    fused = fused_ops()

    class _FusedAutocastMode(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            return run_fused(func, args, kwargs) if func in fused else func(*args, **kwargs)

    return _FusedAutocastMode

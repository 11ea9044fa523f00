"""Hooks on a torch module's forward, for adapters that see a step only as the model's forward (the HF Trainer).

:func:`hook_forward` registers a forward pre-hook and a forward hook that call the adapter's bound methods through
weak references: the hooks are plain functions (a deep copy of the model copies its hooks, and must not copy the
callback), and once the callback is gone they do nothing. ``eager=True`` keeps them out of dynamo's trace
(``torch.compile``): they read Python state that would otherwise recompile the model.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["hook_forward"]


def hook_forward(
    model: Any, *, before: Callable[..., Any] | None = None, after: Callable[..., Any] | None = None,
    eager: bool = False,
) -> Callable[[], None] | None:
    """``before(module, args, kwargs)`` ahead of each forward of ``model`` and ``after(module, args, output)``
    after it; returns what removes both (``None``: ``model`` is not a torch module)."""
    if model is None or not hasattr(model, "register_forward_pre_hook"):
        return None
    handles = []
    if before is not None:
        on_before = _weak(before)

        def pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            fn = on_before()
            if fn is not None:
                fn(module, args, kwargs)

        handles.append(model.register_forward_pre_hook(_not_traced(pre_hook) if eager else pre_hook,
                                                       with_kwargs=True))
    if after is not None:
        on_after = _weak(after)

        def hook(module: Any, args: Any, output: Any) -> None:
            fn = on_after()
            if fn is not None:
                fn(module, args, output)

        handles.append(model.register_forward_hook(_not_traced(hook) if eager else hook))

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return remove


def _weak(fn: Callable[..., Any]) -> Callable[[], Callable[..., Any] | None]:
    return weakref.WeakMethod(fn) if inspect.ismethod(fn) else (lambda: fn)


def _not_traced(fn: Any) -> Any:
    """``fn`` run eagerly even when the model around it is compiled (``torch._dynamo.disable``)."""
    try:
        import torch._dynamo
    except ImportError:  # pragma: no cover - torch without dynamo
        return fn
    return torch._dynamo.disable(fn, recursive=True)

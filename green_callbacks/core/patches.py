"""Methods of framework objects replaced on one instance for the length of a fit, and put back at its end.

Used where a framework hands our values to code we do not call ourselves: a Lightning logger that refuses NaN
(Lightning calls it outside the callback, so a refusal would end the fit), Keras' progress line and the HF
Trainer's printed log (compact by default). Only the instance is changed, never the class, and every change is
undone when the fit ends, however it ends.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from green_callbacks.core.metric_keys import is_own_key

__all__ = ["InstancePatches", "nan_tolerant", "without_unavailable"]


class InstancePatches:
    """``wrap(obj, name, make)`` sets ``obj.name = make(original)`` on the instance; ``restore()`` undoes all."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, bool, Any]] = []

    def wrap(self, obj: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        original = getattr(obj, name)
        own = name in getattr(obj, "__dict__", {})
        setattr(obj, name, make(original))
        self._done.append((obj, name, own, original))

    def restore(self) -> None:
        while self._done:
            obj, name, own, original = self._done.pop()
            if own:
                setattr(obj, name, original)
            else:
                try:
                    delattr(obj, name)
                except AttributeError:
                    pass


def without_unavailable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` less this library's keys whose value is NaN (unavailable)."""
    return {k: v for k, v in metrics.items()
            if not (is_own_key(str(k)) and isinstance(v, float) and math.isnan(v))}


def nan_tolerant(log_metrics: Callable[..., Any], who: str) -> Callable[..., Any]:
    """``log_metrics(metrics, ...)`` that, when the logger refuses a call carrying our NaN (unavailable) values,
    hands it the same call without them and says so once; any other failure is the logger's own and goes on."""
    said = False

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal said
        try:
            return log_metrics(*args, **kwargs)
        except Exception as err:
            in_kwargs = "metrics" in kwargs
            metrics = kwargs["metrics"] if in_kwargs else (args[0] if args else None)
            if not isinstance(metrics, Mapping):
                raise
            kept = without_unavailable(metrics)
            if len(kept) == len(metrics):
                raise
            if not said:
                said = True
                dropped = sorted(set(metrics) - set(kept))
                warnings.warn(
                    f"green_callbacks: the logger {who!r} refused NaN ({type(err).__name__}: {err}); the "
                    f"unavailable green/ keys ({', '.join(dropped)}) are left out for it from now on (they stay NaN "
                    "in the other loggers and null in the run record).",
                    RuntimeWarning,
                    stacklevel=2,
                )
            if in_kwargs:
                return log_metrics(*args, **{**kwargs, "metrics": kept})
            return log_metrics(kept, *args[1:], **kwargs)

    return call

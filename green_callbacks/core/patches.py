"""Methods of framework objects replaced on one instance, and put back at the end of the fit or phase.

The one mechanism every adapter uses where a framework gives no hook of its own: to learn of an exception (Keras'
step functions, the HF Trainer's ``train``), to see each batch without a per-batch callback (Keras' step
functions), to open a phase where no event precedes it (the Trainer's ``evaluate`` / ``predict``), and where a
framework hands our values to code we do not call ourselves (a Lightning logger that refuses NaN, Keras' progress
line and the HF Trainer's printed log, compact by default).

* Only the instance is changed, never the class, and every change is undone by :meth:`InstancePatches.restore`
  (the adapter calls it when the fit or phase ends, however it ends) unless it is ``keep=``: a method that must
  be watched before any event of the next call fires (the Trainer's ``train``, ``evaluate``, ``predict``).
* One marker attribute (:data:`MARKER`) on every replacement: a method already replaced is not replaced again
  (a second fit, a second callback), and :meth:`~InstancePatches.restore` leaves alone a method the framework
  replaced in the meantime.
* No strong reference back: the original bound method is called through a weak reference to its object, and
  :meth:`~InstancePatches.around`'s hooks, when they are bound methods (of the callback), through weak ones —
  the framework object holds the replacement, and the replacement must hold neither it nor the callback alive
  (a trainer kept by a cycle keeps its DataLoader workers until the garbage collector runs).
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from green_callbacks.core.metric_keys import is_own_key

__all__ = ["MARKER", "InstancePatches", "PeekingIterator", "find_in_callers", "nan_tolerant", "without_unavailable"]

MARKER = "_green_callback"
"""The attribute every replacement carries (``True``)."""


class InstancePatches:
    """``wrap(obj, name, make)`` sets ``obj.name = make(original)`` on the instance; ``around(obj, name, ...)``
    runs hooks around ``obj.name``; ``restore()`` undoes every change not made with ``keep=True``."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, str, bool, Any, Any]] = []

    def wrap(self, obj: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]], *,
             keep: bool = False) -> bool:
        """``obj.name = make(original)``; ``False`` (nothing changed) when ``obj`` has no such method or it is
        already a replacement."""
        original = getattr(obj, name, None)
        if original is None or getattr(original, MARKER, False):
            return False
        replacement = make(_weakly_bound(obj, original))
        setattr(replacement, MARKER, True)
        own = name in getattr(obj, "__dict__", {})
        setattr(obj, name, replacement)
        if not keep:
            self._done.append((obj, name, own, original, replacement))
        return True

    def around(
        self, obj: Any, name: str, *, before: Callable[..., Any] | None = None,
        after: Callable[..., Any] | None = None, failed: Callable[..., Any] | None = None, keep: bool = False,
    ) -> bool:
        """Each call of ``obj.name(*args, **kwargs)`` runs ``before(name, *args, **kwargs)`` (a tuple it returns
        replaces ``args``), the original, then ``after(name, result, *args, **kwargs)``; when the call (or
        ``before``) raises, ``failed(name, error)`` runs and the error goes on. Once the owner of a bound-method
        hook is gone, the original runs alone."""
        hooks = [h for h in (before, after, failed) if h is not None]
        owners = {id(h.__self__) for h in hooks if inspect.ismethod(h)}
        if len(owners) == 1 and all(inspect.ismethod(h) for h in hooks):  # the usual case: the callback's methods
            owner_ref = weakref.ref(hooks[0].__self__)
            on_before, on_after, on_failed = (None if h is None else h.__func__ for h in (before, after, failed))
        else:  # plain functions (held as they are), or methods of several objects (each held weakly)
            owner_ref = None
            on_before, on_after, on_failed = (_weakly_called(h) for h in (before, after, failed))

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                if owner_ref is None:
                    owner: tuple[Any, ...] = ()
                else:
                    alive = owner_ref()
                    if alive is None:
                        return original(*args, **kwargs)
                    owner = (alive,)
                try:
                    if on_before is not None:
                        changed = on_before(*owner, name, *args, **kwargs)
                        if changed is not None:
                            args = changed
                    result = original(*args, **kwargs)
                except BaseException as err:
                    if on_failed is not None:
                        on_failed(*owner, name, err)
                    raise
                if on_after is not None:
                    on_after(*owner, name, result, *args, **kwargs)
                return result

            functools.update_wrapper(call, original, updated=())
            return call

        return self.wrap(obj, name, make, keep=keep)

    def restore(self) -> None:
        while self._done:
            obj, name, own, original, replacement = self._done.pop()
            if getattr(obj, name, None) is not replacement:  # the framework replaced it since: theirs stays
                continue
            if own:
                setattr(obj, name, original)
            else:
                try:
                    delattr(obj, name)
                except AttributeError:
                    pass


class PeekingIterator:
    """Passes a framework's batch iterator through to it, calling ``note(batch)`` for each batch it yields (Keras on
    JAX hands its step function an iterator: the batches are seen there, not in any hook)."""

    def __init__(self, iterator: Any, note: Callable[[Any], None]) -> None:
        self._iterator = iterator
        self._note = note

    def __iter__(self) -> PeekingIterator:
        return self

    def __next__(self) -> Any:
        data = next(self._iterator)
        self._note(data)
        return data


def find_in_callers(match: Callable[[Any], bool], *, depth: int) -> Any:
    """The local variables of the nearest calling frame, within ``depth`` frames of the caller, for which
    ``match(f_locals)`` is true (``None``: none): how an adapter finds a framework object no hook hands it
    (Keras' callback list, the HF Trainer)."""
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        if match(frame.f_locals):
            return frame.f_locals
        frame = frame.f_back
    return None


def _weakly_bound(obj: Any, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, a bound method of ``obj``, called through a weak reference to ``obj``."""
    func = getattr(method, "__func__", None)
    if func is None or getattr(method, "__self__", None) is not obj:
        return method
    try:
        ref = weakref.ref(obj)
    except TypeError:  # an object without weak references
        return method

    def call(*args: Any, **kwargs: Any) -> Any:
        return func(ref(), *args, **kwargs)

    functools.update_wrapper(call, func, updated=())  # its name and signature; __wrapped__: the plain function
    return call


def _weakly_called(hook: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``hook`` itself, or for a bound method a function that calls it while its object lives."""
    if hook is None or not inspect.ismethod(hook):
        return hook
    ref = weakref.WeakMethod(hook)

    def call(*args: Any, **kwargs: Any) -> Any:
        method = ref()
        return None if method is None else method(*args, **kwargs)

    return call


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

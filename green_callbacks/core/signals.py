"""Signal and exit handling of a run: SIGTERM/SIGHUP and interpreter exit close the run record.

:class:`ExitHandlers` installs a SIGTERM (and SIGHUP) handler and an ``atexit`` hook that call back into the
session, then give the signal its previous handler (or its default action: the process dies of it, as it would
have without us). Only the process that installed them acts: a forked child (a DataLoader worker) holds a stale
copy and does nothing. :func:`signals_held` holds signals back around a write that must not be cut short.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ExitHandlers", "exit_status", "signals_held"]

_HANDLED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_HELD = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGCHLD", "SIGHUP") if hasattr(signal, name))


def exit_status() -> tuple[str, BaseException | str]:
    """Status and reason of a run still open when the interpreter exits (``sys.last_value``: an uncaught error)."""
    last = getattr(sys, "last_value", None)
    if isinstance(last, KeyboardInterrupt):
        return "interrupted", last
    if last is not None:
        return "failed", last
    return "interrupted", "the process exited before the run finished"


class ExitHandlers:
    """Calls ``close(status, reason)`` on SIGTERM/SIGHUP (``"interrupted"``, the signal's name) and at exit.

    ``signals=False`` installs the ``atexit`` hook only (a framework that turns SIGTERM into its own exception).
    """

    def __init__(self, close: Callable[[str, BaseException | str], Any]) -> None:
        self._close = close
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def install(self, *, signals: bool = True) -> None:
        self._pid = os.getpid()
        atexit.register(self._at_exit)
        if not signals or threading.current_thread() is not threading.main_thread():
            return
        for signum in _HANDLED:
            try:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # not the main interpreter / not allowed here
                self._previous.pop(signum, None)

    def uninstall(self) -> None:
        atexit.unregister(self._at_exit)
        if not self._previous or threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in list(self._previous.items()):
            try:
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, previous)
            except (ValueError, OSError):
                pass
        self._previous = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if _defer(signum):  # the run's final write is under way: this signal comes back when it is done
            return
        previous = self._previous.get(signum)
        if os.getpid() == self._pid:  # not in a forked child, whose session is a stale copy
            self._close("interrupted", signal.Signals(signum).name)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # the default action: die of the signal, as the process would have without us
            from green_callbacks.core.record_writer import abandon_in_flight

            abandon_in_flight()  # a record write the signal interrupted in this thread leaves no temporary file
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _at_exit(self) -> None:
        if os.getpid() == self._pid:
            self._close(*exit_status())


_held_lock = threading.Lock()
_held_depth = 0  # writes under signals_held() now, in any thread of this process
_deferred: list[int] = []  # signals our handler put off meanwhile, delivered again when the last one ends


def _defer(signum: int) -> bool:
    """Put ``signum`` off while a held write is under way: a process-directed signal reaches a thread that does not
    block it (a torch or writer thread), and Python then runs the handler in the main thread, inside the write."""
    with _held_lock:
        if _held_depth == 0:
            return False
        if signum not in _deferred:
            _deferred.append(signum)
        return True


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM, SIGCHLD and SIGHUP in this thread (where the OS allows it) and put off our own
    SIGTERM/SIGHUP handling in the whole process; each is delivered after."""
    global _held_depth
    with _held_lock:
        _held_depth += 1
    masked = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD) if masked else None
    try:
        yield
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        with _held_lock:
            _held_depth -= 1
            again = list(_deferred) if _held_depth == 0 else []
            if again:
                _deferred.clear()
        for signum in again:
            os.kill(os.getpid(), signum)

"""The one clock of the core.

Everything that needs a time calls ``clock.now_s()`` through the module (``from green_callbacks.core import
clock``), so that tests can replace it with a fake clock by monkeypatching ``clock.now_s``.
"""

from __future__ import annotations

import time

__all__ = ["FakeClock", "now_s", "wall_time_s"]


def now_s() -> float:
    """Monotonic time in seconds (``time.perf_counter``)."""
    return time.perf_counter()


def wall_time_s() -> float:
    """Wall-clock time in seconds since the epoch, for timestamps in records."""
    return time.time()


class FakeClock:
    """A clock that moves only when told to; install with ``monkeypatch.setattr(clock, "now_s", fake)``."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.time_s = float(start_s)

    def __call__(self) -> float:
        return self.time_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds!r})")
        self.time_s += float(seconds)

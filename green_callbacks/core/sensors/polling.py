"""Shared machinery of the sensors that poll: trapezoid integration of power samples, the background sampler
thread, and the sanity bound on counter increments.

Used by the NVML power path, the AMD power path and counter-wrap guard, and the TPU duty-cycle estimate. A sensor
that polls implements ``sample_once()`` (take one sample of every device, under its own lock) and starts a
:class:`Sampler`; every ``read()`` also samples, so an integral always runs exactly to the moment of the read.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DEFAULT_MAX_POWER_W",
    "PowerTrace",
    "Sampler",
    "excess_energy",
    "trapezoid_j",
]

DEFAULT_MAX_POWER_W = 2000.0
"""No accelerator package draws more than this (an MI300X is rated 750 W, an H200 700 W): a counter increment
above it over a window is a bad reading (CodeCarbon PR #1072 logged 12.5 MW for an MI250), not energy."""


def trapezoid_j(t0_s: float, p0_w: float, t1_s: float, p1_w: float) -> float:
    """Energy in joules between two power samples, by the trapezoid rule: ``(p0 + p1) / 2 · (t1 - t0)``."""
    return 0.5 * (p0_w + p1_w) * (t1_s - t0_s)


def excess_energy(energy_j: float, duration_s: float, max_power_w: float, min_window_s: float = 1.0) -> bool:
    """Whether ``energy_j`` over ``duration_s`` is physically impossible for one device of at most ``max_power_w``.

    The window is taken as at least ``min_window_s``, so that two reads close together (a counter that updates
    every few ms) never look like a spike.
    """
    return energy_j > max_power_w * max(duration_s, min_window_s)


@dataclass
class PowerTrace:
    """Running trapezoid integral of one device's power samples (not thread-safe: the owner's lock guards it)."""

    energy_j: float = 0.0
    last_t_s: float | None = None
    last_p_w: float = 0.0

    def reset(self) -> None:
        self.energy_j, self.last_t_s, self.last_p_w = 0.0, None, 0.0

    def add(self, now_s: float, power_w: float) -> None:
        """Add a sample: the energy since the previous sample (none for the first) joins the integral."""
        if self.last_t_s is not None and now_s > self.last_t_s:
            self.energy_j += trapezoid_j(self.last_t_s, self.last_p_w, now_s, power_w)
        self.last_t_s, self.last_p_w = now_s, power_w


class _Polled(Protocol):
    _sampler_error: BaseException | None

    def sample_once(self) -> None: ...


class Sampler:
    """A daemon thread that calls ``owner.sample_once()`` every ``period_s`` until stopped.

    It holds the owner only through a weak reference, so a forgotten sensor is garbage-collected and its thread
    ends. An exception from ``sample_once`` is a bug (hardware errors are handled inside it): it is stored in
    ``owner._sampler_error`` for the next ``read()`` to surface, and the thread stops.
    """

    def __init__(self, owner: _Polled, period_s: float, name: str) -> None:
        self.period_s = float(period_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_loop, args=(weakref.ref(owner), self._stop, self.period_s), name=name, daemon=True
        )
        weakref.finalize(owner, self._stop.set)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop and join (never from the thread itself). Idempotent."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 10 * self.period_s))


def _loop(owner_ref: weakref.ref[Any], stop: threading.Event, period_s: float) -> None:
    while not stop.wait(period_s):
        owner = owner_ref()
        if owner is None:
            return
        try:
            owner.sample_once()
        except Exception as err:  # a bug, not a hardware problem: surface it at the next read
            owner._sampler_error = err
            return
        finally:
            del owner

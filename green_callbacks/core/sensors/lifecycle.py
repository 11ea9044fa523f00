"""The lifecycle every accelerator sensor shares: start, locked reads, the optional power sampler, the first
lost device, a bug in the sampler thread, and the reading frozen at ``close()``.

A sensor built on :class:`SensorLifecycle` implements only what is its own:

- ``_start_locked(now_s)``: take the baselines (the lock is held; ``_lost_note`` was just cleared);
- ``_measure_locked(now_s)``: the cumulative :class:`Reading` now, or call :meth:`_lose` and return anything
  (the base turns a lost sensor's reading into ``unavailable`` with the note);
- optionally ``_sample_locked(now_s)`` with ``_sample_period_s()`` (the background sampler's tick and period).

The base guarantees the protocol's promises in one place: ``read()`` never raises for hardware (a sampler bug
re-raises only in strict mode), the first loss is the one reported, a closed sensor stays closed and keeps
answering its last reading, and ``close()`` joins the sampler before freezing.
"""

from __future__ import annotations

import threading

from green_callbacks.core import clock
from green_callbacks.core.guard import strict_mode
from green_callbacks.core.sensors.base import UNAVAILABLE, Reading
from green_callbacks.core.sensors.polling import Sampler

__all__ = ["SensorLifecycle"]


class SensorLifecycle:
    """Base of the accelerator sensors (NVML, AMD SMI, Level Zero, TPU duty cycle, Apple IOReport).

    Subclasses set ``_what`` (how a message names the sensor: ``"the GPU sensor"``), ``_sampler_what`` (how the
    message about a failed sampler names it) and ``_sampler_name`` (the thread's name), call
    :meth:`_init_lifecycle` in their constructor, and implement the hooks listed in the module docstring.
    """

    _what = "the sensor"
    _sampler_what = "the sampler"
    _sampler_name = "green-callbacks-sampler"

    def _init_lifecycle(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self._start_s = 0.0
        self._lost_note: str | None = None
        self._sampler_error: BaseException | None = None
        self._final: Reading | None = None  # set by close()
        self._sampler: Sampler | None = None

    # -- hooks

    def _start_locked(self, now_s: float) -> None:
        """Take the baselines at ``start()``; the lock is held."""

    def _measure_locked(self, now_s: float) -> Reading:
        raise NotImplementedError

    def _sample_locked(self, now_s: float) -> None:
        """One tick of the background sampler; the lock is held and the sensor is live."""

    def _sample_period_s(self) -> float | None:
        """The sampler's period, or ``None`` for a sensor that needs no background thread."""
        return None

    # -- the Sensor protocol

    @property
    def sampling(self) -> bool:
        """Whether the background sampler is running."""
        return self._sampler is not None and self._sampler.alive

    def start(self) -> None:
        """Zero the energy now (again, if called twice) and start the sampler if the sensor needs one."""
        with self._lock:
            if self._final is not None:
                return  # a closed sensor stays closed
            self._started = True
            self._start_s = clock.now_s()
            self._lost_note = None
            self._start_locked(self._start_s)
            period_s = self._sample_period_s()
            if self._sampler is None and period_s is not None:
                self._sampler = Sampler(self, period_s, self._sampler_name)

    def read(self) -> Reading:
        """The energy since ``start()``; ``unavailable`` (never raises for hardware) once a device is lost."""
        if not self._started:
            self.start()
        with self._lock:
            return self._read_locked()

    def sample_once(self) -> None:
        """The sampler thread's tick: nothing before ``start()``, after ``close()`` or once a device is lost."""
        with self._lock:
            if self._started and self._final is None and self._lost_note is None:
                self._sample_locked(clock.now_s())

    def close(self) -> None:
        """Stop the sampler (joined) and freeze the reading; later reads return the frozen one. Idempotent."""
        if self._sampler is not None:
            self._sampler.stop()
        with self._lock:
            if self._final is None:
                never = Reading(None, UNAVAILABLE, f"{self._what} was closed before it started")
                self._final = self._read_locked(raise_bugs=False) if self._started else never

    # -- shared internals (lock held)

    def _read_locked(self, raise_bugs: bool = True) -> Reading:
        if self._final is not None:
            return self._final
        if self._sampler_error is not None:
            if raise_bugs and strict_mode():
                raise self._sampler_error
            return Reading(None, UNAVAILABLE, f"{self._sampler_what} failed: {self._sampler_error!r}")
        if self._lost_note is None:
            reading = self._measure_locked(clock.now_s())
            if self._lost_note is None:
                return reading
        return Reading(None, UNAVAILABLE, self._lost_note)

    def _lose(self, note: str) -> None:
        """Record why the sensor is lost; the first loss is the one reported until the next ``start()``."""
        if self._lost_note is None:
            self._lost_note = note

    def _seconds_since_start(self) -> float:
        return clock.now_s() - self._start_s

"""Sensors with known behaviour, for tests and for parity checks between adapters.

They stand in for hardware only; everything above them (meter, session, adapters) runs for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from green_callbacks.core import clock
from green_callbacks.core.sensors.base import UNAVAILABLE, Component, Reading, Scope

__all__ = ["ConstantPowerSensor", "StepEnergySensor"]


@dataclass
class ConstantPowerSensor:
    """Draws ``power_w`` watts: energy = power × (clock time since start). Uses ``clock.now_s``.

    ``fail_after_s`` makes the component go ``unavailable`` once that much time has passed (a lost GPU).
    """

    component: Component
    power_w: float
    scope: Scope = "device"
    method: str = "fake-constant-power"
    fail_after_s: float | None = None
    _t0: float | None = None

    def start(self) -> None:
        self._t0 = clock.now_s()

    def read(self) -> Reading:
        if self._t0 is None:
            self.start()
        assert self._t0 is not None
        elapsed = clock.now_s() - self._t0
        if self.fail_after_s is not None and elapsed > self.fail_after_s:
            return Reading(None, UNAVAILABLE, f"fake {self.component} lost after {self.fail_after_s} s")
        return Reading(self.power_w * elapsed, self.method)

    def close(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"method": self.method, "power_w": self.power_w}


@dataclass
class StepEnergySensor:
    """Adds ``energy_per_read_j`` joules at every read: energy after n reads = n × step.

    Independent of time, so two adapters that read at the same boundaries get identical numbers.
    """

    component: Component
    energy_per_read_j: float
    scope: Scope = "device"
    method: str = "fake-step-energy"
    reads: int = 0

    def start(self) -> None:
        self.reads = 0

    def read(self) -> Reading:
        self.reads += 1
        return Reading(self.energy_per_read_j * self.reads, self.method)

    def close(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"method": self.method, "energy_per_read_j": self.energy_per_read_j}

"""The sensor protocol every energy source implements, and the null sensor used when hardware is missing.

A sensor measures one *component* (``"gpu"``, ``"cpu"`` or ``"ram"``) and reports the energy consumed since
``start()`` as a cumulative :class:`Reading`. Windows (epochs, evaluations) are differences of two readings,
taken by :class:`green_callbacks.core.meter.Meter`.

The *scope* of a sensor says what it covers, and therefore how readings combine across the processes of a
distributed run:

- ``"device"``: the accelerators this process trains on (summed over ranks);
- ``"process"``: this process only, e.g. an estimate from its CPU time (summed over ranks);
- ``"node"``: the whole machine, e.g. a RAPL package counter (counted once per node, by the node leader).

A sensor never raises from ``read()`` for a hardware problem: it returns a reading whose ``energy_j`` is
``None`` and whose ``method`` is ``"unavailable"``, with a ``note`` that says why and what to do.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "COMPONENTS",
    "NOT_USED",
    "UNAVAILABLE",
    "Component",
    "NullSensor",
    "Reading",
    "Scope",
    "Sensor",
    "boundary_cache",
    "shared_boundary",
]

Component = Literal["gpu", "cpu", "ram"]
Scope = Literal["device", "process", "node"]
COMPONENTS: tuple[Component, ...] = ("gpu", "cpu", "ram")
UNAVAILABLE = "unavailable"
NOT_USED = "not-used"
"""The method of a component this run does not use (no GPU when training on the CPU): no energy, and nothing
missing either: the run's total is complete without it."""


@dataclass(frozen=True)
class Reading:
    """Cumulative energy of one component since its sensor started.

    Attributes:
        energy_j: joules since ``start()``; ``None`` when the component could not be measured.
        method: how the number was produced (``"nvml-energy-counter"``, ``"nvml-power"``, ``"rapl"``,
            ``"estimate-cpu-time"``, ``"estimate-rss"``, ``"unavailable"``, ...).
        note: a human sentence when something is degraded (a GPU lost, a permission missing), else ``""``.
        gaps: how many stretches since ``start()`` had energy the sensor could not trust and left out (e.g. an
            implausible RAPL jump). Cumulative like ``energy_j``: a window over which it grew is unknown, not low.
    """

    energy_j: float | None
    method: str
    note: str = ""
    gaps: int = 0

    @property
    def available(self) -> bool:
        return self.energy_j is not None


@runtime_checkable
class Sensor(Protocol):
    """One energy source for one component."""

    component: Component
    scope: Scope

    def start(self) -> None:
        """Begin measuring; the cumulative energy is zero at this point."""

    def read(self) -> Reading:
        """Cumulative energy since ``start()``. Cheap: no subprocess, no device synchronisation."""

    def close(self) -> None:
        """Stop background work and release handles. Safe to call twice."""

    def info(self) -> dict[str, Any]:
        """A JSON-ready description of the hardware and method, for the run record."""


@dataclass
class NullSensor:
    """A component that cannot be measured here: always ``unavailable``, never zero; or, with
    ``method=NOT_USED``, one this run does not use (its energy is not part of the run)."""

    component: Component
    reason: str
    scope: Scope = "node"
    method: str = UNAVAILABLE
    _info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        pass

    def read(self) -> Reading:
        return Reading(None, self.method, self.reason)

    def close(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, **self._info}


_BOUNDARY: contextvars.ContextVar[dict[Any, Any] | None] = contextvars.ContextVar("green_boundary", default=None)


@contextlib.contextmanager
def shared_boundary() -> Iterator[None]:
    """Mark one read of all sensors (an epoch boundary): sensors may share work through :func:`boundary_cache`."""
    token = _BOUNDARY.set({})
    try:
        yield
    finally:
        _BOUNDARY.reset(token)


def boundary_cache() -> dict[Any, Any] | None:
    """A dict shared by the sensors read at the same boundary (e.g. one listing of the process tree), else None."""
    return _BOUNDARY.get()

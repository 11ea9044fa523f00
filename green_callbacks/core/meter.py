"""The meter owns the sensors and turns pairs of readings into named, nestable measurement windows.

``meter.begin("epoch")`` snapshots every sensor once; ``meter.end("epoch")`` snapshots again and returns a
frozen :class:`Measurement` of the difference. Windows may nest (``run`` ⊃ ``epoch`` ⊃ ``eval``) and are
independent of each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from green_callbacks.core import clock
from green_callbacks.core.sensors.base import NOT_USED, UNAVAILABLE, Reading, Sensor, shared_boundary
from green_callbacks.core.wording import warn_user

__all__ = ["ComponentEnergy", "Measurement", "Meter", "sum_measurements"]


@dataclass(frozen=True)
class ComponentEnergy:
    """Energy of one component in one window: joules (``None`` = unavailable) and the method behind it."""

    energy_j: float | None
    method: str
    note: str = ""

    @property
    def available(self) -> bool:
        return self.energy_j is not None


def _frozen(mapping: Mapping[str, ComponentEnergy]) -> Mapping[str, ComponentEnergy]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Measurement:
    """One window: its duration and the energy of each component (before PUE)."""

    name: str
    duration_s: float
    components: Mapping[str, ComponentEnergy] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _frozen(self.components))

    @property
    def energy_j(self) -> float | None:
        """Sum of the available components; ``None`` when none could be measured."""
        known = [c.energy_j for c in self.components.values() if c.energy_j is not None]
        return float(sum(known)) if known else None

    def component_j(self, component: str) -> float | None:
        entry = self.components.get(component)
        return None if entry is None else entry.energy_j

    def minus(self, other: Measurement, name: str | None = None) -> Measurement:
        """This window less a window nested in it (e.g. an epoch less its evaluation = its training part)."""
        parts: dict[str, ComponentEnergy] = {}
        for key, mine in self.components.items():
            theirs = other.components.get(key)
            if mine.energy_j is None or theirs is None or theirs.energy_j is None:
                parts[key] = ComponentEnergy(None, UNAVAILABLE, mine.note or (theirs.note if theirs else ""))
            else:
                parts[key] = ComponentEnergy(max(mine.energy_j - theirs.energy_j, 0.0), mine.method, mine.note)
        return Measurement(name or f"{self.name}-{other.name}", max(self.duration_s - other.duration_s, 0.0), parts)


@dataclass(frozen=True)
class _Snapshot:
    time_s: float
    readings: Mapping[str, Reading]


def sum_measurements(name: str, parts: Sequence[Measurement], like: Mapping[str, ComponentEnergy]) -> Measurement:
    """Several windows as one (an epoch's evaluations, a phase's warm-up batches), with ``like``'s components: each
    summed, unavailable when any window lacked it; no window is 0 J with ``like``'s methods."""
    if not parts:
        return Measurement(name, 0.0, {k: ComponentEnergy(0.0, v.method) for k, v in like.items()})
    comps: dict[str, ComponentEnergy] = {}
    for key in like:
        values = [p.components[key] for p in parts if key in p.components]
        if any(v.energy_j is None for v in values):
            comps[key] = ComponentEnergy(None, UNAVAILABLE, next((v.note for v in values if v.note), ""))
        else:
            comps[key] = ComponentEnergy(sum(v.energy_j or 0.0 for v in values), values[-1].method)
    return Measurement(name, sum(p.duration_s for p in parts), comps)


class Meter:
    """Owns the sensors (one per component) and measures named windows.

    A sensor that raises is caught here, warned about once, and reported ``unavailable`` from then on: a
    measurement problem never reaches the training loop.
    """

    def __init__(self, sensors: Sequence[Sensor]) -> None:
        seen: dict[str, Sensor] = {}
        for sensor in sensors:
            if sensor.component in seen:
                raise ValueError(
                    f"two sensors for component {sensor.component!r}: {seen[sensor.component]!r} and {sensor!r}; "
                    "pass one sensor per component"
                )
            seen[sensor.component] = sensor
        self.sensors: dict[str, Sensor] = seen
        self._open: dict[str, _Snapshot] = {}
        self._broken: dict[str, str] = {}
        self._started = False

    @property
    def components(self) -> tuple[str, ...]:
        return tuple(self.sensors)

    @property
    def broken(self) -> tuple[str, ...]:
        """Components whose sensor raised and was switched off (already warned about here)."""
        return tuple(self._broken)

    def start(self) -> None:
        if self._started:
            return
        for name, sensor in self.sensors.items():
            try:
                sensor.start()
            except Exception as err:  # a sensor must never break the run
                self._break(name, err)
        self._started = True

    def close(self) -> None:
        for sensor in self.sensors.values():
            try:
                sensor.close()
            except Exception:  # closing is best effort
                pass
        self._open.clear()
        self._started = False

    def _break(self, name: str, err: BaseException) -> None:
        if name not in self._broken:
            self._broken[name] = f"{type(err).__name__}: {err}"
            warn_user(
                f"green_callbacks: the {name} energy sensor failed ({self._broken[name]}); {name} energy is "
                "reported 'unavailable' from now on and training goes on.", RuntimeWarning)

    def read(self) -> dict[str, Reading]:
        """One reading of every sensor (the cost of an epoch boundary); the sensors may share work within it."""
        with shared_boundary():
            return self._read_all()

    def _read_all(self) -> dict[str, Reading]:
        out: dict[str, Reading] = {}
        for name, sensor in self.sensors.items():
            if name in self._broken:
                out[name] = Reading(None, UNAVAILABLE, f"sensor failed: {self._broken[name]}")
                continue
            try:
                out[name] = sensor.read()
            except Exception as err:
                self._break(name, err)
                out[name] = Reading(None, UNAVAILABLE, f"sensor failed: {self._broken[name]}")
        return out

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(clock.now_s(), self.read())

    def begin(self, window: str, *more: str) -> None:
        """Open (or re-open) the window named ``window`` (and the windows ``more``, from the same one read)."""
        if not self._started:
            self.start()
        snapshot = self._snapshot()
        for name in (window, *more):
            self._open[name] = snapshot

    def is_open(self, window: str) -> bool:
        return window in self._open

    def end(self, window: str) -> Measurement:
        """Close ``window`` and return what happened in it."""
        start = self._open.pop(window, None)
        if start is None:
            raise KeyError(f"no open measurement window {window!r}; open ones: {sorted(self._open)}")
        end = self._snapshot()
        return self._difference(window, start, end)

    @staticmethod
    def _difference(window: str, start: _Snapshot, end: _Snapshot) -> Measurement:
        parts: dict[str, ComponentEnergy] = {}
        for name, last in end.readings.items():
            first = start.readings.get(name)
            if first is None or first.energy_j is None or last.energy_j is None:
                note = last.note or (first.note if first is not None else "")
                if last.energy_j is not None:  # became available mid-window: the window is still unknown
                    note = note or "not measured at window start"
                method = NOT_USED if last.method == NOT_USED else UNAVAILABLE
                parts[name] = ComponentEnergy(None, method, note)
            elif last.gaps > first.gaps:  # energy left out inside this window: unknown, never an under-count
                parts[name] = ComponentEnergy(None, UNAVAILABLE, last.note or "energy left out in this window")
            else:
                parts[name] = ComponentEnergy(max(last.energy_j - first.energy_j, 0.0), last.method, last.note)
        return Measurement(window, max(end.time_s - start.time_s, 0.0), parts)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sensor in self.sensors.items():
            try:
                out[name] = {"scope": sensor.scope, **sensor.info()}
            except Exception as err:
                out[name] = {"scope": sensor.scope, "error": f"{type(err).__name__}: {err}"}
        return out

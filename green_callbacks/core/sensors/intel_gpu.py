"""Intel GPU energy from Level Zero Sysman through ``pyzes`` (Data Center GPU Max, Arc; ``xpu`` devices).

- ``level-zero-energy-counter``: ``zesPowerGetEnergyCounter(hPower, byref(zes_power_energy_counter_t))`` fills
  ``energy`` (µJ, monotonic) and ``timestamp`` (µs). Energy = difference of two reads; no thread (a 64-bit µJ
  counter does not wrap in practice). The units are those of the Level Zero specification and of pyzes' own
  field comments; **unverified on real hardware here**. A decrease (driver reload) makes the reading
  ``unavailable``; an increment above ``max_power_w`` (2 kW) per device is rejected as a gap with one warning.
- Power domain: the first device-level domain (``zes_power_properties_t.onSubdevice == False``: card or package);
  where a device has only per-tile domains, their sum. Never both, so no double count.

``pyzes`` is a thin ctypes wrapper: every call returns a ``ze_result_t`` (``ZE_RESULT_SUCCESS == 0``) and fills
structures passed by reference; it loads ``libze_loader.so.1`` at import, so a machine without the Level Zero loader
fails at import (reported ``unavailable`` with the reason).

Device mapping for ``xpu:N``: Sysman lists *cards*. The runtime lists devices after ``ZE_AFFINITY_MASK`` and
``ZE_FLAT_DEVICE_HIERARCHY``: in ``FLAT`` mode (the default on Data Center GPU Max) each tile (stack) of a card is its
own device, in ``COMPOSITE`` mode each card is one device and ``N.M`` names tile ``M`` of card ``N``. ``xpu:N``
indexes that list and is measured on its card, whose counter covers all its tiles (noted when a tile of a
multi-tile card is measured). Assumes Sysman and the runtime enumerate cards in the same order (unverified).

Untested on real Intel hardware: tested against a fake ``pyzes`` (tests/fakes/fake_pyzes.py) with the same
function names, structures and units.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from green_callbacks.core.sensors.base import Component, NullSensor, Reading, Scope, Sensor
from green_callbacks.core.sensors.lifecycle import SensorLifecycle
from green_callbacks.core.sensors.optional import SensorUnavailableError, import_optional
from green_callbacks.core.sensors.polling import DEFAULT_MAX_POWER_W, excess_energy

__all__ = [
    "METHOD",
    "IntelGpuId",
    "IntelGpuSensor",
    "build_intel_gpu_sensor",
    "level_zero_library",
    "parse_affinity_mask",
    "select_intel_gpus",
]

METHOD = "level-zero-energy-counter"

_INIT_LOCK = threading.Lock()
_init_lib: Any = None
_init_error: SensorUnavailableError | None = None


class LevelZeroError(RuntimeError):
    """A Sysman call returned a code other than ZE_RESULT_SUCCESS."""


def _load_pyzes() -> Any:
    return import_optional("pyzes", extra="intel", package="pyzes", what="Intel GPU energy")


def level_zero_library() -> Any:
    """The ``pyzes`` module with ``zesInit(0)`` called once per process."""
    global _init_lib, _init_error
    lib = _load_pyzes()
    with _INIT_LOCK:
        if _init_lib is not lib:
            _init_lib, _init_error = lib, None
            rc = lib.zesInit(0)
            if rc != lib.ZE_RESULT_SUCCESS:
                _init_error = SensorUnavailableError(
                    f"Level Zero Sysman could not start (zesInit returned {rc:#x}), so Intel GPU energy is not "
                    "measured. Check the Intel GPU driver (`xpu-smi discovery` or `sycl-ls` in a shell) and that "
                    "this user is in the `render` group."
                )
        if _init_error is not None:
            raise _init_error
    return lib


def _check(lib: Any, rc: int, call: str) -> None:
    if rc != lib.ZE_RESULT_SUCCESS:
        raise LevelZeroError(f"{call} returned {rc:#x}")


def _enumerate(lib: Any, getter: Any, *args: Any, handle_type: Any, call: str) -> list[Any]:
    """The two-call Level Zero pattern: ask for the count, then fill an array of that many handles."""
    count = ctypes.c_uint32(0)
    _check(lib, getter(*args, ctypes.byref(count), None), call)
    if count.value == 0:
        return []
    handles = (handle_type * count.value)()
    _check(lib, getter(*args, ctypes.byref(count), handles), call)
    return [handles[i] for i in range(count.value)]


# --------------------------------------------------------------------------------------------- device mapping


@dataclass(frozen=True)
class IntelGpuId:
    """One card as Sysman lists it; ``tiles`` the subdevices it has, ``xpu_indices`` the framework's ordinals."""

    index: int
    uuid: str
    name: str
    bdf: str
    tiles: int = 1
    xpu_indices: tuple[int, ...] = ()

    def label(self) -> str:
        return f"Intel GPU {self.index} ({self.name}, {self.bdf})"


class _Cards:
    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.handles: list[Any] = []
        for driver in _enumerate(lib, lib.zesDriverGet, handle_type=lib.zes_driver_handle_t, call="zesDriverGet"):
            self.handles += _enumerate(lib, lib.zesDeviceGet, driver, handle_type=lib.zes_device_handle_t,
                                       call="zesDeviceGet")
        self.cards = [self._describe(i, h) for i, h in enumerate(self.handles)]

    def _describe(self, index: int, handle: Any) -> IntelGpuId:
        lib = self.lib
        props = lib.zes_device_properties_t()
        props.stype = lib.ZES_STRUCTURE_TYPE_DEVICE_PROPERTIES
        _check(lib, lib.zesDeviceGetProperties(handle, ctypes.byref(props)), "zesDeviceGetProperties")
        pci = lib.zes_pci_properties_t()
        pci.stype = lib.ZES_STRUCTURE_TYPE_PCI_PROPERTIES
        bdf = ""
        if lib.zesDevicePciGetProperties(handle, ctypes.byref(pci)) == lib.ZE_RESULT_SUCCESS:
            a = pci.address
            bdf = f"{a.domain:04x}:{a.bus:02x}:{a.device:02x}.{a.function:x}"
        name = (props.modelName or props.core.name or b"Intel GPU").decode(errors="replace")
        return IntelGpuId(index, bytes(props.core.uuid.id).hex(), name, bdf, max(1, int(props.numSubdevices)))


def parse_affinity_mask(value: str | None) -> list[tuple[int, int | None]] | None:
    """``ZE_AFFINITY_MASK`` as ``[(device, tile or None), ...]``; ``None`` when unset. Bad entries end the list."""
    if value is None or not value.strip():
        return None
    out: list[tuple[int, int | None]] = []
    for entry in value.split(","):
        parts = entry.strip().split(".")
        if not all(p.isdigit() for p in parts) or len(parts) > 2:
            break
        item = (int(parts[0]), int(parts[1]) if len(parts) == 2 else None)
        if item in out:
            break
        out.append(item)
    return out


def _runtime_devices(cards: list[IntelGpuId]) -> list[tuple[IntelGpuId, int | None]]:
    """What the runtime calls ``xpu:0, 1, ...``: (card, tile or None for the whole card)."""
    flat = os.environ.get("ZE_FLAT_DEVICE_HIERARCHY", "FLAT").strip().upper() != "COMPOSITE"
    all_devices = [(c, t) for c in cards for t in range(c.tiles)] if flat else [(c, None) for c in cards]
    mask = parse_affinity_mask(os.environ.get("ZE_AFFINITY_MASK"))
    if mask is None:
        return all_devices
    out: list[tuple[IntelGpuId, int | None]] = []
    for device, tile in mask:
        if flat:
            if tile is None and device < len(all_devices):
                out.append(all_devices[device])
        elif device < len(cards) and (tile is None or tile < cards[device].tiles):
            out.append((cards[device], tile))
    return out


def select_intel_gpus(
    device_indices: Sequence[int] | None = None,
    *,
    device_uuids: Sequence[str] | None = None,
    lib: Any = None,
) -> list[tuple[IntelGpuId, tuple[int | None, ...]]]:
    """The cards this process trains on, each with the tiles used on it (``None``: the whole card)."""
    cards = _Cards(lib if lib is not None else level_zero_library()).cards
    chosen: dict[int, tuple[IntelGpuId, list[int], list[int | None]]] = {}

    def take(card: IntelGpuId, ordinal: int, tile: int | None) -> None:
        entry = chosen.setdefault(card.index, (card, [], []))
        entry[1].append(ordinal)
        entry[2].append(tile)

    if device_uuids is not None:
        for ordinal, uuid in enumerate(device_uuids):
            key = str(uuid).replace("-", "").lower()
            found = [c for c in cards if key and c.uuid.startswith(key)]
            if len(found) != 1:
                raise ValueError(f"device UUID {uuid!r} matches no Intel GPU Sysman can see "
                                 f"({', '.join(c.uuid for c in cards) or 'none'}).")
            take(found[0], ordinal, None)
    elif device_indices is None or len(device_indices) > 0:
        visible = _runtime_devices(cards)
        ordinals = range(len(visible)) if device_indices is None else device_indices
        for ordinal in ordinals:
            if isinstance(ordinal, bool) or not isinstance(ordinal, int) or not 0 <= ordinal < len(visible):
                raise ValueError(
                    f"device index {ordinal!r} is not visible: ZE_AFFINITY_MASK="
                    f"{os.environ.get('ZE_AFFINITY_MASK')!r} (hierarchy "
                    f"{os.environ.get('ZE_FLAT_DEVICE_HIERARCHY', 'FLAT')}) makes {len(visible)} xpu device(s) visible."
                )
            card, tile = visible[ordinal]
            take(card, ordinal, tile)
    out = []
    for card, ordinals, tiles in chosen.values():
        out.append((IntelGpuId(card.index, card.uuid, card.name, card.bdf, card.tiles, tuple(ordinals)), tuple(tiles)))
    return out


# --------------------------------------------------------------------------------------------- the sensor


@dataclass
class _Card:
    gpu: IntelGpuId
    tiles_used: tuple[int | None, ...]
    domains: list[Any]
    baseline_uj: list[int] = field(default_factory=list)
    last_uj: int = 0
    last_t_s: float = 0.0
    energy_j: float = 0.0


class IntelGpuSensor(SensorLifecycle):
    """Energy of the selected Intel GPU cards since ``start()``; ``component="gpu"``, ``scope="device"``."""

    component: Component = "gpu"
    scope: Scope = "device"
    _what = "the Intel GPU sensor"

    def __init__(
        self,
        cards: Sequence[tuple[IntelGpuId, tuple[int | None, ...]]],
        *,
        max_power_w: float = DEFAULT_MAX_POWER_W,
        lib: Any = None,
    ) -> None:
        if not cards:
            raise ValueError("IntelGpuSensor needs at least one card; use NullSensor('gpu', reason) for none.")
        if isinstance(max_power_w, bool) or not isinstance(max_power_w, (int, float)) or not math.isfinite(
            max_power_w) or max_power_w <= 0:
            raise ValueError(f"max_power_w={max_power_w!r}; it must be a positive number of watts.")
        self._lib = lib if lib is not None else level_zero_library()
        self._max_w = float(max_power_w)
        self._init_lifecycle()
        handles = _Cards(self._lib).handles
        self._cards = [_Card(gpu, tiles, self._domains(gpu, handles[gpu.index])) for gpu, tiles in cards]
        self._gaps = 0
        self._last_gap = ""

    def _domains(self, gpu: IntelGpuId, handle: Any) -> list[Any]:
        lib = self._lib
        try:
            domains = _enumerate(lib, lib.zesDeviceEnumPowerDomains, handle, handle_type=lib.zes_pwr_handle_t,
                                 call="zesDeviceEnumPowerDomains")
        except LevelZeroError as err:
            raise SensorUnavailableError(f"{gpu.label()}: no power domains ({err})") from err
        card_level, tiles = [], []
        for domain in domains:
            props = lib.zes_power_properties_t()
            props.stype = lib.ZES_STRUCTURE_TYPE_POWER_PROPERTIES
            if lib.zesPowerGetProperties(domain, ctypes.byref(props)) != lib.ZE_RESULT_SUCCESS:
                continue
            (tiles if props.onSubdevice else card_level).append(domain)
        chosen = card_level[:1] or tiles
        if not chosen:
            raise SensorUnavailableError(f"{gpu.label()} exposes no power domain, so its energy cannot be measured")
        for domain in chosen:
            self._energy_uj(domain, gpu)  # probe: raises SensorUnavailableError if the counter is unsupported
        return chosen

    def _energy_uj(self, domain: Any, gpu: IntelGpuId) -> int:
        counter = self._lib.zes_power_energy_counter_t()
        rc = self._lib.zesPowerGetEnergyCounter(domain, ctypes.byref(counter))
        if rc != self._lib.ZE_RESULT_SUCCESS:
            raise SensorUnavailableError(f"{gpu.label()}: zesPowerGetEnergyCounter returned {rc:#x}")
        return int(counter.energy)

    def _card_uj(self, card: _Card) -> int:
        return sum(self._energy_uj(d, card.gpu) for d in card.domains)

    @property
    def method(self) -> str:
        return METHOD

    def _start_locked(self, now_s: float) -> None:
        self._gaps, self._last_gap = 0, ""
        for card in self._cards:
            card.energy_j = 0.0
            try:
                card.last_uj, card.last_t_s = self._card_uj(card), now_s
            except SensorUnavailableError as err:
                self._mark_lost(card, str(err))

    def info(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "method": METHOD,
            "library": "pyzes (Level Zero Sysman)",
            "units": "µJ / µs per the Level Zero specification (unverified on hardware here)",
            "max_power_w": self._max_w,
            "devices": [
                {"sysman_index": c.gpu.index, "uuid": c.gpu.uuid, "name": c.gpu.name, "bdf": c.gpu.bdf,
                 "tiles": c.gpu.tiles, "xpu_indices": list(c.gpu.xpu_indices), "power_domains": len(c.domains)}
                for c in self._cards
            ],
        }
        if self._tile_note():
            details["attribution"] = self._tile_note()
        if self._lost_note:
            details["lost"] = self._lost_note
        return details

    def _measure_locked(self, now_s: float) -> Reading:
        for card in self._cards:
            if self._lost_note is not None:
                break
            try:
                value = self._card_uj(card)
            except SensorUnavailableError as err:
                self._mark_lost(card, str(err))
                break
            if value < card.last_uj:
                self._mark_lost(card, f"its energy counter went back from {card.last_uj} to {value} µJ")
                break
            energy_j = (value - card.last_uj) * 1e-6
            duration_s = now_s - card.last_t_s
            if excess_energy(energy_j, duration_s, self._max_w):
                self._gaps += 1
                self._last_gap = (f"{self._gaps} impossible reading(s) rejected on {card.gpu.label()} (the last: "
                                  f"{energy_j:.0f} J in {duration_s:.1f} s, above the {self._max_w:.0f} W bound); "
                                  "the windows that contain them are unavailable.")
                if self._gaps == 1:
                    warnings.warn(f"green_callbacks: {self._last_gap}", RuntimeWarning, stacklevel=4)
            else:
                card.energy_j += energy_j
            card.last_uj, card.last_t_s = value, now_s
        note = " ".join(n for n in (self._tile_note(), self._last_gap) if n)
        return Reading(sum(c.energy_j for c in self._cards), METHOD, note, gaps=self._gaps)

    def _mark_lost(self, card: _Card, why: str) -> None:
        self._lose(
            f"{card.gpu.label()} lost {self._seconds_since_start():.1f} s after the start ({why}); Intel GPU "
            "energy is unavailable from then on; windows that ended earlier keep their values."
        )

    def _tile_note(self) -> str:
        partial = [c for c in self._cards if c.gpu.tiles > 1 and None not in c.tiles_used
                   and len(set(c.tiles_used)) < c.gpu.tiles]
        if not partial:
            return ""
        return ("Level Zero measures whole cards, so this is the energy of " + ", ".join(c.gpu.label() for c in partial)
                + " including its tile(s) this process does not use.")


def build_intel_gpu_sensor(
    device_indices: Sequence[int] | None = None,
    *,
    device_uuids: Sequence[str] | None = None,
    max_power_w: float = DEFAULT_MAX_POWER_W,
) -> Sensor:
    """The Intel GPU sensor for this process, or a ``NullSensor`` (``unavailable``, never 0) that says why not."""
    try:
        lib = level_zero_library()
        cards = select_intel_gpus(device_indices, device_uuids=device_uuids, lib=lib)
    except SensorUnavailableError as err:
        return NullSensor("gpu", str(err), scope="device")
    except LevelZeroError as err:
        return NullSensor("gpu", f"Intel GPU energy is not measured: Level Zero Sysman failed ({err}).", scope="device")
    except ValueError as err:
        warnings.warn(f"Intel GPU energy is not measured: {err}", UserWarning, stacklevel=2)
        return NullSensor("gpu", f"Intel GPU energy is not measured: {err}", scope="device")
    if not cards:
        return NullSensor("gpu", "no Intel GPU is visible to this process (ZE_AFFINITY_MASK may hide them), so "
                          "Intel GPU energy is not measured.", scope="device")
    try:
        return IntelGpuSensor(cards, max_power_w=max_power_w, lib=lib)
    except (SensorUnavailableError, LevelZeroError) as err:
        return NullSensor("gpu", f"Intel GPU energy is not measured: {err}", scope="device")

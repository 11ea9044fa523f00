"""AMD Instinct / Radeon GPU energy from ``amdsmi`` (ROCm): the energy accumulator where it works, power otherwise.

- ``amdsmi-energy-counter``: ``amdsmi_get_energy_count(handle)`` returns ``energy_accumulator`` (ticks; the key was
  ``power`` before amdsmi 6.2.1), ``counter_resolution`` (µJ per tick) and a timestamp; energy = Δticks ×
  resolution. Some firmware keeps a 32-bit accumulator (2³² × 15.3 µJ ≈ 65.7 kJ, a wrap every ~90 s at 750 W),
  so a daemon thread reads every counter every ``counter_poll_s`` and a decrease from below 2³² is taken as one
  32-bit wrap. Any other decrease (driver reload, GPU reset) makes the reading ``unavailable``.
- ``amdsmi-power``: where the accumulator is missing, ``amdsmi_get_power_info(handle)`` (``average_socket_power``,
  else ``current_socket_power``, in W) is sampled every ``sample_period_s`` and integrated by the trapezoid rule
  (:mod:`green_callbacks.core.sensors.polling`).
- Sanity bound: an increment implying more than ``max_power_w`` (2 kW) for one device over its window is rejected
  with one warning and counted as a gap, so that window's GPU energy is ``unavailable``, never 12.5 MW.
- Stuck counter: a powered GPU's accumulator moves every few ms; one that stands still for ``STALE_COUNTER_S``
  (10 s) is stuck (ROCm/amdsmi#38 reports counter anomalies). That device goes on with power sampling (at the
  background thread's period), and the stuck stretch is a gap; without a power reading it is ``unavailable``.
- MI200 (MI250/MI250X) packages hold two dies (GCDs) that appear as two devices; the package's energy and power
  are reported on the first die only, the second reports none (by design, ROCm ≥ 6.0). A die with neither
  counter nor power is measured through the die before it in amdsmi's enumeration (the package partner) and the
  package is counted once, with a note: the energy is the whole package's, both dies.

Device mapping: the framework's device ordinals (HIP ordinals, which torch on ROCm calls ``cuda:N``) pass through
``ROCR_VISIBLE_DEVICES`` (applied first, by the runtime) and then ``HIP_VISIBLE_DEVICES`` (else
``CUDA_VISIBLE_DEVICES``, which HIP also honours), each a list of integers or ``GPU-<serial>`` UUIDs. PCI bus ids
(``device_bus_ids``, e.g. ``"0000:c1:00.0"``) or UUIDs (``device_uuids``) from the framework are exact and
preferred. Integer ordinals assume amdsmi enumerates devices in the order ROCr does (both by PCI bus on the
systems we know of; unverified here). Not supported in VM guests (amdsmi's documentation).

Untested on real AMD hardware: every path is tested against a fake ``amdsmi`` (tests/fakes/fake_amdsmi.py) that
mirrors the call names, keys and units of amdsmi 6.x/7.x.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from green_callbacks.core.sensors.base import Component, NullSensor, Reading, Scope, Sensor
from green_callbacks.core.sensors.gpu_map import parse_cuda_visible_devices
from green_callbacks.core.sensors.lifecycle import SensorLifecycle
from green_callbacks.core.sensors.optional import SensorUnavailableError, import_optional
from green_callbacks.core.sensors.polling import DEFAULT_MAX_POWER_W, PowerTrace, excess_energy

__all__ = [
    "METHOD_COUNTER",
    "METHOD_POWER",
    "AmdGpuId",
    "AmdGpuSensor",
    "amdsmi_library",
    "build_amd_sensor",
    "select_amd_gpus",
]

METHOD_COUNTER = "amdsmi-energy-counter"
METHOD_POWER = "amdsmi-power"
DEFAULT_SAMPLE_PERIOD_S = 0.1
DEFAULT_COUNTER_POLL_S = 5.0
STALE_COUNTER_S = 10.0
WRAP_32 = 2**32

_INIT_LOCK = threading.Lock()
_init_lib: Any = None
_init_error: SensorUnavailableError | None = None


def _load_amdsmi() -> Any:
    """Import and return ``amdsmi`` (ROCm's Python package). Tests patch this function."""
    return import_optional("amdsmi", extra="amd", package="amdsmi", what="AMD GPU energy")


def amdsmi_library() -> Any:
    """The ``amdsmi`` module, with ``amdsmi_init()`` called once per process (never shut down by us).

    Raises:
        SensorUnavailableError: the package is missing, or amdsmi could not start (no amdgpu driver, no access).
    """
    global _init_lib, _init_error
    lib = _load_amdsmi()
    with _INIT_LOCK:
        if _init_lib is not lib:
            _init_lib, _init_error = lib, None
            try:
                lib.amdsmi_init()
            except lib.AmdSmiException as err:
                _init_error = SensorUnavailableError(
                    f"amdsmi could not start ({type(err).__name__}: {err}), so AMD GPU energy is not measured. "
                    "Check that the amdgpu driver is loaded (`amd-smi list` in a shell) and that this user may "
                    "open /dev/kfd and /dev/dri (the `render` and `video` groups)."
                )
        if _init_error is not None:
            raise _init_error
    return lib


# --------------------------------------------------------------------------------------------- device mapping


@dataclass(frozen=True)
class AmdGpuId:
    """One AMD device (a die/GCD, as amdsmi and HIP list them).

    Attributes:
        index: amdsmi's enumeration index.
        bdf: PCI address ``"0000:c1:00.0"``.
        uuid: amdsmi's UUID; ``serial`` the ASIC serial (``GPU-<serial>`` is the form ROCR/HIP variables accept).
        name: market name.
        hip_index: the framework's ordinal for it, when known.
    """

    index: int
    bdf: str
    uuid: str
    name: str
    serial: str = ""
    hip_index: int | None = None

    def label(self) -> str:
        return f"AMD GPU {self.index} ({self.name}, {self.bdf})"


class _AmdMachine:
    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.handles = list(lib.amdsmi_get_processor_handles())
        self.gpus = [self._describe(i, h) for i, h in enumerate(self.handles)]

    def _describe(self, index: int, handle: Any) -> AmdGpuId:
        lib = self.lib

        def text(call: str, key: str | None = None) -> str:
            try:
                value = getattr(lib, call)(handle)
                return str(value[key] if key else value)
            except (lib.AmdSmiException, KeyError, AttributeError):
                return ""

        serial = text("amdsmi_get_gpu_asic_info", "asic_serial").lower()
        serial = serial[2:] if serial.startswith("0x") else serial
        return AmdGpuId(
            index=index,
            bdf=text("amdsmi_get_gpu_device_bdf").lower(),
            uuid=text("amdsmi_get_gpu_device_uuid").lower(),
            name=text("amdsmi_get_gpu_asic_info", "market_name") or "AMD GPU",
            serial="" if serial in ("n/a", "") else serial,
        )

    def by_uuid(self, value: str) -> AmdGpuId | None:
        """The device whose amdsmi UUID or ASIC serial starts with ``value`` (``GPU-`` prefix optional)."""
        key = value.strip().lower()
        key = key[4:] if key.startswith("gpu-") else key
        key = key[2:] if key.startswith("0x") else key
        if not key:
            return None
        matches = [g for g in self.gpus if any(v and v.startswith(key) for v in (g.uuid, g.serial))]
        return matches[0] if len(matches) == 1 else None

    def by_bdf(self, value: str) -> AmdGpuId | None:
        key = value.strip().lower()
        key = key if key.count(":") == 2 else f"0000:{key}"  # torch-style "c1:00.0" has no domain
        matches = [g for g in self.gpus if g.bdf == key]
        return matches[0] if matches else None


def _apply_visible(raw: str | None, pool: list[AmdGpuId], machine: _AmdMachine, name: str) -> list[AmdGpuId]:
    """One ``*_VISIBLE_DEVICES`` layer: integers index ``pool``; ``GPU-…`` entries name devices in ``pool``."""
    parsed = parse_cuda_visible_devices(raw)
    if parsed is None:
        return pool
    out: list[AmdGpuId] = []
    for entry in parsed:
        found: AmdGpuId | None
        if isinstance(entry, int):
            found = pool[entry] if entry < len(pool) else None
        else:
            found = machine.by_uuid(entry)
            found = found if found in pool else None
        if found is None:
            warnings.warn(
                f"{name}={raw!r}: entry {entry!r} matches no AMD GPU visible at this point "
                f"({len(pool)} visible); it and every entry after it are ignored.",
                UserWarning,
                stacklevel=4,
            )
            break
        out.append(found)
    return out


def select_amd_gpus(
    device_indices: Sequence[int] | None = None,
    *,
    device_uuids: Sequence[str] | None = None,
    device_bus_ids: Sequence[str] | None = None,
    lib: Any = None,
) -> list[AmdGpuId]:
    """The AMD devices this process trains on (before the MI200 second-die substitution).

    ``device_bus_ids`` win, then ``device_uuids``, then ``device_indices`` through ROCR/HIP/CUDA_VISIBLE_DEVICES.
    ``[]`` means none; ``None`` every visible device. Raises ``ValueError`` for an id no device has.
    """
    machine = _AmdMachine(lib if lib is not None else amdsmi_library())
    for ids, finder, what in ((device_bus_ids, machine.by_bdf, "PCI bus id"), (device_uuids, machine.by_uuid, "UUID")):
        if ids is None:
            continue
        chosen = []
        for ordinal, value in enumerate(ids):
            found = finder(str(value))
            if found is None:
                raise ValueError(
                    f"{what} {value!r} matches no AMD GPU amdsmi can see "
                    f"({', '.join(g.bdf for g in machine.gpus) or 'none'})."
                )
            chosen.append(_with_hip_index(found, ordinal))
        return _dedupe(chosen)
    if device_indices is not None and len(device_indices) == 0:
        return []
    visible = _apply_visible(os.environ.get("ROCR_VISIBLE_DEVICES"), machine.gpus, machine, "ROCR_VISIBLE_DEVICES")
    hip_name = "HIP_VISIBLE_DEVICES" if "HIP_VISIBLE_DEVICES" in os.environ else "CUDA_VISIBLE_DEVICES"
    visible = _apply_visible(os.environ.get(hip_name), visible, machine, hip_name)
    if device_indices is None:
        return _dedupe([_with_hip_index(g, i) for i, g in enumerate(visible)])
    chosen = []
    for ordinal in device_indices:
        if isinstance(ordinal, bool) or not isinstance(ordinal, int) or not 0 <= ordinal < len(visible):
            raise ValueError(
                f"device index {ordinal!r} is not visible: ROCR_VISIBLE_DEVICES="
                f"{os.environ.get('ROCR_VISIBLE_DEVICES')!r} and {hip_name}={os.environ.get(hip_name)!r} make "
                f"{len(visible)} AMD GPU(s) visible to this process."
            )
        chosen.append(_with_hip_index(visible[ordinal], ordinal))
    return _dedupe(chosen)


def _with_hip_index(gpu: AmdGpuId, hip_index: int) -> AmdGpuId:
    return AmdGpuId(gpu.index, gpu.bdf, gpu.uuid, gpu.name, gpu.serial, hip_index)


def _dedupe(chosen: Sequence[AmdGpuId]) -> list[AmdGpuId]:
    seen: dict[int, AmdGpuId] = {}
    for gpu in chosen:
        seen.setdefault(gpu.index, gpu)
    return list(seen.values())


# --------------------------------------------------------------------------------------------- the sensor


@dataclass
class _Device:
    gpu: AmdGpuId
    handle: Any
    method: str
    dies: tuple[AmdGpuId, ...]  # the trained dies this package measurement covers
    probed_method: str = ""  # the method found at construction (``method`` may switch to power mid-run)
    resolution_uj: float = 0.0
    last_ticks: int = 0
    last_t_s: float = 0.0
    last_change_s: float = 0.0  # when the accumulator last moved
    energy_j: float = 0.0  # accumulated counter energy since start() (frozen if the device switched to power)
    wraps: int = 0
    trace: PowerTrace = field(default_factory=PowerTrace)


def _counter(lib: Any, handle: Any) -> tuple[int, float]:
    """(ticks, µJ per tick) of the energy accumulator; ticks under ``energy_accumulator`` (``power`` before 6.2.1)."""
    info = lib.amdsmi_get_energy_count(handle)
    ticks = info["energy_accumulator"] if "energy_accumulator" in info else info["power"]
    return int(ticks), float(info["counter_resolution"])


def _power_w(lib: Any, handle: Any) -> float | None:
    """Socket power in W, ``None`` where amdsmi says ``"N/A"`` (the second die of an MI200 package)."""
    info = lib.amdsmi_get_power_info(handle)
    for key in ("average_socket_power", "current_socket_power"):
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
    return None


class AmdGpuSensor(SensorLifecycle):
    """Energy of the selected AMD GPUs since ``start()``, summed; ``component="gpu"``, ``scope="device"``.

    Args:
        gpus: devices this process trains on (from :func:`select_amd_gpus`).
        sample_period_s: power-sampling period for devices without an energy accumulator.
        counter_poll_s: how often the accumulators are read in the background (wrap safety).
        max_power_w: the sanity bound per device; larger increments are rejected as gaps.
        lib: the amdsmi module (default: :func:`amdsmi_library`).

    Raises:
        ValueError: no device or a bad period/bound. SensorUnavailableError: a device that cannot be measured.
    """

    component: Component = "gpu"
    scope: Scope = "device"
    _what = "the AMD GPU sensor"
    _sampler_what = "the AMD GPU sampler"
    _sampler_name = "green-callbacks-amdsmi"

    def __init__(
        self,
        gpus: Sequence[AmdGpuId],
        *,
        sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S,
        counter_poll_s: float = DEFAULT_COUNTER_POLL_S,
        max_power_w: float = DEFAULT_MAX_POWER_W,
        lib: Any = None,
    ) -> None:
        if not gpus:
            raise ValueError("AmdGpuSensor needs at least one GPU; use NullSensor('gpu', reason) for none.")
        for name, value in (("sample_period_s", sample_period_s), ("counter_poll_s", counter_poll_s),
                            ("max_power_w", max_power_w)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r}; it must be a positive number.")
        self._lib = lib if lib is not None else amdsmi_library()
        self._period_s = float(sample_period_s)
        self._poll_s = float(counter_poll_s)
        self._max_w = float(max_power_w)
        self._init_lifecycle()
        self._devices = self._open_all(gpus)
        self._gaps = 0
        self._last_gap = ""
        self._warned: set[str] = set()

    # -- construction

    def _probe(self, gpu: AmdGpuId, handle: Any) -> str | None:
        """The method this die supports, or ``None`` when it reports no energy and no power (MI200 second die)."""
        lib = self._lib
        try:
            ticks, resolution = _counter(lib, handle)
            if ticks > 0 and resolution > 0:
                return METHOD_COUNTER
        except (lib.AmdSmiException, KeyError):
            pass
        try:
            return METHOD_POWER if _power_w(lib, handle) is not None else None
        except (lib.AmdSmiException, KeyError):
            return None

    def _open_all(self, gpus: Sequence[AmdGpuId]) -> list[_Device]:
        machine = _AmdMachine(self._lib)
        by_package: dict[int, _Device] = {}
        for gpu in gpus:
            handle = machine.handles[gpu.index]
            method = self._probe(gpu, handle)
            target, target_handle = gpu, handle
            if method is None:  # MI200 second die: its package is measured on the die before it
                partner = machine.gpus[gpu.index - 1] if gpu.index > 0 else None
                partner_method = (
                    self._probe(partner, machine.handles[partner.index])
                    if partner is not None and partner.name == gpu.name
                    else None
                )
                if partner is None or partner_method is None:
                    raise SensorUnavailableError(
                        f"{gpu.label()} reports neither an energy counter nor a power reading, and no package "
                        "partner does, so its energy cannot be measured"
                    )
                target, target_handle, method = partner, machine.handles[partner.index], partner_method
            if target.index in by_package:
                existing = by_package[target.index]
                existing.dies = (*existing.dies, gpu)
                continue
            by_package[target.index] = _Device(target, target_handle, method, (gpu,), method)
        return list(by_package.values())

    # -- protocol

    @property
    def method(self) -> str:
        methods = {d.method for d in self._devices}
        return "+".join(m for m in (METHOD_COUNTER, METHOD_POWER) if m in methods)

    def _sample_period_s(self) -> float | None:
        return self._period_s if any(d.method == METHOD_POWER for d in self._devices) else self._poll_s

    def _start_locked(self, now_s: float) -> None:
        self._gaps, self._last_gap = 0, ""
        for device in self._devices:
            device.energy_j, device.wraps = 0.0, 0
            device.trace.reset()
            device.method = device.probed_method
            try:
                if device.method == METHOD_COUNTER:
                    device.last_ticks, device.resolution_uj = _counter(self._lib, device.handle)
                    device.last_t_s = device.last_change_s = now_s
                else:
                    self._sample_power(device, now_s)
            except (self._lib.AmdSmiException, KeyError) as err:
                self._mark_lost(device, f"{type(err).__name__}: {err}")

    def _sample_locked(self, now_s: float) -> None:
        """Read every accumulator (wrap safety) and sample every power-path device: the sampler's tick."""
        self._update(now_s)

    def info(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "method": self.method,
            "library": "amdsmi",
            "max_power_w": self._max_w,
            "devices": [
                {
                    "amdsmi_index": d.gpu.index,
                    "bdf": d.gpu.bdf,
                    "uuid": d.gpu.uuid,
                    "name": d.gpu.name,
                    "method": d.method,
                    "trained_dies": [g.bdf for g in d.dies],
                    "hip_index": [g.hip_index for g in d.dies],
                    "wraps": d.wraps,
                }
                for d in self._devices
            ],
        }
        if any(d.method == METHOD_POWER for d in self._devices):
            details["sample_period_s"] = self._period_s
        else:
            details["counter_poll_s"] = self._poll_s
        if self._package_note():
            details["attribution"] = self._package_note()
        if self._lost_note:
            details["lost"] = self._lost_note
        return details

    # -- internals (lock held)

    def _measure_locked(self, now_s: float) -> Reading:
        self._update(now_s)
        total = sum(d.energy_j + d.trace.energy_j for d in self._devices)
        notes = [n for n in (self._package_note(), self._last_gap) if n]
        return Reading(total, self.method, " ".join(notes), gaps=self._gaps)

    def _update(self, now_s: float) -> None:
        for device in self._devices:
            try:
                if device.method == METHOD_COUNTER:
                    self._accumulate(device, now_s)
                else:
                    self._sample_power(device, now_s)
            except (self._lib.AmdSmiException, KeyError) as err:
                self._mark_lost(device, f"{type(err).__name__}: {err}")
            if self._lost_note is not None:
                return

    def _accumulate(self, device: _Device, now_s: float) -> None:
        ticks, resolution = _counter(self._lib, device.handle)
        if resolution > 0:
            device.resolution_uj = resolution
        delta = ticks - device.last_ticks
        if delta < 0:
            if device.last_ticks < WRAP_32:  # a 32-bit accumulator wrapped once since the last read
                delta += WRAP_32
                device.wraps += 1
            else:
                self._mark_lost(device, f"its energy counter went back from {device.last_ticks} to {ticks} ticks "
                                "(driver reloaded or GPU reset)")
                return
        if delta == 0 and now_s - device.last_change_s >= STALE_COUNTER_S:
            self._switch_to_power(device, now_s)
            return
        energy_j = delta * device.resolution_uj * 1e-6
        duration_s = now_s - device.last_t_s
        if excess_energy(energy_j, duration_s, self._max_w):
            self._reject(device, f"{energy_j:.0f} J in {duration_s:.1f} s ({energy_j / max(duration_s, 1.0):.0f} W)")
        else:
            device.energy_j += energy_j
        if delta:
            device.last_change_s = now_s
        device.last_ticks, device.last_t_s = ticks, now_s

    def _switch_to_power(self, device: _Device, now_s: float) -> None:
        """A powered GPU's accumulator moves every few ms: one that stood still for ``STALE_COUNTER_S`` is stuck
        (ROCm/amdsmi#38, Zeus #113). Go on with power sampling; the stretch since the last move is a gap."""
        stuck_s = now_s - device.last_change_s
        try:
            power_w = _power_w(self._lib, device.handle)
        except (self._lib.AmdSmiException, KeyError):
            power_w = None
        if power_w is None:
            self._mark_lost(device, f"its energy counter stopped moving for {stuck_s:.0f} s and it reports no power")
            return
        device.method = METHOD_POWER
        device.trace.reset()
        device.trace.add(now_s, power_w)
        self._gap("stuck", f"the energy counter of {device.gpu.label()} stopped moving for {stuck_s:.0f} s while the "
                  f"device reports {power_w:.0f} W; it is measured by power sampling from then on, and the windows "
                  "that contain the stuck stretch are unavailable.")

    def _sample_power(self, device: _Device, now_s: float) -> None:
        power_w = _power_w(self._lib, device.handle)
        if power_w is None:
            raise KeyError("amdsmi_get_power_info reports no socket power (N/A) any more")
        if power_w > self._max_w:
            self._reject(device, f"a power reading of {power_w:.0f} W")
            device.trace.last_t_s = None  # restart the integral after the bad sample: the stretch is a gap
            return
        device.trace.add(now_s, power_w)

    def _reject(self, device: _Device, what: str) -> None:
        self._gap("bound", f"impossible reading rejected on {device.gpu.label()} ({what}, above the "
                  f"{self._max_w:.0f} W bound); the windows that contain it are unavailable.")

    def _gap(self, kind: str, message: str) -> None:
        """Count a stretch left out; warn once per kind (``bound``, ``stuck``) with what happened."""
        self._gaps += 1
        self._last_gap = f"{self._gaps} gap(s) in AMD GPU energy; the last: {message}"
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(f"green_callbacks: {self._last_gap}", RuntimeWarning, stacklevel=2)

    def _mark_lost(self, device: _Device, why: str) -> None:
        self._lose(
            f"{device.gpu.label()} lost {self._seconds_since_start():.1f} s after the start ({why}); AMD GPU energy "
            "is unavailable from then on; windows that ended earlier keep their values."
        )

    def _package_note(self) -> str:
        shared = [d for d in self._devices if any(g.index != d.gpu.index for g in d.dies)]
        if not shared:
            return ""
        return (
            "MI200 package: the second die reports no energy, so this is the energy of the whole package of "
            + ", ".join(d.gpu.label() for d in shared)
            + " (both dies), counted once."
        )


# --------------------------------------------------------------------------------------------- factory


def build_amd_sensor(
    device_indices: Sequence[int] | None = None,
    *,
    device_uuids: Sequence[str] | None = None,
    device_bus_ids: Sequence[str] | None = None,
    sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S,
    counter_poll_s: float = DEFAULT_COUNTER_POLL_S,
    max_power_w: float = DEFAULT_MAX_POWER_W,
) -> Sensor:
    """The AMD GPU sensor for this process, or a ``NullSensor`` (``unavailable``, never 0) that says why not."""
    try:
        lib = amdsmi_library()
    except SensorUnavailableError as err:
        return NullSensor("gpu", str(err), scope="device")
    try:
        chosen = select_amd_gpus(device_indices, device_uuids=device_uuids, device_bus_ids=device_bus_ids, lib=lib)
    except ValueError as err:
        warnings.warn(f"AMD GPU energy is not measured: {err}", UserWarning, stacklevel=2)
        return NullSensor("gpu", f"AMD GPU energy is not measured: {err}", scope="device")
    if not chosen:
        return NullSensor(
            "gpu",
            "no AMD GPU is visible to this process (ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES may hide them), "
            "so AMD GPU energy is not measured.",
            scope="device",
        )
    try:
        return AmdGpuSensor(chosen, sample_period_s=sample_period_s, counter_poll_s=counter_poll_s,
                            max_power_w=max_power_w, lib=lib)
    except SensorUnavailableError as err:
        return NullSensor("gpu", f"AMD GPU energy is not measured: {err}", scope="device")

"""Apple Silicon energy from IOReport through ``zeus-apple-silicon``, without sudo: GPU (+ Neural Engine), CPU, DRAM.

``AppleEnergyMonitor().get_cumulative_energy()`` returns an ``AppleEnergyMetrics`` whose fields are cumulative
millijoules (``int``) from a fixed but unspecified origin, or ``None`` where this chip does not report them:
``cpu_total_mj``, ``gpu_mj``, ``gpu_sram_mj``, ``ane_mj``, ``dram_mj`` (and per-core/cluster lists we do not use).
Each sensor reads its fields at ``start()`` and at every ``read()``; energy = difference. No thread, no sudo
(``powermetrics`` needs sudo; IOReport does not).

Three sensors share one monitor per process:

- ``gpu`` (``apple-ioreport-gpu``): ``gpu_mj`` + ``gpu_sram_mj`` + ``ane_mj`` (the Neural Engine is an accelerator on
  the same SoC; PyTorch ``mps`` does not use it, so it adds ~0 there, but Core ML work would show);
- ``cpu`` (``apple-ioreport-cpu``): ``cpu_total_mj`` — replaces the CPU-time estimate on Apple Silicon;
- ``ram`` (``apple-ioreport-dram``): ``dram_mj`` — replaces the RSS estimate where the chip reports DRAM.

All three are whole-SoC figures (``scope="node"``: counted once per machine): the GPU of an Apple SoC is one device
shared by every process. IOReport's energy figures are Apple's own model estimates from utilisation, frequency and
voltage (zeus-apple-silicon's README; ``powermetrics``' man page calls its values "estimated"), not a power meter:
the method names say ``ioreport``, and the docs say so. IOReport is a private, undocumented macOS API.

Untested on a real Mac: tested against a fake ``zeus_apple_silicon`` (tests/fakes/fake_zeus_apple_silicon.py) with
the same class, method and field names and units.
"""

from __future__ import annotations

import platform
import sys
import threading
from collections.abc import Sequence
from typing import Any

from green_callbacks.core.sensors.base import NOT_USED, UNAVAILABLE, Component, NullSensor, Reading, Scope, Sensor
from green_callbacks.core.sensors.lifecycle import SensorLifecycle
from green_callbacks.core.sensors.optional import SensorUnavailableError, import_optional

__all__ = [
    "METHOD_CPU",
    "METHOD_DRAM",
    "METHOD_GPU",
    "AppleSocSensor",
    "apple_monitor",
    "build_apple_gpu_sensor",
    "build_apple_host_sensors",
    "on_apple_silicon",
]

METHOD_GPU = "apple-ioreport-gpu"
METHOD_CPU = "apple-ioreport-cpu"
METHOD_DRAM = "apple-ioreport-dram"
GPU_FIELDS = ("gpu_mj", "gpu_sram_mj", "ane_mj")
CPU_FIELDS = ("cpu_total_mj",)
DRAM_FIELDS = ("dram_mj",)
MODEL_NOTE = "IOReport: Apple's on-chip energy model (an estimate, not a meter)"

_LOCK = threading.Lock()
_monitor: Any = None
_monitor_lib: Any = None


def _platform() -> tuple[str, str]:
    """(``sys.platform``, machine). Tests patch this function."""
    return sys.platform, platform.machine()


def on_apple_silicon() -> bool:
    system, machine = _platform()
    return system == "darwin" and machine == "arm64"


def _load() -> Any:
    return import_optional("zeus_apple_silicon", extra="apple", package="zeus-apple-silicon",
                           what="Apple Silicon energy")


def apple_monitor() -> Any:
    """One ``AppleEnergyMonitor`` per process (created on first use; its IOReport subscription is reused)."""
    global _monitor, _monitor_lib
    lib = _load()
    with _LOCK:
        if _monitor_lib is not lib:
            try:
                _monitor, _monitor_lib = lib.AppleEnergyMonitor(), lib
            except Exception as err:  # the extension raises RuntimeError when IOReport is missing
                raise SensorUnavailableError(
                    f"Apple Silicon energy is not measured: IOReport could not be opened ({type(err).__name__}: "
                    f"{err}). It needs macOS on an Apple Silicon (M-series) Mac."
                ) from err
        return _monitor


class AppleSocSensor(SensorLifecycle):
    """Cumulative energy of some IOReport fields since ``start()``; one per component."""

    scope: Scope = "node"
    _what = "the Apple sensor"

    def __init__(self, component: Component, fields: Sequence[str], method: str, *, monitor: Any = None) -> None:
        self.component = component
        self._monitor = monitor if monitor is not None else apple_monitor()
        metrics = self._monitor.get_cumulative_energy()
        self._fields = tuple(f for f in fields if getattr(metrics, f, None) is not None)
        if not self._fields:
            raise SensorUnavailableError(
                f"this chip reports none of {', '.join(fields)} through IOReport, so {component} energy is not "
                "measured that way"
            )
        self._method = method
        self._init_lifecycle()
        self._base_mj = 0

    @property
    def method(self) -> str:
        return self._method

    def _total_mj(self) -> int:
        metrics = self._monitor.get_cumulative_energy()
        values = [getattr(metrics, f, None) for f in self._fields]
        missing = [f for f, v in zip(self._fields, values, strict=True) if v is None]
        if missing:
            raise SensorUnavailableError(f"IOReport stopped reporting {', '.join(missing)}")
        return int(sum(values))  # type: ignore[arg-type]

    def _start_locked(self, now_s: float) -> None:
        try:
            self._base_mj = self._total_mj()
        except Exception as err:
            self._lose(f"IOReport read failed at start ({type(err).__name__}: {err})")

    def _measure_locked(self, now_s: float) -> Reading:
        try:
            total = self._total_mj()
        except Exception as err:
            self._lose(f"IOReport read failed ({type(err).__name__}: {err}); {self.component} energy is unavailable")
            return Reading(None, UNAVAILABLE)
        if total < self._base_mj:
            self._lose(f"the IOReport counters went back ({self._base_mj} → {total} mJ): unavailable from then on")
            return Reading(None, UNAVAILABLE)
        return Reading((total - self._base_mj) / 1000.0, self._method)

    def info(self) -> dict[str, Any]:
        details: dict[str, Any] = {"method": self._method, "library": "zeus-apple-silicon (IOReport)",
                                   "fields": list(self._fields), "accuracy": MODEL_NOTE}
        if self._lost_note:
            details["lost"] = self._lost_note
        return details


def build_apple_gpu_sensor(device_indices: Sequence[int] | None = None) -> Sensor:
    """The ``mps`` device's energy (GPU + GPU SRAM + Neural Engine), or a ``NullSensor`` that says why not."""
    if device_indices is not None and len(device_indices) == 0:
        return NullSensor("gpu", "training on CPU: this run uses no GPU, so GPU energy is not part of it",
                          scope="node", method=NOT_USED)
    try:
        return AppleSocSensor("gpu", GPU_FIELDS, METHOD_GPU)
    except SensorUnavailableError as err:
        return NullSensor("gpu", str(err), scope="node")


def build_apple_host_sensors() -> tuple[Sensor | None, Sensor | None, str]:
    """``(cpu, ram, why_not)`` from IOReport on Apple Silicon; ``None`` where unavailable (use the estimates)."""
    if not on_apple_silicon():
        return None, None, "not an Apple Silicon Mac"
    try:
        monitor = apple_monitor()
    except SensorUnavailableError as err:
        return None, None, str(err)
    out: list[Sensor | None] = []
    why = ""
    for component, fields, method in (("cpu", CPU_FIELDS, METHOD_CPU), ("ram", DRAM_FIELDS, METHOD_DRAM)):
        try:
            out.append(AppleSocSensor(component, fields, method, monitor=monitor))  # type: ignore[arg-type]
        except SensorUnavailableError as err:
            out.append(None)
            why = str(err)
    return out[0], out[1], why

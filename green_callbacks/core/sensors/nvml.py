"""GPU energy from NVML: the board's energy counter where it exists, integrated power where it does not.

- ``nvml-energy-counter``: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta and newer),
  read at ``start()`` and at every ``read()``; energy = difference. No thread.
- ``nvml-power``: where the counter is not supported, a daemon thread samples ``nvmlDeviceGetPowerUsage`` (mW)
  every ``sample_period_s`` and integrates with the trapezoid rule; every ``read()`` also takes a sample, so the
  integral runs exactly to the moment of the read.

Readings are summed over the selected GPUs (see :mod:`green_callbacks.core.sensors.gpu_map`). If any selected GPU
fails (lost, reset, counter gone backwards), the reading becomes ``unavailable`` from then on, with a note naming
the GPU: a sum over the remaining GPUs would be silently low. Windows that ended earlier keep their values.

NVML is initialised once per process (:func:`nvml_library`), never shut down by us, and never reached through
``nvidia-smi`` or any subprocess. ``pynvml`` is loaded by :mod:`._nvml_lib` (the bottom layer), which tests patch
with a fake module.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from green_callbacks.core.sensors._nvml_lib import NvmlUnavailableError, nvml_library, nvml_text
from green_callbacks.core.sensors.base import NOT_USED, UNAVAILABLE, Component, NullSensor, Reading, Scope, Sensor
from green_callbacks.core.sensors.gpu_map import GpuId, check_gpu_indices, dedupe_physical, select_gpus
from green_callbacks.core.sensors.lifecycle import SensorLifecycle
from green_callbacks.core.sensors.polling import PowerTrace, trapezoid_j

__all__ = [
    "DEFAULT_SAMPLE_PERIOD_S",
    "METHOD_COUNTER",
    "METHOD_POWER",
    "NvmlGpuSensor",
    "NvmlUnavailableError",
    "build_gpu_sensor",
    "check_gpu_indices",
    "check_gpus_on_this_machine",
    "nvml_library",
    "select_gpus",
    "trapezoid_j",
]

METHOD_COUNTER = "nvml-energy-counter"
METHOD_POWER = "nvml-power"
DEFAULT_SAMPLE_PERIOD_S = 0.1
CPU_TRAINING_REASON = "training on CPU: this run uses no GPU, so GPU energy is not part of it"


def check_gpus_on_this_machine(gpus: Sequence[int] | None) -> None:
    """Construction-time check of ``gpus=`` against NVML's device count, when NVML runs here (the form was checked
    once by the config; without NVML the GPU component is reported unavailable later, with the reason)."""
    if gpus is None:
        return
    try:
        lib = nvml_library()
    except NvmlUnavailableError:
        return
    try:
        count = int(lib.nvmlDeviceGetCount())
    except lib.NVMLError:
        return
    check_gpu_indices(gpus, count)




# --------------------------------------------------------------------------------------------- the sensor


@dataclass
class _Device:
    """Mutable per-GPU state, guarded by the sensor's lock."""

    gpu: GpuId
    handle: Any
    method: str
    baseline_mj: int = 0  # counter at start()
    trace: PowerTrace = field(default_factory=PowerTrace)  # integrated power since start()


class NvmlGpuSensor(SensorLifecycle):
    """Energy of the selected GPUs since ``start()``, summed; ``component="gpu"``, ``scope="device"``.

    Args:
        gpus: physical GPUs to measure (from :func:`select_gpus`); at least one.
        sample_period_s: power-sampling period for GPUs without an energy counter.
        lib: the NVML module (default: :func:`nvml_library`).

    Raises:
        ValueError: no GPU, or a bad ``sample_period_s``.
        NvmlUnavailableError: a GPU has neither an energy counter nor a power reading.
    """

    component: Component = "gpu"
    scope: Scope = "device"
    _what = "the GPU sensor"
    _sampler_what = "the GPU power sampler"
    _sampler_name = "green-callbacks-nvml-power"

    def __init__(
        self, gpus: Sequence[GpuId], *, sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S, lib: Any = None
    ) -> None:
        if not gpus:
            raise ValueError("NvmlGpuSensor needs at least one GPU; use NullSensor('gpu', reason) for none.")
        if not (isinstance(sample_period_s, (int, float)) and math.isfinite(sample_period_s) and sample_period_s > 0):
            raise ValueError(
                f"sample_period_s={sample_period_s!r}; it must be a positive number of seconds, e.g. 0.1."
            )
        self._lib = lib if lib is not None else nvml_library()
        self._period_s = float(sample_period_s)
        self._init_lifecycle()
        self._devices = [self._open(gpu) for gpu in dedupe_physical(gpus)]
        self._static_info = self._describe()

    # -- construction helpers

    def _open(self, gpu: GpuId) -> _Device:
        lib = self._lib
        try:
            handle = lib.nvmlDeviceGetHandleByUUID(gpu.uuid)
        except lib.NVMLError as err:
            raise NvmlUnavailableError(f"{gpu.label()}: NVML gives no handle ({type(err).__name__}: {err})") from err
        try:
            lib.nvmlDeviceGetTotalEnergyConsumption(handle)
            return _Device(gpu, handle, METHOD_COUNTER)
        except (lib.NVMLError_NotSupported, lib.NVMLError_FunctionNotFound):
            pass  # pre-Volta GPU, vGPU, old driver: integrate power instead
        except lib.NVMLError as err:
            raise NvmlUnavailableError(
                f"{gpu.label()}: the energy counter cannot be read ({type(err).__name__}: {err})"
            ) from err
        try:
            lib.nvmlDeviceGetPowerUsage(handle)
        except lib.NVMLError as err:
            raise NvmlUnavailableError(
                f"{gpu.label()}: NVML gives neither an energy counter nor a power reading "
                f"({type(err).__name__}: {err}), so its energy cannot be measured"
            ) from err
        return _Device(gpu, handle, METHOD_POWER)

    def _describe(self) -> dict[str, Any]:
        lib = self._lib

        def optional(name: str) -> str | None:
            try:
                return nvml_text(getattr(lib, name)())
            except (AttributeError, lib.NVMLError):
                return None

        return {
            "driver_version": optional("nvmlSystemGetDriverVersion"),
            "nvml_version": optional("nvmlSystemGetNVMLVersion"),
            "devices": [
                {
                    "nvml_index": d.gpu.nvml_index,
                    "cuda_index": d.gpu.cuda_index,
                    "name": d.gpu.name,
                    "uuid": d.gpu.uuid,
                    "mig_enabled": d.gpu.mig_enabled,
                    "mig_uuid": d.gpu.mig_uuid,
                    "method": d.method,
                }
                for d in self._devices
            ],
        }

    # -- the Sensor protocol

    @property
    def method(self) -> str:
        """``nvml-energy-counter``, ``nvml-power``, or both joined by ``+`` when the GPUs differ."""
        methods = {d.method for d in self._devices}
        return "+".join(m for m in (METHOD_COUNTER, METHOD_POWER) if m in methods)

    def _sample_period_s(self) -> float | None:
        return self._period_s if any(d.method == METHOD_POWER for d in self._devices) else None

    def _start_locked(self, now_s: float) -> None:
        for device in self._devices:
            device.trace.reset()
            try:
                if device.method == METHOD_COUNTER:
                    device.baseline_mj = int(self._lib.nvmlDeviceGetTotalEnergyConsumption(device.handle))
                else:
                    self._sample_device(device, now_s)
            except self._lib.NVMLError as err:
                self._mark_lost(device, err)

    def _sample_locked(self, now_s: float) -> None:
        """One power sample of every GPU on the power path (the sampler thread's tick)."""
        for device in self._devices:
            if device.method != METHOD_POWER:
                continue
            try:
                self._sample_device(device, now_s)
            except self._lib.NVMLError as err:
                self._mark_lost(device, err)
                return

    def info(self) -> dict[str, Any]:
        """JSON-ready: method, per-GPU names/UUIDs/methods/MIG, driver and NVML versions, lost note."""
        details: dict[str, Any] = {"method": self.method, **self._static_info}
        details["mig"] = any(d["mig_enabled"] or d["mig_uuid"] for d in details["devices"])
        if any(d.method == METHOD_POWER for d in self._devices):
            details["sample_period_s"] = self._period_s
        if self._mig_note():
            details["attribution"] = self._mig_note()
        if self._lost_note:
            details["lost"] = self._lost_note
        return details

    # -- internals (call with the lock held)

    def _measure_locked(self, now_s: float) -> Reading:
        total_mj = 0
        total_j = 0.0
        for device in self._devices:
            try:
                if device.method == METHOD_COUNTER:
                    counter_mj = int(self._lib.nvmlDeviceGetTotalEnergyConsumption(device.handle))
                    if counter_mj < device.baseline_mj:
                        self._mark_lost(device, None, f"its energy counter went back from {device.baseline_mj} "
                                        f"to {counter_mj} mJ (driver reloaded or GPU reset)")
                        return Reading(None, UNAVAILABLE)
                    total_mj += counter_mj - device.baseline_mj
                else:
                    self._sample_device(device, now_s)
                    total_j += device.trace.energy_j
            except self._lib.NVMLError as err:
                self._mark_lost(device, err)
                return Reading(None, UNAVAILABLE)
        return Reading(total_mj / 1000.0 + total_j, self.method, self._mig_note())

    def _sample_device(self, device: _Device, now_s: float) -> None:
        device.trace.add(now_s, float(self._lib.nvmlDeviceGetPowerUsage(device.handle)) / 1000.0)

    def _mark_lost(self, device: _Device, err: BaseException | None, why: str = "") -> None:
        if self._lost_note is not None:
            return
        if not why and err is not None:
            why = f"{type(err).__name__}: {err}"
        others = " the other GPUs' energy is not reported alone, because a partial sum would be silently low;"
        self._lose(
            f"{device.gpu.label()} lost {self._seconds_since_start():.1f} s after the start ({why}); GPU energy is "
            f"unavailable from then on;{others if len(self._devices) > 1 else ''} windows that ended earlier keep "
            "their values."
        )

    def _mig_note(self) -> str:
        migs = [d.gpu for d in self._devices if d.gpu.mig_uuid or d.gpu.mig_enabled]
        if not migs:
            return ""
        return (
            "MIG: NVML measures only whole physical GPUs, so this is the energy of "
            + ", ".join(g.label() for g in migs)
            + ", including every other MIG instance on it."
        )




# --------------------------------------------------------------------------------------------- factory


def build_gpu_sensor(
    gpus: Sequence[int] | None = None,
    device_indices: Sequence[int] | None = None,
    *,
    device_uuids: Sequence[str] | None = None,
    sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S,
) -> Sensor:
    """The GPU sensor for this process: :class:`NvmlGpuSensor`, or a ``NullSensor`` that says why not.

    Args:
        gpus: NVML indices chosen by the user (wins); validated, ``ValueError`` if unknown.
        device_indices: CUDA ordinals the framework trains on; ``[]`` means training on CPU.
        device_uuids: UUIDs of those devices, when the adapter can get them (exact; preferred).
        sample_period_s: power-sampling period for GPUs without an energy counter.

    Returns a ``NullSensor("gpu", reason, scope="device")``: method ``not-used`` when training on CPU (the run has
    no GPU energy, and nothing is missing), method ``unavailable`` (never 0)
    when ``nvidia-ml-py`` or the NVIDIA driver is missing, when no GPU is visible, or when the framework's devices
    cannot be mapped to NVML; the reason tells the user what to do.
    """
    check_gpu_indices(gpus)  # the factory is public: its callers may not have a GreenConfig
    if gpus is None and device_uuids is None and device_indices is not None and len(device_indices) == 0:
        return NullSensor("gpu", CPU_TRAINING_REASON, scope="device", method=NOT_USED)
    try:
        lib = nvml_library()
    except NvmlUnavailableError as err:
        return NullSensor("gpu", str(err), scope="device")
    check_gpu_indices(gpus, int(lib.nvmlDeviceGetCount()))  # the user's mistake: raise
    try:
        chosen = select_gpus(device_indices, gpus, device_uuids=device_uuids, lib=lib)
    except ValueError as err:  # the framework's devices do not match what NVML sees
        warnings.warn(f"GPU energy is not measured: {err}", UserWarning, stacklevel=2)
        return NullSensor("gpu", f"GPU energy is not measured: {err}", scope="device")
    if not chosen:
        return NullSensor(
            "gpu",
            f"no GPU is visible to this process (NVML sees {int(lib.nvmlDeviceGetCount())}; "
            "CUDA_VISIBLE_DEVICES may hide them), so GPU energy is not measured. If this run uses a GPU, "
            "check CUDA_VISIBLE_DEVICES or pass gpus=[...] (NVML indices).",
            scope="device",
        )
    try:
        return NvmlGpuSensor(chosen, sample_period_s=sample_period_s, lib=lib)
    except NvmlUnavailableError as err:
        return NullSensor("gpu", f"GPU energy is not measured: {err}", scope="device")

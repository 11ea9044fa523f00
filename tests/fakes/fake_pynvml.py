"""A fake ``pynvml`` (nvidia-ml-py 13.x) for tests: scriptable GPUs, counters, power traces, MIG and errors.

Only the hardware boundary is faked. Names mirror the real module: ``nvmlInit``, ``nvmlDeviceGetCount``,
``nvmlDeviceGetHandleByIndex``/``ByUUID``, ``nvmlDeviceGetUUID``/``Name``, ``nvmlDeviceGetTotalEnergyConsumption``
(mJ), ``nvmlDeviceGetPowerUsage`` (mW), ``nvmlDeviceGetMigMode``, ``nvmlDeviceGetMaxMigDeviceCount``,
``nvmlDeviceGetMigDeviceHandleByIndex``, ``nvmlSystemGetDriverVersion``/``NVMLVersion``, and the error classes
``NVMLError_<Name>`` that pynvml generates from ``NVML_ERROR_<NAME>`` (e.g. ``NVMLError_GpuIsLost``).

Usage::

    fake = FakePynvml([FakeGpu(energy_mj=1_000), FakeGpu(counter=False, power_mw=lambda t: 200_000.0)])
    install(monkeypatch, fake)      # green_callbacks' NVML loader now returns `fake`, init state reset
    fake.gpus[0].energy_mj += 5_000 # the board used 5 J
    fake.gpus[1].lost = True        # every later call on GPU 1 raises NVMLError_GpuIsLost
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Base of every NVML error; ``value`` is the NVML return code, ``str()`` its NVML text."""

    value = NVML_ERROR_UNKNOWN

    def __init__(self, value: int | None = None) -> None:
        if value is not None:
            self.value = value
        super().__init__(self.value)

    def __str__(self) -> str:
        return _STRINGS.get(self.value, f"NVML Error with code {self.value}")


class NVMLError_Uninitialized(NVMLError):
    value = NVML_ERROR_UNINITIALIZED


class NVMLError_InvalidArgument(NVMLError):
    value = NVML_ERROR_INVALID_ARGUMENT


class NVMLError_NotSupported(NVMLError):
    value = NVML_ERROR_NOT_SUPPORTED


class NVMLError_NoPermission(NVMLError):
    value = NVML_ERROR_NO_PERMISSION


class NVMLError_NotFound(NVMLError):
    value = NVML_ERROR_NOT_FOUND


class NVMLError_DriverNotLoaded(NVMLError):
    value = NVML_ERROR_DRIVER_NOT_LOADED


class NVMLError_LibraryNotFound(NVMLError):
    value = NVML_ERROR_LIBRARY_NOT_FOUND


class NVMLError_FunctionNotFound(NVMLError):
    value = NVML_ERROR_FUNCTION_NOT_FOUND


class NVMLError_GpuIsLost(NVMLError):
    value = NVML_ERROR_GPU_IS_LOST


class NVMLError_Unknown(NVMLError):
    value = NVML_ERROR_UNKNOWN


def _default_clock() -> float:
    """The core clock, looked up at call time so a monkeypatched ``clock.now_s`` (FakeClock) drives traces."""
    from green_callbacks.core import clock

    return clock.now_s()


@dataclass
class FakeGpu:
    """One scripted physical GPU.

    ``energy_mj``: the counter (set or add to it). ``counter=False``: the counter raises ``NotSupported``
    (pre-Volta). ``power_mw``: a constant or a function of the fake library's clock (seconds). ``errors``: function
    name → exception instance/class raised by that call on this GPU. ``lost``: every call raises ``GpuIsLost``.
    """

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    energy_mj: int = 0
    counter: bool = True
    power_mw: float | Callable[[float], float] = 100_000.0
    mig_enabled: bool = False
    mig_uuids: list[str] = field(default_factory=list)
    max_mig_devices: int = 7
    errors: dict[str, Any] = field(default_factory=dict)
    lost: bool = False


@dataclass(frozen=True)
class FakeHandle:
    index: int
    mig_slot: int | None = None


def gpu_uuid(n: int) -> str:
    """A distinct, realistic-looking GPU UUID for fake GPU number ``n``."""
    return f"GPU-{n:08x}-aaaa-bbbb-cccc-{n:012x}"


class FakePynvml:
    """The fake module: an object with pynvml's functions, constants and error classes as attributes."""

    NVML_SUCCESS = NVML_SUCCESS
    NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE
    NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_FunctionNotFound = NVMLError_FunctionNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Unknown = NVMLError_Unknown

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        init_error: BaseException | None = None,
        driver_version: str = "550.54.15",
        nvml_version: str = "12.550.54.15",
        clock: Callable[[], float] = _default_clock,
    ) -> None:
        self.gpus = list(gpus) if gpus is not None else [FakeGpu()]
        for n, gpu in enumerate(self.gpus):  # distinct UUIDs unless the test set them
            if gpu.uuid == FakeGpu.uuid:
                gpu.uuid = gpu_uuid(n)
        self.init_error = init_error
        self.driver_version = driver_version
        self.nvml_version = nvml_version
        self.clock = clock
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls: Counter[str] = Counter()
        self._initialised = 0

    # -- library lifetime

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error
        self._initialised += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._require_init()
        self._initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init()
        return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._require_init()
        return self.nvml_version

    # -- devices

    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._require_init()
        if not 0 <= index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeHandle:
        self._require_init()
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return FakeHandle(index)
            if uuid in gpu.mig_uuids:
                return FakeHandle(index, gpu.mig_uuids.index(uuid))
        raise NVMLError_NotFound()

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        gpu = self._gpu(handle, "nvmlDeviceGetUUID")
        return gpu.uuid if handle.mig_slot is None else gpu.mig_uuids[handle.mig_slot]

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTotalEnergyConsumption")
        if not gpu.counter or handle.mig_slot is not None:
            raise NVMLError_NotSupported()
        return int(gpu.energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetPowerUsage")
        if handle.mig_slot is not None:
            raise NVMLError_NotSupported()
        power = gpu.power_mw(self.clock()) if callable(gpu.power_mw) else gpu.power_mw
        return round(power)  # NVML returns an unsigned int of milliwatts

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        gpu = self._gpu(handle, "nvmlDeviceGetMigMode")
        mode = NVML_DEVICE_MIG_ENABLE if gpu.mig_enabled else NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeHandle) -> int:
        return self._gpu(handle, "nvmlDeviceGetMaxMigDeviceCount").max_mig_devices

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeHandle, slot: int) -> FakeHandle:
        gpu = self._gpu(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not gpu.mig_enabled:
            raise NVMLError_InvalidArgument()
        if slot >= len(gpu.mig_uuids):
            raise NVMLError_NotFound()
        return FakeHandle(handle.index, slot)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: FakeHandle) -> FakeHandle:
        self._gpu(handle, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        if handle.mig_slot is None:
            raise NVMLError_InvalidArgument()
        return FakeHandle(handle.index)

    # -- internals

    def _require_init(self) -> None:
        if self._initialised <= 0:
            raise NVMLError_Uninitialized()

    def _gpu(self, handle: FakeHandle, function: str) -> FakeGpu:
        self._require_init()
        self.calls[function] += 1
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise NVMLError_GpuIsLost()
        error = gpu.errors.get(function)
        if error is not None:
            raise error() if isinstance(error, type) else error
        return gpu


def install(monkeypatch: Any, fake: FakePynvml | None) -> FakePynvml | None:
    """Make green_callbacks load ``fake`` as ``pynvml`` (``None``: the package is missing); reset init state."""
    from green_callbacks.core.sensors import _nvml_lib as nvml

    def load() -> Any:
        if fake is None:
            raise ImportError("No module named 'pynvml'")
        return fake

    monkeypatch.setattr(nvml, "_load_pynvml", load)
    monkeypatch.setattr(nvml, "_init_lib", None)
    monkeypatch.setattr(nvml, "_init_error", None)
    return fake

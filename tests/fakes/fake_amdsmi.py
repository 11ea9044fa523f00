"""A fake ``amdsmi`` (ROCm 6.x/7.x Python API) for tests: scriptable devices, accumulators, power, MI200 dies.

Names, dict keys and units mirror ``amdsmi/amdsmi_interface.py``: ``amdsmi_init``, ``amdsmi_shut_down``,
``amdsmi_get_processor_handles``, ``amdsmi_get_gpu_device_bdf`` (``"0000:c1:00.0"``), ``amdsmi_get_gpu_device_uuid``,
``amdsmi_get_gpu_asic_info`` (``market_name``, ``asic_serial`` as ``"0x…"``), ``amdsmi_get_energy_count`` →
``{"power", "energy_accumulator", "counter_resolution", "timestamp"}`` (ticks, µJ per tick, ns; ``"power"`` is the
pre-6.2.1 name of the accumulator, still returned until 6.4), ``amdsmi_get_power_info`` →
``{"current_socket_power", "average_socket_power", "gfx_voltage", "soc_voltage", "mem_voltage", "power_limit"}``
(W; ``"N/A"`` where not applicable), and the exceptions ``AmdSmiException`` / ``AmdSmiLibraryException(err_code)``.

Usage::

    fake = FakeAmdsmi([FakeAmdGpu(), FakeAmdGpu(second_die=True)])
    install(monkeypatch, fake)
    fake.gpus[0].add_joules(5.0)   # the accumulator moves by 5 J worth of ticks
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NO_PERM = 10
AMDSMI_STATUS_INIT_ERROR = 32
AMDSMI_STATUS_DRIVER_NOT_LOADED = 45


class AmdSmiException(Exception):
    """Base smi exception class (as in amdsmi_exception.py)."""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | AMDSMI error {self.err_code}"


class AmdSmiParameterException(AmdSmiException):
    pass


@dataclass
class FakeAmdGpu:
    """One die as amdsmi lists it. ``ticks``: the accumulator; ``resolution_uj``: µJ per tick (15.3 on MI200).

    ``counter=False``: the accumulator raises NOT_SUPPORTED. ``second_die=True``: an MI200 second GCD (accumulator
    0, socket power ``"N/A"``). ``power_w``: socket power (constant or function of the fake clock).
    ``errors``: function name → exception raised by that call on this device.
    """

    name: str = "AMD Instinct MI250X"
    bdf: str = ""
    uuid: str = ""
    serial: str = ""
    ticks: int = 1_000_000
    resolution_uj: float = 15.259
    counter: bool = True
    second_die: bool = False
    power_w: float | Callable[[float], float] = 300.0
    legacy_key: bool = False  # amdsmi < 6.2.1: only the "power" key
    errors: dict[str, Any] = field(default_factory=dict)

    def add_joules(self, joules: float) -> None:
        self.ticks += round(joules * 1e6 / self.resolution_uj)


@dataclass(frozen=True)
class FakeProcessorHandle:
    index: int


def _default_clock() -> float:
    from green_callbacks.core import clock

    return clock.now_s()


class FakeAmdsmi:
    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiParameterException = AmdSmiParameterException

    def __init__(self, gpus: list[FakeAmdGpu] | None = None, *, init_error: BaseException | None = None,
                 clock: Callable[[], float] = _default_clock) -> None:
        self.gpus = list(gpus) if gpus is not None else [FakeAmdGpu()]
        for n, gpu in enumerate(self.gpus):
            gpu.bdf = gpu.bdf or f"0000:{0xc1 + n:02x}:00.0"
            gpu.uuid = gpu.uuid or f"{n:02x}ff74a1-0000-1000-80e5-{n:012x}"
            gpu.serial = gpu.serial or f"0x{0xA1B2C3D4E5F60000 + n:016X}"
        self.init_error = init_error
        self.clock = clock
        self.init_calls = 0
        self.calls: Counter[str] = Counter()

    def amdsmi_init(self, flag: int = 2) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise self.init_error

    def amdsmi_shut_down(self) -> None:
        pass

    def amdsmi_get_processor_handles(self) -> list[FakeProcessorHandle]:
        return [FakeProcessorHandle(i) for i in range(len(self.gpus))]

    def amdsmi_get_gpu_device_bdf(self, handle: FakeProcessorHandle) -> str:
        return self._gpu(handle, "amdsmi_get_gpu_device_bdf").bdf

    def amdsmi_get_gpu_device_uuid(self, handle: FakeProcessorHandle) -> str:
        return self._gpu(handle, "amdsmi_get_gpu_device_uuid").uuid

    def amdsmi_get_gpu_asic_info(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_asic_info")
        return {"market_name": gpu.name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002", "device_id": "0x740c", "rev_id": "0x01", "asic_serial": gpu.serial,
                "oam_id": 0, "num_compute_units": 110, "target_graphics_version": "gfx90a"}

    def amdsmi_get_energy_count(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_energy_count")
        if not gpu.counter:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        ticks = 0 if gpu.second_die else gpu.ticks
        timestamp_ns = int(self.clock() * 1e9)
        if gpu.legacy_key:
            return {"power": ticks, "counter_resolution": gpu.resolution_uj, "timestamp": timestamp_ns}
        return {"power": ticks, "energy_accumulator": ticks, "counter_resolution": gpu.resolution_uj,
                "timestamp": timestamp_ns}

    def amdsmi_get_power_info(self, handle: FakeProcessorHandle) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_power_info")
        if gpu.second_die:
            power: Any = "N/A"
        else:
            power = round(gpu.power_w(self.clock()) if callable(gpu.power_w) else gpu.power_w)
        return {"current_socket_power": "N/A", "average_socket_power": power, "gfx_voltage": 800,
                "soc_voltage": 900, "mem_voltage": 1200, "power_limit": 560}

    def _gpu(self, handle: FakeProcessorHandle, function: str) -> FakeAmdGpu:
        self.calls[function] += 1
        gpu = self.gpus[handle.index]
        error = gpu.errors.get(function)
        if error is not None:
            raise error() if isinstance(error, type) else error
        return gpu


def install(monkeypatch: Any, fake: FakeAmdsmi | None) -> FakeAmdsmi | None:
    """Put ``fake`` in ``sys.modules`` as ``amdsmi`` (``None``: importing it fails); reset the init state."""
    from green_callbacks.core.sensors import amd

    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    monkeypatch.setattr(amd, "_init_lib", None)
    monkeypatch.setattr(amd, "_init_error", None)
    return fake

"""A fake ``pyzes`` (Level Zero Sysman ctypes bindings, pyzes 0.1.x) for tests.

Like the real module, every function returns a ``ze_result_t`` code and fills the ctypes structures passed by
reference; the two-call enumeration pattern (count with ``None``, then an array) is honoured. Mirrored names:
``zesInit``, ``zesDriverGet``, ``zesDeviceGet``, ``zesDeviceGetProperties`` (``zes_device_properties_t`` with
``core.uuid.id``, ``core.name``, ``numSubdevices``, ``modelName``), ``zesDevicePciGetProperties``
(``zes_pci_properties_t.address``), ``zesDeviceEnumPowerDomains``, ``zesPowerGetProperties``
(``zes_power_properties_t.onSubdevice``/``subdeviceId``), ``zesPowerGetEnergyCounter``
(``zes_power_energy_counter_t.energy`` in µJ, ``.timestamp`` in µs), the handle types and the constants used.
Only the fields green_callbacks reads are declared in the structures.
"""

from __future__ import annotations

import ctypes
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

ZE_RESULT_SUCCESS = 0
ZE_RESULT_ERROR_UNINITIALIZED = 0x78000001
ZE_RESULT_ERROR_UNSUPPORTED_FEATURE = 0x78000003
ZE_RESULT_ERROR_DEVICE_LOST = 0x70000001
ZES_STRUCTURE_TYPE_DEVICE_PROPERTIES = 0x1
ZES_STRUCTURE_TYPE_PCI_PROPERTIES = 0x2
ZES_STRUCTURE_TYPE_POWER_PROPERTIES = 0xD
ZE_MAX_DEVICE_UUID_SIZE = 16
ZE_MAX_DEVICE_NAME = 256
ZES_STRING_PROPERTY_SIZE = 64


class zes_driver_handle_t(ctypes.c_void_p):
    pass


class zes_device_handle_t(ctypes.c_void_p):
    pass


class zes_pwr_handle_t(ctypes.c_void_p):
    pass


class ze_device_uuid_t(ctypes.Structure):
    _fields_ = [("id", ctypes.c_ubyte * ZE_MAX_DEVICE_UUID_SIZE)]


class ze_device_properties_t(ctypes.Structure):
    _fields_ = [("stype", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("uuid", ze_device_uuid_t),
                ("name", ctypes.c_char * ZE_MAX_DEVICE_NAME)]


class zes_device_properties_t(ctypes.Structure):
    _fields_ = [("stype", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("core", ze_device_properties_t),
                ("numSubdevices", ctypes.c_uint32), ("modelName", ctypes.c_char * ZES_STRING_PROPERTY_SIZE)]


class zes_pci_address_t(ctypes.Structure):
    _fields_ = [("domain", ctypes.c_uint32), ("bus", ctypes.c_uint32), ("device", ctypes.c_uint32),
                ("function", ctypes.c_uint32)]


class zes_pci_properties_t(ctypes.Structure):
    _fields_ = [("stype", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("address", zes_pci_address_t)]


class zes_power_properties_t(ctypes.Structure):
    _fields_ = [("stype", ctypes.c_int32), ("pNext", ctypes.c_void_p), ("onSubdevice", ctypes.c_uint8),
                ("subdeviceId", ctypes.c_uint32)]


class zes_power_energy_counter_t(ctypes.Structure):
    _fields_ = [("energy", ctypes.c_uint64), ("timestamp", ctypes.c_uint64)]


@dataclass
class FakeDomain:
    """One power domain: ``on_subdevice`` (a tile's domain) and its counter in µJ."""

    energy_uj: int = 1_000_000
    on_subdevice: bool = False
    subdevice_id: int = 0
    rc: int = ZE_RESULT_SUCCESS  # what zesPowerGetEnergyCounter returns


@dataclass
class FakeIntelGpu:
    name: str = "Intel(R) Data Center GPU Max 1550"
    tiles: int = 2
    domains: list[FakeDomain] = field(default_factory=lambda: [FakeDomain(), FakeDomain(0, True, 0),
                                                               FakeDomain(0, True, 1)])
    uuid: bytes = b""
    bus: int = 0

    def add_joules(self, joules: float) -> None:
        """The card's energy moves: its card-level domain, and its tiles' domains share it equally."""
        tiles = [d for d in self.domains if d.on_subdevice]
        for domain in self.domains:
            share = 1.0 if not domain.on_subdevice else 1.0 / len(tiles)
            domain.energy_uj += round(joules * 1e6 * share)


class FakePyzes:
    ZE_RESULT_SUCCESS = ZE_RESULT_SUCCESS
    ZES_STRUCTURE_TYPE_DEVICE_PROPERTIES = ZES_STRUCTURE_TYPE_DEVICE_PROPERTIES
    ZES_STRUCTURE_TYPE_PCI_PROPERTIES = ZES_STRUCTURE_TYPE_PCI_PROPERTIES
    ZES_STRUCTURE_TYPE_POWER_PROPERTIES = ZES_STRUCTURE_TYPE_POWER_PROPERTIES
    zes_driver_handle_t = zes_driver_handle_t
    zes_device_handle_t = zes_device_handle_t
    zes_pwr_handle_t = zes_pwr_handle_t
    zes_device_properties_t = zes_device_properties_t
    zes_pci_properties_t = zes_pci_properties_t
    zes_power_properties_t = zes_power_properties_t
    zes_power_energy_counter_t = zes_power_energy_counter_t

    def __init__(self, gpus: list[FakeIntelGpu] | None = None, *, init_rc: int = ZE_RESULT_SUCCESS,
                 timestamp_us: Any = None) -> None:
        self.gpus = list(gpus) if gpus is not None else [FakeIntelGpu()]
        for n, gpu in enumerate(self.gpus):
            gpu.uuid = gpu.uuid or bytes([0x86, 0x80, n] + [0] * 12 + [n + 1])
            gpu.bus = gpu.bus or 0x29 + n * 0x10
        self.init_rc = init_rc
        self.initialised = False
        self.init_calls = 0
        self.calls: Counter[str] = Counter()

    # handles are ids: 1 = the driver, 100 + n = device n, 1000·(n+1) + d = domain d of device n

    def zesInit(self, flags: int) -> int:
        self.init_calls += 1
        self.initialised = self.init_rc == ZE_RESULT_SUCCESS
        return self.init_rc

    def _fill(self, p_count: Any, array: Any, values: list[int], kind: Any) -> int:
        if not self.initialised:
            return ZE_RESULT_ERROR_UNINITIALIZED
        count = p_count._obj
        if array is None:
            count.value = len(values)
            return ZE_RESULT_SUCCESS
        for i in range(min(count.value, len(values))):
            array[i] = kind(values[i])
        return ZE_RESULT_SUCCESS

    def zesDriverGet(self, p_count: Any, ph_drivers: Any) -> int:
        return self._fill(p_count, ph_drivers, [1], zes_driver_handle_t)

    def zesDeviceGet(self, h_driver: Any, p_count: Any, ph_devices: Any) -> int:
        return self._fill(p_count, ph_devices, [100 + n for n in range(len(self.gpus))], zes_device_handle_t)

    def _gpu(self, handle: Any) -> FakeIntelGpu:
        return self.gpus[handle.value - 100]

    def zesDeviceGetProperties(self, h_device: Any, p_properties: Any) -> int:
        self.calls["zesDeviceGetProperties"] += 1
        gpu, props = self._gpu(h_device), p_properties._obj
        assert props.stype == ZES_STRUCTURE_TYPE_DEVICE_PROPERTIES
        for i, byte in enumerate(gpu.uuid):
            props.core.uuid.id[i] = byte
        props.core.name = gpu.name.encode()
        props.modelName = gpu.name.encode()
        props.numSubdevices = gpu.tiles if gpu.tiles > 1 else 0
        return ZE_RESULT_SUCCESS

    def zesDevicePciGetProperties(self, h_device: Any, p_properties: Any) -> int:
        gpu, props = self._gpu(h_device), p_properties._obj
        props.address.domain, props.address.bus, props.address.device, props.address.function = 0, gpu.bus, 0, 0
        return ZE_RESULT_SUCCESS

    def zesDeviceEnumPowerDomains(self, h_device: Any, p_count: Any, ph_power: Any) -> int:
        n = h_device.value - 100
        ids = [1000 * (n + 1) + d for d in range(len(self.gpus[n].domains))]
        return self._fill(p_count, ph_power, ids, zes_pwr_handle_t)

    def _domain(self, handle: Any) -> FakeDomain:
        return self.gpus[handle.value // 1000 - 1].domains[handle.value % 1000]

    def zesPowerGetProperties(self, h_power: Any, p_properties: Any) -> int:
        domain, props = self._domain(h_power), p_properties._obj
        assert props.stype == ZES_STRUCTURE_TYPE_POWER_PROPERTIES
        props.onSubdevice, props.subdeviceId = int(domain.on_subdevice), domain.subdevice_id
        return ZE_RESULT_SUCCESS

    def zesPowerGetEnergyCounter(self, h_power: Any, p_energy: Any) -> int:
        self.calls["zesPowerGetEnergyCounter"] += 1
        domain = self._domain(h_power)
        if domain.rc != ZE_RESULT_SUCCESS:
            return domain.rc
        from green_callbacks.core import clock

        p_energy._obj.energy = domain.energy_uj
        p_energy._obj.timestamp = int(clock.now_s() * 1e6)
        return ZE_RESULT_SUCCESS


def install(monkeypatch: Any, fake: FakePyzes | None) -> FakePyzes | None:
    """Put ``fake`` in ``sys.modules`` as ``pyzes`` (``None``: importing it fails); reset the init state."""
    from green_callbacks.core.sensors import intel_gpu

    monkeypatch.setitem(sys.modules, "pyzes", fake)
    monkeypatch.setattr(intel_gpu, "_init_lib", None)
    monkeypatch.setattr(intel_gpu, "_init_error", None)
    return fake

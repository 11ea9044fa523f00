"""The CPU and RAM sensors of this machine: IOReport on Apple Silicon, RAPL where it can be read, labelled
estimates where neither can."""

from __future__ import annotations

import os
import warnings

from green_callbacks.core.sensors.apple import build_apple_host_sensors
from green_callbacks.core.sensors.base import Sensor
from green_callbacks.core.sensors.cpu_tdp import CpuInfo, machine_cpuinfo, match_cpu_model
from green_callbacks.core.sensors.estimate import (
    CpuTdpEstimateSensor,
    CpuTimeEstimateSensor,
    RssEstimateSensor,
    validate_watts,
)
from green_callbacks.core.sensors.rapl import (
    RaplCpuSensor,
    RaplRamSensor,
    RaplReader,
    permission_fix_hint,
    resolve_root,
)

__all__ = ["build_host_sensors"]


def build_host_sensors(
    rapl_root: str | os.PathLike[str] | None = None,
    cpu_watts_per_core: float | None = None,
    ram_watts_per_gb: float | None = None,
    cpuinfo: CpuInfo | None = None,
) -> tuple[Sensor, Sensor]:
    """``(cpu_sensor, ram_sensor)`` for this machine.

    - CPU: on Apple Silicon with ``zeus-apple-silicon``, IOReport's CPU energy (``apple-ioreport-cpu``); else RAPL
      package zones if every one can be read; else :class:`CpuTdpEstimateSensor` when the CPU model is in the TDP
      table and this is not a virtual machine (a VM sees only some of the package's logical CPUs, so TDP ÷ the CPUs
      it sees would overstate) and no ``cpu_watts_per_core`` was given; else :class:`CpuTimeEstimateSensor` (its
      ``info()`` says why the TDP was not used). ``cpuinfo`` defaults to
      :func:`~green_callbacks.core.sensors.cpu_tdp.machine_cpuinfo`, read once per process (tests pass one).
    - RAM: on Apple Silicon, IOReport's DRAM energy where the chip reports it (``apple-ioreport-dram``); else RAPL
      ``dram`` zones if present and readable; else :class:`RssEstimateSensor`.

    The powercap root is ``rapl_root``, else ``$GREEN_CALLBACKS_RAPL_ROOT``, else ``/sys/class/powercap``. The
    watt constants are used by the estimates only (RAPL measures). When a counter exists but may not be read,
    one ``RuntimeWarning`` names the fixes.

    Raises:
        ValueError: a watt constant that is not a finite number ≥ 0.
    """
    cpu_w = None if cpu_watts_per_core is None else validate_watts(cpu_watts_per_core, "cpu_watts_per_core")
    ram_w = None if ram_watts_per_gb is None else validate_watts(ram_watts_per_gb, "ram_watts_per_gb")
    apple_cpu, apple_ram, apple_why = build_apple_host_sensors()
    root = resolve_root(rapl_root)
    reader = RaplReader(root)

    if reader.permission_denied and not (apple_cpu and apple_ram):
        warnings.warn(
            f"green_callbacks: the RAPL energy counters under {root} cannot be read by this user "
            f"({reader.reason('package') or reader.reason('dram')}). {permission_fix_hint(root)}",
            RuntimeWarning,
            stacklevel=2,
        )

    cpu: Sensor
    ram: Sensor
    apple_hint = f"; {apple_why}" if apple_why and apple_why != "not an Apple Silicon Mac" else ""
    if apple_cpu is not None:
        cpu = apple_cpu
    elif reader.available("package"):
        cpu = RaplCpuSensor(reader)
    else:
        cpu = _cpu_estimate(cpu_w, _why(reader, "package", root) + apple_hint, cpuinfo)
    if apple_ram is not None:
        ram = apple_ram
    elif reader.available("dram"):
        ram = RaplRamSensor(reader)
    else:
        ram = RssEstimateSensor(ram_w, reason=_why(reader, "dram", root) + apple_hint)
    return cpu, ram


def _why(reader: RaplReader, kind: str, root: str) -> str:
    if not os.path.isdir(root):
        return f"no powercap directory at {root}"
    return reader.reason(kind)


def _cpu_estimate(cpu_w: float | None, reason: str, cpuinfo: CpuInfo | None) -> Sensor:
    if cpu_w is not None:
        sensor = CpuTimeEstimateSensor(cpu_w, reason=reason)
        sensor.tdp_reason = "cpu_watts_per_core was given"
        return sensor
    info = cpuinfo if cpuinfo is not None else machine_cpuinfo()
    match = match_cpu_model(info.model)
    why = ""
    if match is None:
        why = (f"the CPU model {info.model!r} is not in the TDP table (or is ambiguous)" if info.model
               else "the CPU model could not be read")
    elif info.virtual_machine:
        why = (f"virtual machine: it sees {info.threads_per_package} logical CPU(s) of the package, so "
               f"{match.tdp_w:g} W ÷ {info.threads_per_package} would overstate the power per CPU")
    elif not info.threads_per_package:
        why = "the number of logical CPUs per package could not be read"
    if why:
        sensor = CpuTimeEstimateSensor(None, reason=reason)
        sensor.tdp_reason = why
        return sensor
    assert match is not None and info.threads_per_package
    return CpuTdpEstimateSensor(match, info.threads_per_package, reason=reason)

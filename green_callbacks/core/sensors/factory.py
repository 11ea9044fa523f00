"""The machine's sensors for one run or phase: the accelerator the framework trains on, the CPU and the RAM.

One function, used by the training :class:`~green_callbacks.core.session.Session` and by the test/predict/evaluate
:class:`~green_callbacks.core.phase_session.PhaseSession`, so a fit and its phases measure the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from green_callbacks.core.sensors.base import Sensor

__all__ = ["build_sensors"]


def build_sensors(
    config: Any,
    *,
    device_type: str = "cuda",
    device_indices: Sequence[int] | None = None,
    device_uuids: Sequence[str] | None = None,
) -> list[Sensor]:
    """``[accelerator, cpu, ram]`` for this machine and ``config`` (``gpus``, ``cpu_watts_per_core``,
    ``ram_watts_per_gb``); ``device_type`` picks the accelerator's sensor (see
    :mod:`~green_callbacks.core.sensors.accelerators`)."""
    from green_callbacks.core.sensors.accelerators import build_accelerator_sensor
    from green_callbacks.core.sensors.host import build_host_sensors

    gpu = build_accelerator_sensor(device_type, device_indices, device_uuids, gpus=config.gpus)
    cpu, ram = build_host_sensors(cpu_watts_per_core=config.cpu_watts_per_core,
                                  ram_watts_per_gb=config.ram_watts_per_gb)
    return [gpu, cpu, ram]

"""What machine and software a run used, for the run record (read cheaply, nothing imported): the record's
:class:`~green_callbacks.core.record_sections.HardwareInfo` and :class:`~green_callbacks.core.record_sections.
SoftwareInfo`."""

from __future__ import annotations

import functools
import os
from typing import Any

from green_callbacks.core.record_sections import HardwareInfo, SoftwareInfo

__all__ = ["hardware_info", "software_info"]


def hardware_info(sensors: dict[str, Any]) -> HardwareInfo:
    """CPU model and count, RAM, and what each sensor reports of its hardware."""
    import platform

    try:
        import psutil

        ram_total_gb: float | None = psutil.virtual_memory().total / 1e9
    except Exception:
        ram_total_gb = None
    return HardwareInfo(cpu_model=_cpu_model(), cpu_count=os.cpu_count(), machine=platform.machine(),
                        sensors=sensors, ram_total_gb=ram_total_gb)


def _cpu_model() -> str | None:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


_PACKAGES = ("torch", "lightning", "pytorch-lightning", "keras", "tensorflow", "jax", "transformers",
             "accelerate", "nvidia-ml-py", "psutil", "amdsmi", "pyzes", "zeus-apple-silicon", "libtpu")


def software_info() -> SoftwareInfo:
    """Versions of Python, this package and the ML packages installed (read from metadata, nothing imported).

    Read once per process (~5 ms of metadata look-ups; a package upgraded under a running process is not seen).
    """
    from green_callbacks import __version__

    python, platform_name, versions = _versions()
    return SoftwareInfo(green_callbacks=__version__, python=python, platform=platform_name, packages=dict(versions))


@functools.cache
def _versions() -> tuple[str, str, tuple[tuple[str, str], ...]]:
    import platform
    from importlib import metadata

    versions = []
    for name in _PACKAGES:
        try:
            versions.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return platform.python_version(), platform.platform(), tuple(versions)

"""A fake Linux powercap tree in a temporary folder, laid out like the real one.

The real ``/sys/class/powercap`` holds symlinks (``intel-rapl:0``, ``intel-rapl:0:0``, ...) into
``/sys/devices/virtual/powercap/<provider>/<zone>/<subzone>``. :class:`FakePowercap` builds the same: real
folders under ``<tmp>/devices/<provider>/...`` and flat symlinks at ``<tmp>/class``, which is the root to pass.

Permission failures: the tests run as root, and root reads a ``chmod 000`` file anyway, so a chmod would test
nothing. :meth:`FakePowercap.deny` instead records the zone, and :meth:`FakePowercap.install` makes
``rapl._read_file`` (the one function through which rapl.py opens sysfs files) raise ``PermissionError`` for that
zone's ``energy_uj``, exactly what ``open()`` raises for a non-root user since CVE-2020-8694. Everything else
is read from disk by the real code.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from green_callbacks.core.sensors import rapl

INTEL_PACKAGE_RANGE_UJ = 262_143_328_850  # 2**32 × 61.035 µJ, common on Intel packages
AMD_RANGE_UJ = 65_532_610_987  # 2**32 × 15.26 µJ, AMD EPYC

__all__ = ["AMD_RANGE_UJ", "INTEL_PACKAGE_RANGE_UJ", "FakePowercap"]


class FakePowercap:
    """Builder of a fake powercap tree. ``root`` is what the code under test is given."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.root = self.base / "class"
        self.devices = self.base / "devices"
        self.root.mkdir(parents=True, exist_ok=True)
        self.devices.mkdir(parents=True, exist_ok=True)
        self.paths: dict[str, Path] = {}
        self.ranges: dict[str, int] = {}
        self.denied: set[str] = set()

    def add_zone(
        self,
        zone_id: str,
        name: str,
        energy_uj: int = 0,
        max_energy_range_uj: int | None = INTEL_PACKAGE_RANGE_UJ,
    ) -> Path:
        """Add zone ``zone_id`` (``"intel-rapl:0"``, ``"intel-rapl:0:0"``, ``"amd-rapl:1"``...).

        A subzone goes inside its parent, which must exist. ``max_energy_range_uj=None`` leaves that file out.
        """
        provider, _, rest = zone_id.partition(":")
        parts = rest.split(":")
        if len(parts) == 1:
            folder = self.devices / provider / zone_id
        else:
            parent = f"{provider}:{':'.join(parts[:-1])}"
            folder = self.paths[parent] / zone_id
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
        (folder / "energy_uj").write_text(f"{int(energy_uj)}\n")
        if max_energy_range_uj is not None:
            (folder / "max_energy_range_uj").write_text(f"{int(max_energy_range_uj)}\n")
            self.ranges[zone_id] = int(max_energy_range_uj)
        (folder / "enabled").write_text("1\n")
        link = self.root / zone_id
        link.symlink_to(os.path.relpath(folder, self.root))
        provider_link = self.root / provider
        if not provider_link.exists():
            provider_link.symlink_to(os.path.relpath(self.devices / provider, self.root))
        self.paths[zone_id] = folder
        return folder

    def energy_uj(self, zone_id: str) -> int:
        return int((self.paths[zone_id] / "energy_uj").read_text())

    def set_energy(self, zone_id: str, energy_uj: int) -> None:
        """Write the raw counter value (no wrapping applied)."""
        (self.paths[zone_id] / "energy_uj").write_text(f"{int(energy_uj)}\n")

    def add_energy(self, zone_id: str, energy_j: float) -> None:
        """Advance the counter by ``energy_j`` joules, wrapping at its range like the hardware."""
        value = self.energy_uj(zone_id) + round(energy_j * 1e6)
        self.set_energy(zone_id, value % self.ranges[zone_id])

    def remove(self, zone_id: str) -> None:
        """The zone disappears (driver unloaded, CPU hot-unplugged): its files are gone."""
        shutil.rmtree(self.paths[zone_id])

    def deny(self, zone_id: str) -> None:
        """Reading this zone's ``energy_uj`` raises ``PermissionError`` (needs :meth:`install`)."""
        self.denied.add(zone_id)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Route rapl.py's file reads through this tree's permission rules."""
        real = rapl._read_file

        def read_file(path: str) -> str:
            resolved = os.path.realpath(path)
            if any(os.path.realpath(self.paths[z] / "energy_uj") == resolved for z in self.denied):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return real(path)

        monkeypatch.setattr(rapl, "_read_file", read_file)

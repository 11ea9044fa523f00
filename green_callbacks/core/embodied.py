"""Embodied (manufacturing) emissions of the hardware, amortised over the hours a run holds it.

    g = kgCO2e × 1000 × hours_used / (lifetime_years × 8760 × utilisation) × share

``kgCO2e`` is a cradle-to-gate figure from the packaged table ``data/embodied.csv`` (one row per accelerator model
plus one for a server's host without accelerators, each with its source, year and method). ``utilisation`` is the
fraction of its lifetime the hardware does useful work, ``share`` the fraction of it this run holds (a whole GPU is
1; the host is shared between the GPUs it carries). The defaults are the assumptions of Luccioni, Viguier &
Ligozat's BLOOM study (JMLR 24(253), 2023): 6 years, 85 % use. Embodied emissions are reported *beside* the
operational ones, never added to them silently. An accelerator without a figure is ``unavailable`` with the
reason, never 0. See ``docs/footprint.md``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from green_callbacks.core.record_sections import EMBODIED_FORMULA, EmbodiedPart, to_json

__all__ = [
    "DEFAULT_ACCELERATORS_PER_HOST",
    "DEFAULT_LIFETIME_YEARS",
    "DEFAULT_UTILISATION",
    "HOURS_PER_YEAR",
    "EmbodiedPart",
    "EmbodiedRate",
    "EmbodiedRow",
    "accelerator_names",
    "embodied_gco2e",
    "embodied_rate",
    "embodied_table",
    "host_row",
    "lookup_accelerator",
    "validate_fraction",
    "validate_lifetime_years",
]

HOURS_PER_YEAR = 8760.0
DEFAULT_LIFETIME_YEARS = 6.0
DEFAULT_UTILISATION = 0.85
DEFAULTS_SOURCE = ("Luccioni, Viguier & Ligozat, 'Estimating the Carbon Footprint of BLOOM', JMLR 24(253), 2023: "
                   "6-year lifetime, 85 % utilisation")
DEFAULT_ACCELERATORS_PER_HOST = 8
"""The default host share of a GPU run is (GPUs used on the node) / 8, capped at 1: an 8-GPU server (HGX)."""


@dataclass(frozen=True)
class EmbodiedRow:
    """One row of ``embodied.csv``. ``kgco2e`` is ``None`` where no figure is published."""

    kind: str
    name: str
    match: str
    kgco2e: float | None
    year: int | None
    method: str
    source: str


def validate_lifetime_years(value: object, name: str = "embodied_lifetime_years") -> float:
    """A hardware lifetime in years: a finite number > 0 (typical 3 to 6)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or float(value) <= 0:
        raise ValueError(f"{name} must be a finite number of years > 0 (typically 3 to 6), got {value!r}")
    return float(value)


def validate_fraction(value: object, name: str) -> float:
    """A fraction in (0, 1]: utilisation or share."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or not 0 < float(value) <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], e.g. 0.85 for 85 %, got {value!r}")
    return float(value)


def embodied_gco2e(kgco2e: float, hours_used: float, lifetime_years: float, utilisation: float,
                   share: float = 1.0) -> float:
    """Grams CO2e of ``kgco2e`` amortised over ``hours_used``:
    ``kg × 1000 × hours / (lifetime_years × 8760 × utilisation) × share``."""
    return float(kgco2e) * 1000.0 * float(hours_used) / (lifetime_years * HOURS_PER_YEAR * utilisation) * share


@lru_cache(maxsize=1)
def embodied_table() -> tuple[EmbodiedRow, ...]:
    """Every row of the packaged table, in file order."""
    text = (resources.files("green_callbacks.core") / "data" / "embodied.csv").read_text(encoding="utf-8")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        kg = row["kgco2e"].strip()
        year = row["year"].strip()
        rows.append(EmbodiedRow(kind=row["kind"].strip(), name=row["name"].strip(), match=row["match"].strip().upper(),
                                kgco2e=float(kg) if kg else None, year=int(year) if year else None,
                                method=row["method"].strip(), source=row["source"].strip()))
    return tuple(rows)


def host_row() -> EmbodiedRow:
    """The table's host row (a server without its accelerators)."""
    for row in embodied_table():
        if row.kind == "host":
            return row
    raise RuntimeError("embodied.csv has no host row; the package data is damaged")


def _tokens(name: str) -> set[str]:
    return set(re.split(r"[^A-Z0-9]+", name.upper())) - {""}


def lookup_accelerator(device_name: str) -> EmbodiedRow | None:
    """The table row whose model token appears as a whole word in ``device_name`` (``"NVIDIA H100 80GB HBM3"`` →
    H100; ``"NVIDIA GH200 480GB"`` matches no H200 row); ``None`` when no row matches."""
    tokens = _tokens(device_name)
    for row in embodied_table():
        if row.kind == "accelerator" and row.match in tokens:
            return row
    return None


@dataclass(frozen=True)
class EmbodiedRate:
    """The embodied emissions per hour of this run's hardware (one process or node), with every assumption."""

    parts: tuple[EmbodiedPart, ...]
    lifetime_years: float
    utilisation: float
    assumptions: tuple[str, ...] = ()

    @property
    def rate_gco2e_per_h(self) -> float:
        """The sum over the parts with a figure (see :attr:`missing` for the others)."""
        return float(sum(p.rate_gco2e_per_h for p in self.parts if p.rate_gco2e_per_h is not None))

    @property
    def missing(self) -> tuple[str, ...]:
        """``"name: reason"`` for each part without a figure."""
        return tuple(f"{p.name}: {p.reason}" for p in self.parts if p.rate_gco2e_per_h is None)

    @property
    def available(self) -> bool:
        """At least one part has a figure."""
        return any(p.rate_gco2e_per_h is not None for p in self.parts)

    def section_fields(self) -> dict[str, Any]:
        """The record's embodied section's fields this rate gives (:class:`~green_callbacks.core.record_sections.
        EmbodiedInfo`), in their order."""
        return {
            "formula": EMBODIED_FORMULA,
            "lifetime_years": self.lifetime_years,
            "utilisation": self.utilisation,
            "rate_gco2e_per_h": self.rate_gco2e_per_h if self.available else None,
            "parts": self.parts,
            "missing": self.missing,
            "assumptions": self.assumptions,
        }

    def to_record(self) -> dict[str, Any]:
        return to_json(self.section_fields())


def _part(name: str, kind: str, row: EmbodiedRow | None, share: float, lifetime_years: float,
          utilisation: float, unknown: str) -> EmbodiedPart:
    if row is None:
        return EmbodiedPart(name, kind, share, None, None, "unavailable", "", None, unknown)
    if row.kgco2e is None:
        return EmbodiedPart(name, kind, share, None, None, "unavailable", row.source, None,
                            f"no embodied figure for the {row.name}: {row.source}")
    rate = embodied_gco2e(row.kgco2e, 1.0, lifetime_years, utilisation, share)
    return EmbodiedPart(name, kind, share, row.kgco2e, rate, row.method, row.source, row.year)


def embodied_rate(
    accelerators: Sequence[str],
    *,
    host: bool = True,
    lifetime_years: float = DEFAULT_LIFETIME_YEARS,
    utilisation: float = DEFAULT_UTILISATION,
    host_share: float | None = None,
    unidentified: int = 0,
    unidentified_reason: str = "",
    virtual_machine: bool = False,
) -> EmbodiedRate:
    """The embodied rate of a run on ``accelerators`` (device names, e.g. from NVML) and, if ``host``, its share
    of the host server.

    Args:
        accelerators: names of the accelerators this process (or node) trains on; each is charged whole.
        host: charge a share of the host server (the node leader does; other ranks of the node do not).
        host_share: the fraction of the host charged; default ``len(accelerators) / 8`` capped at 1 with
            accelerators, 1.0 (the whole machine) without.
        unidentified: how many accelerators the run uses whose model could not be read (listed as unavailable,
            with ``unidentified_reason``).
        virtual_machine: the run is in a VM: without accelerators and without ``host_share``, the host part is
            ``unavailable`` (the VM's share of its physical server is unknown), never the whole server.
    """
    lifetime_years = validate_lifetime_years(lifetime_years)
    utilisation = validate_fraction(utilisation, "embodied_utilisation")
    assumptions = [f"lifetime {lifetime_years:g} years, utilisation {utilisation:g}"
                   + (f" ({DEFAULTS_SOURCE})" if (lifetime_years, utilisation)
                      == (DEFAULT_LIFETIME_YEARS, DEFAULT_UTILISATION) else " (user-set)")]
    parts = [
        _part(f"accelerator {i}: {name}", "accelerator", lookup_accelerator(name), 1.0, lifetime_years, utilisation,
              f"no embodied figure for {name!r} in green_callbacks/core/data/embodied.csv")
        for i, name in enumerate(accelerators)
    ]
    parts += [EmbodiedPart(f"accelerator {len(accelerators) + i}: unidentified", "accelerator", 1.0, None, None,
                           "unavailable", "", None, unidentified_reason or "the accelerator's model is unknown")
              for i in range(max(int(unidentified), 0))]
    count = len(accelerators) + max(int(unidentified), 0)
    if host:
        if host_share is None:
            if count:
                share = min(1.0, count / DEFAULT_ACCELERATORS_PER_HOST)
                assumptions.append(f"host share {share:g} = {count} accelerator(s) of an "
                                   f"{DEFAULT_ACCELERATORS_PER_HOST}-GPU server (default; set embodied_host_share=)")
            elif virtual_machine:  # its part of an unseen physical server is unknown: never guessed
                parts.append(EmbodiedPart(
                    "host", "host", 1.0, None, None, "unavailable", "", None,
                    "a virtual machine without accelerators: its share of the physical server is unknown here "
                    "(charging the whole server would overstate it many times); pass "
                    "embodied_host_share=<your vCPUs / the host's> to include it"))
                return EmbodiedRate(tuple(parts), lifetime_years, utilisation, tuple(assumptions))
            else:
                share = 1.0
                assumptions.append("host share 1 = the whole machine (default for a run without accelerators; set "
                                   "embodied_host_share= to your part of a shared machine)")
        else:
            share = validate_fraction(host_share, "embodied_host_share")
            assumptions.append(f"host share {share:g} (user-set)")
        parts.append(_part("host", "host", host_row(), share, lifetime_years, utilisation, ""))
    return EmbodiedRate(tuple(parts), lifetime_years, utilisation, tuple(assumptions))


def accelerator_names(gpu_info: Mapping[str, Any]) -> list[str]:
    """Device names from a GPU sensor's ``info()`` (``{"devices": [{"name": ...}, ...]}``), in order."""
    devices = gpu_info.get("devices") if isinstance(gpu_info, Mapping) else None
    if not isinstance(devices, list):
        return []
    return [str(d.get("name")) for d in devices if isinstance(d, Mapping) and d.get("name")]

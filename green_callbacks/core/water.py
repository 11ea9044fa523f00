"""Water consumed for a run's electricity: on site (data-centre cooling) and off site (power generation).

    water_L = energy_kWh × (WUE_onsite + PUE × off-site L/kWh)          (Li, Yang, Islam & Ren 2023)

``energy_kWh`` is IT energy before PUE. The on-site water usage effectiveness (WUE, L/kWh of IT energy) is a setting
whose default is a published fleet figure (:data:`DEFAULT_WUE_L_PER_KWH`); the off-site water intensity of the grid
comes from ``data/water_countries.csv``: each country's generation mix (CodeCarbon ``global_energy_mix.json``, MIT)
weighted with Macknick et al. 2012's median operational water-consumption factors per technology, a *derived*
figure labelled as such. ``tools/make_water_table.py`` regenerates it. See ``docs/footprint.md`` for the
uncertainty (hydropower's reservoir evaporation dominates where hydro is large).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import asdict
from functools import lru_cache
from importlib import resources
from types import MappingProxyType

from green_callbacks.core.record_sections import WaterIntensity

__all__ = [
    "DEFAULT_WUE_L_PER_KWH",
    "WUE_SOURCE",
    "WaterIntensity",
    "gcp_region_country",
    "lookup_water",
    "validate_wue",
    "water_for_location",
    "water_l",
    "water_table",
]

DEFAULT_WUE_L_PER_KWH = 0.49
WUE_SOURCE = ("Microsoft data-centre fleet WUE 0.49 L/kWh, fiscal year 2021 (Microsoft Environmental Sustainability "
              "Report 2022); a published figure for a large evaporatively cooled fleet, used as the default. Set "
              "wue_l_per_kwh=0 for a machine without evaporative cooling")
MAX_WUE_L_PER_KWH = 20.0
TABLE_METHOD = "derived: generation mix × per-technology water factors"
TABLE_SOURCE = ("generation mix: CodeCarbon global_energy_mix.json (MIT; Ember/Energy Institute data); factors: "
                "Macknick, Newmark, Heath & Hallett, Environ. Res. Lett. 7 (2012) 045802, medians, cooling-tower "
                "plants; hydropower counts reservoir evaporation")


def validate_wue(value: object, name: str = "wue_l_per_kwh") -> float:
    """An on-site WUE in L/kWh: a finite number from 0 to 20 (fleets publish 0.2 to 2)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or not 0 <= float(value) <= MAX_WUE_L_PER_KWH:
        raise ValueError(f"{name} must be a finite number of litres per kWh from 0 to {MAX_WUE_L_PER_KWH:g} "
                         f"(data centres publish 0.2 to 2; 0 for no evaporative cooling), got {value!r}")
    return float(value)


def water_l(energy_kwh: float, wue_l_per_kwh: float, pue: float, offsite_l_per_kwh: float) -> float:
    """Litres: ``energy_kWh × (WUE + PUE × off-site L/kWh)`` (``energy_kWh`` before PUE)."""
    return float(energy_kwh) * (float(wue_l_per_kwh) + float(pue) * float(offsite_l_per_kwh))


@lru_cache(maxsize=1)
def water_table() -> Mapping[str, WaterIntensity]:
    """Keyed by ISO alpha-2 and alpha-3 code (upper case) and ``"WORLD"``."""
    text = (resources.files("green_callbacks.core") / "data" / "water_countries.csv").read_text(encoding="utf-8")
    table: dict[str, WaterIntensity] = {}
    for row in csv.DictReader(io.StringIO(text)):
        iso2, iso3 = row["iso2"].strip().upper(), row["iso3"].strip().upper()
        value = WaterIntensity(
            offsite_l_per_kwh=float(row["water_l_per_kwh"]),
            hydro_l_per_kwh=float(row["hydro_l_per_kwh"]),
            location=iso2 or iso3 or "world",
            year=int(row["year"]) if row["year"].strip() else None,
            method=TABLE_METHOD if row["method"].strip() == "mix x factors"
            else f"{TABLE_METHOD} ({row['method'].strip()})",
            source=TABLE_SOURCE,
            kind="table",
        )
        if not iso2 and not iso3:
            table["WORLD"] = value
        for key in (iso2, iso3):
            if key:
                table[key] = value
    return MappingProxyType(table)


@lru_cache(maxsize=1)
def _gcp_countries() -> Mapping[str, str]:
    text = (resources.files("green_callbacks.core") / "data" / "gcp_region_countries.csv").read_text(
        encoding="utf-8")
    return MappingProxyType({r["region"].strip().lower(): r["iso2"].strip().upper()
                             for r in csv.DictReader(io.StringIO(text))})


def gcp_region_country(region: str) -> str | None:
    """ISO alpha-2 code of the country a Google Cloud region is in (``"gcp:europe-west9"`` → ``"FR"``)."""
    name = region.strip().lower()
    name = name.split(":", 1)[1] if name.startswith("gcp:") else name
    return _gcp_countries().get(name)


def lookup_water(code: str) -> WaterIntensity:
    """The table value for an ISO alpha-2/alpha-3 code or ``"world"``; a ``ValueError`` naming the table if absent."""
    key = {"UK": "GB", "WLD": "WORLD"}.get(code.strip().upper(), code.strip().upper())
    row = water_table().get(key)
    if row is None:
        raise ValueError(f"No off-site water intensity for {code!r}; green_callbacks/core/data/water_countries.csv "
                         "covers the countries of CodeCarbon's energy-mix file (ISO codes) and 'world'")
    return row


def water_for_location(location: str | None) -> WaterIntensity:
    """The off-site water intensity for a carbon intensity's ``location`` (an ISO code, ``"gcp:<region>"``,
    ``"world"``, a live zone such as ``"DE"`` or ``"US-CAL-CISO"``); the world value, ``kind="default"``, otherwise."""
    text = (location or "").strip()
    code: str | None = None
    if text.lower().startswith("gcp:"):
        code = gcp_region_country(text)
    elif text:
        code = text.split("-", 1)[0].upper()  # a live zone: its country part
    if code:
        row = water_table().get({"UK": "GB"}.get(code, code))
        if row is not None:
            if text.lower().startswith("gcp:") or "-" in text:
                return WaterIntensity(**{**asdict(row), "location": f"{row.location} (for {text})"})
            return row
    world = water_table()["WORLD"]
    why = f"no country for the grid {text!r}" if text else "no grid location"
    return WaterIntensity(**{**asdict(world), "location": "world", "kind": "default",
                             "method": f"{world.method}; world value used: {why}"})

"""Grid carbon intensity: packaged tables, selection, validation.

Offline by default: the numbers come from two packaged tables (``data/countries.csv``, every country with public
data: Ember/OWID lifecycle values, one value derived from its generation mix, each row with its own source, year
and method; and ``data/gcp_regions.csv``, Google Cloud's published per-region grid values), from an explicit
value, or from environment variables. No function here makes a network connection; the opt-in live
provider lives in :mod:`green_callbacks.core.live` and is only used when passed as ``live=``. A run asks it
through :class:`CarbonChoice`, in the background: the run never waits on the network (see docs/carbon.md).

Precedence in :func:`resolve_carbon`: ``carbon_intensity`` > ``region`` > ``country`` (at most one of the three)
> environment variables (same rule) > the world average, with one warning per process saying how to set it.

Emissions arithmetic is :func:`green_callbacks.core.units.emissions_gco2e`; this module only supplies the
intensity and validates the PUE.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import numbers
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from green_callbacks.core.wording import FrontEnd

__all__ = [
    "COUNTRY_BASIS",
    "DEFAULT_PUE",
    "DERIVED_BASIS",
    "ENV_CARBON_INTENSITY",
    "ENV_COUNTRY",
    "ENV_REGION",
    "GCP_BASIS",
    "MAX_INTENSITY_GCO2E_PER_KWH",
    "MAX_PUE",
    "METHOD_DERIVED",
    "METHOD_PUBLISHED",
    "MIX_FACTORS_GCO2E_PER_KWH",
    "MIX_SOURCES",
    "PUE_PRESETS",
    "CarbonChoice",
    "CarbonIntensity",
    "CountryRow",
    "LiveIntensitySource",
    "RegionRow",
    "choose_carbon",
    "country_table",
    "gcp_region_table",
    "intensity_from_mix",
    "lookup_country",
    "lookup_region",
    "resolve_carbon",
    "validate_intensity",
    "validate_pue",
    "world_average",
]

ENV_COUNTRY = "GREEN_CALLBACKS_COUNTRY"
ENV_REGION = "GREEN_CALLBACKS_REGION"
ENV_CARBON_INTENSITY = "GREEN_CALLBACKS_CARBON_INTENSITY"

COUNTRY_BASIS = "lifecycle, annual average, production-based"
DERIVED_BASIS = "generation mix x per-source lifecycle factors, annual average, production-based"
GCP_BASIS = "operational grid average (location-based), annual average"
EXPLICIT_BASIS = "user-supplied value"

#: Upper bound for an accepted intensity. Coal, the dirtiest common fuel, is about 1000 gCO2e/kWh on a lifecycle
#: basis (995 g in CodeCarbon's per-source table), so anything above 2000 is almost surely a unit mistake.
MAX_INTENSITY_GCO2E_PER_KWH = 2000.0

#: ``method`` of a value a source published as it is, and of one this package computed from a generation mix.
METHOD_PUBLISHED = "published"
METHOD_DERIVED = "derived from generation mix"
_DEFAULT_METHODS = {
    "table": METHOD_PUBLISHED, "explicit": "user-supplied", "live": "live API", "default": METHOD_PUBLISHED,
}

#: Generation sources of a mix (the ``<source>_TWh`` fields of the OWID/CodeCarbon energy-mix file).
MIX_SOURCES = (
    "coal", "oil", "gas", "nuclear", "hydroelectricity", "solar", "wind", "biofuel", "other_renewable_exc_biofuel",
)
#: Lifecycle gCO2e/kWh per generation source, used only to derive a country whose published value is missing.
#: All but biofuel are CodeCarbon's ``carbon_intensity_per_source.json`` (MIT; fossil values from the
#: energy-usage project, low-carbon values from the World Nuclear Association's lifecycle comparison);
#: "other renewable" (geothermal, tidal, wave) takes its geothermal figure. Biofuel is the IPCC AR5 WGIII
#: Annex III (2014) median for dedicated biomass. Sources and caveats: docs/carbon.md.
MIX_FACTORS_GCO2E_PER_KWH: Mapping[str, float] = MappingProxyType(
    {
        "coal": 995.0,
        "oil": 816.0,
        "gas": 743.0,
        "nuclear": 29.0,
        "hydroelectricity": 26.0,
        "solar": 48.0,
        "wind": 26.0,
        "biofuel": 230.0,
        "other_renewable_exc_biofuel": 38.0,
    }
)

DEFAULT_PUE = 1.0
#: Upper bound for an accepted PUE. The Uptime Institute's first industry survey (2007) found an average of about
#: 2.5, and averages have fallen since (1.58 in 2023); a facility using three times its IT energy is far outside
#: any published average, so a larger value is almost surely a mistake (a percentage, or a unit mix-up).
MAX_PUE = 3.0
#: Named PUE values, each with its year. Sources are in docs/carbon.md.
PUE_PRESETS: Mapping[str, float] = MappingProxyType(
    {
        "none": 1.0,  # IT energy only (CodeCarbon's default too)
        "uptime-2023": 1.58,  # Uptime Institute industry average, 2023 (Uptime Intelligence update 221)
        "google-2023": 1.10,  # Google fleet annual average, 2023 (Google 2024 Environmental Report)
    }
)

_PROVIDERS_WITHOUT_TABLE = ("aws", "azure")
_COUNTRY_ALIASES = {"UK": "GB"}  # ISO 3166-1 "exceptionally reserved" code for the United Kingdom
_WORLD_KEYS = frozenset({"WORLD", "WLD"})

_world_warned = False  # the world-average warning is given once per process


@dataclass(frozen=True)
class CarbonIntensity:
    """One grid carbon intensity and where it came from.

    ``kind`` is ``"table"`` (packaged table), ``"explicit"`` (a value the user gave), ``"live"`` (a live API) or
    ``"default"`` (the world average used because nothing was set).

    ``method`` says how the number was obtained: ``"published"`` (a source's value as it is),
    ``"derived from generation mix"`` (computed here from a country's generation mix, see
    :func:`intensity_from_mix`), ``"user-supplied"`` or ``"live API"``; left out, it follows ``kind``.
    """

    intensity_gco2e_per_kwh: float
    source: str
    year: int | None
    location: str
    basis: str
    kind: str
    method: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "intensity_gco2e_per_kwh", validate_intensity(self.intensity_gco2e_per_kwh)
        )
        if self.kind not in _DEFAULT_METHODS:
            raise ValueError(
                f"CarbonIntensity.kind must be 'table', 'explicit', 'live' or 'default', got {self.kind!r}."
            )
        if self.method is None:
            object.__setattr__(self, "method", _DEFAULT_METHODS[self.kind])

    def to_record(self) -> dict[str, Any]:
        """Plain JSON-ready dict with the same field names."""
        return asdict(self)


@dataclass(frozen=True)
class CountryRow:
    """One row of ``countries.csv``; ``iso2``/``iso3`` are empty for the world row.

    ``method`` is :data:`METHOD_PUBLISHED` or :data:`METHOD_DERIVED`; ``basis`` follows from it.
    """

    iso2: str
    iso3: str
    name: str
    intensity_gco2e_per_kwh: float
    year: int
    source: str
    method: str = METHOD_PUBLISHED

    @property
    def basis(self) -> str:
        return DERIVED_BASIS if self.method == METHOD_DERIVED else COUNTRY_BASIS


@dataclass(frozen=True)
class RegionRow:
    """One row of ``gcp_regions.csv``; ``region`` is Google's name without the ``gcp:`` prefix."""

    region: str
    location: str
    intensity_gco2e_per_kwh: float
    year: int
    cfe_percent: float | None
    source: str


@runtime_checkable
class LiveIntensitySource(Protocol):
    """What ``resolve_carbon(live=...)`` needs: a fetch that never raises and falls back to ``fallback``."""

    def fetch(self, fallback: CarbonIntensity | None = None) -> CarbonIntensity: ...


# --- validation ---------------------------------------------------------------------------------------------


def _as_real(value: object, what: str, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number ({allowed}), got {value!r} ({type(value).__name__}).")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{what} must be a finite number ({allowed}), got {number!r}.")
    return number


def validate_intensity(value: object, what: str = "carbon_intensity") -> float:
    """A carbon intensity in gCO2e/kWh as a float, or a ``ValueError`` saying what is allowed.

    Allowed: a finite number from 0 to 2000. Zero is accepted on purpose (for example a market-based claim for a
    100 % renewable supply contract); the record then says ``kind="explicit"``. Negative, NaN, infinite and
    implausibly large values (more than twice coal's ~1000 g/kWh, usually a unit mistake) are rejected.
    """
    allowed = f"gCO2e/kWh, 0 to {MAX_INTENSITY_GCO2E_PER_KWH:g}"
    number = _as_real(value, what, allowed)
    if number < 0:
        raise ValueError(f"{what} must not be negative ({allowed}), got {number!r}.")
    if number > MAX_INTENSITY_GCO2E_PER_KWH:
        raise ValueError(
            f"{what}={number!r} gCO2e/kWh is implausible: coal, the dirtiest common fuel, is about 1000 "
            f"gCO2e/kWh, so the allowed range is {allowed}. If your value is in lb/MWh multiply it by 0.453592; "
            "grid intensities are usually 20-900 gCO2e/kWh."
        )
    return number


def validate_pue(pue: object = DEFAULT_PUE) -> float:
    """A power usage effectiveness (facility energy / IT energy) as a float, or a ``ValueError``.

    Allowed: a finite number from 1.0 to :data:`MAX_PUE` (3.0), or a preset name from :data:`PUE_PRESETS`
    (``"uptime-2023"`` = 1.58, ``"google-2023"`` = 1.10, ``"none"`` = 1.0). A PUE below 1.0 is physically
    impossible (the facility would use less energy than the IT equipment inside it); one above 3.0 is far beyond
    any published average (about 2.5 in 2007, 1.58 in 2023) and is taken for a mistake. The default 1.0 counts IT
    energy only.
    """
    presets = ", ".join(f"{name!r} ({value:g})" for name, value in PUE_PRESETS.items())
    allowed = f"a number from 1.0 to {MAX_PUE:g} or one of {presets}"
    if isinstance(pue, str):
        key = pue.strip().lower()
        if key in PUE_PRESETS:
            return PUE_PRESETS[key]
        raise ValueError(f"Unknown PUE preset {pue!r}; use {allowed}.")
    number = _as_real(pue, "pue", allowed)
    if number < 1.0:
        raise ValueError(
            f"pue={number!r} is physically impossible: PUE = facility energy / IT energy is at least 1.0. "
            f"Use 1.0 to count IT energy only, 1.58 (Uptime Institute industry average, 2023) for a typical data "
            f"centre, or your provider's published value."
        )
    if number > MAX_PUE:
        raise ValueError(
            f"pue={number!r} is implausible: PUE = facility energy / IT energy, and published data-centre averages "
            f"are 1.1-2.5 (Uptime Institute: about 2.5 in 2007, 1.58 in 2023), so the allowed range is 1.0 to "
            f"{MAX_PUE:g}. A value such as 158 is probably a percentage: pass 1.58. Use your provider's published "
            f"value, 1.58 ('uptime-2023') for a typical data centre, or 1.0 for IT energy only."
        )
    return number


def intensity_from_mix(mix_twh: Mapping[str, float]) -> float:
    """Grid intensity in gCO2e/kWh of a generation mix: the generation-weighted mean of the per-source factors.

    ``mix_twh`` maps sources from :data:`MIX_SOURCES` to generation (any one energy unit; TWh in the data file);
    the result is ``sum(generation_s * factor_s) / sum(generation_s)`` with :data:`MIX_FACTORS_GCO2E_PER_KWH`.
    Used to derive a country whose published intensity is missing; the row then says
    ``method="derived from generation mix"``.
    """
    unknown = sorted(set(mix_twh) - set(MIX_FACTORS_GCO2E_PER_KWH))
    if unknown:
        raise ValueError(f"unknown generation source(s) {unknown}; known: {', '.join(MIX_SOURCES)}.")
    total = 0.0
    weighted = 0.0
    for name, generation in mix_twh.items():
        amount = _as_real(generation, f"generation of {name}", "a finite amount >= 0")
        if amount < 0:
            raise ValueError(f"generation of {name} must not be negative, got {amount!r}.")
        total += amount
        weighted += amount * MIX_FACTORS_GCO2E_PER_KWH[name]
    if total <= 0:
        raise ValueError("a generation mix needs some generation (all sources are zero or missing).")
    return weighted / total


# --- tables -------------------------------------------------------------------------------------------------


def _read_csv(name: str) -> list[dict[str, str]]:
    text = (resources.files("green_callbacks.core") / "data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@lru_cache(maxsize=1)
def _country_rows() -> tuple[CountryRow, ...]:
    return tuple(
        CountryRow(
            iso2=row["iso2"].strip().upper(),
            iso3=row["iso3"].strip().upper(),
            name=row["name"].strip(),
            intensity_gco2e_per_kwh=float(row["gco2e_per_kwh"]),
            year=int(row["year"]),
            source=row["source"].strip(),
            method=(row.get("method") or METHOD_PUBLISHED).strip(),
        )
        for row in _read_csv("countries.csv")
    )


@lru_cache(maxsize=1)
def _country_index() -> Mapping[str, CountryRow]:
    index: dict[str, CountryRow] = {}
    for row in _country_rows():
        if row.iso2:
            index[row.iso2] = row
            index[row.iso3] = row
    return MappingProxyType(index)


def country_table() -> tuple[CountryRow, ...]:
    """Every row of the packaged country table (the world row included), in file order."""
    return _country_rows()


@lru_cache(maxsize=1)
def gcp_region_table() -> Mapping[str, RegionRow]:
    """The packaged Google Cloud table, keyed by region name without prefix (``"europe-west1"``)."""
    table: dict[str, RegionRow] = {}
    for row in _read_csv("gcp_regions.csv"):
        cfe = row.get("cfe_percent", "").strip()
        region = row["region"].strip().lower()
        table[region] = RegionRow(
            region=region,
            location=row["location"].strip(),
            intensity_gco2e_per_kwh=float(row["gco2e_per_kwh"]),
            year=int(row["year"]),
            cfe_percent=float(cfe) if cfe else None,
            source=row["source"].strip(),
        )
    return MappingProxyType(table)


def _world_row() -> CountryRow:
    for row in _country_rows():
        if not row.iso2:
            return row
    raise RuntimeError("countries.csv has no world row (a row with empty iso2); the package data is damaged.")


def world_average(kind: str = "table") -> CarbonIntensity:
    """The packaged world average (Ember 2023) as a :class:`CarbonIntensity` of the given ``kind``."""
    row = _world_row()
    return CarbonIntensity(
        intensity_gco2e_per_kwh=row.intensity_gco2e_per_kwh,
        source=row.source,
        year=row.year,
        location="world",
        basis=row.basis,
        kind=kind,
        method=row.method,
    )


# --- look-ups -----------------------------------------------------------------------------------------------


def _country_suggestions(code: str) -> list[str]:
    labels: dict[str, str] = {}
    for row in _country_rows():
        if row.iso2:
            label = f"{row.iso2}/{row.iso3} ({row.name})"
            for key in (row.iso2, row.iso3, row.name.upper()):
                labels[key] = label
    key = code.upper()
    # a name that starts with what was typed first ('GER' -> Germany), then near spellings of codes and names
    prefix = [name for name in labels if len(key) >= 3 and len(name) > 3 and name.startswith(key)]
    hits = prefix + difflib.get_close_matches(key, list(labels), n=8, cutoff=0.6)
    seen: list[str] = []
    for hit in hits:
        if labels[hit] not in seen:
            seen.append(labels[hit])
    return seen[:5]


def lookup_country(code: str) -> CarbonIntensity:
    """Table value for an ISO 3166 alpha-2 or alpha-3 code (any case), or ``"world"`` for the world average."""
    if not isinstance(code, str) or not code.strip():
        raise ValueError(
            f"country must be an ISO 3166 alpha-2 or alpha-3 code such as 'FR' or 'FRA', got {code!r}."
        )
    key = code.strip().upper()
    key = _COUNTRY_ALIASES.get(key, key)
    if key in _WORLD_KEYS:
        return world_average(kind="table")
    row = _country_index().get(key)
    if row is None:
        close = _country_suggestions(key)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        covered = len(_country_index()) // 2
        raise ValueError(
            f"No packaged carbon intensity for country={code!r}.{hint} The table covers {covered} countries "
            f"(ISO 3166 alpha-2 or alpha-3 codes, e.g. 'FR' or 'FRA') plus country='world'; see "
            f"green_callbacks/core/data/countries.csv. For a grid not in it, pass carbon_intensity=<gCO2e/kWh> "
            f"(for example from Ember or Our World in Data)."
        )
    return CarbonIntensity(
        intensity_gco2e_per_kwh=row.intensity_gco2e_per_kwh,
        source=row.source,
        year=row.year,
        location=row.iso2,
        basis=row.basis,
        kind="table",
        method=row.method,
    )


def lookup_region(region: str) -> CarbonIntensity:
    """Table value for a cloud region written ``"<provider>:<region>"``; only ``gcp:`` regions are tabled."""
    if not isinstance(region, str) or not region.strip():
        raise ValueError(f"region must be a string such as 'gcp:europe-west1', got {region!r}.")
    text = region.strip().lower()
    table = gcp_region_table()
    provider, sep, name = text.partition(":")
    if not sep:
        hint = f" Did you mean region='gcp:{text}'?" if text in table else ""
        raise ValueError(
            f"region={region!r} has no provider prefix; write it as '<provider>:<region>', e.g. "
            f"'gcp:europe-west1'.{hint}"
        )
    if provider in _PROVIDERS_WITHOUT_TABLE:
        raise ValueError(
            f"region={region!r}: only Google Cloud ('gcp:') regions have a packaged table, because AWS and Azure "
            f"publish no per-region grid carbon intensity. Pass country=<ISO code of the grid the region runs on> "
            f"(e.g. region eu-west-1 is in Ireland: country='IE') or carbon_intensity=<gCO2e/kWh>."
        )
    if provider != "gcp":
        raise ValueError(
            f"region={region!r}: unknown provider {provider!r}. Only 'gcp:' regions are tabled "
            f"(e.g. 'gcp:europe-west1'); otherwise pass country=<ISO code> or carbon_intensity=<gCO2e/kWh>."
        )
    row = table.get(name)
    if row is None:
        close = difflib.get_close_matches(name, list(table), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join('gcp:' + c for c in close)}." if close else ""
        raise ValueError(
            f"Unknown Google Cloud region {region!r}.{hint} Known regions are listed in "
            f"green_callbacks/core/data/gcp_regions.csv; for another region pass country=<ISO code> or "
            f"carbon_intensity=<gCO2e/kWh>."
        )
    return CarbonIntensity(
        intensity_gco2e_per_kwh=row.intensity_gco2e_per_kwh,
        source=row.source,
        year=row.year,
        location=f"gcp:{row.region}",
        basis=GCP_BASIS,
        kind="table",
    )


def _explicit(value: object, what: str, source: str) -> CarbonIntensity:
    number = validate_intensity(value, what)
    if 0 < number < 1:
        from green_callbacks.core.wording import warn_user

        warn_user(f"{what}={number!r} is read as gCO2e/kWh (grams). If you meant kg/kWh, multiply by 1000.")
    return CarbonIntensity(
        intensity_gco2e_per_kwh=number,
        source=source,
        year=None,
        location="user",
        basis=EXPLICIT_BASIS,
        kind="explicit",
    )


def _parse_env_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{ENV_CARBON_INTENSITY}={text!r} is not a number; set it to a value in gCO2e/kWh, e.g. "
            f"{ENV_CARBON_INTENSITY}=250, or unset it."
        ) from None


def _only_one(given: dict[str, object], where: str) -> None:
    set_ = {name: value for name, value in given.items() if value is not None}
    if len(set_) > 1:
        shown = ", ".join(f"{name}={value!r}" for name, value in set_.items())
        raise ValueError(
            f"Got {shown} {where}; give only one of {', '.join(given)}. Use carbon_intensity for a known value, "
            f"region for a Google Cloud region, country for anything else."
        )


def _static(
    country: str | None, region: str | None, carbon_intensity: object, environ: Mapping[str, str]
) -> CarbonIntensity | None:
    """Arguments first, then environment variables; ``None`` when nothing is set."""
    _only_one(
        {"country": country, "region": region, "carbon_intensity": carbon_intensity}, "as arguments"
    )
    if carbon_intensity is not None:
        return _explicit(carbon_intensity, "carbon_intensity", "user (carbon_intensity argument)")
    if region is not None:
        return lookup_region(region)
    if country is not None:
        return lookup_country(country)

    env = {name: (environ.get(name) or "").strip() or None for name in (ENV_COUNTRY, ENV_REGION, ENV_CARBON_INTENSITY)}
    _only_one(env, "in the environment")
    if env[ENV_CARBON_INTENSITY] is not None:
        value = _parse_env_number(env[ENV_CARBON_INTENSITY])
        return _explicit(value, ENV_CARBON_INTENSITY, f"user (environment variable {ENV_CARBON_INTENSITY})")
    if env[ENV_REGION] is not None:
        return lookup_region(env[ENV_REGION])
    if env[ENV_COUNTRY] is not None:
        return lookup_country(env[ENV_COUNTRY])
    return None


def _world_default(front_end: FrontEnd | None = None) -> CarbonIntensity:
    global _world_warned
    from green_callbacks.core.wording import CALLBACK, warn_user

    say = front_end or CALLBACK
    value = world_average(kind="default")
    if not _world_warned:
        _world_warned = True
        warn_user(
            f"green_callbacks: no country, region or carbon_intensity was given, so emissions use the world "
            f"average grid intensity, {value.intensity_gco2e_per_kwh:g} gCO2e/kWh ({value.year}). Set your grid "
            f"with {say.setting('country', 'FR')} (ISO code), {say.setting('region', 'gcp:europe-west1')}, or "
            f"{say.setting('carbon_intensity', '<gCO2e/kWh>', literal=True)}; for "
            f"scripts you cannot edit, set the environment variable {ENV_COUNTRY}, {ENV_REGION} or "
            f"{ENV_CARBON_INTENSITY}. Pass {say.setting('country', 'world')} to keep the world average without "
            f"this warning."
        )
    return value


def resolve_carbon(
    *,
    country: str | None = None,
    region: str | None = None,
    carbon_intensity: float | None = None,
    live: LiveIntensitySource | None = None,
    environ: Mapping[str, str] = os.environ,
    front_end: FrontEnd | None = None,
) -> CarbonIntensity:
    """Choose the grid carbon intensity for a run (with ``live``, waiting for it: a run uses :func:`choose_carbon`).

    Args:
        country: ISO 3166 alpha-2 or alpha-3 code, any case (``"FR"``, ``"fra"``), or ``"world"``.
        region: a cloud region with provider prefix, ``"gcp:europe-west1"`` (only Google Cloud is tabled).
        carbon_intensity: an explicit value in gCO2e/kWh (0 to 2000).
        live: an opt-in live provider (e.g. :class:`green_callbacks.core.live.ElectricityMapsProvider`). Its
            value is used; on any error it falls back to ``country``/``region`` (or the environment) if set,
            else to the table value for its own zone. Cannot be combined with ``carbon_intensity``.
        environ: where the ``GREEN_CALLBACKS_*`` variables are read (``os.environ``); arguments win over it.
        front_end: how the one warning says to set the grid (``country='FR'``, ``--country FR``).

    At most one of ``country``, ``region``, ``carbon_intensity`` may be given (likewise for the environment
    variables); two at once is a ``ValueError``. With nothing set, the world average is returned with
    ``kind="default"`` and a single ``UserWarning`` per process. Without ``live`` nothing here touches the network.
    """
    if live is not None:
        _check_live(live, carbon_intensity)
        fallback = _static(country, region, None, environ)
        return live.fetch(fallback=fallback)
    chosen = _static(country, region, carbon_intensity, environ)
    return chosen if chosen is not None else _world_default(front_end)


def _check_live(live: object, carbon_intensity: object) -> None:
    if carbon_intensity is not None:
        raise ValueError(
            f"Got both live={live!r} and carbon_intensity={carbon_intensity!r}; a live provider replaces "
            f"a fixed value. Pass one of them (country= or region= may accompany live= as its fallback)."
        )
    if not callable(getattr(live, "fetch", None)):
        raise ValueError(
            f"live must be a live provider with a fetch() method, such as "
            f"green_callbacks.core.live.ElectricityMapsProvider(zone='DE'); got {type(live).__name__}."
        )


def choose_carbon(
    *,
    country: str | None = None,
    region: str | None = None,
    carbon_intensity: float | None = None,
    live: LiveIntensitySource | None = None,
    environ: Mapping[str, str] = os.environ,
    front_end: FrontEnd | None = None,
) -> CarbonChoice:
    """:func:`resolve_carbon` for a run: the same arguments and errors, but a live value is fetched in the
    background (:class:`CarbonChoice`), so this returns without waiting on the network."""
    if live is None:
        return CarbonChoice(resolve_carbon(country=country, region=region, carbon_intensity=carbon_intensity,
                                           environ=environ, front_end=front_end))
    _check_live(live, carbon_intensity)
    given = _static(country, region, None, environ)
    table = getattr(live, "table_fallback", None)
    fallback = given if given is not None else table() if callable(table) else world_average(kind="default")
    return CarbonChoice(fallback, live=live, given_fallback=given)


class CarbonChoice:
    """The grid intensity of one run, settled once, when the first number needs it; never waited for.

    Without a live provider it is settled from the start. With one (``live=``), the request starts on a daemon
    thread now, and the run goes on with the fallback meanwhile. The rule: the intensity is settled the first time
    an emission is computed — the end of the first epoch (a phase's end, or the end of a run with no complete
    epoch) — and kept for the whole run, so every epoch of a run uses one intensity:

    * the live value, if it has arrived by then (``live.status`` ``"received"`` in the record);
    * the fallback, if the request failed (``"failed"``, one warning saying why), or if it has not finished
      (``"late"``, one warning; the request is abandoned). Before it is settled the record says ``"pending"``.

    The fallback is ``country=``/``region=`` (or their environment variables) when given, else the provider's
    table value for its zone. :meth:`close` (at the run's end) stops the thread: it never outlives the provider's
    ``timeout_s`` either way.
    """

    def __init__(
        self, fallback: CarbonIntensity, *, live: LiveIntensitySource | None = None,
        given_fallback: CarbonIntensity | None = None,
    ) -> None:
        self._fallback = fallback
        self._given = given_fallback  # what the provider falls back to itself (None: its own table value)
        self._live = live
        self._value: CarbonIntensity | None = None if live is not None else fallback
        self._status = "pending" if live is not None else None
        self._detail: str | None = None
        self._arrived: tuple[CarbonIntensity | None, str | None] | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if live is not None:
            self._thread = threading.Thread(target=self._fetch, name="green-callbacks-live-intensity", daemon=True)
            self._thread.start()

    def _fetch(self) -> None:
        live = self._live
        attempt = getattr(live, "attempt", None)
        try:
            if callable(attempt):  # the provider's warning waits for settle(), on the thread that settles
                found = attempt(wake=self._wake)
            else:  # any provider with fetch() alone: its fallback (and warning) are its own
                value = live.fetch(fallback=self._given)  # type: ignore[union-attr]
                found = (value, None) if value.kind == "live" else (None, f"the provider fell back to {value.source}")
        except Exception as err:  # a provider that raises (it should not): the fallback, with the reason
            found = (None, f"{type(err).__name__}: {err}")
        self._arrived = found  # one assignment, read by settle()

    @property
    def settled(self) -> bool:
        return self._value is not None

    @property
    def value(self) -> CarbonIntensity:
        """The settled intensity, or the fallback while the live value is pending."""
        return self._value if self._value is not None else self._fallback

    def settle(self) -> CarbonIntensity:
        """The run's intensity from now on (see the class's rule); the first call decides, without waiting."""
        if self._value is not None:
            return self._value
        with self._lock:
            if self._value is not None:
                return self._value
            arrived = self._arrived
            if arrived is not None and arrived[0] is not None:
                self._status, self._value = "received", arrived[0]
                return self._value
            if arrived is not None:
                self._status, self._detail = "failed", arrived[1]
                fall_back = getattr(self._live, "fall_back", None)
                value = fall_back(arrived[1] or "no value", self._given) if callable(fall_back) else None
                self._value = value if isinstance(value, CarbonIntensity) else self._fallback
                return self._value
            self._wake.set()  # no longer needed: the request is abandoned
            timeout = getattr(self._live, "timeout_s", None)
            within = f" within its timeout_s={timeout:g}" if isinstance(timeout, (int, float)) else ""
            self._status = "late"
            self._detail = f"no answer had arrived by the time the first emissions were computed{within}"
            self._value = self._fallback
            from green_callbacks.core.wording import warn_user

            warn_user(
                f"green_callbacks: the live carbon intensity from {self._live!r} had not arrived by the end of the "
                f"first epoch, so this run uses {self._value.intensity_gco2e_per_kwh:g} gCO2e/kWh from "
                f"{self._value.source} ({self._value.location}, {self._value.year}) for all its epochs. The run never "
                "waits on the network: a live value is used only when it has arrived by the end of the first epoch."
            )
            return self._value

    def to_record(self) -> dict[str, Any]:
        """The record's ``carbon`` fields: the intensity's, plus ``live`` (status, detail) with a live provider."""
        record = self.value.to_record()
        if self._status is not None:
            record["live"] = {"status": self._status, "detail": self._detail}
        return record

    def close(self, timeout_s: float = 1.0) -> None:
        """Settle, end the request and join the thread (``timeout_s`` at most; it is a daemon either way)."""
        self.settle()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

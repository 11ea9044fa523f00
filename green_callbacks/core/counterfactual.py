"""Where could this run have been greener? The same measured energy under other grids and infrastructures.

Everything here is a *counterfactual*: the run's measured IT energy re-priced with another grid's intensity (and
PUE), not a measurement. Two views:

* :func:`counterfactuals` — the energy under the user's alternatives (ISO codes, ``gcp:`` regions, explicit
  gCO2e/kWh), every packaged Google Cloud region, and the lowest-intensity options of the packaged tables;
* :func:`compare_infrastructure` — the Green AI Standard's infrastructure practice ("share local infrastructure
  instead of on-demand cloud", after Strubell et al. 2019): a shared local machine (its PUE, grid and utilisation)
  against an on-demand cloud region, embodied emissions included, since a lightly used machine carries more
  manufacturing emissions per hour.

Assumes the same energy everywhere (same hardware and code); a different data centre or machine would draw
differently. Pure functions returning frozen dataclasses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from green_callbacks.core.carbon import (
    COUNTRY_BASIS,
    GCP_BASIS,
    CarbonIntensity,
    country_table,
    gcp_region_table,
    lookup_country,
    lookup_region,
    validate_intensity,
    validate_pue,
)
from green_callbacks.core.embodied import (
    DEFAULT_LIFETIME_YEARS,
    DEFAULT_UTILISATION,
    embodied_rate,
    validate_fraction,
)
from green_callbacks.core.units import emissions_gco2e
from green_callbacks.core.water import DEFAULT_WUE_L_PER_KWH, water_for_location, water_l

__all__ = [
    "LABEL",
    "Counterfactual",
    "GridOption",
    "Infrastructure",
    "InfrastructureOutcome",
    "cloud_region_options",
    "compare_infrastructure",
    "counterfactuals",
    "grid_option",
    "lowest_options",
]

LABEL = "counterfactual: the same measured energy re-priced, not a measurement"


@dataclass(frozen=True)
class GridOption:
    """A grid the run could have used."""

    label: str
    location: str
    intensity_gco2e_per_kwh: float
    year: int | None
    source: str
    basis: str


@dataclass(frozen=True)
class Counterfactual:
    """The run's energy under one grid. ``group``: ``"actual"``, ``"alternative"``, ``"cloud region"`` or
    ``"lowest"``. ``difference_gco2e`` = this − actual (negative = greener); ``ratio_to_actual`` = this / actual
    (``None`` when the actual emissions are 0)."""

    group: str
    label: str
    location: str
    intensity_gco2e_per_kwh: float
    year: int | None
    basis: str
    source: str
    energy_kwh: float
    pue: float
    emissions_gco2e: float
    difference_gco2e: float
    ratio_to_actual: float | None
    water_l: float


def _from_carbon(label: str, value: CarbonIntensity) -> GridOption:
    return GridOption(label, value.location, value.intensity_gco2e_per_kwh, value.year, value.source, value.basis)


def grid_option(spec: str | float) -> GridOption:
    """An option from an ISO code (``"FR"``), a region (``"gcp:europe-west9"``) or a number of gCO2e/kWh."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value = validate_intensity(spec, "alternative carbon intensity")
        return GridOption(f"{value:g} gCO2e/kWh", "user", value, None, "user-supplied value", "user-supplied value")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"an alternative grid must be an ISO code ('FR'), a region ('gcp:europe-west9') or a number "
                         f"of gCO2e/kWh, got {spec!r}")
    text = spec.strip()
    if ":" in text:
        return _from_carbon(text.lower(), lookup_region(text))
    return _from_carbon(text.upper(), lookup_country(text))


def cloud_region_options() -> list[GridOption]:
    """Every packaged Google Cloud region (Google's own published grid intensity per region)."""
    return [GridOption(f"gcp:{r.region} ({r.location})", f"gcp:{r.region}", r.intensity_gco2e_per_kwh, r.year,
                       r.source, GCP_BASIS) for r in gcp_region_table().values()]


def lowest_options(n: int = 5) -> list[GridOption]:
    """The ``n`` lowest-intensity options among the packaged countries and Google Cloud regions."""
    options = [GridOption(f"{r.iso2} ({r.name})", r.iso2, r.intensity_gco2e_per_kwh, r.year, r.source, COUNTRY_BASIS)
               for r in country_table() if r.iso2]
    options += cloud_region_options()
    return sorted(options, key=lambda o: (o.intensity_gco2e_per_kwh, o.label))[: max(int(n), 0)]


def counterfactuals(
    energy_kwh: float,
    pue: float,
    *,
    actual_gco2e_per_kwh: float,
    actual_label: str = "this run",
    actual_location: str | None = None,
    alternatives: Sequence[str | float] = (),
    cloud_regions: bool = True,
    lowest: int = 5,
    wue_l_per_kwh: float = DEFAULT_WUE_L_PER_KWH,
) -> list[Counterfactual]:
    """The same ``energy_kwh`` (IT energy, before PUE) under other grids, the actual one first.

    ``emissions = energy_kWh × PUE × intensity`` with the run's own PUE for every option (change one thing at a
    time; :func:`compare_infrastructure` changes PUE and utilisation too). Options: ``alternatives`` (in the given
    order), then, if ``cloud_regions``, every packaged Google Cloud region sorted by intensity, then the ``lowest``
    lowest-intensity options of both tables. Water uses each grid's off-site intensity and ``wue_l_per_kwh``.
    """
    if not (isinstance(energy_kwh, (int, float)) and math.isfinite(energy_kwh) and energy_kwh >= 0):
        raise ValueError(f"energy_kwh must be a finite number >= 0, got {energy_kwh!r}")
    pue = validate_pue(pue)
    actual_intensity = validate_intensity(actual_gco2e_per_kwh, "actual_gco2e_per_kwh")
    actual_g = emissions_gco2e(energy_kwh, actual_intensity, pue)

    def row(group: str, option: GridOption) -> Counterfactual:
        grams = emissions_gco2e(energy_kwh, option.intensity_gco2e_per_kwh, pue)
        offsite = water_for_location(option.location).offsite_l_per_kwh
        return Counterfactual(group, option.label, option.location, option.intensity_gco2e_per_kwh, option.year,
                              option.basis, option.source, float(energy_kwh), pue, grams, grams - actual_g,
                              grams / actual_g if actual_g > 0 else None,
                              water_l(energy_kwh, wue_l_per_kwh, pue, offsite))

    actual = GridOption(actual_label, actual_location or "", actual_intensity, None, "the run's record", "")
    out = [row("actual", actual)]
    out += [row("alternative", grid_option(spec)) for spec in alternatives]
    if cloud_regions:
        out += [row("cloud region", o) for o in sorted(cloud_region_options(),
                                                         key=lambda o: (o.intensity_gco2e_per_kwh, o.label))]
    out += [row("lowest", o) for o in lowest_options(lowest)]
    return out


@dataclass(frozen=True)
class Infrastructure:
    """Where a run could be done: its PUE, grid intensity, how busy the hardware is over its life, and the share of
    the host charged (see :mod:`green_callbacks.core.embodied`)."""

    label: str
    pue: float
    intensity_gco2e_per_kwh: float
    utilisation: float
    intensity_source: str = ""
    host_share: float | None = None
    lifetime_years: float = DEFAULT_LIFETIME_YEARS

    def __post_init__(self) -> None:
        object.__setattr__(self, "pue", validate_pue(self.pue))
        object.__setattr__(self, "intensity_gco2e_per_kwh", validate_intensity(self.intensity_gco2e_per_kwh))
        object.__setattr__(self, "utilisation", validate_fraction(self.utilisation, f"{self.label} utilisation"))

    @classmethod
    def local(cls, *, pue: float, utilisation: float, country: str | None = None,
              carbon_intensity: float | None = None, label: str = "shared local machine",
              host_share: float | None = None) -> Infrastructure:
        """A machine of one's own (a lab server shared by a group): its PUE, its grid, its utilisation."""
        if (country is None) == (carbon_intensity is None):
            raise ValueError("give the local machine's grid as exactly one of country='FR' or carbon_intensity=<g/kWh>")
        grid = lookup_country(country) if country is not None else None
        intensity = grid.intensity_gco2e_per_kwh if grid is not None else float(carbon_intensity)  # type: ignore[arg-type]
        source = grid.source if grid is not None else "user-supplied value"
        return cls(label, pue, intensity, utilisation, source, host_share)

    @classmethod
    def cloud(cls, region: str, *, pue: float | str = "google-2023", utilisation: float = DEFAULT_UTILISATION,
              label: str | None = None, host_share: float | None = None) -> Infrastructure:
        """An on-demand cloud region (a ``gcp:`` region), with the provider's PUE (default Google's 2023 fleet
        average, 1.10) and the fleet utilisation assumed for embodied emissions (default 85 %)."""
        grid = lookup_region(region)
        return cls(label or f"on-demand cloud {grid.location}", validate_pue(pue), grid.intensity_gco2e_per_kwh,
                   utilisation, grid.source, host_share)


@dataclass(frozen=True)
class InfrastructureOutcome:
    """One infrastructure's operational and embodied emissions for the run's energy and hours.

    ``embodied_gco2e`` is ``None`` when no part of the hardware has a figure; ``embodied_missing`` lists the parts
    without one (the total then misses them). ``total_gco2e`` = operational + embodied where known.
    """

    label: str
    energy_kwh: float
    hours: float
    pue: float
    intensity_gco2e_per_kwh: float
    utilisation: float
    operational_gco2e: float
    embodied_gco2e: float | None
    total_gco2e: float
    embodied_missing: tuple[str, ...]
    assumptions: tuple[str, ...]


def compare_infrastructure(energy_kwh: float, hours: float, accelerators: Sequence[str],
                           options: Sequence[Infrastructure]) -> list[InfrastructureOutcome]:
    """Each option's ``energy × PUE × intensity`` and its hardware's embodied emissions over ``hours``
    (the run's wall time) at the option's utilisation; ``accelerators`` are the device names the run used."""
    if not (math.isfinite(energy_kwh) and energy_kwh >= 0 and math.isfinite(hours) and hours >= 0):
        raise ValueError(f"energy_kwh and hours must be finite numbers >= 0, got {energy_kwh!r}, {hours!r}")
    out = []
    for option in options:
        operational = emissions_gco2e(energy_kwh, option.intensity_gco2e_per_kwh, option.pue)
        rate = embodied_rate(accelerators, lifetime_years=option.lifetime_years, utilisation=option.utilisation,
                             host_share=option.host_share)
        embodied = rate.rate_gco2e_per_h * hours if rate.available else None
        out.append(InfrastructureOutcome(option.label, float(energy_kwh), float(hours), option.pue,
                                         option.intensity_gco2e_per_kwh, option.utilisation, operational, embodied,
                                         operational + (embodied or 0.0), rate.missing, rate.assumptions))
    return out

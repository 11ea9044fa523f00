"""The report's footprint section, from one parsed run record: operational beside embodied emissions, water, and
where the run could have been greener (labelled as counterfactual).

Self-contained on purpose (it takes the record ``dict`` and returns frozen rows and text) so that the report's
section model can take it in as one section; the arithmetic is in :mod:`green_callbacks.core.counterfactual`,
:mod:`green_callbacks.core.embodied` and :mod:`green_callbacks.core.water`. A record without a ``footprint``
block (written before it existed) gives no section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from green_callbacks.core.carbon import EXPLICIT_BASIS
from green_callbacks.core.counterfactual import (
    LABEL,
    Counterfactual,
    Infrastructure,
    InfrastructureOutcome,
    compare_infrastructure,
    counterfactuals,
)
from green_callbacks.core.record import RunRecord, as_record
from green_callbacks.core.uncertainty import (
    Difference,
    Interval,
    intensity_factor,
    pue_factor,
    repriced_difference,
    scaled_interval,
)
from green_callbacks.core.units import joules_to_kwh
from green_callbacks.core.water import DEFAULT_WUE_L_PER_KWH
from green_callbacks.report import format as fmt

__all__ = [
    "FootprintOptions",
    "FootprintSection",
    "GridSpan",
    "footprint_section",
    "footprint_text",
]


@dataclass(frozen=True)
class FootprintOptions:
    """What the footprint section compares against.

    Attributes:
        alternatives: grids the user considers (ISO codes, ``"gcp:<region>"``, numbers in gCO2e/kWh).
        cloud_regions: list every packaged Google Cloud region.
        lowest: how many of the lowest-intensity countries/regions to list.
        local, cloud: the infrastructure comparison (both or neither): a shared local machine
            (:meth:`Infrastructure.local`, its PUE and utilisation given) against an on-demand cloud region
            (:meth:`Infrastructure.cloud`).
    """

    alternatives: tuple[str | float, ...] = ()
    cloud_regions: bool = True
    lowest: int = 5
    local: Infrastructure | None = None
    cloud: Infrastructure | None = None


@dataclass(frozen=True)
class GridSpan:
    """How far off one counterfactual grid's figure may be (docs/uncertainty.md): its emissions' interval
    (``None``: no basis) and its difference from this run's, with whether that difference is beyond the
    uncertainty."""

    emissions: Interval | None
    difference: Difference


@dataclass(frozen=True)
class FootprintSection:
    """Everything the section shows for one run. ``None`` = unavailable (never shown as 0)."""

    energy_kwh: float | None
    hours: float
    pue: float
    intensity_gco2e_per_kwh: float | None
    operational_gco2e: float | None
    embodied_gco2e: float | None
    embodied_partial: bool
    embodied_missing: tuple[str, ...]
    embodied_assumptions: tuple[str, ...]
    embodied_sources: tuple[str, ...]
    accelerators: tuple[str, ...]
    water_l: float | None
    wue_l_per_kwh: float
    offsite_l_per_kwh: float | None
    water_location: str
    water_method: str
    water_sources: tuple[str, ...]
    grids: tuple[Counterfactual, ...] = ()
    infrastructure: tuple[InfrastructureOutcome, ...] = field(default_factory=tuple)
    grid_spans: tuple[GridSpan, ...] = ()
    """One per :attr:`grids`, in the same order."""
    operational_low_gco2e: float | None = None
    operational_high_gco2e: float | None = None


def _plain_number(value: float) -> int | float:
    """A figure as the record wrote it: ``700``, not ``700.0``."""
    return int(value) if value.is_integer() else value


def _grid_spans(grids: Sequence[Counterfactual], record: RunRecord, energy_kwh: float,
                pue: float) -> tuple[GridSpan, ...]:
    """Each grid's emissions interval and its difference from this run's (the energy and PUE shared by all)."""
    totals, carbon = record.totals, record.carbon
    low, high = totals.energy_low_j, totals.energy_high_j
    energy = None if low is None or high is None else Interval(energy_kwh, joules_to_kwh(low), joules_to_kwh(high))
    pue_range = pue_factor(pue)
    scale = energy_kwh * pue
    shared = scaled_interval(energy, scale, [pue_range])
    actual = grids[0].intensity_gco2e_per_kwh
    actual_factor = intensity_factor(actual, carbon.kind or "", carbon.basis or "")
    out = []
    for grid in grids:
        if grid.group == "actual":
            factor = actual_factor
        else:
            kind = "explicit" if grid.basis == EXPLICIT_BASIS else "table"
            factor = intensity_factor(grid.intensity_gco2e_per_kwh, kind, grid.basis)
        emissions = scaled_interval(energy, grid.emissions_gco2e, [pue_range, factor])
        if grid.group == "actual":
            low_g, high_g = totals.emissions_low_gco2e, totals.emissions_high_gco2e
            if low_g is not None and high_g is not None:  # the record's own figure, as the summary prints it
                emissions = Interval(grid.emissions_gco2e, low_g, high_g)
        difference = repriced_difference(scale, shared, actual, actual_factor, grid.intensity_gco2e_per_kwh, factor)
        out.append(GridSpan(emissions, difference))
    return tuple(out)


def footprint_section(record: RunRecord | Mapping[str, Any],
                      options: FootprintOptions | None = None) -> FootprintSection | None:
    """The section for one record (a :class:`~green_callbacks.core.record.RunRecord` or a record's dict), or
    ``None`` when the record has no ``footprint`` block."""
    options = options or FootprintOptions()
    record = as_record(record)
    block = record.footprint
    if block is None:
        return None
    embodied, water = block.embodied, block.water
    totals, carbon = record.totals, record.carbon
    energy_j = totals.energy_j
    energy_kwh = None if energy_j is None else joules_to_kwh(energy_j)
    hours = (totals.time_s or 0.0) / 3600.0
    pue = carbon.pue or 1.0
    intensity = carbon.intensity_gco2e_per_kwh
    wue = DEFAULT_WUE_L_PER_KWH if water.wue_l_per_kwh is None else water.wue_l_per_kwh
    accelerators = embodied.accelerators
    grids: tuple[Counterfactual, ...] = ()
    if energy_kwh is not None and intensity is not None:
        grids = tuple(counterfactuals(
            energy_kwh, pue, actual_gco2e_per_kwh=intensity, actual_label="this run",
            actual_location=carbon.location or "", alternatives=options.alternatives,
            cloud_regions=options.cloud_regions, lowest=options.lowest, wue_l_per_kwh=wue))
    spans = _grid_spans(grids, record, energy_kwh, pue) if grids and energy_kwh is not None else ()
    infra: tuple[InfrastructureOutcome, ...] = ()
    if energy_kwh is not None and options.local is not None and options.cloud is not None:
        named = [a for a in accelerators if a != "unidentified"]
        infra = tuple(compare_infrastructure(energy_kwh, hours, named, [options.local, options.cloud]))
    own = None if not spans or spans[0].emissions is None else spans[0].emissions
    return FootprintSection(
        energy_kwh=energy_kwh,
        hours=hours,
        pue=pue,
        intensity_gco2e_per_kwh=intensity,
        operational_gco2e=totals.emissions_gco2e,
        embodied_gco2e=embodied.total_gco2e,
        embodied_partial=embodied.partial,
        embodied_missing=embodied.missing,
        embodied_assumptions=embodied.assumptions,
        embodied_sources=tuple(sorted({f"{p.name}: {_plain_number(p.kgco2e)} kgCO2e, {p.source}"
                                       for p in embodied.parts if p.kgco2e is not None})),
        accelerators=accelerators,
        water_l=water.total_l,
        wue_l_per_kwh=wue,
        offsite_l_per_kwh=water.offsite_l_per_kwh,
        water_location=water.offsite_location,
        water_method=water.offsite_method,
        water_sources=tuple(s for s in (water.wue_source, water.offsite_source) if s),
        grids=grids,
        infrastructure=infra,
        grid_spans=spans,
        operational_low_gco2e=totals.emissions_low_gco2e if own is None else own.low,
        operational_high_gco2e=totals.emissions_high_gco2e if own is None else own.high,
    )


_g = fmt.mass
_l = fmt.litres


NO_BASIS = fmt.NO_BASIS
WITHIN = "within the uncertainty"


def _range_g(interval: Interval | None) -> str:
    """``'(8 g–15 g)'`` or ``'(no basis for an interval)'``."""
    return f"({NO_BASIS})" if interval is None else f"({_g(interval.low)}–{_g(interval.high)})"


def difference_text(difference: Difference) -> str:
    """A difference as the report says it: ``'+12.3 g (8 to 15 g)'`` when beyond the uncertainty, ``'+1.2 g
    (within the uncertainty)'`` when its interval holds 0, ``'+1.2 g (no basis for an interval)'``."""
    figure = f"{difference.value:+.3g} g"
    if difference.beyond is None:
        return f"{figure} ({NO_BASIS})"
    if not difference.beyond:
        return f"{figure} ({WITHIN})"
    span = difference.interval
    return figure if span is None else f"{figure} ({span.low:+.3g} to {span.high:+.3g} g)"


_table = fmt.text_table_lines


def footprint_summary_lines(section: FootprintSection) -> list[str]:
    """Operational beside embodied emissions, and water, with every assumption and source, as plain-text lines."""
    span = (None if section.operational_low_gco2e is None or section.operational_high_gco2e is None
            or section.operational_gco2e is None
            else Interval(section.operational_gco2e, section.operational_low_gco2e, section.operational_high_gco2e))
    out = [f"  operational emissions: {_g(section.operational_gco2e)} CO2e "
           + ("" if section.operational_gco2e is None else _range_g(span) + " ")
           + f"(energy × PUE {section.pue:g} × "
           f"{section.intensity_gco2e_per_kwh if section.intensity_gco2e_per_kwh is not None else '?'} "
           "gCO2e/kWh)"]
    if section.embodied_gco2e is None:
        why = "; ".join(section.embodied_missing) or "no figure for this hardware"
        out.append(f"  embodied emissions:    unavailable ({why})")
    else:
        partial = " (partial: " + "; ".join(section.embodied_missing) + ")" if section.embodied_partial else ""
        out.append(f"  embodied emissions:    {_g(section.embodied_gco2e)} CO2e{partial}, amortised over "
                   f"{section.hours:.3g} h; reported beside the operational emissions, not in them")
    for line in section.embodied_assumptions:
        out.append(f"    assumption: {line}")
    for line in section.embodied_sources:
        out.append(f"    source: {line}")
    if section.operational_gco2e is not None and section.embodied_gco2e is not None:
        out.append(f"  operational + embodied: {_g(section.operational_gco2e + section.embodied_gco2e)} CO2e")
    offsite = "?" if section.offsite_l_per_kwh is None else f"{section.offsite_l_per_kwh:.3g}"
    out.append(f"  water: {_l(section.water_l)} = energy × (WUE {section.wue_l_per_kwh:g} + PUE {section.pue:g} × "
               f"{offsite} L/kWh off-site, {section.water_location}: {section.water_method})")
    for source in section.water_sources:
        out.append(f"    source: {source}")
    return out


GRIDS_TITLE = f"Where could this run have been greener? ({LABEL})"
GRIDS_NOTE = ("Each grid's emissions carry their interval (docs/uncertainty.md). The same energy is re-priced, so its "
              "own uncertainty scales every grid alike and cannot change which is greener: a difference is "
              f"\"{WITHIN}\" when the two intensities' ranges (in quadrature) allow either to be the lower, and "
              "stated with its range otherwise.")
INFRASTRUCTURE_TITLE = ("Shared local machine vs on-demand cloud (Green AI Standard, infrastructure; counterfactual, "
                        "embodied included):")


def grid_table(section: FootprintSection) -> tuple[list[str], list[list[str]]]:
    """The same measured energy under other grids: header and rows (empty rows when there are none)."""
    spans = section.grid_spans or (None,) * len(section.grids)
    rows = [[g.group, g.label, f"{g.intensity_gco2e_per_kwh:g}", str(g.year or ""),
             _g(g.emissions_gco2e) + ("" if s is None else " " + _range_g(s.emissions)),
             "" if g.group == "actual" else (f"{g.difference_gco2e:+.3g} g" if s is None
                                              else difference_text(s.difference)),
             "" if g.ratio_to_actual is None else f"{g.ratio_to_actual:.2f}×", _l(g.water_l)]
            for g, s in zip(section.grids, spans, strict=True)]
    return ["", "grid", "gCO2e/kWh", "year", "emissions", "vs this run", "ratio", "water"], rows


def infrastructure_table(section: FootprintSection) -> tuple[list[str], list[list[str]]]:
    """A shared local machine against an on-demand cloud region: header and rows (empty when not asked for)."""
    rows = [[o.label, f"{o.pue:g}", f"{o.intensity_gco2e_per_kwh:g}", f"{o.utilisation:g}",
             _g(o.operational_gco2e), _g(o.embodied_gco2e) + (" (partial)" if o.embodied_missing else ""),
             _g(o.total_gco2e)] for o in section.infrastructure]
    return ["infrastructure", "PUE", "gCO2e/kWh", "utilisation", "operational", "embodied", "total"], rows


def footprint_lines(section: FootprintSection) -> list[str]:
    """The section as plain-text lines (the report's emitters use the same parts as blocks and tables)."""
    out = ["== Footprint: operational, embodied, water ==", *footprint_summary_lines(section)]
    if section.grids:
        out += ["", GRIDS_TITLE, *_table(*grid_table(section)), GRIDS_NOTE]
    if section.infrastructure:
        out += ["", INFRASTRUCTURE_TITLE, *_table(*infrastructure_table(section))]
    return out


def footprint_text(record: Mapping[str, Any], options: FootprintOptions | None = None) -> str | None:
    """The section as text for one record, or ``None`` when the record has no footprint block."""
    section = footprint_section(record, options)
    return None if section is None else "\n".join(footprint_lines(section)) + "\n"

"""Emissions and energy as a few figures a reader can picture: passenger-km by air and by car, days of a household's
electricity. Each factor comes from the packaged table ``core/data/equivalents.csv`` with its source, year and region
(``core/data/SOURCES.md``). They are comparisons, never offsets: nothing here says a run was cancelled out.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from green_callbacks.core.units import JOULES_PER_KWH
from green_callbacks.report import format as fmt

__all__ = [
    "COMPARISONS_TITLE",
    "LABEL",
    "Equivalent",
    "Factor",
    "comparison_table",
    "equivalents",
    "equivalents_sentence",
    "factors",
]

LABEL = "For comparison only (not an offset)"


@dataclass(frozen=True)
class Factor:
    key: str
    comparison: str
    """What one unit is, e.g. ``passenger-km by air``."""
    unit: str
    value: float
    per: str
    """``gco2e``: grams CO2e per unit (compared with emissions); ``kwh``: kWh per unit (compared with energy)."""
    year: int
    region: str
    source: str


@dataclass(frozen=True)
class Equivalent:
    factor: Factor
    amount: float
    """How many units the run's emissions (or energy) equal."""

    def text(self) -> str:
        return f"{self.amount:.3g} {self.factor.comparison}"

    def cite(self) -> str:
        f = self.factor
        unit = "gCO2e" if f.per == "gco2e" else "kWh"
        return f"{f.value:g} {unit} per {f.unit}, {f.region}, {f.year}: {f.source}"


@lru_cache(maxsize=1)
def factors() -> tuple[Factor, ...]:
    """The packaged factors, in table order."""
    text = (resources.files("green_callbacks.core") / "data" / "equivalents.csv").read_text(encoding="utf-8")
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        if row["per"] not in ("gco2e", "kwh"):
            raise ValueError(f"equivalents.csv: 'per' must be gco2e or kwh, got {row['per']!r}")
        out.append(Factor(row["key"], row["comparison"], row["unit"], float(row["value"]), row["per"],
                          int(row["year"]), row["region"], row["source"]))
    return tuple(out)


def equivalents(emissions_gco2e: float | None, facility_energy_kwh: float | None) -> tuple[Equivalent, ...]:
    """Each factor applied: emissions (grams, after PUE) / grams per unit, or facility energy (IT energy x PUE,
    kWh) / kWh per unit. A quantity that is unavailable (``None``) gives no comparison, never 0."""
    out = []
    for factor in factors():
        quantity = emissions_gco2e if factor.per == "gco2e" else facility_energy_kwh
        if quantity is None or not math.isfinite(quantity):
            continue
        out.append(Equivalent(factor, quantity / factor.value))
    return tuple(out)


def equivalents_sentence(items: tuple[Equivalent, ...], what: str = "these emissions") -> str:
    """One sentence, e.g. ``For comparison only (not an offset): these emissions equal 0.24 passenger-km by air,
    ...``; empty when there is nothing to compare. Cite the factors with :meth:`Equivalent.cite`."""
    if not items:
        return ""
    return f"{LABEL}: {what} equal " + ", ".join(e.text() for e in items) + "."


COMPARISONS_TITLE = "For comparison (not offsets)"


def comparison_table(report: object) -> tuple[tuple[str, ...], list[tuple[str, ...]], list[str]]:
    """The report's comparisons: a header, one row for all runs together and one per search, and one source line
    per factor. Emissions are compared as grams CO2e; a household's electricity as facility energy (IT x PUE),
    which a search row leaves ``unavailable`` (its runs' PUEs are not kept with it)."""
    table = factors()
    header = ("emissions of", "gCO2e", *(f.comparison for f in table))
    rows: list[tuple[str, ...]] = []

    def row(what: str, grams: float | None, facility_kwh: float | None) -> None:
        if grams is None:
            return
        found = {e.factor.key: e.amount for e in equivalents(grams, facility_kwh)}
        rows.append((what, f"{grams:.4g}", *(f"{found[f.key]:.3g}" if f.key in found else fmt.UNAVAILABLE
                                              for f in table)))

    runs = getattr(report, "runs", ())
    known = [r for r in runs if r.energy_j is not None]
    facility = sum(r.energy_j * (r.pue or 1.0) for r in known) / JOULES_PER_KWH if known else None
    row(f"all {len(runs)} run(s)" + (" (partial)" if getattr(report, "emissions_partial", False) else ""),
        getattr(report, "emissions_gco2e", None), facility)
    for sweep in getattr(report, "sweeps", ()):
        row(f"the search over {sweep.monitor}" + (f" ({sweep.group})" if sweep.group else ""),
            sweep.total_emissions_gco2e, None)
    cites = [f"{f.comparison}: {Equivalent(f, 0.0).cite()}" for f in table] if rows else []
    return header, rows, cites

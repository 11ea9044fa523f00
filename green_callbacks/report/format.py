"""The report's one formatting policy: how every number, unit, interval and missing value is written, and the text
table. Every section and emitter (text, Markdown, HTML, LaTeX, the terminal summary at the end of a fit) formats
through these functions, so a figure reads the same wherever it appears.

The words for what a figure is not:

* :data:`UNAVAILABLE` — a quantity that was measured for this run but could not be (a sensor failed, no epoch
  completed); never written as 0;
* :data:`NOT_COUNTED` — FLOPs that were not counted (a framework or mode without counting);
* :data:`NOT_USED` — a component the run does not use (a GPU on a CPU-only run): nothing missing;
* :data:`NO_BASIS` — a figure without an interval (no stated accuracy to derive one from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from green_callbacks.core.units import JOULES_PER_KWH

__all__ = [
    "NA",
    "NOT_COUNTED",
    "NOT_USED",
    "NO_BASIS",
    "UNAVAILABLE",
    "energy",
    "flops",
    "grams",
    "interval",
    "kwh",
    "labelled_flops",
    "litres",
    "mass",
    "number",
    "percent",
    "short",
    "text_table",
    "text_table_lines",
]

UNAVAILABLE = "unavailable"
NOT_COUNTED = "not counted"
NOT_USED = "not used by this run"
NO_BASIS = "no basis for an interval"
NA = "n/a"
"""A table cell with nothing to show (a component unavailable in one epoch, a statistic of one value)."""


def number(value: float | None, spec: str = ".4g", missing: str = UNAVAILABLE) -> str:
    """``value`` with ``spec``; ``missing`` when it is ``None`` (or not finite), never 0."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def energy(joules: float | None, missing: str = UNAVAILABLE, *, grouped: bool = False) -> str:
    """``'1234 J (0.000343 kWh)'``: joules (four significant digits) with the kilowatt-hours beside them;
    ``grouped``: thousands separated (``'1,234 J'``), as the report's sentences and tables write them (the terminal
    summary's lines stay compact)."""
    if joules is None:
        return missing
    return f"{joules:{',' if grouped else ''}.4g} J ({joules / JOULES_PER_KWH:.3g} kWh)"


def kwh(joules: float | None, missing: str = UNAVAILABLE) -> str:
    """Joules as kilowatt-hours, three significant digits (no unit: for a column headed kWh)."""
    return number(None if joules is None else joules / JOULES_PER_KWH, ".3g", missing)


def grams(value: float | None, missing: str = UNAVAILABLE) -> str:
    """``'0.3125 gCO2e'``: grams CO2-equivalent, four significant digits."""
    return missing if value is None else f"{value:.4g} gCO2e"


def mass(value: float | None, missing: str = UNAVAILABLE) -> str:
    """``'0.45 g'``, ``'12.3 kg'``, ``'1.2 t'``: grams in the largest fitting unit, three significant digits (the
    footprint's and the badges' scale, from a phone charge to a flight)."""
    if value is None:
        return missing
    for unit, size in (("t", 1e6), ("kg", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} g"


def litres(value: float | None, missing: str = UNAVAILABLE) -> str:
    return missing if value is None else f"{value:.3g} L"


def flops(value: float | None) -> str:
    """FLOPs, four significant digits; :data:`NOT_COUNTED` when they were not counted."""
    return number(value, ".4g", NOT_COUNTED)


def labelled_flops(value: float | None, method: str | None = None, low: float | None = None,
                   high: float | None = None) -> str:
    """FLOPs with how they were obtained when not counted exactly: ``'1.2e+09 (sampled, 1.1e+09–1.3e+09)'`` for
    an estimate from watched steps with its range, ``'1.2e+09 (estimated)'``; ``'1.2e+09 (counted once)'`` for a count
    made once on a copy or a traced step that no later step re-checked; a checked count is the number alone."""
    text = flops(value)
    if value is not None and method == "counted-once":
        return f"{text} (counted once)"
    if value is None or method not in ("sampled", "estimated"):
        return text
    span = "" if low is None or high is None else f", {low:.4g}–{high:.4g}"
    return f"{text} ({method}{span})"


def percent(fraction: float | None, digits: int = 1, missing: str = UNAVAILABLE) -> str:
    """``0.123`` -> ``'12.3 %'``."""
    return missing if fraction is None else f"{100 * fraction:.{digits}f} %"


def short(value: float) -> str:
    """Three significant digits, without an exponent from 1 to 100,000 (``1141``, ``94.2``, ``0.0123``)."""
    if 1 <= abs(value) < 1e5:
        return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"
    return f"{value:.3g}"


def interval(low: float | None, high: float | None, unit: str) -> str:
    """``'(8–18 J)'``: the range the true value lies in (docs/uncertainty.md), or ``'(no basis for an interval)'``."""
    if low is None or high is None:
        return f"({NO_BASIS})"
    return f"({short(low)}–{short(high)} {unit})"


def text_table_lines(header: Sequence[Any], rows: Sequence[Sequence[Any]], right: bool = False) -> list[str]:
    """Columns padded to their widest cell, a dashed rule under the header; ``right`` aligns cells right."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]

    def line(cells: Sequence[Any]) -> str:
        return "  ".join(str(c).rjust(w) if right else str(c).ljust(w)
                         for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def text_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], right: bool = False) -> str:
    """:func:`text_table_lines` joined: the one text table of the report, the terminal summary and comparisons."""
    return "\n".join(text_table_lines(header, rows, right))

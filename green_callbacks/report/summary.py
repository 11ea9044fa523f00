"""Plain-text summaries of one run, for the terminal (``measure``, ``demo``, ``report``).

Both functions take a :class:`~green_callbacks.report.runs.RunSummary`, a
:class:`~green_callbacks.core.record.RunRecord` or a record's dict (as :func:`~green_callbacks.core.record.read_record`
returns it), and read it through the one typed record reader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from green_callbacks.core.uncertainty import median_interval, run_interval
from green_callbacks.core.units import JOULES_PER_KWH
from green_callbacks.report.runs import ComponentSummary, RunSummary, summarize_run

__all__ = [
    "component_text",
    "epoch_table",
    "format_energy",
    "format_epoch_table",
    "format_interval",
    "format_rounds",
    "format_run_summary",
    "run_summary_lines",
    "text_table",
]


def format_energy(energy_j: float | None) -> str:
    """``'unavailable'`` for an unmeasured value, else joules with the kWh beside them."""
    if energy_j is None:
        return "unavailable"
    return f"{energy_j:.4g} J ({energy_j / JOULES_PER_KWH:.3g} kWh)"


NO_BASIS = "no basis for an interval"


def format_interval(low: float | None, high: float | None, unit: str) -> str:
    """``'(8–18 J)'``: the range the true value lies in (docs/uncertainty.md), or ``'(no basis for an interval)'``."""
    if low is None or high is None:
        return f"({NO_BASIS})"
    return f"({_short(low)}–{_short(high)} {unit})"


def _short(value: float) -> str:
    """Three significant digits, without an exponent from 1 to 100,000 (``1141``, ``94.2``, ``0.0123``)."""
    if 1 <= abs(value) < 1e5:
        return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"
    return f"{value:.3g}"


def _energy_with_range(energy_j: float | None, low: float | None, high: float | None) -> str:
    """``'12 J (3.33e-06 kWh) (8–18 J)'``: joules, kWh, the joules' interval."""
    if energy_j is None:
        return "unavailable"
    return f"{format_energy(energy_j)} {format_interval(low, high, 'J')}"


def _grams(value: float | None) -> str:
    return "unavailable" if value is None else f"{value:.4g} gCO2e"


def _grams_with_range(value: float | None, low: float | None, high: float | None) -> str:
    return "unavailable" if value is None else f"{value:.4g} gCO2e {format_interval(low, high, 'gCO2e')}"


def _flops(value: float | None) -> str:
    return "not counted" if value is None else f"{value:.4g}"


def _summary(run: RunSummary | Mapping[str, Any]) -> RunSummary:
    return run if isinstance(run, RunSummary) else summarize_run(run)


def text_table(header: list[str] | tuple[str, ...], rows: list[list[str]] | tuple[tuple[str, ...], ...],
               right: bool = False) -> str:
    """Columns padded to their widest cell, a dashed rule under the header; ``right`` aligns cells right."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]

    def line(cells: Any) -> str:
        return "  ".join(str(c).rjust(w) if right else str(c).ljust(w)
                         for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def epoch_table(run: RunSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-epoch table: time, energy by component, emissions, FLOPs, the monitored metric."""
    monitor = run.convergence.monitor if run.convergence else None
    names = [c.name for c in run.components]
    header = ["epoch", "time s", *[f"{c} J" for c in names], "total J", "gCO2e", "train FLOPs", "eval FLOPs"]
    if monitor:
        header.append(monitor)
    rows = []
    for row in run.record.epochs:
        energy = row.component_energy_j
        cells = [str(row.epoch), f"{row.time_s:.2f}"]
        cells += ["n/a" if energy.get(c) is None else f"{energy[c]:.4g}" for c in names]
        cells += [
            "n/a" if row.energy_j is None else f"{row.energy_j:.4g}",
            "n/a" if row.emissions_gco2e is None else f"{row.emissions_gco2e:.4g}",
            _flops(row.train_flops),
            _flops(row.eval_flops),
        ]
        if monitor:
            value = row.metrics.get(monitor)
            cells.append("" if value is None else f"{value:.4g}")
        rows.append(cells)
    return header, rows


def format_epoch_table(run: RunSummary | Mapping[str, Any]) -> str:
    """One line per epoch: time, energy by component, emissions, FLOPs, the monitored metric."""
    header, rows = epoch_table(_summary(run))
    return text_table(header, rows, right=True)


def component_text(part: ComponentSummary, epochs: int, rows: Any = None) -> str:
    """One component's energy as the terminal says it: measured (with its interval when ``rows``, the run's
    epochs, are given), partial, unavailable (why), or not used."""
    if part.status == "not used":
        return "not used by this run" + (f" ({part.note})" if part.note else "")
    if not epochs:
        text = "no complete epoch"
    elif part.energy_j is None:
        text = "unavailable" + (f" ({part.note})" if part.note else "")
    else:
        text = format_energy(part.energy_j)
        if rows is not None:
            span = run_interval(rows, part.name)
            text = _energy_with_range(part.energy_j, *((None, None) if span is None else (span.low, span.high)))
        if part.epochs_unavailable:  # measured in some epochs only: say so, keep what was measured
            text += f" (partial: unavailable in {part.epochs_unavailable} of {epochs} epochs)"
    return f"{text}  [method: {', '.join(part.methods) or 'unavailable'}]"


def run_summary_lines(run: RunSummary) -> list[str]:
    """The terminal summary of one run, line by line."""
    record = run.record
    lines = [f"green_callbacks run {run.run_id[:8] or '?'} ({run.framework}): {run.status}"]
    if run.error:
        lines.append(f"  error: {run.error}")
    epochs = record.totals.epochs if record.totals.epochs is not None else run.epochs
    lines.append(f"  time: {run.time_s:.2f} s over {epochs} epoch(s)")
    for part in run.components:
        lines.append(f"  {part.name:>4} energy: {component_text(part, run.epochs, record.epochs)}")
    partly = [c.name for c in run.components if c.status == "partial"]
    caveat = f"; partial: {', '.join(partly)} unavailable in some epochs" if partly else ""
    totals = record.totals
    low, high = totals.energy_low_j, totals.energy_high_j
    if low is None and totals.energy_j is not None:  # a record from before the intervals: from its epochs
        span = run_interval(record.epochs)
        low, high = (None, None) if span is None else (span.low, span.high)
    total = _energy_with_range(totals.energy_j, low, high)
    lines.append(f"  total energy: {total} (IT energy, before PUE{caveat})")
    year = f", {run.intensity_year}" if run.intensity_year else ""
    grams = _grams_with_range(totals.emissions_gco2e, totals.emissions_low_gco2e, totals.emissions_high_gco2e)
    lines.append(
        f"  emissions: {grams}"
        f" at {run.intensity_gco2e_per_kwh} gCO2e/kWh "
        f"({run.location}; {run.intensity_source}{year}), PUE {run.pue}"
    )
    if run.train_flops is not None or run.eval_flops is not None:
        lines.append(f"  FLOPs: training {_flops(run.train_flops)}, evaluation {_flops(run.eval_flops)}")
    else:
        lines.append("  FLOPs: not counted")
    conv = run.convergence
    if conv is not None:
        if conv.best_value is not None:
            time_s = f"{conv.time_s:.2f}" if conv.time_s is not None else "?"
            lines.append(
                f"  convergence ({conv.monitor}, {conv.mode}): best {conv.best_value:.4g} at epoch {conv.best_epoch}"
                f" after {conv.epochs} epoch(s), {time_s} s, training FLOPs "
                f"{_flops(conv.train_flops)}, {format_energy(conv.energy_j)}, {_grams(conv.emissions_gco2e)}"
            )
        else:
            lines.append(f"  convergence ({conv.monitor}): the metric was never logged")
    if run.partial_epoch:
        part = run.partial_epoch
        time_s = part.time_s or 0.0
        lines.append(f"  incomplete epoch {part.epoch}: {time_s:.2f} s, "
                     f"{format_energy(part.energy_j)} (this process only)")
    if run.lost:
        lines.append("  switched off after a failure: " + "; ".join(f"{k} ({v})" for k, v in run.lost.items()))
    if run.path:
        lines.append(f"  record: {run.path}")
    return lines


def format_run_summary(run: RunSummary | Mapping[str, Any]) -> str:
    """Energy by component with its method, emissions with the intensity's source and year, convergence."""
    return "\n".join(run_summary_lines(_summary(run)))


def format_rounds(run: RunSummary | Mapping[str, Any], warmup_rounds: int, confidence: float = 0.95) -> str:
    """A repeated measurement (each round one row): the median round's energy and time with the order-statistic
    interval of the median, the warm-up rounds left out."""
    rows = _summary(run).record.epochs[warmup_rounds:]
    parts = [f"rounds: {len(rows)} measured after {warmup_rounds} warm-up round(s)"]
    for name, unit, values in (("energy", "J", [r.energy_j for r in rows]), ("time", "s", [r.time_s for r in rows])):
        known = [v for v in values if v is not None]
        m = median_interval(known, confidence) if len(known) == len(values) else None
        if m is None:
            parts.append(f"median {name} unavailable")
            continue
        parts.append(f"median {name} {m.median:.4g} {unit} {format_interval(m.low, m.high, unit)}")
        coverage = m.coverage
    if len(parts) > 1 and "unavailable" not in parts[-1]:
        parts.append(f"the median's interval over the rounds covers {coverage * 100:.1f} % (order statistics; the "
                     "method's own bound, docs/uncertainty.md, comes on top)")
    return "  " + "; ".join(parts)

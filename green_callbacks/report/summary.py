"""Plain-text summaries of one run, for the terminal (``measure``, ``demo``, ``report``): the epoch table and the
run's lines, emitted as blocks by the report's text emitter (:func:`~green_callbacks.report.blocks.emit_text`) and
formatted by its one policy (:mod:`green_callbacks.report.format`).

The functions take a :class:`~green_callbacks.report.runs.RunSummary`, a
:class:`~green_callbacks.core.record.RunRecord` or a record's dict (as :func:`~green_callbacks.core.record.read_record`
returns it), and read it through the one typed record reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from green_callbacks.core.uncertainty import median_interval, run_interval
from green_callbacks.report import format as fmt
from green_callbacks.report.blocks import Lines, Table, emit_text
from green_callbacks.report.runs import ComponentSummary, RunSummary, summarize_run

__all__ = [
    "component_text",
    "epoch_table",
    "flops_notes",
    "format_energy",
    "format_epoch_table",
    "format_interval",
    "format_rounds",
    "format_run_summary",
    "run_summary_lines",
    "text_table",
]


format_energy = fmt.energy
"""``'unavailable'`` for an unmeasured value, else joules with the kWh beside them (:func:`format.energy`)."""
format_interval = fmt.interval
NO_BASIS = fmt.NO_BASIS
text_table = fmt.text_table


def _energy_with_range(energy_j: float | None, low: float | None, high: float | None) -> str:
    """``'12 J (3.33e-06 kWh) (8–18 J)'``: joules, kWh, the joules' interval."""
    if energy_j is None:
        return fmt.UNAVAILABLE
    return f"{fmt.energy(energy_j)} {fmt.interval(low, high, 'J')}"


def _grams_with_range(value: float | None, low: float | None, high: float | None) -> str:
    return fmt.UNAVAILABLE if value is None else f"{fmt.grams(value)} {fmt.interval(low, high, 'gCO2e')}"


def _summary(run: RunSummary | Mapping[str, Any]) -> RunSummary:
    return run if isinstance(run, RunSummary) else summarize_run(run)


def epoch_table(run: RunSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-epoch table: time, energy by component, emissions, FLOPs, the monitored metric."""
    monitor = run.convergence.monitor if run.convergence else None
    names = [c.name for c in run.components]
    header = ["epoch", "time s", *[f"{c} J" for c in names], "total J", "gCO2e", "train FLOPs", "eval FLOPs"]
    if run.recompute:
        header.append("hardware FLOPs")
    if monitor:
        header.append(monitor)
    rows = []
    labels = run.epoch_flops or (None,) * len(run.record.epochs)
    for row, label in zip(run.record.epochs, labels, strict=True):
        energy = row.component_energy_j
        cells = [str(row.epoch), f"{row.time_s:.2f}"]
        cells += [fmt.number(energy.get(c), missing=fmt.NA) for c in names]
        cells += [
            fmt.number(row.energy_j, missing=fmt.NA),
            fmt.number(row.emissions_gco2e, missing=fmt.NA),
            fmt.flops(row.train_flops) if label is None
            else fmt.labelled_flops(row.train_flops, label.method, label.low, label.high),
            fmt.flops(row.eval_flops),
        ]
        if run.recompute:
            cells.append(fmt.flops(row.train_hardware_flops))
        if monitor:
            value = row.metrics.get(monitor)
            cells.append("" if value is None else f"{value:.4g}")
        rows.append(cells)
    return header, rows


def format_epoch_table(run: RunSummary | Mapping[str, Any]) -> str:
    """One line per epoch: time, energy by component, emissions, FLOPs, the monitored metric."""
    header, rows = epoch_table(_summary(run))
    return emit_text([Table(tuple(header), tuple(tuple(r) for r in rows), right=True)]).rstrip("\n")


def component_text(part: ComponentSummary, epochs: int, rows: Any = None) -> str:
    """One component's energy as the terminal says it: measured (with its interval when ``rows``, the run's
    epochs, are given), partial, unavailable (why), or not used."""
    if part.status == "not used":
        return fmt.NOT_USED + (f" ({part.note})" if part.note else "")
    if not epochs:
        text = "no complete epoch"
    elif part.energy_j is None:
        text = fmt.UNAVAILABLE + (f" ({part.note})" if part.note else "")
    else:
        text = fmt.energy(part.energy_j)
        if rows is not None:
            span = run_interval(rows, part.name)
            text = _energy_with_range(part.energy_j, *((None, None) if span is None else (span.low, span.high)))
        if part.epochs_unavailable:  # measured in some epochs only: say so, keep what was measured
            text += f" (partial: unavailable in {part.epochs_unavailable} of {epochs} epochs)"
    return f"{text}  [method: {', '.join(part.methods) or fmt.UNAVAILABLE}]"


def flops_notes(run: RunSummary) -> list[str]:
    """What the FLOPs figures are when not an exact count of the model's work: why epochs are sampled or estimated
    (with the signatures whose work followed the data), and the hardware FLOPs beside the model FLOPs."""
    out = []
    if run.flops_notes or run.data_dependent:
        why = "; ".join(run.flops_notes) or "data-dependent work"
        where = f" (signatures: {', '.join(run.data_dependent)})" if run.data_dependent else ""
        out.append(f"training FLOPs {run.train_flops_method or 'estimated'}: {why}{where}")
    if run.recompute:
        out.append(f"hardware FLOPs, training: {fmt.flops(run.train_hardware_flops)} (model FLOPs plus activation "
                   "checkpointing's recompute; MFU uses the model FLOPs, HFU these)")
    return out


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
        lines.append(f"  FLOPs: training {run.flops_text}, evaluation {fmt.flops(run.eval_flops)}")
        lines += [f"  {note}" for note in flops_notes(run)]
    else:
        lines.append(f"  FLOPs: {fmt.NOT_COUNTED}")
    conv = run.convergence
    if conv is not None:
        if conv.best_value is not None:
            time_s = f"{conv.time_s:.2f}" if conv.time_s is not None else "?"
            lines.append(
                f"  convergence ({conv.monitor}, {conv.mode}): best {conv.best_value:.4g} at epoch {conv.best_epoch}"
                f" after {conv.epochs} epoch(s), {time_s} s, training FLOPs "
                f"{fmt.flops(conv.train_flops)}, {fmt.energy(conv.energy_j)}, {fmt.grams(conv.emissions_gco2e)}"
            )
        else:
            lines.append(f"  convergence ({conv.monitor}): the metric was never logged")
    if run.partial_epoch:
        part = run.partial_epoch
        time_s = part.time_s or 0.0
        lines.append(f"  incomplete epoch {part.epoch}: {time_s:.2f} s, "
                     f"{fmt.energy(part.energy_j)} (this process only)")
    if run.lost:
        lines.append("  switched off after a failure: " + "; ".join(f"{k} ({v})" for k, v in run.lost.items()))
    if run.path:
        lines.append(f"  record: {run.path}")
    return lines


def format_run_summary(run: RunSummary | Mapping[str, Any]) -> str:
    """Energy by component with its method, emissions with the intensity's source and year, convergence: the
    terminal summary printed at the end of a fit, walked by the report's text emitter like every section."""
    return emit_text([Lines(tuple(run_summary_lines(_summary(run))), language="text")]).rstrip("\n")


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
        parts.append(f"median {name} {m.median:.4g} {unit} {fmt.interval(m.low, m.high, unit)}")
        coverage = m.coverage
    if len(parts) > 1 and fmt.UNAVAILABLE not in parts[-1]:
        parts.append(f"the median's interval over the rounds covers {coverage * 100:.1f} % (order statistics; the "
                     "method's own bound, docs/uncertainty.md, comes on top)")
    return "  " + "; ".join(parts)

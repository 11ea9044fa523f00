"""Plain-text summaries of a run record, for the terminal (``measure``, ``demo``, ``report``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from green_callbacks.core.units import JOULES_PER_KWH

__all__ = ["format_energy", "format_epoch_table", "format_run_summary"]


def format_energy(energy_j: float | None) -> str:
    """``'unavailable'`` for an unmeasured value, else joules with the kWh beside them."""
    if energy_j is None:
        return "unavailable"
    return f"{energy_j:.4g} J ({energy_j / JOULES_PER_KWH:.3g} kWh)"


def _grams(value: float | None) -> str:
    return "unavailable" if value is None else f"{value:.4g} gCO2e"


def _flops(value: float | None) -> str:
    return "not counted" if value is None else f"{value:.4g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_epoch_table(record: Mapping[str, Any]) -> str:
    """One line per epoch: time, energy by component, emissions, FLOPs, the monitored metric."""
    monitor = (record.get("convergence") or {}).get("monitor")
    components = list(record.get("components") or {})
    header = ["epoch", "time s", *[f"{c} J" for c in components], "total J", "gCO2e", "train FLOPs", "eval FLOPs"]
    if monitor:
        header.append(monitor)
    rows = []
    for row in record.get("epochs", []):
        energy = row.get("component_energy_j", {})
        cells = [str(row["epoch"]), f"{row['time_s']:.2f}"]
        cells += ["n/a" if energy.get(c) is None else f"{energy[c]:.4g}" for c in components]
        cells += [
            "n/a" if row.get("energy_j") is None else f"{row['energy_j']:.4g}",
            "n/a" if row.get("emissions_gco2e") is None else f"{row['emissions_gco2e']:.4g}",
            _flops(row.get("train_flops")),
            _flops(row.get("eval_flops")),
        ]
        if monitor:
            value = row.get("metrics", {}).get(monitor)
            cells.append("" if value is None else f"{value:.4g}")
        rows.append(cells)
    return _table(header, rows)


def format_run_summary(record: Mapping[str, Any]) -> str:
    """Energy by component with its method, emissions with the intensity's source and year, convergence."""
    totals = record.get("totals", {})
    carbon = record.get("carbon", {})
    lines = [f"green_callbacks run {record.get('run_id', '?')[:8]} ({record.get('framework')}): {record.get('status')}"]
    if record.get("error"):
        lines.append(f"  error: {record['error']}")
    lines.append(f"  time: {totals.get('time_s', 0.0):.2f} s over {totals.get('epochs', 0)} epoch(s)")
    epochs = record.get("epochs", [])
    methods = record.get("methods", {})
    for name in record.get("components", {}):
        values = [row.get("component_energy_j", {}).get(name) for row in epochs]
        known = [v for v in values if v is not None]
        method = ", ".join(methods.get(name, [])) or "unavailable"
        info = record["components"][name]
        note = info.get("reason") or info.get("note") or ""
        if not epochs:
            text = "no complete epoch"
        elif not known:
            text = "unavailable" + (f" ({note})" if note else "")
        else:
            text = format_energy(sum(known))
            if len(known) < len(values):  # measured in some epochs only: say so, keep what was measured
                text += f" (partial: unavailable in {len(values) - len(known)} of {len(values)} epochs)"
        lines.append(f"  {name:>4} energy: {text}  [method: {method}]")
    partly = sorted({name for row in epochs for name in row.get("missing_components", [])
                     if any(other.get("component_energy_j", {}).get(name) is not None for other in epochs)})
    caveat = f"; partial: {', '.join(partly)} unavailable in some epochs" if partly else ""
    lines.append(f"  total energy: {format_energy(totals.get('energy_j'))} (IT energy, before PUE{caveat})")
    source = carbon.get("source", "?")
    year = carbon.get("year")
    lines.append(
        f"  emissions: {_grams(totals.get('emissions_gco2e'))} at {carbon.get('intensity_gco2e_per_kwh')} gCO2e/kWh "
        f"({carbon.get('location')}; {source}{', ' + str(year) if year else ''}), PUE {carbon.get('pue')}"
    )
    if totals.get("train_flops"):
        lines.append(f"  FLOPs: training {totals['train_flops']:.4g}, evaluation {totals.get('eval_flops', 0.0):.4g}")
    conv = record.get("convergence") or {}
    best = conv.get("best")
    if conv.get("monitor"):
        if best:
            lines.append(
                f"  convergence ({conv['monitor']}, {conv['mode']}): best {best['value']:.4g} at epoch {best['epoch']}"
                f" after {best['epochs']} epoch(s), {best['time_s']:.2f} s, training FLOPs "
                f"{_flops(best.get('train_flops'))}, {format_energy(best.get('energy_j'))}, "
                f"{_grams(best.get('emissions_gco2e'))}"
            )
        else:
            lines.append(f"  convergence ({conv['monitor']}): the metric was never logged")
    if record.get("partial_epoch"):
        part = record["partial_epoch"]
        lines.append(f"  incomplete epoch {part.get('epoch')}: {part.get('time_s', 0):.2f} s, "
                     f"{format_energy(part.get('energy_j'))} (this process only)")
    if record.get("lost"):
        lines.append("  switched off after a failure: " + "; ".join(f"{k} ({v})" for k, v in record["lost"].items()))
    if record.get("_path"):
        lines.append(f"  record: {record['_path']}")
    return "\n".join(lines)

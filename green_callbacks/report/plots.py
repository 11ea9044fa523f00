"""Report figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend).

matplotlib is optional (``pip install "green-callbacks[plot]"``) and imported only when a figure is drawn.
Each function returns the PNG, or ``None`` when the records hold nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from green_callbacks.core.rows import EpochRow
from green_callbacks.report.runs import RunSummary
from green_callbacks.report.stats import ExpectedBest

__all__ = [
    "INTERVAL_LABEL",
    "PlotUnavailable",
    "energy_per_epoch_figure",
    "metric_vs_cost_figure",
    "plot_energy_per_epoch",
    "plot_expected_best",
    "plot_metric_vs_cost",
    "plot_search_progress",
    "plot_sensitivity",
    "plot_sweep_energy",
    "sweep_energy_figure",
]

NOT_USED_COLOR = "#9e9e9e"
"""Grey: a component the run does not use (said "not used by this run" in the legend, as in the text)."""

INTERVAL_LABEL = "95 % interval (docs/uncertainty.md)"
"""The legend of the error bars: the range each figure's true value lies in."""

_COLORS = {"gpu": "#2e7d32", "cpu": "#1565c0", "ram": "#ef6c00"}


class PlotUnavailable(ImportError):
    """matplotlib is not installed."""


def _figure(width_in: float, height_in: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise PlotUnavailable(
            f"plots need matplotlib, which is not installed ({err}); "
            'install it with: pip install "green-callbacks[plot]"'
        ) from err
    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _errors(points: Sequence[tuple[float | None, float | None, float | None]]) -> tuple[list[int], list[list[float]]]:
    """The indices of the points with an interval, and matplotlib's asymmetric errors ``[[below], [above]]``."""
    keep, below, above = [], [], []
    for index, (value, low, high) in enumerate(points):
        if value is not None and low is not None and high is not None:
            keep.append(index)
            below.append(max(value - low, 0.0))
            above.append(max(high - value, 0.0))
    return keep, [below, above]


def _interval_note(drawn: int, total: int) -> str:
    """What the error bars cover, for a figure's legend."""
    if drawn == total:
        return INTERVAL_LABEL
    return f"{INTERVAL_LABEL}; {total - drawn} of {total} without (no basis for an interval)"


def plot_energy_per_epoch(run: RunSummary) -> bytes | None:
    """Energy of each epoch, stacked by component; an unmeasured component is named in the legend, not drawn as 0."""
    fig = energy_per_epoch_figure(run)
    return None if fig is None else _png(fig)


def energy_per_epoch_figure(run: RunSummary) -> Any:
    """The figure of :func:`plot_energy_per_epoch` (a matplotlib ``Figure``), each epoch's total with error bars
    from the record's ``energy_low_j`` / ``energy_high_j`` where it has an interval."""
    rows = run.record.epochs
    if not rows:
        return None
    fig = _figure(6.0, 3.2)
    ax = fig.add_subplot()
    epochs = [row.epoch for row in rows]
    bottom = [0.0] * len(rows)
    missing: dict[int, list[str]] = {}
    for part in run.components:
        values = [row.component_energy_j.get(part.name) for row in rows]
        heights = [0.0 if v is None else float(v) for v in values]
        if part.status == "not used":  # nothing to measure, nothing missing: grey, said as the text says it
            ax.bar(epochs, heights, bottom=bottom, label=f"{part.name}: not used by this run", color=NOT_USED_COLOR)
            continue
        for epoch, value in zip(epochs, values, strict=True):
            if value is None:
                missing.setdefault(epoch, []).append(part.name)
        label = f"{part.name} ({', '.join(part.methods)})"
        ax.bar(epochs, heights, bottom=bottom, label=label, color=_COLORS.get(part.name))
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    totals = [row.energy_j for row in rows]
    keep, err = _errors([(t, row.energy_low_j, row.energy_high_j) for t, row in zip(totals, rows, strict=True)])
    top = max(bottom) if bottom and max(bottom) > 0 else 1.0
    if keep:
        ax.errorbar([epochs[i] for i in keep], [totals[i] for i in keep], yerr=err, fmt="none", ecolor="black",
                    capsize=3, elinewidth=1, label=_interval_note(len(keep), len(rows)))
        top = max(top, *(totals[i] + up for i, up in zip(keep, err[1], strict=True)))
    for epoch, total in zip(epochs, bottom, strict=True):
        if epoch in missing:
            ax.annotate(f"{', '.join(missing[epoch])}\nunavailable", (epoch, total), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7, color="#c62828")
    ax.set_ylim(0, top * 1.45)
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy per epoch (J, before PUE)")
    ax.set_title(f"Energy per epoch by component, run {run.label} ({run.status})", fontsize=10)
    ax.set_xticks(epochs)
    ax.legend(fontsize=8, loc="upper right", ncols=min(3, len(run.components)))
    return fig


def _series(rows: Sequence[EpochRow], monitor: str, key: str) -> list[tuple[float, float, int]]:
    out = []
    for row in rows:
        value = row.metrics.get(monitor)
        x = None if row.totals is None else getattr(row.totals, key)
        if value is not None and x is not None:
            out.append((float(x), float(value), row.epoch))
    return out


def plot_metric_vs_cost(run: RunSummary) -> bytes | None:
    """The monitored metric against cumulative training FLOPs and against cumulative energy; the best epoch starred."""
    fig = metric_vs_cost_figure(run)
    return None if fig is None else _png(fig)


def metric_vs_cost_figure(run: RunSummary) -> Any:
    """The figure of :func:`plot_metric_vs_cost`; the cumulative energy with horizontal error bars from each
    epoch's ``totals.energy_low_j`` / ``energy_high_j`` where the record has them (FLOPs are counted: none)."""
    conv = run.convergence
    rows = run.record.epochs
    if conv is None or not rows:
        return None
    panels = [("energy_j", "cumulative energy (J, before PUE)")]
    if run.train_flops is not None:
        panels.insert(0, ("train_flops", "cumulative training FLOPs"))
    data = [(key, label, _series(rows, conv.monitor, key)) for key, label in panels]
    data = [d for d in data if d[2]]
    if not data:
        return None
    fig = _figure(3.4 * len(data) + 0.4, 3.2)
    axes = fig.subplots(1, len(data), squeeze=False)[0]
    for ax, (_key, label, series) in zip(axes, data, strict=True):
        ax.plot([s[0] for s in series], [s[1] for s in series], marker="o", color="#1565c0")
        if _key == "energy_j":
            by_epoch = {row.epoch: row.totals for row in rows}
            keep, err = _errors([(x, by_epoch[e].energy_low_j, by_epoch[e].energy_high_j) for x, _, e in series])
            if keep:
                ax.errorbar([series[i][0] for i in keep], [series[i][1] for i in keep], xerr=err, fmt="none",
                            ecolor="#1565c0", capsize=2, elinewidth=0.8, label=_interval_note(len(keep), len(series)))
                ax.legend(fontsize=7)
        best = [s for s in series if s[2] == conv.best_epoch]
        if best:
            ax.plot([best[0][0]], [best[0][1]], marker="*", markersize=14, color="#c62828", linestyle="none",
                    label=f"best: epoch {conv.best_epoch}")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{conv.monitor} ({conv.mode})")
    fig.suptitle(f"{conv.monitor} against cost, run {run.label}", fontsize=10)
    return fig


def _progress_panel(ax: Any, sweeps: Sequence[Any]) -> bool:
    drawn = False
    for sweep in sweeps:
        points = [(p.energy_j, p.best_so_far) for p in sweep.progress if p.energy_j is not None
                  and p.best_so_far is not None]
        if not points:
            continue
        label = sweep.name or sweep.group or "search"
        method = sweep.method or "method not recorded"
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", marker="o", markersize=3,
                label=f"{label} ({method})")
        stopped = [(p.energy_j, p.best_so_far) for p in sweep.progress if p.state != "complete"
                   and p.energy_j is not None and p.best_so_far is not None]
        if stopped:
            ax.plot([p[0] for p in stopped], [p[1] for p in stopped], marker="x", linestyle="none",
                    color="#c62828", label="pruned / failed trial")
        drawn = True
    if drawn:
        ax.set_xlabel("cumulative energy of the search (J, before PUE)")
        ax.set_ylabel(f"best {sweeps[0].monitor} so far")
        ax.legend(fontsize=7)
    return drawn


def plot_sweep_energy(runs: Sequence[RunSummary], monitor: str, best_run: str, sweep: Any = None) -> bytes | None:
    """Best metric of each run against the run's total energy (the best run marked) and, given the ``sweep``
    analysis, the best so far against the search's cumulative energy (pruned and failed trials included)."""
    fig = sweep_energy_figure(runs, monitor, best_run, sweep)
    return None if fig is None else _png(fig)


def _run_span(run: RunSummary) -> tuple[float | None, float | None]:
    totals = None if run.record is None else run.record.totals
    return (None, None) if totals is None else (totals.energy_low_j, totals.energy_high_j)


def sweep_energy_figure(runs: Sequence[RunSummary], monitor: str, best_run: str, sweep: Any = None) -> Any:
    """The figure of :func:`plot_sweep_energy`; each run's energy with a horizontal error bar from its record's
    ``totals.energy_low_j`` / ``energy_high_j`` where it has them."""
    points = [(r.energy_j, r.convergence.best_value, r.label, *_run_span(r)) for r in runs
              if r.energy_j is not None and r.convergence is not None and r.convergence.monitor == monitor
              and r.convergence.best_value is not None]
    if not points:
        return None
    panels = 2 if sweep is not None and sweep.progress else 1
    fig = _figure(3.6 * panels + 0.6, 3.4)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#1565c0", label="run")
    keep, err = _errors([(p[0], p[3], p[4]) for p in points])
    if keep:
        ax.errorbar([points[i][0] for i in keep], [points[i][1] for i in keep], xerr=err, fmt="none",
                    ecolor="#1565c0", capsize=2, elinewidth=0.8, label=_interval_note(len(keep), len(points)))
    best = [p for p in points if p[2] == best_run]
    if best:
        ax.scatter([best[0][0]], [best[0][1]], marker="*", s=200, color="#c62828", label=f"best run {best_run}")
    ax.set_xlabel("energy of the run (J, before PUE)")
    ax.set_ylabel(f"best {monitor}")
    ax.set_title(f"Best {monitor} against energy, {len(points)} runs", fontsize=9)
    ax.legend(fontsize=8)
    if panels == 2 and _progress_panel(axes[1], [sweep]):
        axes[1].set_title("Best so far against the search's energy", fontsize=9)
    return fig


def plot_search_progress(sweeps: Sequence[Any]) -> bytes | None:
    """Searches of one metric on one plot: best so far against cumulative energy (e.g. a grid against a TPE study
    over the same space)."""
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    if not _progress_panel(ax, sweeps):
        return None
    ax.set_title(f"Searches compared: best {sweeps[0].monitor} so far against energy", fontsize=10)
    return _png(fig)


def plot_sensitivity(runs: Sequence[RunSummary], sweep: Any) -> bytes | None:
    """The best metric of each run against each hyperparameter, on the parameter's own scale (log for a log-scaled
    one, one column per value for a categorical one); the title of each panel gives its importance."""
    import math

    params = [s for s in sweep.sensitivity if s.importance is not None][:6]
    if not params:
        return None
    fig = _figure(min(3.0 * len(params), 12.0) + 0.4, 3.0)
    axes = fig.subplots(1, len(params), squeeze=False)[0]
    for ax, sens in zip(axes, params, strict=True):
        imp = sens.importance
        xs, ys = [], []
        for run in runs:
            conv = run.convergence
            if (conv is None or conv.best_value is None or conv.monitor != sweep.monitor
                    or sens.name not in run.hyperparameters):
                continue
            xs.append(run.hyperparameters[sens.name])
            ys.append(conv.best_value)
        if imp.scale == "categorical" or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  and math.isfinite(x) for x in xs):
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], ys, color="#1565c0", s=14)
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30)
        else:
            ax.scatter(xs, ys, color="#1565c0", s=14)
            if imp.scale == "log10":
                ax.set_xscale("log")
        value = "?" if imp.importance is None else f"{imp.importance:.2f}"
        ax.set_title(f"{sens.name}: {value} ({imp.verdict.split(' (')[0]})", fontsize=8)
        ax.set_xlabel(sens.name + (" (log scale)" if imp.scale == "log10" else ""), fontsize=8)
    axes[0].set_ylabel(f"best {sweep.monitor}")
    return _png(fig)


def plot_expected_best(curve: Sequence[ExpectedBest], monitor: str, mode: str, best_value: float,
                       mean_energy_per_run_j: float | None) -> bytes | None:
    """Expected best of n trials (Dodge et al. 2019) against n and against energy (n x mean energy/run)."""
    if not curve:
        return None
    panels = 2 if mean_energy_per_run_j is not None else 1
    fig = _figure(3.4 * panels + 0.4, 3.2)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    n = [c.n for c in curve]
    mean = [c.mean for c in curve]
    low = [c.mean - c.std for c in curve]
    high = [c.mean + c.std for c in curve]
    xs: list[tuple[list[float], str]] = [([float(k) for k in n], "number of trials n")]
    if mean_energy_per_run_j is not None:
        xs.append(([k * mean_energy_per_run_j for k in n], "expected energy of n trials (J)"))
    for ax, (x, label) in zip(axes, xs, strict=True):
        ax.fill_between(x, low, high, color="#90caf9", alpha=0.5, label="± 1 std")
        ax.plot(x, mean, marker="o", color="#1565c0", label=f"expected {'max' if mode == 'max' else 'min'}")
        ax.axhline(best_value, color="#c62828", linestyle="--", linewidth=1, label="best observed")
        ax.set_xlabel(label)
        ax.set_ylabel(f"expected best {monitor}")
        ax.legend(fontsize=8)
    fig.suptitle("Expected best of n trials (Dodge et al. 2019; unbiased, without replacement)", fontsize=10)
    return _png(fig)

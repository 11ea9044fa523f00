"""Assemble a :class:`Report` (runs, sweep analysis, MFU, offset cost, badges) from loaded records; draw its figures."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from green_callbacks.core.flops.peaks import normalize_dtype
from green_callbacks.report.badges import Badge, carbon_neutral_badge, emissions_badge, pledge_badge
from green_callbacks.report.efficiency import Mfu, run_mfu
from green_callbacks.report.offsets import DEFAULT_PRICE, OffsetCost, OffsetPrice, offset_cost
from green_callbacks.report.runs import LoadResult, RunSummary
from green_callbacks.report.sweep import SweepAnalysis, analyze_sweep

__all__ = ["Report", "ReportOptions", "build_report", "figure_runs", "make_figures", "run_figure_prefix"]


@dataclass(frozen=True)
class ReportOptions:
    tolerance: str = "1%"
    """How close to the best a random search must come: ``"1%"`` of the best value, or an absolute ``"0.005"``."""
    offset_price: OffsetPrice = DEFAULT_PRICE
    peak_flops_per_s: float | None = None
    """Dense peak FLOP/s of one GPU, overriding the peak table (for MFU)."""
    mfu_dtype: str | None = None
    """Compute dtype for the peak table when a record names none (default: bf16, said to be assumed)."""
    pledge: bool = False
    pledge_url: str | None = None
    certificate_url: str | None = None


@dataclass(frozen=True)
class Report:
    runs: tuple[RunSummary, ...]
    skipped: tuple[tuple[str, str], ...]
    sweep: SweepAnalysis | None
    mfu: tuple[Mfu, ...]
    emissions_gco2e: float | None
    """All runs' emissions together (the measured ones)."""
    emissions_runs_unavailable: int
    emissions_partial: bool
    """Some run or component was not measured, so the total misses something."""
    offset: OffsetCost | None
    badges: tuple[Badge, ...]
    options: ReportOptions = field(default_factory=ReportOptions)


def build_report(loaded: LoadResult, options: ReportOptions | None = None) -> Report:
    """Everything the renderers print, computed once. Bad options raise ``ValueError`` with what to pass."""
    options = options or ReportOptions()
    if options.mfu_dtype is not None:
        normalize_dtype(options.mfu_dtype)  # a bad dtype is an error even when no run has a GPU
    runs = loaded.runs
    sweep = analyze_sweep(runs, tolerance=options.tolerance)
    known = [r.emissions_gco2e for r in runs if r.emissions_gco2e is not None]
    missing = len(runs) - len(known)
    total = sum(known) if known else None
    partial = bool(missing) or any(r.energy_partial for r in runs)
    badges: list[Badge] = []
    if options.pledge or options.pledge_url:
        badges.append(pledge_badge(options.pledge_url))
    if options.certificate_url:
        badges.append(carbon_neutral_badge(options.certificate_url))
    if total is not None:
        intensities = sorted({f"{r.intensity_gco2e_per_kwh} gCO2e/kWh ({r.intensity_source}), PUE {r.pue}"
                              for r in runs if r.emissions_gco2e is not None})
        badges.append(emissions_badge(total, partial=partial,
                                      detail=f"{len(known)} run(s); " + "; ".join(intensities)))
    return Report(
        runs=runs,
        skipped=loaded.skipped,
        sweep=sweep,
        mfu=tuple(run_mfu(r, options.peak_flops_per_s, options.mfu_dtype) for r in runs),
        emissions_gco2e=total,
        emissions_runs_unavailable=missing,
        emissions_partial=partial,
        offset=None if total is None else offset_cost(total, options.offset_price),
        badges=tuple(badges),
        options=options,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def run_figure_prefix(run: RunSummary) -> str:
    """File-name prefix of one run's figures (``run-<id>-``)."""
    return f"run-{_slug(run.label)}-"


RUN_FIGURES_LIMIT = 4
"""Above this many runs in a sweep, per-run figures are drawn for the best run only (unless all are asked for)."""


def figure_runs(report: Report, all_runs: bool = False) -> tuple[RunSummary, ...]:
    """The runs that get their own figures: all of them, or for a sweep of many runs the best run only."""
    if all_runs or report.sweep is None or len(report.runs) <= RUN_FIGURES_LIMIT:
        return report.runs
    return tuple(r for r in report.runs if r.label == report.sweep.best_run)


def make_figures(report: Report, all_runs: bool = False) -> dict[str, bytes]:
    """PNG figures by file name: per run energy and metric-vs-cost, and for a sweep the two sweep plots.

    A sweep of more than :data:`RUN_FIGURES_LIMIT` runs gets per-run figures for its best run only, unless
    ``all_runs``. Raises :class:`~green_callbacks.report.plots.PlotUnavailable` when matplotlib is missing.
    """
    from green_callbacks.report import plots

    figures: dict[str, bytes | None] = {}
    if report.sweep is not None:
        sweep = report.sweep
        mean_j = sweep.efficiency.mean_energy_per_run_j if sweep.efficiency else None
        figures["sweep-best-vs-energy.png"] = plots.plot_sweep_energy(report.runs, sweep.monitor, sweep.best_run)
        figures["sweep-expected-best.png"] = plots.plot_expected_best(
            sweep.curve, sweep.monitor, sweep.mode, sweep.best_value, mean_j)
    for run in figure_runs(report, all_runs):
        figures[run_figure_prefix(run) + "energy.png"] = plots.plot_energy_per_epoch(run)
        figures[run_figure_prefix(run) + "metric.png"] = plots.plot_metric_vs_cost(run)
    return {name: png for name, png in figures.items() if png is not None}

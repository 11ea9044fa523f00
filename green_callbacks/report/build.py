"""Assemble a :class:`Report` (runs, sweep analysis, MFU, offset cost, badges) from loaded records; draw its figures."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from green_callbacks.core.flops.peaks import normalize_dtype
from green_callbacks.report.badges import Badge, carbon_neutral_badge, emissions_badge, pledge_badge
from green_callbacks.report.efficiency import Mfu, run_mfu
from green_callbacks.report.footprint import FootprintOptions
from green_callbacks.report.inference import PhaseRow, phase_rows
from green_callbacks.report.offsets import DEFAULT_PRICE, OffsetCost, OffsetPrice, offset_cost
from green_callbacks.report.runs import LoadResult, RunSummary
from green_callbacks.report.stats import parse_tolerance
from green_callbacks.report.sweep import (
    SweepAnalysis,
    analyze_sweep,
    comparable_groups,
    describe_key,
    is_repeat,
    is_search,
    rule_of,
)

__all__ = [
    "Report",
    "ReportOptions",
    "build_report",
    "figure_runs",
    "make_figures",
    "run_figure_prefix",
    "sweep_figure_prefix",
]


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
    footprint: FootprintOptions = field(default_factory=FootprintOptions)
    """What the footprint section compares each run against (other grids, a shared local machine vs a cloud)."""
    engines: tuple[Any, ...] = ()
    """The search engines' trials joined with the records (:class:`~green_callbacks.report.engines.EngineJoin`)."""


@dataclass(frozen=True)
class Report:
    runs: tuple[RunSummary, ...]
    skipped: tuple[tuple[str, str], ...]
    sweeps: tuple[SweepAnalysis, ...]
    """One analysis per group of comparable runs (same framework, model and monitored metric) of two or more."""
    mfu: tuple[Mfu, ...]
    emissions_gco2e: float | None
    """All runs' emissions together (the measured ones)."""
    emissions_runs_unavailable: int
    emissions_partial: bool
    """Some run or component was not measured, so the total misses something."""
    offset: OffsetCost | None
    badges: tuple[Badge, ...]
    options: ReportOptions = field(default_factory=ReportOptions)
    search_note: str | None = None
    """Why runs with a monitored metric were not analysed as a search (they are not comparable), if so."""
    phases: tuple[PhaseRow, ...] = ()
    """Test / validate / predict / evaluate records, with the break-even against their fit ("Using the model")."""
    search_runs: tuple[tuple[RunSummary, ...], ...] = ()
    """The runs of each search, in the order of :attr:`sweeps`."""

    @property
    def sweep(self) -> SweepAnalysis | None:
        """The search analysis when the runs hold exactly one search, else ``None`` (see :attr:`sweeps`)."""
        return self.sweeps[0] if len(self.sweeps) == 1 else None


def _searches(runs: tuple[RunSummary, ...], tolerance: str) -> tuple[
        tuple[SweepAnalysis, ...], tuple[tuple[RunSummary, ...], ...], str | None]:
    groups = comparable_groups(runs)
    out, members = [], []
    for key, group in groups:
        if not is_search(group, key):
            continue
        analysis = analyze_sweep(group, tolerance=tolerance, rule=rule_of(key),
                                 group=describe_key(key) if len(groups) > 1 or key[0] == "search" else "")
        if analysis is not None:
            out.append(analysis)
            members.append(tuple(group))
    notes = []
    scored = [key for key, group in groups if any(r.convergence and r.convergence.best_value is not None
                                                   for r in group)]
    alone = [key for key, group in groups if not is_search(group, key) and not is_repeat(group, key)
             and key in scored]
    repeats = [(key, group) for key, group in groups if is_repeat(group, key)]
    if alone and (len(scored) > 1):
        notes.append("Not analysed as a search: " + "; ".join(describe_key(k) for k in alone)
                     + " — a search compares runs of the same framework, model and monitored metric (runs that "
                       "name one search, or of one model fingerprint and data), and each of these has a single run")
    if repeats:
        notes.append("Repeated runs of one configuration, not a search (no hyperparameter varies): "
                     + "; ".join(f"{describe_key(k)}: {len(g)} runs" for k, g in repeats))
    return tuple(out), tuple(members), ". ".join(notes) or None


def build_report(loaded: LoadResult, options: ReportOptions | None = None) -> Report:
    """Everything the renderers print, computed once. Bad options raise ``ValueError`` with what to pass."""
    options = options or ReportOptions()
    if options.mfu_dtype is not None:
        normalize_dtype(options.mfu_dtype)  # a bad dtype is an error even when no run has a GPU
    runs = loaded.runs
    parse_tolerance(options.tolerance)  # a bad tolerance is an error even when the runs form no search
    sweeps, members, search_note = _searches(runs, options.tolerance)
    if options.engines:  # the engine's trials without a record, said in their search's section
        from green_callbacks.report.engines import engine_notes

        placed, alone = engine_notes(options.engines, members)
        sweeps = tuple(replace(s, engine_note=placed[i]) if i in placed else s for i, s in enumerate(sweeps))
        search_note = ". ".join(n.rstrip(".") for n in [search_note, *alone] if n) or None
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
        sweeps=sweeps,
        mfu=tuple(run_mfu(r, options.peak_flops_per_s, options.mfu_dtype) for r in runs),
        emissions_gco2e=total,
        emissions_runs_unavailable=missing,
        emissions_partial=partial,
        offset=None if total is None else offset_cost(total, options.offset_price),
        badges=tuple(badges),
        options=options,
        search_note=search_note,
        search_runs=members,
        phases=tuple(phase_rows([*loaded.fits, *loaded.phases])),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def run_figure_prefix(run: RunSummary) -> str:
    """File-name prefix of one run's figures (``run-<id>-``)."""
    return f"run-{_slug(run.label)}-"


RUN_FIGURES_LIMIT = 4
"""Above this many runs in a sweep, per-run figures are drawn for the best run only (unless all are asked for)."""


def figure_runs(report: Report, all_runs: bool = False) -> tuple[RunSummary, ...]:
    """The runs that get their own figures: all of them, or when searches hold many runs, the best run of each
    search (and every run in no search)."""
    if all_runs or not report.sweeps or len(report.runs) <= RUN_FIGURES_LIMIT:
        return report.runs
    best = {s.best_run for s in report.sweeps}
    in_search = {id(r) for group in report.search_runs for r in group}
    return tuple(r for r in report.runs if r.label in best or id(r) not in in_search)


class _Safe:
    """The plot functions, each returning ``None`` (no figure) instead of raising on values it cannot draw."""

    def __init__(self, module: object) -> None:
        self._module = module

    def __getattr__(self, name: str) -> object:
        function = getattr(self._module, name)

        def call(*args: object) -> object:
            try:
                return function(*args)
            except (ArithmeticError, ValueError, RuntimeError) as err:
                import warnings

                warnings.warn(f"green_callbacks report: figure {name} left out ({type(err).__name__}: {err})",
                              RuntimeWarning, stacklevel=2)
                return None

        return call


def sweep_figure_prefix(report: Report, index: int) -> str:
    """File-name prefix of a search's figures: ``sweep-`` (the first), ``sweep2-``, ``sweep3-``, ..."""
    return "sweep-" if index == 0 else f"sweep{index + 1}-"


def make_figures(report: Report, all_runs: bool = False) -> dict[str, bytes]:
    """PNG figures by file name: per run energy and metric-vs-cost; per search its best against energy (each run,
    and best-so-far against cumulative energy), the metric against each hyperparameter, and the expected best
    where it holds; searches of one metric compared on one plot.

    A sweep of more than :data:`RUN_FIGURES_LIMIT` runs gets per-run figures for its best run only, unless
    ``all_runs``. Raises :class:`~green_callbacks.report.plots.PlotUnavailable` when matplotlib is missing.
    """
    from green_callbacks.report import plots

    figures: dict[str, bytes | None] = {}
    plots = _Safe(plots)  # type: ignore[assignment]
    for index, (sweep, group) in enumerate(zip(report.sweeps, report.search_runs, strict=False)):
        prefix = sweep_figure_prefix(report, index)
        mean_j = sweep.efficiency.mean_energy_per_run_j if sweep.efficiency else None
        if mean_j is None:
            measured = [r.energy_j for r in group if r.energy_j is not None]
            mean_j = sum(measured) / len(measured) if measured else None
        figures[prefix + "best-vs-energy.png"] = plots.plot_sweep_energy(group, sweep.monitor, sweep.best_run,
                                                                         sweep)
        figures[prefix + "sensitivity.png"] = plots.plot_sensitivity(group, sweep)
        figures[prefix + "expected-best.png"] = plots.plot_expected_best(
            sweep.curve, sweep.monitor, sweep.mode, sweep.best_value, mean_j)
    same = [s for s in report.sweeps if s.monitor == (report.sweeps[0].monitor if report.sweeps else None)]
    if len(same) > 1:
        figures["searches-progress.png"] = plots.plot_search_progress(same)
    for run in figure_runs(report, all_runs):
        figures[run_figure_prefix(run) + "energy.png"] = plots.plot_energy_per_epoch(run)
        figures[run_figure_prefix(run) + "metric.png"] = plots.plot_metric_vs_cost(run)
    return {name: png for name, png in figures.items() if png is not None}

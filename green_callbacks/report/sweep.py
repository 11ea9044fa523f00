"""A set of runs as one hyperparameter search: sensitivity, cost of the search, grid detection, random-search estimate.

Green AI Standard practices 2 and 3 (after Strubell et al. 2019): report the sensitivity of the result to the
hyperparameters searched, and prefer random or Bayesian search to a brute-force grid. The estimate of what random
search would have cost uses the expected-maximum estimator of Dodge et al. 2019 (see :mod:`.stats`): it assumes
random trials drawn from the same distribution of results the sweep observed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from green_callbacks.report.runs import RunSummary
from green_callbacks.report.stats import (
    ExpectedBest,
    GroupStats,
    curve_points,
    expected_best_curve,
    group_stats,
    parse_tolerance,
    reach_threshold,
    trials_to_reach,
    variance_explained,
)

__all__ = [
    "Grid",
    "SearchEfficiency",
    "Sensitivity",
    "SweepAnalysis",
    "analyze_sweep",
    "comparable_groups",
    "comparable_key",
    "detect_grid",
]


@dataclass(frozen=True)
class Sensitivity:
    """The spread of the best metric across the values of one hyperparameter."""

    name: str
    groups: tuple[GroupStats, ...]
    variance_explained: float | None
    """Between-group over total sum of squares of the runs' best metric (eta squared); ``None`` if undefined."""


@dataclass(frozen=True)
class Grid:
    """A full Cartesian product of hyperparameter values (every combination run at least once)."""

    axes: tuple[tuple[str, tuple[str, ...]], ...]
    combinations: int
    runs: int


@dataclass(frozen=True)
class SearchEfficiency:
    """How many random trials would, in expectation, reach within ``tolerance`` of the sweep's best, and the saving."""

    tolerance: str
    threshold: float
    trials_needed: int | None
    runs: int
    trials_saved: int | None
    mean_energy_per_run_j: float | None
    energy_saved_j: float | None
    emissions_saved_gco2e: float | None
    energy_runs_measured: int


@dataclass(frozen=True)
class SweepAnalysis:
    monitor: str
    mode: str
    runs: int
    """Runs with a best value of ``monitor`` (those analysed)."""
    excluded: tuple[str, ...]
    """Why other runs were left out of the metric analysis (their energy still counts in the totals)."""
    incomplete_runs: int
    total_energy_j: float | None
    energy_runs_unavailable: int
    total_emissions_gco2e: float | None
    emissions_runs_unavailable: int
    best_run: str
    best_value: float
    best_hyperparameters: dict[str, str]
    share_not_best: float | None
    """Share of the search's measured energy spent on runs other than the one that produced the best model."""
    sensitivity: tuple[Sensitivity, ...]
    grid: Grid | None
    grid_note: str
    curve: tuple[ExpectedBest, ...]
    """Expected best of n random trials for n = 1 .. runs (beyond 50 runs, on :func:`~.stats.curve_points`)."""
    efficiency: SearchEfficiency | None
    group: str = ""
    """What makes the runs comparable (framework, model, monitored metric), when the report grouped them."""


def _label(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _varying(runs: Sequence[RunSummary]) -> tuple[list[str], list[str]]:
    """Hyperparameters present in every run that take more than one value, and those missing from some runs."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run.hyperparameters if k not in names]
    varying, partial = [], []
    for name in names:
        if not all(name in run.hyperparameters for run in runs):
            partial.append(name)
        elif len({_label(run.hyperparameters[name]) for run in runs}) > 1:
            varying.append(name)
    return varying, partial


def detect_grid(runs: Sequence[RunSummary], names: Sequence[str]) -> tuple[Grid | None, str]:
    """A :class:`Grid` when the runs' values of ``names`` (two or more) form a full Cartesian product."""
    if len(names) < 2:
        return None, (
            "one hyperparameter varies: a one-dimensional sweep cannot be told apart from a random search"
            if names else "no hyperparameter recorded in every run varies across them"
        )
    axes = tuple((n, tuple(sorted({_label(r.hyperparameters[n]) for r in runs}, key=_sort_key))) for n in names)
    seen = {tuple(_label(r.hyperparameters[n]) for n in names) for r in runs}
    size = math.prod(len(values) for _, values in axes)
    shape = " x ".join(str(len(values)) for _, values in axes)
    if len(seen) == size:
        return Grid(axes, size, len(runs)), f"a full {shape} grid over {', '.join(names)} ({len(runs)} runs)"
    return None, f"not a grid: {len(seen)} of the {size} combinations of a {shape} product were run"


def _sum_known(values: Sequence[float | None]) -> tuple[float | None, int]:
    known = [v for v in values if v is not None]
    return (sum(known) if known else None), len(values) - len(known)


def analyze_sweep(
    runs: Sequence[RunSummary], tolerance: str | float = "1%", n_max: int = 10_000, group: str = ""
) -> SweepAnalysis | None:
    """Analyse ``runs`` as one search; ``None`` when fewer than two runs have a best value of a common metric.

    The caller says which runs form the search (the report passes one group of :func:`comparable_groups`); all
    their energy counts in the search's cost, and runs of another monitored metric are left out of the metric's
    analysis with a note.
    """
    scored: list[tuple[RunSummary, str, str, float]] = []
    for run in runs:
        conv = run.convergence
        if conv is not None and conv.best_value is not None:
            scored.append((run, conv.monitor, conv.mode, conv.best_value))
    if len(scored) < 2:
        return None
    (monitor, mode), _ = Counter((m, d) for _, m, d, _ in scored).most_common(1)[0]
    used = [r for r, m, d, _ in scored if (m, d) == (monitor, mode)]
    values = [v for _, m, d, v in scored if (m, d) == (monitor, mode)]
    if len(used) < 2:
        return None
    excluded = [f"{r.label}: monitors {m} ({d}), not {monitor} ({mode})" for r, m, d, _ in scored
                if (m, d) != (monitor, mode)]
    with_value = {id(r) for r, *_ in scored}
    excluded += [f"{r.label}: no value of its monitored metric" for r in runs if id(r) not in with_value]
    pick = max if mode == "max" else min
    best_index = pick(range(len(values)), key=lambda i: values[i])
    best, best_value = used[best_index], values[best_index]

    energy, energy_missing = _sum_known([r.energy_j for r in runs])
    emissions, emissions_missing = _sum_known([r.emissions_gco2e for r in runs])
    share = None
    if energy and best.energy_j is not None:
        share = (energy - best.energy_j) / energy

    names, partial = _varying(used)
    excluded += [f"hyperparameter {n!r} is missing from some runs; left out of sensitivity and grid" for n in partial]
    sensitivity = []
    for name in names:
        groups: dict[str, list[float]] = {}
        for run, value in zip(used, values, strict=True):
            groups.setdefault(_label(run.hyperparameters[name]), []).append(value)
        ordered = sorted(groups, key=_sort_key)
        sensitivity.append(Sensitivity(
            name=name,
            groups=tuple(group_stats(label, groups[label]) for label in ordered),
            variance_explained=variance_explained([groups[label] for label in ordered]),
        ))
    grid, grid_note = detect_grid(used, names)
    curve = tuple(expected_best_curve(values, mode, points=curve_points(len(values))))

    amount, relative = parse_tolerance(tolerance)
    threshold = reach_threshold(best_value, mode, amount, relative)
    needed = trials_to_reach(values, mode, threshold, n_max=n_max)
    measured = [r.energy_j for r in used if r.energy_j is not None]
    measured_g = [r.emissions_gco2e for r in used if r.emissions_gco2e is not None]
    mean_j = sum(measured) / len(measured) if measured else None
    mean_g = sum(measured_g) / len(measured_g) if measured_g else None
    saved = None if needed is None else max(len(used) - needed, 0)
    efficiency = SearchEfficiency(
        tolerance=str(tolerance),
        threshold=threshold,
        trials_needed=needed,
        runs=len(used),
        trials_saved=saved,
        mean_energy_per_run_j=mean_j,
        energy_saved_j=None if saved is None or mean_j is None else mean_j * saved,
        emissions_saved_gco2e=None if saved is None or mean_g is None else mean_g * saved,
        energy_runs_measured=len(measured),
    )
    return SweepAnalysis(
        monitor=monitor,
        mode=mode,
        runs=len(used),
        excluded=tuple(excluded),
        incomplete_runs=sum(1 for r in runs if not r.complete),
        total_energy_j=energy,
        energy_runs_unavailable=energy_missing,
        total_emissions_gco2e=emissions,
        emissions_runs_unavailable=emissions_missing,
        best_run=best.label,
        best_value=best_value,
        best_hyperparameters={n: _label(best.hyperparameters[n]) for n in names},
        share_not_best=share,
        sensitivity=tuple(sensitivity),
        grid=grid,
        grid_note=grid_note,
        curve=curve,
        efficiency=efficiency,
        group=group,
    )


def comparable_key(run: RunSummary) -> tuple[str, str, str, str] | None:
    """What must be equal for two runs to belong to one search: framework, model (``""`` when the record names
    none) and the monitored metric with its mode. ``None`` for a run that monitors no metric."""
    conv = run.convergence
    if conv is None:
        return None
    return (run.framework, run.model or "", conv.monitor, conv.mode)


def describe_key(key: tuple[str, str, str, str]) -> str:
    framework, model, monitor, mode = key
    return f"{framework} runs{f' of model {model}' if model else ''} monitoring {monitor} ({mode})"


def comparable_groups(runs: Sequence[RunSummary]) -> list[tuple[tuple[str, str, str, str], list[RunSummary]]]:
    """The runs grouped by :func:`comparable_key`, in order of first appearance; a group is a search when two or
    more of its runs have a best value (runs monitoring nothing are in no group)."""
    groups: dict[tuple[str, str, str, str], list[RunSummary]] = {}
    for run in runs:
        key = comparable_key(run)
        if key is not None:
            groups.setdefault(key, []).append(run)
    return list(groups.items())


def is_search(group: Sequence[RunSummary]) -> bool:
    return sum(1 for r in group if r.convergence is not None and r.convergence.best_value is not None) >= 2

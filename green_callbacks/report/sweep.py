"""A set of runs as one hyperparameter search: what the search is, sensitivity, cost, efficiency by method.

Green AI Standard practices 2 and 3 (after Strubell et al. 2019): report the sensitivity of the result to the
hyperparameters searched, and prefer random or Bayesian search to a brute-force grid.

* **What a search is** (:func:`search_key`): the runs that name one search (``search=``, or a search engine); else
  runs of one model fingerprint (architecture and parameter count), data signature and monitored metric; records
  older than fingerprints are grouped only by framework, model name, hyperparameter names and monitored metric,
  never by a class name alone. A group without a declared search is one only when some hyperparameter varies
  (otherwise it is repeated runs of one configuration).
* **Sensitivity** (:mod:`.sensitivity`): one importance per hyperparameter with a bootstrap interval.
* **Efficiency by method**: best-so-far against cumulative energy for every search, pruned and failed trials in
  the cost; the expected best of n trials (Dodge et al. 2019) only where the trials are independent draws (random
  search, a grid in random order: the unbiased without-replacement estimator), never for TPE/Bayesian or pruned
  searches; "random search would have saved" only for grids; for a Bayesian search, an estimate of the random
  trials needed to reach its best, said to be one, with its assumption.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.search import BAYESIAN_METHODS, SearchInfo
from green_callbacks.report.runs import RunSummary
from green_callbacks.report.sensitivity import Importance, importance, importances, short_number
from green_callbacks.report.stats import (
    ExpectedBest,
    GroupStats,
    curve_points,
    expected_best_without_replacement,
    parse_tolerance,
    reach_threshold,
    trials_to_reach,
)

__all__ = [
    "Grid",
    "Progress",
    "SearchEfficiency",
    "Sensitivity",
    "SweepAnalysis",
    "analyze_sweep",
    "comparable_groups",
    "comparable_key",
    "detect_grid",
    "search_cost_j",
    "search_of",
    "trial_state",
]


@dataclass(frozen=True)
class Sensitivity:
    """The effect of one hyperparameter on the best metric: :attr:`importance` (one row of the report), and the
    groups it was computed over (values, or bins of a continuous parameter)."""

    name: str
    groups: tuple[GroupStats, ...]
    variance_explained: float | None
    """Between-group over total sum of squares of the runs' best metric (eta squared); ``None`` if undefined."""
    importance: Importance | None = None


@dataclass(frozen=True)
class Grid:
    """A full Cartesian product of hyperparameter values (every combination run at least once)."""

    axes: tuple[tuple[str, tuple[str, ...]], ...]
    combinations: int
    runs: int


@dataclass(frozen=True)
class SearchEfficiency:
    """How many random trials would, in expectation, reach within ``tolerance`` of the sweep's best, and the saving
    (a saving only for a grid: :attr:`SweepAnalysis.method`)."""

    tolerance: str
    threshold: float
    trials_needed: int | None
    runs: int
    trials_saved: int | None
    mean_energy_per_run_j: float | None
    energy_saved_j: float | None
    emissions_saved_gco2e: float | None
    energy_runs_measured: int
    mean_energy_low_j: float | None = None
    mean_energy_high_j: float | None = None
    """The range of :attr:`mean_energy_per_run_j` (docs/uncertainty.md): the measured runs' own intervals averaged
    linearly (fully correlated, as one sensor's calibration is; the conservative choice when they are not);
    ``None`` when a measured run has no basis for an interval. The savings scale it by their number of runs."""


@dataclass(frozen=True)
class Progress:
    """One trial of the search in order: its state and the best value found so far against the cost so far."""

    trial: int
    run: str
    state: str
    value: float | None
    best_so_far: float | None
    energy_j: float | None
    """Cumulative measured energy of the trials so far (``None`` until one is measured)."""
    emissions_gco2e: float | None


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
    """Expected best of n trials for n = 1 .. runs (beyond 50 runs, on :func:`~.stats.curve_points`), unbiased
    (without replacement); empty where the trials are not independent draws (:attr:`curve_note` says why)."""
    efficiency: SearchEfficiency | None
    group: str = ""
    """What makes the runs comparable (framework, model, monitored metric), when the report grouped them."""
    method: str | None = None
    """How the trials were drawn, as the records declare it (``grid``, ``random``, ``tpe``, ...); ``None``: not
    recorded."""
    name: str | None = None
    """The declared search's name."""
    rule: str = ""
    """Which rule grouped these runs into one search."""
    curve_note: str = ""
    pruned_runs: int = 0
    failed_runs: int = 0
    energy_stopped_j: float | None = None
    """Measured energy of the pruned and failed trials (in :attr:`total_energy_j` too)."""
    progress: tuple[Progress, ...] = ()
    energy_cut_epochs_j: float | None = None
    """Of :attr:`total_energy_j`, the epochs cut short (a trial pruned in its validation): in the search's cost, not
    in their records' totals (:func:`search_cost_j`); ``None`` when no trial has one."""
    engine_note: str = ""
    """The search engine's trials against the records (``report --optuna-storage``/``--ray-experiment``), if read."""


def search_of(run: RunSummary) -> SearchInfo | None:
    """The search a run's record declares, if any."""
    return None if run.record is None else run.record.search


def _cut_epoch_j(run: RunSummary) -> float | None:
    return None if run.partial_epoch is None else run.partial_epoch.energy_j


def search_cost_j(run: RunSummary) -> float | None:
    """A trial's energy in its search's cost: its totals (complete epochs, what the record's convergence and
    per-epoch figures cover) plus its epoch cut short, if any (a trial pruned in its validation keeps it in
    ``partial_epoch``, measured on the process that wrote the record). ``None``: neither was measured."""
    cut = _cut_epoch_j(run)
    if run.energy_j is None:
        return cut
    return run.energy_j if cut is None else run.energy_j + cut


def trial_state(run: RunSummary) -> str:
    """``complete``, ``pruned`` or ``failed``: as the search declared it, else from the run (an Optuna
    ``TrialPruned`` ending the run is a pruned trial; any other end short of completion a failed one)."""
    info = search_of(run)
    if info is not None and info.state:
        return info.state
    if run.error and "TrialPruned" in run.error:
        return "pruned"
    return "complete" if run.complete else "failed"


def _label(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return short_number(value)
    return json.dumps(value, sort_keys=True, default=str)


def _sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _varying(runs: Sequence[RunSummary]) -> tuple[list[str], list[str]]:
    """Hyperparameters present in every run that take more than one value, and those missing from some runs
    (conditional parameters) that take more than one value where present."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run.hyperparameters if k not in names]
    varying, partial = [], []
    for name in names:
        values = {_label(run.hyperparameters[name]) for run in runs if name in run.hyperparameters}
        if not all(name in run.hyperparameters for run in runs):
            if len(values) > 1:
                partial.append(name)
        elif len(values) > 1:
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


def _mean_interval(runs: Sequence[RunSummary]) -> tuple[float | None, float | None]:
    """The mean of the runs' energy intervals (low ends, high ends), or ``(None, None)`` when one has none."""
    lows, highs = [], []
    for run in runs:
        totals = None if run.record is None else run.record.totals
        low = None if totals is None else totals.energy_low_j
        high = None if totals is None else totals.energy_high_j
        if low is None or high is None:
            return None, None
        lows.append(low)
        highs.append(high)
    if not lows:
        return None, None
    return sum(lows) / len(lows), sum(highs) / len(highs)


def _method(runs: Sequence[RunSummary]) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """The declared method, name and space of the runs' search (the most common; ``None`` when not recorded)."""
    infos = [i for i in (search_of(r) for r in runs) if i is not None]
    if not infos:
        return None, None, None
    methods = Counter(i.method for i in infos if i.method)
    method = methods.most_common(1)[0][0] if methods else None
    space = next((dict(i.space) for i in infos if i.space), None)
    return method, infos[0].name, space


def _ordered(runs: Sequence[RunSummary]) -> list[RunSummary]:
    """The trials in the order they ran: by declared trial number, else by start time, else as given."""
    numbers = [getattr(search_of(r), "trial", None) for r in runs]
    if all(isinstance(n, int) for n in numbers):
        return [r for _, _, r in sorted(zip(numbers, range(len(runs)), runs, strict=True))]
    started = [r.record.started_at if r.record is not None else None for r in runs]
    if all(isinstance(t, (int, float)) for t in started):
        return [r for _, _, r in sorted(zip(started, range(len(runs)), runs, strict=True))]
    return list(runs)


def _progress(runs: Sequence[RunSummary], monitor: str, mode: str) -> tuple[Progress, ...]:
    out = []
    best: float | None = None
    energy: float | None = None
    grams: float | None = None
    for index, run in enumerate(_ordered(runs), start=1):
        state = trial_state(run)
        conv = run.convergence
        value = conv.best_value if conv is not None and conv.monitor == monitor and state != "pruned" else None
        if value is not None and (best is None or (value > best if mode == "max" else value < best)):
            best = value
        cost = search_cost_j(run)
        if cost is not None:
            energy = (energy or 0.0) + cost
        if run.emissions_gco2e is not None:
            grams = (grams or 0.0) + run.emissions_gco2e
        out.append(Progress(trial=index, run=run.label, state=state, value=value, best_so_far=best,
                            energy_j=energy, emissions_gco2e=grams))
    return tuple(out)


_ADAPTIVE_SCHEDULERS = ("hyperband", "asha", "pbt")


def _curve_policy(method: str | None, grid: Grid | None, pruned: int) -> tuple[bool, str]:
    """Whether the expected-best curve holds for this search, and what the report says about it."""
    if pruned:
        return False, (f"not shown: {pruned} trial(s) were pruned (stopped early on their intermediate results), so "
                       "the trials' results are not independent draws from one distribution")
    if method in BAYESIAN_METHODS or method in _ADAPTIVE_SCHEDULERS:
        return False, (f"not shown: a {method} search chooses each trial from the earlier results, so its trials "
                       "are not independent draws (the estimator's assumption)")
    if method in ("random", "qmc"):
        return True, ("unbiased estimator, drawing n of the N trials without replacement (Tang et al. 2020): the "
                      "trials of a random search are independent draws")
    if method == "grid" or grid is not None:
        return True, ("unbiased estimator, drawing n of the N trials without replacement: exact for the grid's "
                      "points taken in random order (Tang et al. 2020)")
    if method is None:
        return True, ("unbiased estimator, drawing n of the N trials without replacement; it assumes the runs were "
                      "independent random draws (the search's method is not recorded)")
    return False, f"not shown: the search's method ({method}) is not one whose trials are known to be independent"


def analyze_sweep(
    runs: Sequence[RunSummary], tolerance: str | float = "1%", n_max: int = 10_000, group: str = "",
    rule: str = "",
) -> SweepAnalysis | None:
    """Analyse ``runs`` as one search; ``None`` when fewer than two runs have a best value of a common metric.

    The caller says which runs form the search (the report passes one group of :func:`comparable_groups`); all
    their energy counts in the search's cost (pruned and failed trials too), and runs of another monitored metric,
    and pruned trials (their metric was cut short), are left out of the metric's analysis with a note. The runs
    are taken in the order they ran (:func:`_ordered`), not the order their files were found: a search reads the
    same from any folder layout (an engine's experiment folder, or the records' own folder).
    """
    runs = _ordered(runs)
    states = {id(r): trial_state(r) for r in runs}
    scored: list[tuple[RunSummary, str, str, float]] = []
    for run in runs:
        conv = run.convergence
        if conv is not None and conv.best_value is not None and states[id(run)] != "pruned":
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
    pruned = [r for r in runs if states[id(r)] == "pruned"]
    failed = [r for r in runs if states[id(r)] == "failed"]
    if pruned:
        excluded.append(f"{len(pruned)} pruned trial(s): their energy counts in the search's cost, their metric "
                        "(cut short) does not count in the analysis")
    excluded += [f"{r.label}: no value of its monitored metric" for r in runs
                 if id(r) not in with_value and states[id(r)] != "pruned"]
    pick = max if mode == "max" else min
    best_index = pick(range(len(values)), key=lambda i: values[i])
    best, best_value = used[best_index], values[best_index]

    energy, energy_missing = _sum_known([search_cost_j(r) for r in runs])
    emissions, emissions_missing = _sum_known([r.emissions_gco2e for r in runs])
    stopped, _ = _sum_known([search_cost_j(r) for r in [*pruned, *failed]])
    cut, _ = _sum_known([_cut_epoch_j(r) for r in runs])
    share = None
    if energy and best.energy_j is not None:
        share = (energy - best.energy_j) / energy

    method, name, space = _method(runs)
    names, partial = _varying(used)
    joint = importances({n: [r.hyperparameters[n] for r in used] for n in names}, values, mode, space=space,
                        seed=zlib.crc32(" ".join(names).encode("utf-8"))) if names else {}
    sensitivity = []
    for param in [*names, *partial]:
        found = joint.get(param)
        if found is None:  # conditional: over the runs where it is set
            having = [(r, v) for r, v in zip(used, values, strict=True) if param in r.hyperparameters]
            found = importance(param, [r.hyperparameters[param] for r, _ in having], [v for _, v in having], mode,
                               space=space, total_runs=len(used), seed=zlib.crc32(param.encode("utf-8")))
        sensitivity.append(Sensitivity(name=param, groups=found.groups, variance_explained=found.eta_squared,
                                       importance=found))
    if method in (None, "grid"):
        grid, grid_note = detect_grid(used, names)
        if partial:
            grid_note += f" (conditional parameter(s) {', '.join(partial)} left out)"
    else:
        grid, grid_note = None, f"a {method} search ({len(runs)} trial(s))"
    holds, curve_note = _curve_policy(method, grid, len(pruned))
    curve = tuple(expected_best_without_replacement(values, mode, points=curve_points(len(values)))) if holds else ()

    efficiency = None
    if method is None or method == "grid" or method in BAYESIAN_METHODS:
        amount, relative = parse_tolerance(tolerance)
        threshold = reach_threshold(best_value, mode, amount, relative)
        needed = trials_to_reach(values, mode, threshold, n_max=n_max)
        measured = [r.energy_j for r in used if r.energy_j is not None]
        measured_g = [r.emissions_gco2e for r in used if r.emissions_gco2e is not None]
        mean_j = sum(measured) / len(measured) if measured else None
        mean_g = sum(measured_g) / len(measured_g) if measured_g else None
        mean_low, mean_high = _mean_interval([r for r in used if r.energy_j is not None])
        saved = None if needed is None or grid is None else max(len(used) - needed, 0)
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
            mean_energy_low_j=mean_low,
            mean_energy_high_j=mean_high,
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
        best_hyperparameters={n: _label(best.hyperparameters[n]) for n in [*names, *partial]
                              if n in best.hyperparameters},
        share_not_best=share,
        sensitivity=tuple(sensitivity),
        grid=grid,
        grid_note=grid_note,
        curve=curve,
        efficiency=efficiency,
        group=group,
        method=method,
        name=name,
        rule=rule,
        curve_note=curve_note,
        pruned_runs=len(pruned),
        failed_runs=len(failed),
        energy_stopped_j=stopped,
        progress=_progress(runs, monitor, mode),
        energy_cut_epochs_j=cut,
    )


# ------------------------------------------------------------------------------------------ what a search is
RULE_DECLARED = "the runs name one search (search=, or their search engine)"
RULE_FINGERPRINT = ("no search is declared, and the runs share the model fingerprint (architecture and parameter "
                    "count), the data signature and the monitored metric, while a hyperparameter varies")
RULE_LEGACY = ("no search is declared and the records have no model fingerprint (written before fingerprints): the "
               "runs share framework, model name, hyperparameter names and monitored metric, while a "
               "hyperparameter varies")

Key = tuple[Any, ...]


def comparable_key(run: RunSummary) -> Key | None:
    """What must be equal for two runs to belong to one search; ``None`` for a run that monitors no metric.

    A declared search (its name) wins; else the model fingerprint with the data signature, framework and metric;
    else (a record without a fingerprint) framework, model name, the set of hyperparameter names and the metric.
    """
    conv = run.convergence
    if conv is None:
        return None
    info = search_of(run)
    if info is not None:
        return ("search", info.name, conv.monitor, conv.mode)
    model = None if run.record is None else run.record.model_info
    if model is not None and model.fingerprint:
        return ("model", run.framework, model.fingerprint, model.data_signature or "", conv.monitor, conv.mode,
                model.name or "", model.parameters)
    return ("legacy", run.framework, run.model or "", tuple(sorted(run.hyperparameters)), conv.monitor, conv.mode)


def describe_key(key: Key) -> str:
    if key[0] == "search":
        return f"search {key[1]!r}, monitoring {key[2]} ({key[3]})"
    if key[0] == "model":
        _, framework, fingerprint, _data, monitor, mode, name, parameters = key
        size = f", {parameters:,} parameters" if isinstance(parameters, int) else ""
        return f"{framework} runs of model {name or '?'} ({fingerprint[:15]}{size}) monitoring {monitor} ({mode})"
    _, framework, model, _names, monitor, mode = key
    return f"{framework} runs{f' of model {model}' if model else ''} monitoring {monitor} ({mode})"


def rule_of(key: Key) -> str:
    return {"search": RULE_DECLARED, "model": RULE_FINGERPRINT}.get(key[0], RULE_LEGACY)


def comparable_groups(runs: Sequence[RunSummary]) -> list[tuple[Key, list[RunSummary]]]:
    """The runs grouped by :func:`comparable_key`, in order of first appearance (runs monitoring nothing are in no
    group); :func:`is_search` says which groups are searches."""
    groups: dict[Key, list[RunSummary]] = {}
    for run in runs:
        key = comparable_key(run)
        if key is not None:
            groups.setdefault(key, []).append(run)
    return list(groups.items())


def _scored(group: Sequence[RunSummary]) -> list[RunSummary]:
    return [r for r in group if r.convergence is not None and r.convergence.best_value is not None]


def is_search(group: Sequence[RunSummary], key: Key | None = None) -> bool:
    """Two or more runs with a best value; for a group the report inferred (no declared search), some
    hyperparameter must also vary: runs of one configuration are repeats, not a search."""
    scored = _scored(group)
    if len(scored) < 2:
        return False
    if key is None:
        key = comparable_key(group[0])
    if key is not None and key[0] == "search":
        return True
    varying, partial = _varying(scored)
    return bool(varying or partial)


def is_repeat(group: Sequence[RunSummary], key: Key) -> bool:
    """Two or more scored runs of one configuration (an inferred group where no hyperparameter varies)."""
    return len(_scored(group)) >= 2 and not is_search(group, key)

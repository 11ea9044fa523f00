"""How much each hyperparameter moves the search's best metric: one answer per hyperparameter, with an interval.

Green AI Standard practice 2 ("report the sensitivity of hyperparameters", after Strubell et al. 2019). The method
is chosen to be right for the kind of parameter, and needs nothing beyond the Python standard library:

* **continuous parameters** are not grouped by exact value (in a random or Bayesian search every value is distinct,
  and one-run groups "explain" 100 % of anything). Their effect is a quadratic in the parameter on its own scale —
  ``log10`` for a log-scaled one (declared in the search space, or inferred when the values span two decades or
  more) — which sees an optimum inside the range (the usual shape of a learning rate) as well as a monotone
  effect, for two degrees of freedom;
* **categorical and few-valued parameters** (a grid's axes, an optimizer's name) have one effect per value;
* all main effects are **fitted together** (an additive model, by backfitting), so that one parameter's effect is
  not counted as another's noise (in a grid, the learning rate's effect does not hide the batch size's);
* **conditional parameters** (present in some runs only) are analysed alone over the runs that have them.

The importance is epsilon squared, the share of the metric's variance a parameter explains *beyond what chance
gives its degrees of freedom*: ``(SS_effect - df MS_residual) / SS_total`` (eta squared's null expectation is
``df / (N - 1)``, so eta squared over many small groups reads high on noise); shown within [0, 1]. Its 95 %
interval is a bias-corrected percentile interval (Efron 1987) over a Bayesian bootstrap (Rubin 1981: the runs
weighed by Dirichlet weights, never repeated, so a repeated run cannot fake a tight group), and each parameter has
a permutation p-value (its values shuffled over the runs, the others kept; Phipson & Smyth 2010). Verdicts: below
:data:`MIN_RUNS` runs "too few runs to tell" (an exact Spearman permutation test cannot reach p < 0.05 below 5
runs); "matters" when the interval's low end is above 0 and p < 0.05; "negligible" (no effect detected) when not
and the estimate is under :data:`NEGLIGIBLE`; otherwise "unclear". A parameter with a new value in every run has
no within-value variance: no estimate at all. Above :data:`MAX_RESAMPLED` runs the interval and the test use a
random subset of that many runs (wider, never narrower); the estimate uses every run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from green_callbacks.report.stats import GroupStats, group_stats, variance_explained

__all__ = [
    "MIN_RUNS",
    "NEGLIGIBLE",
    "Importance",
    "epsilon_squared",
    "importance",
    "importances",
    "short_number",
]

MIN_RUNS = 5
"""Below this many runs (with the parameter) the verdict is "too few runs to tell"."""
NEGLIGIBLE = 0.25
"""An importance under this, whose interval includes 0, is called negligible (no effect detected): with 20 runs
in 4 bins, epsilon squared of a parameter without effect has a standard deviation of about 0.1."""
BOOTSTRAP = 400
PERMUTATIONS = 99
MAX_RESAMPLED = 300
MAX_LEVELS = 10
"""A numeric parameter with more distinct values than this (or than a third of the runs) is continuous."""
MAX_BINS = 5
RUNS_PER_BIN = 5


def short_number(value: Any) -> str:
    """A number at the precision it carries: ``0.001`` for a float32 ``0.0010000000474974513``, ``1e-05``, ``64``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return format(value, ".7g") if value != 0 else "0"


def _region(value: float) -> str:
    return format(value, ".2g")


@dataclass(frozen=True)
class Importance:
    """One hyperparameter's effect on the best metric."""

    name: str
    scale: str
    """``log10``, ``linear`` or ``categorical``."""
    scale_source: str
    """``declared`` (the search space), ``inferred`` (from the values) or ``values`` (not numbers)."""
    grouping: str
    """How the runs were grouped, e.g. ``4 equal-count bins on log10`` or ``by value``."""
    runs: int
    """Runs that have this parameter (all runs, or fewer for a conditional parameter)."""
    importance: float | None
    """Epsilon squared clipped to [0, 1]; ``None`` when it cannot be estimated (see :attr:`verdict`)."""
    low: float | None
    high: float | None
    """95 % bias-corrected bootstrap interval of epsilon squared, clipped to [0, 1] like the estimate (a low end of
    0: no effect can be told apart from chance)."""
    verdict: str
    direction: str
    best_region: str
    groups: tuple[GroupStats, ...] = ()
    eta_squared: float | None = None
    """Between-group over total sum of squares of the same grouping (for the by-value table)."""
    conditional: bool = False
    p_value: float | None = None
    """Permutation p-value of the parameter's effect (its values shuffled over the runs, the others kept)."""


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def epsilon_squared(groups: Sequence[Sequence[float]]) -> float | None:
    """``(SS_between - (k - 1) MS_within) / SS_total``; ``None`` with fewer than two groups, no within-group
    degrees of freedom (every group a single run), or a constant metric."""
    data = [g for g in groups if g]
    count = sum(len(g) for g in data)
    k = len(data)
    if k < 2 or count - k < 1:
        return None
    grand = sum(v for g in data for v in g) / count
    total = sum((v - grand) ** 2 for g in data for v in g)
    if total <= 1e-300:
        return None
    between = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in data)
    within = total - between
    return (between - (k - 1) * within / (count - k)) / total


def _bins(count: int) -> int:
    return max(2, min(MAX_BINS, count // RUNS_PER_BIN))


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _scale(name: str, values: Sequence[Any], space: Mapping[str, Any] | None) -> tuple[str, str]:
    declared = None if space is None else space.get(name)
    if declared is not None:
        distribution = getattr(declared, "distribution", None)
        if distribution == "categorical" or not _numeric(values):
            return "categorical", "declared"
        if distribution == "log" and all(v > 0 for v in values):
            return "log10", "declared"
        return "linear", "declared"
    if not _numeric(values):
        return "categorical", "values"
    low, high = min(values), max(values)
    if low > 0 and high / low >= 100:
        return "log10", "inferred"
    return "linear", "inferred"


def _label(value: Any) -> str:
    return short_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class _Column:
    """One hyperparameter prepared for the fit: its values on its scale and how they are grouped."""

    name: str
    values: tuple[Any, ...]
    xs: tuple[Any, ...]
    scale: str
    source: str
    by_value: bool
    bins: int


def _column(name: str, values: Sequence[Any], space: Mapping[str, Any] | None) -> _Column:
    count = len(values)
    scale, source = _scale(name, values, space)
    distinct = len({_label(v) for v in values})
    by_value = scale == "categorical" or distinct <= min(MAX_LEVELS, max(2, count // 3))
    if scale == "log10":
        xs: list[Any] = [math.log10(v) for v in values]
    elif scale == "linear":
        xs = [float(v) for v in values]
    else:
        xs = [_label(v) for v in values]
    return _Column(name, tuple(values), tuple(xs), scale, source, by_value, _bins(count))


def _assign(xs: Sequence[Any], by_value: bool, bins: int) -> list[int]:
    """The group of each run: its value's rank among the distinct values (by value; labels sorted), or its
    equal-count bin in the order of ``xs`` (equal values never split)."""
    if by_value:
        order = {x: index for index, x in enumerate(sorted(set(xs), key=lambda x: (str(type(x)), x)))}
        return [order[x] for x in xs]
    ranked = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0] * len(xs)
    group, previous = -1, None
    for position, i in enumerate(ranked):
        target = min(bins - 1, position * bins // len(xs))
        if group < 0 or (target > group and xs[i] != previous):
            group += 1
        out[i] = group
        previous = xs[i]
    return out


Term = tuple[str, Sequence[Any]]
"""One parameter in the fit: ``("groups", group of each run)`` or ``("quadratic", standardised value of each run)``."""


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting; a vanishing pivot (collinear columns) gives that coefficient 0."""
    size = len(vector)
    rows = [[*row, value] for row, value in zip(matrix, vector, strict=True)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        if abs(rows[col][col]) < 1e-12:
            rows[col] = [0.0] * (size + 1)
            continue
        for r in range(size):
            if r != col and rows[r][col]:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col], strict=True)]
    return [rows[i][size] / rows[i][i] if rows[i][i] else 0.0 for i in range(size)]


def _smooth(term: Term, target: Sequence[float], w: Sequence[float]) -> list[float]:
    """The term's fit to ``target``: weighted group means, or a weighted quadratic in the value; centred."""
    kind, data = term
    if kind == "groups":
        size = max(data) + 1
        sums, mass = [0.0] * size, [0.0] * size
        for i, g in enumerate(data):
            sums[g] += w[i] * target[i]
            mass[g] += w[i]
        means = [sums[g] / mass[g] if mass[g] > 0 else 0.0 for g in range(size)]
        out = [means[g] for g in data]
    else:
        s0 = s1 = s2 = s3 = s4 = t0 = t1 = t2 = 0.0
        for wi, z, r in zip(w, data, target, strict=True):
            wz = wi * z
            wz2 = wz * z
            s0 += wi
            s1 += wz
            s2 += wz2
            s3 += wz2 * z
            s4 += wz2 * z * z
            t0 += wi * r
            t1 += wz * r
            t2 += wz2 * r
        a, b, c = _solve([[s0, s1, s2], [s1, s2, s3], [s2, s3, s4]], [t0, t1, t2])
        out = [a + b * z + c * z * z for z in data]
    centre = sum(wi * v for wi, v in zip(w, out, strict=True)) / sum(w)
    return [v - centre for v in out]


def _df(term: Term) -> int:
    return max(term[1]) if term[0] == "groups" else 2


def _fit(terms: Sequence[Term], y: Sequence[float], weights: Sequence[float] | None = None) -> tuple[
        list[float], float, int, float, list[list[float]]] | None:
    """The main effects of every hyperparameter at once, fitted by backfitting (each term's smooth of what the
    others leave): each effect's sum of squares, the residual sum of squares and degrees of freedom, the total sum
    of squares, and each effect's fitted value per run. ``weights`` (summing to the number of runs) are the
    Bayesian bootstrap's; ``None`` when nothing varies or no degree of freedom is left for the residual."""
    count = len(y)
    w = [1.0] * count if weights is None else list(weights)
    grand = sum(wi * yi for wi, yi in zip(w, y, strict=True)) / sum(w)
    total = sum(wi * (yi - grand) ** 2 for wi, yi in zip(w, y, strict=True))
    df_res = count - 1 - sum(_df(t) for t in terms)
    if total <= 1e-300 or df_res < 1:
        return None
    fitted = [[0.0] * count for _ in terms]
    together = [0.0] * count
    for _ in range(50):
        change = 0.0
        for j, term in enumerate(terms):
            own = fitted[j]
            new = _smooth(term, [y[i] - grand - together[i] + own[i] for i in range(count)], w)
            for i in range(count):
                together[i] += new[i] - own[i]
                change += w[i] * (new[i] - own[i]) ** 2
            fitted[j] = new
        if change <= 1e-7 * total or len(terms) == 1:
            break
    residual = sum(wi * (yi - grand - t) ** 2 for wi, yi, t in zip(w, y, together, strict=True))
    squares = [sum(wi * v * v for wi, v in zip(w, f, strict=True)) for f in fitted]
    return squares, residual, df_res, total, fitted


def _epsilons(terms: Sequence[Term], y: Sequence[float], weights: Sequence[float] | None = None) -> list[float] | None:
    """Epsilon squared of every term from one fit: (SS_term - df_term MS_residual) / SS_total."""
    found = _fit(terms, y, weights)
    if found is None:
        return None
    squares, residual, df_res, total, _ = found
    mean_square = residual / df_res
    return [(square - _df(t) * mean_square) / total for square, t in zip(squares, terms, strict=True)]


def _term(column: _Column) -> Term:
    if column.by_value:
        return ("groups", _assign(column.xs, True, 0))
    mean = sum(column.xs) / len(column.xs)
    spread = math.sqrt(sum((x - mean) ** 2 for x in column.xs) / len(column.xs)) or 1.0
    return ("quadratic", [(x - mean) / spread for x in column.xs])


def _interval(found: Sequence[float], estimate: float) -> tuple[float, float]:
    # bias-corrected percentile interval (Efron 1987): resamples repeat runs, which shrinks the spread within groups
    # and shifts the resampled estimates up; z0 measures that shift and moves both percentiles back by it
    ordered = sorted(found)
    normal = NormalDist()
    below = sum(1 for v in ordered if v < estimate) + 0.5 * sum(1 for v in ordered if v == estimate)
    z0 = normal.inv_cdf(min(max(below / len(ordered), 1 / (len(ordered) + 1)), len(ordered) / (len(ordered) + 1)))
    low_q, high_q = normal.cdf(2 * z0 + normal.inv_cdf(0.025)), normal.cdf(2 * z0 + normal.inv_cdf(0.975))
    low, high = _percentile(ordered, low_q), _percentile(ordered, high_q)
    return min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0)  # a share of variance, like the estimate


def _subset(term: Term, rows: Sequence[int]) -> Term:
    kind, data = term
    values = [data[i] for i in rows]
    if kind == "groups":  # numbered again from 0 (a group may be missing from the subset)
        order = {g: index for index, g in enumerate(sorted(set(values)))}
        values = [order[g] for g in values]
    return (kind, values)


def _resampled(terms: Sequence[Term], y: Sequence[float], estimates: Sequence[float],
               rng: random.Random) -> tuple[list[tuple[float, float] | None], list[float | None]]:
    """The bootstrap interval and the permutation p-value of every term."""
    count = len(y)
    intervals: list[tuple[float, float] | None] = [None] * len(terms)
    p_values: list[float | None] = [None] * len(terms)
    # the Bayesian bootstrap (Rubin 1981): each draw weighs the runs by Dirichlet(1, ..., 1) weights instead of
    # repeating some, so the groups stay as they are and no run is counted twice in its own group's spread
    draws = max(100, min(BOOTSTRAP, 200_000 // max(count * len(terms), 1)))
    samples: list[list[float]] = [[] for _ in terms]
    for _ in range(draws):
        raw = [rng.expovariate(1.0) for _ in range(count)]
        scale = count / sum(raw)
        found = _epsilons(terms, y, [r * scale for r in raw])
        if found is not None:
            for j, value in enumerate(found):
                samples[j].append(value)
    for j, (found_j, estimate) in enumerate(zip(samples, estimates, strict=True)):
        if len(found_j) >= draws // 2:
            intervals[j] = _interval(found_j, estimate)
    # a permutation test of each term (Phipson & Smyth 2010): its values shuffled over the runs, the others kept,
    # the fit redone; p = (1 + #{shuffled >= observed}) / (B + 1)
    for j in range(len(terms)):
        higher = 0
        for _ in range(PERMUTATIONS):
            shuffled = list(terms[j][1])
            rng.shuffle(shuffled)
            found = _epsilons([(terms[j][0], shuffled) if k == j else t for k, t in enumerate(terms)], y)
            higher += found is not None and found[j] >= estimates[j] - 1e-12
        p_values[j] = (1 + higher) / (PERMUTATIONS + 1)
    return intervals, p_values


def importances(columns: Mapping[str, Sequence[Any]], metric: Sequence[float], mode: str,
                space: Mapping[str, Any] | None = None, seed: int = 0,
                total_runs: int | None = None) -> dict[str, Importance]:
    """The importance of each hyperparameter in ``columns`` (name -> its value in each run) for the runs' best
    ``metric`` (``mode`` ``"min"`` or ``"max"``), the main effects fitted together so that one parameter's effect
    is not another's noise (in a grid, the batch size's effect is not hidden by the learning rate's)."""
    y = [float(m) for m in metric]
    count = len(y)
    prepared = [_column(name, values, space) for name, values in columns.items()]
    alone = [c for c in prepared if c.by_value and len(set(c.xs)) > (count - 1) // 2]
    if alone and len(prepared) > 1:  # a label per run (a run name): analysed apart, it would use every degree
        solo = {c.name: importances({c.name: c.values}, metric, mode, space, seed, total_runs)[c.name]
                for c in alone}
        rest = importances({c.name: c.values for c in prepared if c not in alone}, metric, mode, space, seed,
                           total_runs) if len(alone) < len(prepared) else {}
        return {name: solo.get(name) or rest[name] for name in columns}
    terms = [_term(c) for c in prepared]
    fitted = _fit(terms, y) if count >= 2 else None
    estimates = _epsilons(terms, y) if fitted is not None else None
    effects = None if fitted is None else fitted[4]
    intervals: list[tuple[float, float] | None] = [None] * len(prepared)
    p_values: list[float | None] = [None] * len(prepared)
    if estimates is not None and count >= MIN_RUNS:
        rng = random.Random(seed)
        sub_terms, sub_y, sub_estimates = terms, y, estimates
        if count > MAX_RESAMPLED:  # the interval and the test on a random subset: wider, never narrower
            rows = sorted(rng.sample(range(count), MAX_RESAMPLED))
            sub_terms = [_subset(t, rows) for t in terms]
            sub_y = [y[i] for i in rows]
            sub_estimates = _epsilons(sub_terms, sub_y) or estimates
        intervals, p_values = _resampled(sub_terms, sub_y, sub_estimates, rng)
    out = {}
    for j, column in enumerate(prepared):
        out[column.name] = _describe(column, y, mode, None if estimates is None else estimates[j], intervals[j],
                                     None if effects is None else effects[j], total_runs, p_values[j])
    return out


def _describe(column: _Column, y: Sequence[float], mode: str, estimate: float | None,
              interval: tuple[float, float] | None, effects: Sequence[float] | None,
              total_runs: int | None, p_value: float | None = None) -> Importance:
    count = len(y)
    assign = _assign(column.xs, column.by_value, column.bins)
    size = max(assign) + 1 if assign else 0
    members: list[list[int]] = [[] for _ in range(size)]
    for i, g in enumerate(assign):
        members[g].append(i)
    stats = []
    for group in members:
        if column.by_value:
            label = _label(column.values[group[0]])
        else:
            low_x, high_x = min(column.xs[i] for i in group), max(column.xs[i] for i in group)
            low_v, high_v = (10 ** low_x, 10 ** high_x) if column.scale == "log10" else (low_x, high_x)
            label = f"{_region(low_v)} – {_region(high_v)}"
        stats.append(group_stats(label, [y[i] for i in group]))
    eta = variance_explained([[y[i] for i in group] for group in members])
    if count < MIN_RUNS:
        verdict = f"too few runs to tell (n = {count} < {MIN_RUNS})"
    elif estimate is None:
        verdict = ("cannot tell: every value was run once" if all(s.runs == 1 for s in stats)
                   else "cannot tell: the metric does not vary, or too many parameters for the runs")
    elif interval is not None and interval[0] > 0 and p_value is not None and p_value < 0.05:
        verdict = "matters"
    elif estimate < NEGLIGIBLE:
        verdict = "negligible"
    else:
        verdict = "unclear (interval includes 0)"
    direction, region = "—", "—"
    if stats and (verdict == "matters" or verdict.startswith("unclear")):
        sign = 1.0 if mode == "max" else -1.0
        fit = [sign * v for v in (effects if effects is not None else y)]  # higher is better from here on
        if column.by_value:
            score = [sum(fit[i] for i in group) / len(group) for group in members]
            best = max(range(len(stats)), key=lambda g: score[g])
            region = stats[best].value
            direction = ("by value" if column.scale == "categorical" else "lower is better" if best == 0
                         else "higher is better" if best == len(stats) - 1 else "optimum inside the range")
        else:  # the runs whose fitted effect is within a fifth of the fitted spread of the best
            top, bottom = max(fit), min(fit)
            near = [i for i in range(count) if fit[i] >= top - 0.2 * (top - bottom)]
            low_v, high_v = min(column.values[i] for i in near), max(column.values[i] for i in near)
            region = f"{_region(low_v)} – {_region(high_v)}"
            best = max(range(count), key=lambda i: fit[i])
            direction = ("lower is better" if column.xs[best] == min(column.xs) else "higher is better"
                         if column.xs[best] == max(column.xs) else "optimum inside the range")
    grouping = "by value" if column.by_value else f"quadratic in {column.scale} (shown in {column.bins} bins)"
    return Importance(
        name=column.name, scale=column.scale, scale_source=column.source, grouping=grouping, runs=count,
        importance=None if estimate is None else min(max(estimate, 0.0), 1.0),
        low=None if interval is None else interval[0], high=None if interval is None else interval[1],
        verdict=verdict, direction=direction, best_region=region, groups=tuple(stats), eta_squared=eta,
        conditional=total_runs is not None and count < total_runs, p_value=p_value,
    )


def importance(name: str, values: Sequence[Any], metric: Sequence[float], mode: str,
               space: Mapping[str, Any] | None = None, total_runs: int | None = None, seed: int = 0) -> Importance:
    """The importance of one hyperparameter alone (:func:`importances` of one column): for a parameter present in
    some runs only, over those runs."""
    return importances({name: values}, metric, mode, space, seed, total_runs)[name]

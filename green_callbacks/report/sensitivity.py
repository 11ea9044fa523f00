"""How much each hyperparameter moves the search's best metric: one answer per hyperparameter, with an interval.

Green AI Standard practice 2 ("report the sensitivity of hyperparameters", after Strubell et al. 2019). The method
is chosen to be right for the kind of parameter and to need nothing beyond the Python standard library:

* **continuous parameters** are not grouped by exact value (in a random or Bayesian search every value is distinct,
  and one-run groups "explain" 100 % of anything). The runs are sorted by the parameter on its own scale —
  ``log10`` for a log-scaled one (declared in the search space, or inferred when the values span two decades or
  more) — and cut into ``k`` equal-count bins (``k = N // 5``, 2 to 5; equal values never split). Bins see an
  optimum in the middle of the range (the usual shape of a learning rate), which a rank correlation would miss;
* **categorical and few-valued parameters** (a grid's axes, an optimizer's name) are grouped by value;
* **conditional parameters** (present in some runs only) are analysed over the runs that have them.

The importance is epsilon squared, the share of the metric's variance explained by the groups *beyond what
chance gives k groups*: ``(SS_between - (k - 1) MS_within) / SS_total`` (eta squared's null expectation is
``(k - 1) / (N - 1)``, so eta squared over many small groups reads high on noise). Its 95 % interval is the
bias-corrected percentile bootstrap over runs (Efron 1987), the grouping redone on each resample (resamples
repeat runs, which inflates a resampled epsilon squared; the bias correction moves the percentiles back by that
shift). Verdicts: below :data:`MIN_RUNS` runs
"too few runs to tell" (an exact Spearman permutation test cannot reach p < 0.05 below 5 runs); "matters" when the
interval's lower end is above 0; "negligible" (no effect detected) when it is not and the estimate is under
:data:`NEGLIGIBLE`; otherwise "unclear". A grouping with a single run per group has no within-group variance: no
estimate at all.
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
    "short_number",
]

MIN_RUNS = 5
"""Below this many runs (with the parameter) the verdict is "too few runs to tell"."""
NEGLIGIBLE = 0.25
"""An importance under this, whose interval includes 0, is called negligible (no effect detected): with 20 runs
in 4 bins, epsilon squared of a parameter without effect has a standard deviation of about 0.1."""
BOOTSTRAP = 1000
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


def _binned(pairs: Sequence[tuple[float, float]], k: int) -> list[list[tuple[float, float]]]:
    """``pairs`` (x, y) sorted by x and cut into ``k`` bins of (nearly) equal count; equal x stay together."""
    ordered = sorted(pairs, key=lambda p: p[0])
    count = len(ordered)
    out: list[list[tuple[float, float]]] = []
    for index, pair in enumerate(ordered):
        target = min(k - 1, index * k // count)
        if out and (len(out) - 1 >= target or out[-1][-1][0] == pair[0]):
            out[-1].append(pair)
        else:
            out.append([pair])
    return out


def _groups(pairs: Sequence[tuple[Any, float]], by_value: bool, k: int) -> list[list[tuple[Any, float]]]:
    if by_value:
        found: dict[Any, list[tuple[Any, float]]] = {}
        for x, y in pairs:
            found.setdefault(x, []).append((x, y))
        return list(found.values())
    return _binned(pairs, k)


def _estimate(pairs: Sequence[tuple[Any, float]], by_value: bool, k: int) -> float | None:
    return epsilon_squared([[y for _, y in g] for g in _groups(pairs, by_value, k)])


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _bootstrap(pairs: Sequence[tuple[Any, float]], by_value: bool, k: int, seed: int) -> tuple[float, float] | None:
    rng = random.Random(seed)
    count = len(pairs)
    draws = max(200, min(BOOTSTRAP, 200_000 // max(count, 1)))
    found = []
    for _ in range(draws):
        sample = [pairs[rng.randrange(count)] for _ in range(count)]
        value = _estimate(sample, by_value, k)
        if value is not None:
            found.append(value)
    if len(found) < draws // 2:
        return None
    found.sort()
    estimate = _estimate(pairs, by_value, k)
    assert estimate is not None
    # bias-corrected percentile interval (Efron 1987): resamples repeat runs, which shrinks the spread within groups
    # and shifts the resampled estimates up; z0 measures that shift and moves both percentiles back by it
    normal = NormalDist()
    below = sum(1 for v in found if v < estimate) + 0.5 * sum(1 for v in found if v == estimate)
    z0 = normal.inv_cdf(min(max(below / len(found), 1 / (len(found) + 1)), len(found) / (len(found) + 1)))
    low_q, high_q = normal.cdf(2 * z0 + normal.inv_cdf(0.025)), normal.cdf(2 * z0 + normal.inv_cdf(0.975))
    return _percentile(found, low_q), _percentile(found, high_q)


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


def importance(name: str, values: Sequence[Any], metric: Sequence[float], mode: str,
               space: Mapping[str, Any] | None = None, total_runs: int | None = None, seed: int = 0) -> Importance:
    """The importance of hyperparameter ``name`` whose value in each run is ``values[i]`` and whose run reached
    ``metric[i]`` (best value, ``mode`` ``"min"`` or ``"max"``). ``space``: the search's declared distributions."""
    count = len(values)
    conditional = total_runs is not None and count < total_runs
    scale, source = _scale(name, values, space)
    distinct = len({_label(v) for v in values})
    by_value = scale == "categorical" or distinct <= max(2, count // 3)
    k = _bins(count)
    if scale == "log10":
        xs: list[Any] = [math.log10(v) for v in values]
    elif scale == "linear":
        xs = [float(v) for v in values]
    else:
        xs = [_label(v) for v in values]
    pairs = list(zip(xs, [float(m) for m in metric], strict=True))
    grouping = "by value" if by_value else f"{k} equal-count bins on {scale}"
    groups = _groups(pairs, by_value, k)
    stats = []
    for group in groups:
        if by_value:
            label = str(group[0][0]) if scale == "categorical" else _label(
                values[xs.index(group[0][0])])
        else:
            low_x, high_x = group[0][0], group[-1][0]
            low_v, high_v = (10 ** low_x, 10 ** high_x) if scale == "log10" else (low_x, high_x)
            label = f"{_region(low_v)} – {_region(high_v)}"
        stats.append(group_stats(label, [y for _, y in group]))
    if by_value and scale != "categorical":
        order = sorted(range(len(groups)), key=lambda i: groups[i][0][0])
        stats = [stats[i] for i in order]
    eta = variance_explained([[y for _, y in g] for g in groups])
    estimate = _estimate(pairs, by_value, k) if count >= 2 else None
    interval = None
    if estimate is not None and count >= MIN_RUNS:
        interval = _bootstrap(pairs, by_value, k, seed)
        if interval is not None:  # a share of variance, like the estimate: 0 .. 1 (0: no effect can be told)
            interval = (min(max(interval[0], 0.0), 1.0), min(max(interval[1], 0.0), 1.0))
    best = (max if mode == "max" else min)(range(len(stats)), key=lambda i: stats[i].mean) if stats else None
    if count < MIN_RUNS:
        verdict = f"too few runs to tell (n = {count} < {MIN_RUNS})"
    elif estimate is None:
        verdict = ("cannot tell: every value was run once" if all(s.runs == 1 for s in stats)
                   else "cannot tell: the metric does not vary")
    elif interval is not None and interval[0] > 0:
        verdict = "matters"
    elif estimate < NEGLIGIBLE:
        verdict = "negligible"
    else:
        verdict = "unclear (interval includes 0)"
    direction, region = "—", "—"
    if (best is not None and verdict in ("matters",)) or (best is not None and verdict.startswith("unclear")):
        region = stats[best].value
        if scale == "categorical":
            direction = "by value"
        elif best == 0:
            direction = "lower is better"
        elif best == len(stats) - 1:
            direction = "higher is better"
        else:
            direction = "optimum inside the range"
    return Importance(
        name=name, scale=scale, scale_source=source, grouping=grouping, runs=count,
        importance=None if estimate is None else min(max(estimate, 0.0), 1.0),
        low=None if interval is None else interval[0], high=None if interval is None else interval[1],
        verdict=verdict, direction=direction, best_region=region, groups=tuple(stats), eta_squared=eta,
        conditional=conditional,
    )

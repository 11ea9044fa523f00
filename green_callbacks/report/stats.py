"""Pure arithmetic for sweep analysis: expected best of n random trials, group spreads, variance explained.

The expected-maximum estimator follows Dodge et al. 2019 ("Show Your Work: Improved Reporting of Experimental
Results", EMNLP): treat the N observed results as an empirical distribution and draw n trials from it *with
replacement*. For the values sorted ascending, v(1) <= ... <= v(N),

    E[max of n] = sum_i v(i) * ((i/N)^n - ((i-1)/N)^n)

because (i/N)^n is the probability that all n draws are at most v(i). In ``"min"`` mode the same formula runs on the
values sorted descending (the best is the smallest: ``E[min of n] = -E[max of n](-v)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ExpectedBest",
    "GroupStats",
    "expected_best",
    "expected_best_curve",
    "group_stats",
    "parse_tolerance",
    "reach_threshold",
    "trials_to_reach",
    "variance_explained",
]


def _check_mode(mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


def _clean(values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError("expected-best needs at least one observed value, got none")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"expected-best needs finite values, got {out!r}; drop runs whose metric is missing")
    return out


def _weights(count: int, n: int) -> list[float]:
    """P(the best of n draws is the i-th value in best-last order), i = 1..count (they sum to 1)."""
    return [(i / count) ** n - ((i - 1) / count) ** n for i in range(1, count + 1)]


@dataclass(frozen=True)
class ExpectedBest:
    """Expected best value of ``n`` random trials drawn from the observed results, and its standard deviation."""

    n: int
    mean: float
    std: float


def expected_best(values: Sequence[float], n: int, mode: str = "max") -> ExpectedBest:
    """Expected best (max in ``"max"`` mode, min in ``"min"`` mode) of ``n`` draws with replacement from ``values``."""
    _check_mode(mode)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of trials) must be an integer >= 1, got {n!r}")
    ordered = sorted(_clean(values), reverse=(mode == "min"))
    weights = _weights(len(ordered), n)
    mean = sum(w * v for w, v in zip(weights, ordered, strict=True))
    second = sum(w * v * v for w, v in zip(weights, ordered, strict=True))
    return ExpectedBest(n=n, mean=mean, std=math.sqrt(max(second - mean * mean, 0.0)))


def expected_best_curve(values: Sequence[float], mode: str = "max", n_max: int | None = None) -> list[ExpectedBest]:
    """:func:`expected_best` for n = 1 .. ``n_max`` (default: the number of observed values)."""
    count = len(values)
    return [expected_best(values, n, mode) for n in range(1, (n_max or count) + 1)]


def parse_tolerance(text: str | float) -> tuple[float, bool]:
    """``"1%"`` -> (0.01, relative); ``"0.005"`` or ``0.005`` -> (0.005, absolute, in the metric's units)."""
    raw = str(text).strip()
    relative = raw.endswith("%")
    try:
        value = float(raw[:-1] if relative else raw)
    except ValueError:
        raise ValueError(
            f"tolerance must be a number in the metric's units (e.g. 0.005) or a percentage of the best value "
            f"(e.g. 1%), got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"tolerance must be >= 0, got {text!r}")
    return (value / 100.0, True) if relative else (value, False)


def reach_threshold(best: float, mode: str, tolerance: float, relative: bool) -> float:
    """The value a search must reach to be "within tolerance" of ``best`` (below it in max mode, above in min)."""
    _check_mode(mode)
    slack = tolerance * abs(best) if relative else tolerance
    return best - slack if mode == "max" else best + slack


def trials_to_reach(values: Sequence[float], mode: str, threshold: float, n_max: int = 10_000) -> int | None:
    """The smallest n whose expected best reaches ``threshold``; ``None`` if not within ``n_max`` trials."""
    _check_mode(mode)
    ordered = sorted(_clean(values), reverse=(mode == "min"))
    scale = max(1.0, max(abs(v) for v in ordered))
    eps = 1e-12 * scale  # the sum of n weights carries rounding error; do not miss an exact hit by it
    for n in range(1, n_max + 1):
        mean = sum(w * v for w, v in zip(_weights(len(ordered), n), ordered, strict=True))
        if (mode == "max" and mean >= threshold - eps) or (mode == "min" and mean <= threshold + eps):
            return n
    return None


@dataclass(frozen=True)
class GroupStats:
    """The best metric of the runs sharing one value of a hyperparameter. ``std`` is the sample std (n-1)."""

    value: str
    runs: int
    mean: float
    std: float | None
    min: float
    max: float


def group_stats(label: str, values: Sequence[float]) -> GroupStats:
    data = _clean(values)
    mean = sum(data) / len(data)
    std = math.sqrt(sum((v - mean) ** 2 for v in data) / (len(data) - 1)) if len(data) > 1 else None
    return GroupStats(value=label, runs=len(data), mean=mean, std=std, min=min(data), max=max(data))


def variance_explained(groups: Sequence[Sequence[float]]) -> float | None:
    """Between-group sum of squares over total sum of squares (eta squared), in [0, 1].

    ``SS_between = sum_g n_g (mean_g - mean)^2``, ``SS_total = sum_i (y_i - mean)^2``. ``None`` when every value is
    the same (nothing to explain) or there is a single group.
    """
    data = [_clean(g) for g in groups if len(g)]
    if len(data) < 2:
        return None
    everything = [v for g in data for v in g]
    grand = sum(everything) / len(everything)
    total = sum((v - grand) ** 2 for v in everything)
    if total <= 1e-300:
        return None
    between = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in data)
    return min(max(between / total, 0.0), 1.0)

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
    "expected_best_without_replacement",
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


def _ordered(values: Sequence[float], mode: str) -> list[float]:
    """The values best-last: ascending in ``"max"`` mode, descending in ``"min"`` mode."""
    return sorted(_clean(values), reverse=(mode == "min"))


def _moments(ordered: Sequence[float], n: int) -> tuple[float, float]:
    """E[best of n] and E[best of n squared] for values sorted best-last, in O(N).

    By summation by parts, ``E[f(best)] = f(v(N)) - sum_{i<N} (f(v(i+1)) - f(v(i))) (i/N)^n``: only the gaps between
    neighbours are weighted, so a run of equal values costs nothing and the terms fall off fast for large ``n``.
    """
    count = len(ordered)
    mean, second = ordered[-1], ordered[-1] * ordered[-1]
    for i in range(count - 1, 0, -1):
        weight = (i / count) ** n
        if weight == 0.0:  # (i/N)^n only shrinks as i falls: every further term is 0
            break
        low, high = ordered[i - 1], ordered[i]
        if high != low:
            mean -= (high - low) * weight
            second -= (high * high - low * low) * weight
    return mean, second


@dataclass(frozen=True)
class ExpectedBest:
    """Expected best value of ``n`` random trials drawn from the observed results, and its standard deviation."""

    n: int
    mean: float
    std: float


def _expected(ordered: Sequence[float], n: int) -> ExpectedBest:
    mean, second = _moments(ordered, n)
    return ExpectedBest(n=n, mean=mean, std=math.sqrt(max(second - mean * mean, 0.0)))


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of trials) must be an integer >= 1, got {n!r}")
    return n


def expected_best(values: Sequence[float], n: int, mode: str = "max") -> ExpectedBest:
    """Expected best (max in ``"max"`` mode, min in ``"min"`` mode) of ``n`` draws with replacement from ``values``."""
    _check_mode(mode)
    return _expected(_ordered(values, mode), _check_n(n))


CURVE_POINTS_ALL = 50
"""Up to this many trials every n is on the curve; beyond, n follows a 1-2-5 series (60, 70, ..., 100, 200, 500...)."""


def curve_points(n_max: int) -> list[int]:
    """The trial counts of a curve up to ``n_max``: every n up to 50, then 60, 70, 80, 90, 100, 200, 500, 1000, ...

    About 50 + 3 per decade points whatever ``n_max``, so a curve costs O(N log N) for N observed values.
    """
    points = list(range(1, min(n_max, CURVE_POINTS_ALL) + 1))
    points += [n for n in range(60, 101, 10) if n <= n_max]
    scale = 100
    while scale * 2 <= n_max:
        points += [n for n in (scale * 2, scale * 5, scale * 10) if n <= n_max]
        scale *= 10
    if n_max > points[-1]:
        points.append(n_max)
    return sorted(set(points))


def expected_best_curve(values: Sequence[float], mode: str = "max", n_max: int | None = None,
                        points: Sequence[int] | None = None) -> list[ExpectedBest]:
    """:func:`expected_best` for n = 1 .. ``n_max`` (default: the number of observed values).

    ``points`` chooses the n instead (e.g. :func:`curve_points`); the values are sorted once, so the curve costs
    O(N log N + N x len(points)).
    """
    _check_mode(mode)
    ordered = _ordered(values, mode)
    chosen = range(1, (n_max or len(ordered)) + 1) if points is None else [_check_n(n) for n in points]
    return [_expected(ordered, n) for n in chosen]


def expected_best_without_replacement(values: Sequence[float], mode: str = "max",
                                      points: Sequence[int] | None = None) -> list[ExpectedBest]:
    """The unbiased estimator of the expected best of n trials (Tang et al. 2020; Dodge et al. 2021), n <= N.

    The n trials are a random subset of the N observed ones (drawn *without* replacement), so for the values sorted
    best-last the i-th is the best of the subset with probability C(i-1, n-1) / C(N, n). For a grid taken in random
    order this is exact; for a random search it is the unbiased estimate of E[best of n] (the with-replacement
    estimator of :func:`expected_best_curve` is biased towards the observed best). Points above N are dropped.
    """
    _check_mode(mode)
    ordered = _ordered(values, mode)
    count = len(ordered)
    chosen = range(1, count + 1) if points is None else [_check_n(n) for n in points if n <= count]
    out = []
    for n in chosen:
        log_total = math.lgamma(count + 1) - math.lgamma(n + 1) - math.lgamma(count - n + 1)
        mean = second = 0.0
        for i in range(n, count + 1):  # the best of the subset is the i-th value: C(i-1, n-1) subsets of the rest
            weight = math.exp(math.lgamma(i) - math.lgamma(n) - math.lgamma(i - n + 1) - log_total)
            value = ordered[i - 1]
            mean += weight * value
            second += weight * value * value
        out.append(ExpectedBest(n=n, mean=mean, std=math.sqrt(max(second - mean * mean, 0.0))))
    return out


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
    """The smallest n whose expected best reaches ``threshold``; ``None`` if not within ``n_max`` trials.

    The expected best of n draws never gets worse as n grows, so n is found by bisection: O(N log N) to sort and
    O(N log n_max) for the search, instead of one O(N) sum for every n.
    """
    _check_mode(mode)
    ordered = _ordered(values, mode)
    scale = max(1.0, max(abs(v) for v in ordered))
    eps = 1e-12 * scale  # the sums carry rounding error; do not miss an exact hit by it

    def reaches(n: int) -> bool:
        mean = _moments(ordered, n)[0]
        return mean >= threshold - eps if mode == "max" else mean <= threshold + eps

    if n_max < 1 or not reaches(n_max):
        return None
    low, high = 1, n_max  # reaches(high) holds; find the smallest such n
    while low < high:
        middle = (low + high) // 2
        if reaches(middle):
            high = middle
        else:
            low = middle + 1
    return low


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

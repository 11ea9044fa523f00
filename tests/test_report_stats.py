"""The expected-best estimator (Dodge et al. 2019) and the sensitivity arithmetic, against hand computation."""

from __future__ import annotations

import itertools
import math

import pytest

from green_callbacks.report.stats import (
    expected_best,
    expected_best_curve,
    group_stats,
    parse_tolerance,
    reach_threshold,
    trials_to_reach,
    variance_explained,
)

# best val_acc of the nine runs of the 3 x 3 fixture grid (tests/data/records/sweep), sorted
GRID = [0.70, 0.73, 0.75, 0.76, 0.78, 0.80, 0.81, 0.83, 0.86]


def brute_force(values: list[float], n: int, pick=max) -> float:
    """Average best over every ordered n-tuple of draws with replacement (each equally likely)."""
    draws = list(itertools.product(values, repeat=n))
    return sum(pick(d) for d in draws) / len(draws)


def test_one_trial_is_the_mean() -> None:
    total = 0.70 + 0.73 + 0.75 + 0.76 + 0.78 + 0.80 + 0.81 + 0.83 + 0.86
    assert expected_best(GRID, 1).mean == pytest.approx(total / 9)
    assert expected_best(GRID, 1).mean == pytest.approx(0.78)


def test_two_trials_by_hand() -> None:
    # P(max of 2 = v(i)) = (i^2 - (i-1)^2) / 81 = (2i - 1) / 81
    by_hand = (0.70 * 1 + 0.73 * 3 + 0.75 * 5 + 0.76 * 7 + 0.78 * 9 + 0.80 * 11 + 0.81 * 13 + 0.83 * 15
               + 0.86 * 17) / 81
    assert by_hand == pytest.approx(65.38 / 81)
    assert expected_best(GRID, 2).mean == pytest.approx(by_hand)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_matches_enumeration_of_all_draws(n: int) -> None:
    shuffled = [0.81, 0.70, 0.86, 0.75, 0.73, 0.83, 0.78, 0.76, 0.80]  # order must not matter
    assert expected_best(shuffled, n, "max").mean == pytest.approx(brute_force(GRID, n, max))
    assert expected_best(shuffled, n, "min").mean == pytest.approx(brute_force(GRID, n, min))


def test_ties_match_enumeration() -> None:
    values = [1.0, 1.0, 2.0, 2.0, 5.0]
    for n in (1, 2, 3):
        assert expected_best(values, n).mean == pytest.approx(brute_force(values, n, max))
        assert expected_best(values, n, "min").mean == pytest.approx(brute_force(values, n, min))


@pytest.mark.parametrize(("count", "n"), [(2, 2), (5, 3), (10, 7), (9, 20)])
def test_closed_form_for_uniform_integers(count: int, n: int) -> None:
    # Values 1..N: E[max] = sum_k P(max >= k) = sum_{k=1..N} (1 - ((k-1)/N)^n) = N - sum_{j=1..N-1} (j/N)^n,
    # and by symmetry E[min] = 1 + sum_{j=1..N-1} (j/N)^n.
    values = [float(k) for k in range(1, count + 1)]
    tail = sum((j / count) ** n for j in range(1, count))
    assert expected_best(values, n, "max").mean == pytest.approx(count - tail)
    assert expected_best(values, n, "min").mean == pytest.approx(1 + tail)
    if (count, n) == (2, 2):
        assert count - tail == 1.75  # max of two fair draws from {1, 2}: 1 only if both are 1 -> 2 - 1/4


def test_std_of_one_trial_is_the_population_std() -> None:
    assert expected_best([0.0, 1.0], 1).std == pytest.approx(0.5)
    # max of two draws from {0, 1}: 1 with probability 3/4 -> std = sqrt(3/4 * 1/4)
    assert expected_best([0.0, 1.0], 2).std == pytest.approx(math.sqrt(3 / 16))


def test_curve_rises_towards_the_best() -> None:
    curve = expected_best_curve(GRID, "max")
    assert [c.n for c in curve] == list(range(1, 10))
    means = [c.mean for c in curve]
    assert means == sorted(means) and means[-1] < 0.86
    falling = [c.mean for c in expected_best_curve(GRID, "min", n_max=4)]
    assert falling == sorted(falling, reverse=True) and falling[-1] > 0.70


def test_trials_to_reach_by_summation_by_parts() -> None:
    # E[max of n] = v(N) - sum_{i<N} (v(i+1) - v(i)) (i/N)^n, written independently of the code's weights
    def by_parts(n: int) -> float:
        return GRID[-1] - sum((GRID[i] - GRID[i - 1]) * (i / 9) ** n for i in range(1, 9))

    threshold = 0.86 * (1 - 0.03)  # within 3 % of the best, 0.8342
    expected = next(n for n in range(1, 1000) if by_parts(n) >= threshold)
    assert by_parts(4) < threshold <= by_parts(5)
    assert expected == 5
    assert trials_to_reach(GRID, "max", threshold) == 5
    assert trials_to_reach(GRID, "max", 0.86, n_max=50) is None  # the exact best: (8/9)^50 of a gap remains
    assert trials_to_reach(GRID, "max", 0.70) == 1
    # min mode: one trial averages 0.78; the exact smallest value is never reached on average
    assert trials_to_reach(GRID, "min", 0.78) == 1
    assert trials_to_reach(GRID, "min", 0.70, n_max=30) is None


def test_tolerance_parsing_and_threshold() -> None:
    assert parse_tolerance("1%") == (0.01, True)
    assert parse_tolerance("0.005") == (0.005, False)
    assert parse_tolerance(0.02) == (0.02, False)
    assert reach_threshold(0.86, "max", 0.01, True) == pytest.approx(0.86 - 0.0086)
    assert reach_threshold(0.50, "min", 0.02, False) == pytest.approx(0.52)
    assert reach_threshold(-2.0, "min", 0.10, True) == pytest.approx(-1.8)
    for bad in ("a lot", "-1%", "nan"):
        with pytest.raises(ValueError, match="tolerance"):
            parse_tolerance(bad)


def test_group_stats_and_variance_explained_by_hand() -> None:
    lr_01 = group_stats("0.1", [0.70, 0.73, 0.76])
    assert (lr_01.runs, lr_01.min, lr_01.max) == (3, 0.70, 0.76)
    assert lr_01.mean == pytest.approx(0.73)
    assert lr_01.std == pytest.approx(math.sqrt((0.03**2 + 0 + 0.03**2) / 2))  # sample std = 0.03
    assert group_stats("x", [1.0]).std is None

    # Additive grid, no interaction: grand mean 0.78; lr means 0.73, 0.83, 0.78 -> SS_lr = 3 (0.05^2 + 0.05^2) = 0.015;
    # batch-size means 0.75, 0.78, 0.81 -> SS_bs = 3 (0.03^2 + 0.03^2) = 0.0054; SS_total = 0.015 + 0.0054 = 0.0204.
    by_lr = [[0.70, 0.73, 0.76], [0.80, 0.83, 0.86], [0.75, 0.78, 0.81]]
    by_bs = [[0.70, 0.80, 0.75], [0.73, 0.83, 0.78], [0.76, 0.86, 0.81]]
    assert variance_explained(by_lr) == pytest.approx(0.015 / 0.0204)
    assert variance_explained(by_bs) == pytest.approx(0.0054 / 0.0204)
    assert variance_explained([[1.0, 1.0], [1.0]]) is None  # nothing to explain
    assert variance_explained([[1.0, 2.0]]) is None  # one group


def test_bad_input_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="at least one"):
        expected_best([], 1)
    with pytest.raises(ValueError, match="finite"):
        expected_best([1.0, float("nan")], 1)
    with pytest.raises(ValueError, match=r"n \(number of trials\)"):
        expected_best([1.0], 0)
    with pytest.raises(ValueError, match="mode"):
        expected_best([1.0], 1, "best")

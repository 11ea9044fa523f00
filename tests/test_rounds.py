"""Repeated measurement: ``measure --rounds N --warmup-rounds W`` runs a command W + N times, one record row per
round, and reports the median round with the order-statistic interval of the median (checked by hand here)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from green_callbacks.core.record import load_record
from green_callbacks.core.uncertainty import median_interval
from green_callbacks.report.summary import format_rounds


def test_median_interval_equals_the_binomial_order_statistics():
    # n = 10: P(B <= 1) = 11/1024, so [x(2), x(9)] covers 1 - 22/1024; [x(3), x(8)] would cover only 1 - 112/1024
    got = median_interval([10, 1, 9, 2, 8, 3, 7, 4, 6, 5])
    assert (got.median, got.low, got.high) == (5.5, 2, 9)
    assert got.coverage == pytest.approx(1 - 22 / 1024)
    # n = 20: the textbook 95 % interval of the median is [x(6), x(15)]
    got = median_interval(range(1, 21))
    assert (got.low, got.high) == (6, 15)
    assert got.coverage == pytest.approx(1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2**20)
    # n = 5: too few rounds for 95 %: the range, which covers 1 - 2/32
    got = median_interval([3, 1, 2, 5, 4])
    assert (got.median, got.low, got.high, got.coverage) == (3, 1, 5, 1 - 2 / 32)
    assert median_interval([]) is None


def test_the_median_interval_holds_the_true_median_at_its_coverage():
    import random

    rng = random.Random(3)
    trials, inside = 3000, 0
    for _ in range(trials):  # rounds of exponential noise: the true median is ln 2
        got = median_interval([rng.expovariate(1.0) for _ in range(10)])
        inside += got.low <= math.log(2) <= got.high
    assert abs(inside / trials - (1 - 22 / 1024)) < 0.012


def test_measure_runs_warmup_and_rounds_and_reports_the_median(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "green_callbacks.cli", "measure", "--output-dir", str(tmp_path), "--carbon-intensity",
         "100", "--rounds", "3", "--warmup-rounds", "1", "--", sys.executable, "-c", "pass"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "GREEN_CALLBACKS_RAPL_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    [path] = tmp_path.glob("green-run-*.json")
    record = load_record(path)
    assert len(record.epochs) == 4 and record.hyperparameters["rounds"] == 3
    assert "rounds: 3 measured after 1 warm-up round(s); median energy " in result.stderr
    energies = sorted(row.energy_j for row in record.epochs[1:])
    assert f"median energy {energies[1]:.4g} J" in result.stderr
    assert f"median energy {energies[1]:.4g} J" in format_rounds(record, 1)


def test_bad_rounds_and_a_failing_round(tmp_path):
    base = [sys.executable, "-m", "green_callbacks.cli", "measure", "--output-dir", str(tmp_path)]
    bad = subprocess.run([*base, "--rounds", "0", "--", "true"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--rounds must be at least 1" in bad.stderr
    failing = subprocess.run([*base, "--carbon-intensity", "100", "--rounds", "3", "--", sys.executable, "-c",
                              "import sys; sys.exit(4)"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "GREEN_CALLBACKS_RAPL_ROOT": str(tmp_path)})
    assert failing.returncode == 4
    [path] = tmp_path.glob("green-run-*.json")
    record = load_record(path)
    assert record.status == "failed" and len(record.epochs) == 1  # the first failing round stops the rest

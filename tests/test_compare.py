"""``green-callbacks compare``: a planted regression is found among noisy epochs, two samples of one distribution
are told apart only at the stated rate, and the exit codes say so. Records are written by the fit driver with fake
sensors and a fake clock; the many-seed checks run on in-memory sides."""

from __future__ import annotations

import json
import random

import pytest

from green_callbacks.cli import main
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import Session
from green_callbacks.report.compare import Side, bootstrap_change, compare_sides, load_side


def write_run(folder, clock, *, power_w: float, epochs: int, seed: int, noise: float = 0.05) -> None:
    """A fit whose epochs take 10 s × (1 + noise × N(0, 1)) at ``power_w``, 1000 samples and 1e12 FLOPs each."""
    rng = random.Random(seed)
    session = Session(GreenConfig(output_dir=str(folder), carbon_intensity=400.0, monitor="val_loss"),
                      framework="test", sensors=[ConstantPowerSensor("gpu", power_w, method="nvml-energy-counter")],
                      dist=DistInfo(), reducer=lambda v: [float(x) for x in v])
    session.start()
    for _ in range(epochs):
        session.epoch_start()
        clock.advance(10.0 * (1.0 + noise * rng.gauss(0.0, 1.0)))
        session.add_samples(samples=1000)
        session.add_flops(train=1e12)
        session.epoch_end({"val_loss": 1.0})
    session.finish()


@pytest.fixture
def runs(tmp_path, fake_clock):
    base, same, slower = tmp_path / "base", tmp_path / "same", tmp_path / "slower"
    write_run(base, fake_clock, power_w=100.0, epochs=12, seed=1)
    write_run(same, fake_clock, power_w=100.0, epochs=12, seed=2)
    write_run(slower, fake_clock, power_w=110.0, epochs=12, seed=3)  # the planted 10 % regression
    return base, same, slower


def test_a_planted_regression_is_found_and_fails_the_gate(runs, capsys):
    base, _, slower = runs
    assert main(["compare", str(base), str(slower), "--fail-above", "2"]) == 1
    out = capsys.readouterr()
    assert "energy per sample: NEW costs more beyond the noise (+" in out.out
    assert "(exact)" in out.out and "+0.0 % (exact)" in out.out  # the same FLOPs per epoch on both sides
    assert "beyond the noise and more than 2 %" in out.err
    assert main(["compare", str(base), str(slower), "--fail-above", "40"]) == 0  # above 40 %: not beyond the noise


def test_no_difference_between_two_samples_of_one_distribution(runs, capsys):
    base, same, _ = runs
    assert main(["compare", str(base), str(same), "--fail-above", "0"]) == 0
    assert "energy per sample: no difference beyond the noise" in capsys.readouterr().out


def test_github_benchmark_json_and_errors(runs, tmp_path, capsys):
    base, _, slower = runs
    target = tmp_path / "bench.json"
    assert main(["compare", str(base), str(slower), "--format", "github-benchmark", "--output", str(target)]) == 0
    entries = json.loads(target.read_text())
    names = [e["name"] for e in entries]
    assert names == ["energy per sample", "energy per training FLOP", "energy per epoch", "training FLOPs per epoch"]
    assert all(set(e) <= {"name", "unit", "value", "range", "extra"} and isinstance(e["value"], float)
               for e in entries)
    assert entries[0]["unit"] == "J" and entries[0]["range"].startswith("± ")
    assert 1.0 < entries[0]["value"] < 1.3  # 110 W × ~10 s / 1000 samples
    assert main(["compare", str(base), str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(base), str(tmp_path / "empty")]) == 2
    capsys.readouterr()


def test_load_side_reads_epochs_from_a_folder(runs):
    side = load_side(str(runs[0]), skip_epochs=2)
    assert len(side.runs) == 1 and side.epochs == 10
    assert side.methods == {"nvml-energy-counter"}
    assert all(e["samples"] == 1000 and e["train_flops"] == 1e12 for e in side.runs[0])


def noisy_side(rng: random.Random, runs: int, epochs: int, scale: float) -> Side:
    """Epochs of energy ``scale`` × 10 J × (1 + 0.05 × N(0, 1)) per 1 sample."""
    return Side("x", tuple(tuple({"train_energy_j": scale * 10 * (1 + 0.05 * rng.gauss(0, 1)), "samples": 1.0,
                                  "energy_j": None, "train_flops": None, "one": 1.0}
                                 for _ in range(epochs)) for _ in range(runs)))


def test_a_ten_percent_regression_is_found_over_seeds():
    found = 0
    for seed in range(20):
        rng = random.Random(seed)
        c = compare_sides(noisy_side(rng, 1, 12, 1.0), noisy_side(rng, 1, 12, 1.1), resamples=400, seed=seed)
        found += c.gate.verdict == "NEW costs more beyond the noise"
    assert found == 20


def test_false_alarms_near_the_stated_level_over_many_seeds():
    alarms, seeds = 0, 300
    for seed in range(seeds):
        rng = random.Random(1000 + seed)
        pairs = [[(10 * (1 + 0.05 * rng.gauss(0, 1)), 1.0) for _ in range(15)] for _ in range(2)]
        _, _, change = bootstrap_change([pairs[0]], [pairs[1]], resamples=300, seed=seed)
        alarms += change[1] > 0 or change[2] < 0
    # stated level 5 %: over 300 seeds the binomial sd is 1.3 %; a percentile bootstrap of 15 epochs runs a little
    # above its level, so up to 10 % is accepted, and never fewer than 1 %
    assert 0.01 <= alarms / seeds <= 0.10, alarms / seeds

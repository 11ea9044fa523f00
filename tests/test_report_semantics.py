"""What the report claims: a GPU a CPU-only run does not use is not "partial" (#14.3); a search is analysed only over
comparable runs, and too few runs are said to be too few (#14.10); the sweep statistics scale (#13.5)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from green_callbacks.core.record import parse_record
from green_callbacks.report.build import build_report
from green_callbacks.report.command import run_report
from green_callbacks.report.render import render_markdown, render_text, sweep_sentences
from green_callbacks.report.runs import LoadResult, load_runs, summarize_run
from green_callbacks.report.stats import curve_points, expected_best_curve, trials_to_reach

RECORDS = Path(__file__).parent / "data" / "records"
SINGLE = RECORDS / "single" / "green-run-single.json"
CPU_REASON = "training on CPU: this run uses no GPU, so GPU energy is not part of it"  # sensors.nvml's note
J_PER_KWH = 3.6e6


def _single() -> dict:
    return json.loads(SINGLE.read_text())


def _cpu_only(gpu_info: dict, gpu_method: str) -> dict:
    """The fixture run on a machine without GPU use: CPU 30 J + RAM 10 J an epoch, as the session writes it."""
    data = _single()
    data["components"]["gpu"] = gpu_info
    data["methods"]["gpu"] = [gpu_method]
    energy = 0.0
    for row in data["epochs"]:
        row["component_energy_j"]["gpu"] = None
        row["component_method"]["gpu"] = gpu_method
        row["energy_j"] = 40.0
        row["missing_components"] = ["gpu"]
        energy += 40.0
    data["totals"]["energy_j"] = energy
    data["totals"]["emissions_gco2e"] = energy / J_PER_KWH * 1.2 * 56.0
    return data


TODAY = {"scope": "device", "method": "unavailable", "reason": CPU_REASON}  # records written so far
EXPLICIT = {"scope": "device", "method": "not-used"}  # the explicit label the sensors will write


@pytest.mark.parametrize("gpu_info", [TODAY, EXPLICIT], ids=["cpu-note", "not-used"])
def test_a_cpu_only_run_is_not_partial(gpu_info) -> None:
    record = parse_record(_cpu_only(gpu_info, gpu_info["method"]), "cpu-only.json")
    run = summarize_run(record)
    gpu = next(c for c in run.components if c.name == "gpu")
    assert gpu.status == "not used" and gpu.energy_j is None and not gpu.missing
    assert not run.energy_partial and run.energy_j == pytest.approx(3 * 40.0)
    report = build_report(LoadResult((run,), ()))
    assert not report.emissions_partial and "(partial)" not in report.badges[0].message
    text = render_text(report)
    assert "partial" not in text
    assert "gpu energy: not used by this run" in text
    markdown = render_markdown(report)
    assert "partial" not in markdown and "| Energy, gpu | not used by this run" in markdown
    assert f"| Emissions | {3 * 40 / J_PER_KWH * 1.2 * 56:.4g} gCO2e at 56 gCO2e/kWh" in markdown


def test_a_gpu_run_without_nvml_is_still_unavailable_and_partial() -> None:
    info = {"scope": "device", "method": "unavailable", "reason": "the NVML bindings are not installed"}
    run = summarize_run(parse_record(_cpu_only(info, "unavailable"), "no-nvml.json"))
    gpu = next(c for c in run.components if c.name == "gpu")
    assert gpu.status == "unavailable" and run.energy_partial
    assert "total energy is partial: gpu unavailable in 3 of 3 epoch(s)" in render_text(
        build_report(LoadResult((run,), ())))


# ------------------------------------------------------------------------------------ comparable runs (#14.10)
def _variant(tmp_path: Path, name: str, **changes) -> Path:
    data = _single()
    hyper = changes.pop("hyperparameters", None)
    data.update(changes)
    if hyper is not None:
        data["hyperparameters"] = hyper
    path = tmp_path / f"green-run-{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_unrelated_runs_get_no_search_claims(tmp_path, capsys) -> None:
    # three val_loss runs, but of three frameworks: nothing here is one hyperparameter search
    _variant(tmp_path, "a", run_id="aaaa" + "0" * 28, framework="lightning")
    _variant(tmp_path, "b", run_id="bbbb" + "0" * 28, framework="keras")
    _variant(tmp_path, "c", run_id="cccc" + "0" * 28, framework="transformers")
    report = build_report(load_runs([tmp_path]))
    assert report.sweeps == () and report.sweep is None
    assert "a search compares runs of the same framework, model and monitored metric" in report.search_note
    assert run_report(paths=[str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Sweep" not in out and "random trial" not in out and "The search ran" not in out
    assert out.count("green_callbacks run ") == 3  # every run still gets its table


def test_different_models_are_not_one_search(tmp_path) -> None:
    _variant(tmp_path, "a", run_id="aaaa" + "0" * 28, hyperparameters={"model": "BertModel", "lr": 0.1})
    _variant(tmp_path, "b", run_id="bbbb" + "0" * 28, hyperparameters={"model": "GPT2Model", "lr": 0.01})
    assert build_report(load_runs([tmp_path])).sweeps == ()
    _variant(tmp_path, "c", run_id="cccc" + "0" * 28, hyperparameters={"model": "GPT2Model", "lr": 0.001})
    (sweep,) = build_report(load_runs([tmp_path])).sweeps  # the two GPT2Model runs are a search
    assert sweep.runs == 2 and "of model GPT2Model" in sweep.group


def test_a_run_of_another_framework_stays_out_of_the_search(tmp_path) -> None:
    other = json.loads((RECORDS / "sweep" / "green-run-sweep-00.json").read_text())
    other.update(framework="keras", run_id="keras" + "0" * 27)
    path = tmp_path / "green-run-keras.json"
    path.write_text(json.dumps(other))
    report = build_report(load_runs([RECORDS / "sweep", path]))
    assert len(report.sweeps) == 1 and report.sweep.runs == 9
    assert report.sweep.total_energy_j == pytest.approx(2700.0)  # the keras run's 360 J is not the search's


def test_too_few_runs_are_said_to_be_too_few() -> None:
    # best val_acc 0.70 (lr 0.1, batch 16), 0.86 (lr 0.01, batch 64), 0.81 (lr 0.001, batch 64): within 1 % of
    # 0.86 is 0.8514; E[max of n] = 0.86 - 0.05 (2/3)^n - 0.11 (1/3)^n reaches it first at n = 5 > 3 runs
    # (n = 4: 0.86 - 0.00988 - 0.00136 = 0.84877; n = 5: 0.86 - 0.00658 - 0.00045 = 0.85297)
    def by_hand(n: int) -> float:
        return 0.86 - 0.05 * (2 / 3) ** n - 0.11 * (1 / 3) ** n

    needed = next(n for n in range(1, 100) if by_hand(n) >= 0.86 * 0.99)
    assert needed == 5
    files = [RECORDS / "sweep" / f"green-run-sweep-{i}.json" for i in ("00", "12", "22")]
    sweep = build_report(load_runs(files)).sweep
    assert sweep.efficiency.trials_needed == needed and sweep.efficiency.runs == 3
    text = " ".join(sweep_sentences(sweep))
    assert "as many as the 3 run(s)" not in text
    assert "5 random trial(s) would on average reach within 1% of the best" in text
    assert "more than the 3 run(s) of this search: these runs do not suffice" in text


# ------------------------------------------------------------------------------------ scale (#13.5)
def test_the_curve_of_a_large_search_is_sampled_and_exact() -> None:
    assert curve_points(9) == list(range(1, 10))
    points = curve_points(5000)
    assert points[:50] == list(range(1, 51)) and points[-1] == 5000 and len(points) < 70
    assert {60, 100, 200, 500, 1000, 2000} <= set(points)
    rng = random.Random(0)
    values = [rng.random() for _ in range(400)]
    ordered = sorted(values)

    def by_hand(n: int) -> float:  # E[max of n] = sum_i v(i) ((i/N)^n - ((i-1)/N)^n)
        return sum(v * ((i / 400) ** n - ((i - 1) / 400) ** n) for i, v in enumerate(ordered, start=1))

    curve = expected_best_curve(values, "max", points=curve_points(400))
    assert [c.n for c in curve] == curve_points(400)
    for point in curve:
        assert point.mean == pytest.approx(by_hand(point.n), rel=1e-9)
    threshold = 0.999 * max(values)
    linear = next(n for n in range(1, 10_000) if by_hand(n) >= threshold - 1e-12)
    assert trials_to_reach(values, "max", threshold) == linear


def test_a_search_of_many_runs_reports_a_sampled_curve(tmp_path) -> None:
    template = json.loads((RECORDS / "sweep" / "green-run-sweep-00.json").read_text())
    rng = random.Random(1)
    for index in range(120):
        data = copy.deepcopy(template)
        data["run_id"] = f"r{index:03d}" + "0" * 28
        data["hyperparameters"] = {"lr": rng.uniform(1e-4, 1e-1)}
        data["convergence"]["best"]["value"] = rng.uniform(0.5, 0.9)
        (tmp_path / f"green-run-{index:03d}.json").write_text(json.dumps(data))
    sweep = build_report(load_runs([tmp_path])).sweep
    assert sweep.runs == 120 and [c.n for c in sweep.curve] == curve_points(120)

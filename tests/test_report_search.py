"""The Standard's analyses on real searches (#26): what a search is, sensitivity by kind of parameter, efficiency by
method, a readable report.

The records are written as ``Session.to_record`` writes them (tests/data/records/make_records.py's ``record``), with
the ``search`` section normalised by the same function the ``search=`` keyword goes through, and ``model`` sections as
the engine writes them; the numbers are chosen, and the expectations worked out by hand below.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.fingerprint import data_signature, model_fingerprint
from green_callbacks.core.search import normalize_search
from green_callbacks.report.build import build_report
from green_callbacks.report.render import render_html, render_markdown, render_text, sweep_sentences
from green_callbacks.report.runs import load_runs
from green_callbacks.report.sensitivity import MIN_RUNS, epsilon_squared, importance, short_number
from green_callbacks.report.stats import expected_best_without_replacement
from tests.records import CARBON, make_records

CPU = {"cpu": {"scope": "node", "method": "rapl"}}
SPACE = {"lr": "log", "weight_decay": "log", "dropout": "linear"}


def trial(folder: Path, index: int, params: dict, value: float | None, *, search=None, model=None,
          energy_j: float = 100.0, status: str = "completed", error: str | None = None, framework="lightning",
          monitor: str = "val_acc", mode: str = "max") -> dict:
    """One run of two epochs drawing ``energy_j`` in all, whose best ``monitor`` is ``value`` (second epoch)."""
    metrics = [{} if value is None else {monitor: value - 0.05}, {} if value is None else {monitor: value}]
    epochs = [(10.0, {"cpu": energy_j / 2}, 0.0, 1e9, 1e8, m) for m in metrics]
    data = make_records.record(run_id=f"t{index:03d}{'0' * 28}", status=status, carbon=CARBON, components=CPU,
                               epochs_spec=epochs, monitor=monitor, mode=mode, hyperparameters=params,
                               error=error, framework=framework)
    data["started_at"] = 1_790_000_000.0 + index
    if search is not None:
        data["search"] = normalize_search(search)
    if model is not None:
        data["model"] = model
    (folder / f"green-run-{index:03d}.json").write_text(json.dumps(data), encoding="utf-8")
    return data


def random_search(folder: Path, seed: int, lr_matters: bool, runs: int = 20, search=None) -> None:
    """``lr`` and ``weight_decay`` log-uniform, ``dropout`` uniform; the accuracy peaks at lr = 1e-3 (when it
    matters: 0.05 per decade squared) plus noise of 0.01 — far smaller than lr's effect over four decades."""
    rng = random.Random(seed)
    for index in range(runs):
        lr, wd, dropout = 10 ** rng.uniform(-5, -1), 10 ** rng.uniform(-6, -2), rng.uniform(0.0, 0.5)
        value = 0.9 + rng.gauss(0.0, 0.01) - (0.05 * (math.log10(lr) + 3) ** 2 if lr_matters else 0.0)
        trial(folder, index, {"lr": lr, "weight_decay": wd, "dropout": dropout}, round(value, 6),
              search={"name": "rs", "method": "random", "trial": index, "space": SPACE} if search is None else search)


def _importance(sweep):
    return {s.name: s.importance for s in sweep.sensitivity}


# ------------------------------------------------------------------------------------------------ sensitivity
def test_epsilon_squared_by_hand() -> None:
    # groups 1 2 3 | 4 5 6: grand mean 3.5, SS_total 17.5, SS_between 2 x 3 x 1.5^2 = 13.5, SS_within 4 over
    # 6 - 2 = 4 degrees of freedom -> MS_within 1; epsilon^2 = (13.5 - 1 x 1) / 17.5
    assert epsilon_squared([[1, 2, 3], [4, 5, 6]]) == pytest.approx(12.5 / 17.5)
    assert epsilon_squared([[1], [2], [3]]) is None  # one run per group: no within-group variance, no estimate
    assert epsilon_squared([[1, 1], [1, 1]]) is None  # nothing to explain
    assert short_number(0.0010000000474974513) == "0.001" and short_number(1e-05) == "1e-05"


def test_random_search_one_parameter_matters(tmp_path) -> None:
    random_search(tmp_path, seed=0, lr_matters=True)
    report = build_report(load_runs([tmp_path]))
    (sweep,) = report.sweeps
    assert (sweep.method, sweep.name, sweep.runs) == ("random", "rs", 20)
    found = _importance(sweep)
    lr = found["lr"]
    assert lr.scale == "log10" and lr.scale_source == "declared" and lr.grouping.startswith("quadratic in log10")
    assert lr.verdict == "matters" and lr.low > 0 and lr.p_value < 0.05  # the interval excludes zero
    assert lr.importance == max(i.importance for i in found.values())  # ranked first
    assert lr.direction == "optimum inside the range"  # the peak at 1e-3 is inside 1e-5 .. 1e-1
    low, high = (float(x) for x in lr.best_region.split(" – "))
    assert low <= 2e-3 and high >= 5e-4
    assert found["dropout"].scale == "linear"
    for name in ("weight_decay", "dropout"):
        assert found[name].verdict == "negligible" and found[name].low == 0, found[name]
    markdown = render_markdown(report)
    table = markdown.split("Sensitivity of the best val_acc")[1].split("\n\n")[2]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "hyperparameter" not in line]
    assert len(rows) == 3 and rows[0].startswith("| lr | log10 (declared) | 20 |")  # one row per hyperparameter
    assert "100.0 %" not in markdown and "By value" not in markdown
    text = render_text(report)
    # the method is known: no grid arithmetic, no saving, the curve of independent draws
    assert "would have saved" not in text and "not a grid" not in text and "combinations" not in text
    assert "Method: a random search (20 trial(s)), as the records declare it." in text
    assert sweep.efficiency is None and len(sweep.curve) == 20
    assert "the trials of a random search are independent draws" in sweep.curve_note


def test_random_search_where_nothing_matters(tmp_path) -> None:
    random_search(tmp_path, seed=7, lr_matters=False)
    (sweep,) = build_report(load_runs([tmp_path])).sweeps
    found = _importance(sweep)
    assert {name: imp.verdict for name, imp in found.items()} == dict.fromkeys(SPACE, "negligible")
    assert all(imp.low == 0 for imp in found.values())  # no effect told apart from chance


def test_too_few_runs_and_one_run_groups(tmp_path) -> None:
    random_search(tmp_path, seed=0, lr_matters=True, runs=MIN_RUNS - 1)
    (sweep,) = build_report(load_runs([tmp_path])).sweeps
    for imp in _importance(sweep).values():
        assert imp.verdict == "too few runs to tell (n = 4 < 5)" and imp.low is None
    assert "too few runs to tell" in render_markdown(build_report(load_runs([tmp_path])))
    # a categorical parameter with a new value in every run: each group one run -> no estimate, never 100 %
    tags = importance("tag", [f"t{i}" for i in range(8)], [0.1 * i for i in range(8)], "max")
    assert tags.importance is None and tags.verdict == "cannot tell: every value was run once"
    assert tags.eta_squared == 1.0  # what the old table printed as 100.0 %; the report no longer shows it


def test_old_records_of_a_random_search_are_not_a_grid_nor_100_percent(tmp_path) -> None:
    """The issue's case: 20 records without a search identity (older records) of continuous values."""
    random_search(tmp_path, seed=0, lr_matters=True)
    for path in tmp_path.iterdir():
        data = json.loads(path.read_text())
        del data["search"]
        data["hyperparameters"]["lr"] = float(f"{data['hyperparameters']['lr']:.7g}")
        path.write_text(json.dumps(data))
    report = build_report(load_runs([tmp_path]))
    (sweep,) = report.sweeps
    assert sweep.method is None and "the records have no model fingerprint" in sweep.rule
    markdown = render_markdown(report)
    assert "100.0 %" not in markdown and "would have saved" not in markdown
    assert _importance(sweep)["lr"].scale_source == "inferred" and _importance(sweep)["lr"].verdict == "matters"


# ------------------------------------------------------------------------------------------------ efficiency
def test_a_declared_grid_says_what_random_search_would_have_saved(tmp_path) -> None:
    # 2 x 2 grid, 100 J a run; val_acc 0.6 0.7 0.8 0.9; tolerance 15 % of 0.9 -> 0.765
    values = {(0.1, 16): 0.6, (0.1, 32): 0.7, (0.01, 16): 0.8, (0.01, 32): 0.9}
    for index, ((lr, bs), value) in enumerate(values.items()):
        trial(tmp_path, index, {"lr": lr, "batch_size": bs}, value, search={"name": "g", "method": "grid"})
    report = build_report(load_runs([tmp_path]))
    (sweep,) = report.sweeps
    assert sweep.grid is not None and sweep.method == "grid"
    # unbiased, without replacement: E[max of 2] = mean over the 6 pairs of their max
    # = (0.7 + 0.8 + 0.9 + 0.8 + 0.9 + 0.9) / 6 = 5.0 / 6
    assert [c.n for c in sweep.curve] == [1, 2, 3, 4]
    assert sweep.curve[1].mean == pytest.approx(5.0 / 6)
    assert sweep.curve[2].mean == pytest.approx((0.8 + 0.9 + 0.9 + 0.9) / 4)
    assert "exact for the grid's points taken in random order" in sweep.curve_note
    # with replacement: E[max of n] = 0.9 - 0.1 (3/4)^n - 0.1 (1/2)^n - 0.1 (1/4)^n; n = 2: 0.9 - 0.05625 - 0.025
    # - 0.00625 = 0.8125 >= 0.765 > n = 1's 0.75 -> 2 trials, the grid ran 4: 2 saved, 200 J
    text = " ".join(sweep_sentences(build_report(load_runs([tmp_path]), _options("15%")).sweeps[0]))
    assert "random search would have saved 2 run(s): about 200 J" in text


def _options(tolerance: str):
    from green_callbacks.report.build import ReportOptions

    return ReportOptions(tolerance=tolerance)


def test_tpe_search_with_pruned_trials(tmp_path) -> None:
    # 8 TPE trials: 5 complete (values below), 2 pruned (one told by Optuna's exception, one declared), 1 failed.
    # Each trial draws 100 J, the pruned ones 40 J, the failed one 60 J.
    search = {"name": "tpe-study", "sampler": "TPESampler"}
    complete = [0.70, 0.80, 0.75, 0.86, 0.84]
    for index, value in enumerate(complete):
        trial(tmp_path, index, {"lr": 10 ** -(1 + index % 4), "layers": 1 + index % 3}, value,
              search={**search, "trial": index})
    trial(tmp_path, 5, {"lr": 0.05, "layers": 2}, 0.5, search={**search, "trial": 5}, energy_j=40.0,
          status="failed", error="TrialPruned: Trial was pruned at epoch 1.")
    trial(tmp_path, 6, {"lr": 0.07, "layers": 2}, 0.55, search={**search, "trial": 6, "state": "pruned"},
          energy_j=40.0)
    trial(tmp_path, 7, {"lr": 0.02, "layers": 1}, None, search={**search, "trial": 7}, energy_j=60.0,
          status="failed", error="RuntimeError: CUDA out of memory")
    report = build_report(load_runs([tmp_path]))
    (sweep,) = report.sweeps
    assert sweep.method == "tpe" and sweep.runs == 5 and (sweep.pruned_runs, sweep.failed_runs) == (2, 1)
    assert sweep.total_energy_j == pytest.approx(5 * 100 + 2 * 40 + 60)  # the stopped trials count in the cost
    assert sweep.energy_stopped_j == pytest.approx(140.0)
    assert sweep.curve == () and "pruned" in sweep.curve_note
    assert [p.state for p in sweep.progress] == ["complete"] * 5 + ["pruned", "pruned", "failed"]
    assert [p.best_so_far for p in sweep.progress] == [0.70, 0.80, 0.80, 0.86, 0.86, 0.86, 0.86, 0.86]
    assert [p.energy_j for p in sweep.progress][-1] == pytest.approx(640.0)
    text = render_text(report)
    assert "2 pruned and 1 failed trial(s) used 140 J" in text
    assert "would have saved" not in text and "not a grid" not in text
    assert "Estimate, not a measurement" in text and "read it as a lower bound" in text
    assert "Expected best of n trials (Dodge et al. 2019): not shown" in text


def test_a_tpe_search_gets_no_expected_best_curve_even_without_pruning(tmp_path) -> None:
    for index, value in enumerate([0.7, 0.8, 0.75]):
        trial(tmp_path, index, {"lr": 10.0 ** -index}, value, search={"name": "s", "method": "tpe", "trial": index})
    (sweep,) = build_report(load_runs([tmp_path])).sweeps
    assert sweep.curve == () and "not independent draws" in sweep.curve_note


def test_unbiased_estimator_by_hand() -> None:
    values = [0.1, 0.5, 0.3, 0.9]
    curve = expected_best_without_replacement(values, "max")
    # n = 2: the 6 pairs' max: 0.5 0.3 0.9 0.5 0.9 0.9 -> 4.0 / 6; n = 4: the best
    assert [c.mean for c in curve] == pytest.approx([0.45, 4.0 / 6, 0.8, 0.9])
    assert expected_best_without_replacement(values, "min")[1].mean == pytest.approx((0.1 * 3 + 0.3 * 2 + 0.5) / 6)


# ------------------------------------------------------------------------------------------------ what a search is
def _keras_like(name: str, fingerprint: str, parameters: int) -> dict:
    return {"fingerprint": fingerprint, "parameters": parameters, "class": name, "data_signature": "(float32[*,5])"}


def test_unrelated_models_are_never_a_search(tmp_path) -> None:
    # two Sequential models of different layers (different fingerprints), different settings: no search
    trial(tmp_path, 0, {"lr": 0.01}, 0.8, framework="keras", model=_keras_like("Sequential", "sha256:aaaa", 50))
    trial(tmp_path, 1, {"lr": 0.001}, 0.7, framework="keras", model=_keras_like("Sequential", "sha256:bbbb", 11))
    report = build_report(load_runs([tmp_path]))
    assert report.sweeps == ()
    text = render_text(report) + render_markdown(report)
    assert "Sweep" not in text and "Hyperparameter search" not in text and "went to runs that did not" not in text


def test_one_script_on_two_backends_is_a_repeat_not_a_search(tmp_path) -> None:
    model = _keras_like("Sequential", "sha256:cccc", 50)
    trial(tmp_path, 0, {"lr": 0.01}, 0.8, framework="keras", model=model)
    trial(tmp_path, 1, {"lr": 0.01}, 0.79, framework="keras", model=model)
    report = build_report(load_runs([tmp_path]))
    assert report.sweeps == () and "Repeated runs of one configuration, not a search" in report.search_note
    assert "Hyperparameter search" not in render_markdown(report)


def test_same_fingerprint_and_data_is_a_search_and_says_its_rule(tmp_path) -> None:
    model = _keras_like("Sequential", "sha256:dddd", 50)
    for index, lr in enumerate((0.1, 0.01, 0.001)):
        trial(tmp_path, index, {"lr": lr}, 0.7 + 0.05 * index, framework="keras", model=model)
    other_data = {**model, "data_signature": "(float32[*,9])"}  # the same model on other data: not this search
    trial(tmp_path, 3, {"lr": 0.5}, 0.95, framework="keras", model=other_data)
    (sweep,) = build_report(load_runs([tmp_path])).sweeps
    assert sweep.runs == 3 and "the runs share the model fingerprint" in sweep.rule
    assert "Grouped as one search because no search is declared, and the runs share the model fingerprint" in \
        " ".join(sweep_sentences(sweep))


def test_a_declared_search_groups_whatever_the_models(tmp_path) -> None:
    for index in range(3):
        trial(tmp_path, index, {"layers": index + 1}, 0.7 + 0.01 * index, search="arch-search",
              model=_keras_like("Net", f"sha256:{index}", 10 * (index + 1)))
    (sweep,) = build_report(load_runs([tmp_path])).sweeps
    assert sweep.runs == 3 and sweep.rule.startswith("the runs name one search") and sweep.name == "arch-search"


# ------------------------------------------------------------------------------------------------ readable report
def test_a_float32_learning_rate_prints_at_its_precision(tmp_path) -> None:
    trial(tmp_path, 0, {"lr": 0.0010000000474974513}, 0.8)
    markdown = render_markdown(build_report(load_runs([tmp_path])))
    assert "lr=0.001" in markdown and "0.0010000000474974513" not in markdown


def test_counterfactual_grids_once_per_report(tmp_path, fake_clock) -> None:
    from green_callbacks.core.distributed import DistInfo
    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.core.session import Session

    for index in range(3):  # three CPU runs of 1 to 3 hours at 60 W in Germany
        session = Session(GreenConfig(output_dir=str(tmp_path), country="DE"), framework="test",
                          sensors=[ConstantPowerSensor("cpu", 60.0, scope="node")], dist=DistInfo())
        session.start(device_indices=[])
        session.epoch_start()
        fake_clock.advance(3600.0 * (index + 1))
        session.epoch_end({})
        session.finish()
    report = build_report(load_runs([tmp_path]))
    for text in (render_text(report), render_markdown(report), render_html(report)):
        assert text.count("Where could this run have been greener?") == 1
        assert text.count("operational emissions") == 3  # each run keeps its own footprint summary
    biggest = max(report.runs, key=lambda r: r.energy_j)
    assert f"For run {biggest.label}, the one that used the most energy" in render_markdown(report)


# ------------------------------------------------------------------------------------------------ the record
def test_search_keyword_is_validated_and_normalised() -> None:
    assert GreenConfig(search="s").search == {"name": "s"}
    config = GreenConfig(search={"name": "s", "sampler": "TPESampler", "trial": 3, "state": "COMPLETE",
                                 "space": {"lr": {"distribution": "log", "low": 1e-5, "high": 1e-1},
                                           "opt": ["sgd", "adam"], "dropout": "linear"}})
    assert config.search == {"name": "s", "method": "tpe", "trial": 3, "state": "complete",
                             "space": {"lr": {"distribution": "log", "low": 1e-5, "high": 1e-1},
                                       "opt": {"distribution": "categorical", "choices": ["sgd", "adam"]},
                                       "dropout": {"distribution": "linear"}}}
    for bad, message in ((3, "a name"), ({"method": "grid"}, "needs a name"), ({"name": "s", "colour": 1}, "unknown"),
                         ({"name": "s", "state": "done"}, "state must be one of"),
                         ({"name": "s", "space": {"lr": {"distribution": "log", "low": 0.0}}}, "low > 0"),
                         ({"name": "s", "space": {"lr": {"distribution": "cubic"}}}, "distribution must be"),
                         ({"name": "s", "trial": -1}, "trial must be")):
        with pytest.raises(ValueError, match=message):
            GreenConfig(search=bad)


def test_fingerprint_is_architecture_not_class_name() -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    a = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1))
    b = nn.Sequential(nn.Linear(3, 2))
    state = torch.random.get_rng_state()
    fa, fb = model_fingerprint(a), model_fingerprint(b)
    assert torch.equal(state, torch.random.get_rng_state())  # nothing drawn
    assert fa["class"] == fb["class"] == "Sequential" and fa["fingerprint"] != fb["fingerprint"]
    assert fa["parameters"] == 5 * 7 + 7 + 7 * 1 + 1 and fb["parameters"] == 3 * 2 + 2
    twin = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1))  # other weights, same architecture
    assert model_fingerprint(twin)["fingerprint"] == fa["fingerprint"]
    assert data_signature((torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))) == "(float32[*,5], int64[*])"
    assert model_fingerprint(object()) is None


def test_keras_fingerprint() -> None:
    keras = pytest.importorskip("keras")
    a = keras.Sequential([keras.Input((5,)), keras.layers.Dense(7), keras.layers.Dense(1)])
    b = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fa, fb = model_fingerprint(a), model_fingerprint(b)
    assert fa["parameters"] == a.count_params() == 50 and fb["parameters"] == 8
    assert fa["fingerprint"] != fb["fingerprint"]


def test_the_record_keeps_the_search_and_the_model(tmp_path, fake_clock) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    from green_callbacks.core.record import load_record
    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.loop import Tracker

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    tracker = Tracker(carbon_intensity=100.0, sensors=[ConstantPowerSensor("cpu", 20.0, scope="node")],
                      output_dir=str(tmp_path), model=model,
                      search={"name": "s", "method": "random", "trial": 2, "space": {"lr": "log"}},
                      hyperparameters={"lr": 0.01})
    x = torch.randn(8, 4)
    with tracker, tracker.epoch() as epoch:
        for i in range(0, 8, 4):
            model(x[i:i + 4]).sum().backward()
            fake_clock.advance(1.0)
            tracker.step((x[i:i + 4],))
        epoch.metrics["val_loss"] = 0.5
    record = load_record(tracker.record_path)
    assert record["search"] == {"name": "s", "method": "random", "trial": 2,
                                "space": {"lr": {"distribution": "log"}}}
    assert record["model"]["parameters"] == 4 * 8 + 8 + 8 * 2 + 2
    assert record["model"]["fingerprint"] == model_fingerprint(model)["fingerprint"]
    assert record["model"]["data_signature"] == "(float32[*,4])"
    assert record.search.method == "random" and record.model_info.parameters == 58


def test_two_unrelated_keras_models_in_one_folder_are_not_a_search(tmp_path) -> None:
    """The issue's folder: Dense 5→7→1 (SGD, MSE) and Dense 3→2 (Adam, MAE), both ``Sequential``, fitted for real."""
    keras = pytest.importorskip("keras")
    np = pytest.importorskip("numpy")
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.keras import GreenCallback

    runs = tmp_path / "runs"
    for n_in, hidden, n_out, optimizer, loss in ((5, (7,), 1, "sgd", "mse"), (3, (), 2, "adam", "mae")):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((n_in,)), *(keras.layers.Dense(h) for h in hidden),
                                  keras.layers.Dense(n_out)])
        model.compile(optimizer=optimizer, loss=loss)
        x = np.random.default_rng(0).random((8, n_in), dtype="float32")
        y = np.zeros((8, n_out), dtype="float32")
        green = GreenCallback(carbon_intensity=100.0, output_dir=str(runs), sensors=[StepEnergySensor("cpu", 5.0)])
        model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), callbacks=[green], verbose=0)
        section = json.loads(green.record_path.read_text())["model"]
        assert section["parameters"] == model.count_params() and section["class"] == "Sequential"
        assert section["data_signature"] == f"(float32[*,{n_in}], float32[*,{n_out}])"
    report = build_report(load_runs([runs]))
    assert len(report.runs) == 2 and report.sweeps == ()
    assert "Hyperparameter search" not in render_markdown(report)


def test_a_long_run_shows_its_first_and_last_epochs(tmp_path) -> None:
    data = trial(tmp_path, 0, {"lr": 0.1}, 0.8)
    template = data["epochs"][0]
    data["epochs"] = [dict(template, epoch=i) for i in range(30)]
    (tmp_path / "green-run-000.json").write_text(json.dumps(data))
    report = build_report(load_runs([tmp_path]))
    markdown = render_markdown(report)
    assert "| … 20 more |" in markdown and "| 29 |" in markdown and "| 5 |" not in markdown
    assert "| 15 |" not in markdown
    assert re.search(r"^\s*15\s+10\.00\s", render_text(report), re.MULTILINE)  # the terminal keeps every epoch


def test_two_searches_of_one_metric_are_compared_on_one_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from green_callbacks.report.build import make_figures

    for index, (lr, bs) in enumerate([(0.1, 16), (0.1, 32), (0.01, 16), (0.01, 32)]):
        trial(tmp_path, index, {"lr": lr, "batch_size": bs}, 0.6 + 0.1 * index, search={"name": "g", "method": "grid"})
    for index, lr in enumerate([0.05, 0.02, 0.011], start=10):
        trial(tmp_path, index, {"lr": lr, "batch_size": 32}, 0.7 + 0.05 * (index - 10),
              search={"name": "t", "method": "tpe", "trial": index})
    report = build_report(load_runs([tmp_path]))
    assert [s.name for s in report.sweeps] == ["g", "t"]
    figures = make_figures(report)
    assert figures["searches-progress.png"].startswith(b"\x89PNG")
    assert "sweep-expected-best.png" in figures and "sweep2-expected-best.png" not in figures  # TPE: no curve


def test_a_component_the_run_does_not_use_is_grey_and_said_so_in_the_energy_figure(monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from green_callbacks.core.record import parse_record
    from green_callbacks.report.plots import NOT_USED_COLOR, plot_energy_per_epoch
    from green_callbacks.report.runs import summarize_run
    from tests.test_report_semantics import EXPLICIT, _cpu_only

    bars, notes = [], []
    real_bar = Axes.bar
    monkeypatch.setattr(Axes, "bar", lambda self, *a, **k: bars.append(k) or real_bar(self, *a, **k))
    monkeypatch.setattr(Axes, "annotate", lambda self, text, *a, **k: notes.append(text))
    run = summarize_run(parse_record(_cpu_only(EXPLICIT, "not-used"), "cpu-only.json"))
    assert plot_energy_per_epoch(run).startswith(b"\x89PNG")
    gpu = [b for b in bars if b["label"].startswith("gpu")]
    assert [b["label"] for b in gpu] == ["gpu: not used by this run"] and gpu[0]["color"] == NOT_USED_COLOR
    assert notes == []  # no red "gpu unavailable" over the bars

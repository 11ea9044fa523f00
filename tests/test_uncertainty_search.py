"""A search's savings carry the energy's interval (docs/uncertainty.md): the measured runs' intervals averaged
linearly and scaled by the runs saved; a run without a basis leaves the saving without an interval."""

from __future__ import annotations

import json
from pathlib import Path

from green_callbacks.core.search import normalize_search
from green_callbacks.report.build import ReportOptions, build_report
from green_callbacks.report.render import sweep_sentences
from green_callbacks.report.runs import load_runs
from tests.records import CARBON, make_records


def _trial(folder: Path, index: int, params: dict, value: float, span: tuple[float, float] | None,
           method: str = "grid") -> None:
    """A run of two epochs, 100 J in all, whose best val_acc is ``value``; ``span``: its totals' interval."""
    epochs = [(10.0, {"cpu": 50.0}, 0.0, 1e9, 1e8, {"val_acc": v}) for v in (value - 0.05, value)]
    data = make_records.record(run_id=f"t{index:03d}{'0' * 28}", status="completed", carbon=CARBON,
                               components={"cpu": {"scope": "node", "method": "rapl"}}, epochs_spec=epochs,
                               monitor="val_acc", mode="max", hyperparameters=params)
    data["started_at"] = 1_790_000_000.0 + index
    data["search"] = normalize_search({"name": "g", "method": method})
    if span is not None:
        data["totals"]["energy_low_j"], data["totals"]["energy_high_j"] = span
    (folder / f"green-run-{index:03d}.json").write_text(json.dumps(data), encoding="utf-8")


GRID = {(0.1, 16): 0.6, (0.1, 32): 0.7, (0.01, 16): 0.8, (0.01, 32): 0.9}


def _sentences(folder: Path) -> str:
    report = build_report(load_runs([folder]), ReportOptions(tolerance="15%"))
    return " ".join(sweep_sentences(report.sweeps[0]))


def test_a_grid_saving_carries_the_runs_mean_interval_times_the_runs_saved(tmp_path) -> None:
    spans = [(80.0, 150.0), (80.0, 150.0), (80.0, 150.0), (60.0, 200.0)]
    for index, (((lr, bs), value), span) in enumerate(zip(GRID.items(), spans, strict=True)):
        _trial(tmp_path, index, {"lr": lr, "batch_size": bs}, value, span)
    report = build_report(load_runs([tmp_path]), ReportOptions(tolerance="15%"))
    eff = report.sweeps[0].efficiency
    # mean low (3 x 80 + 60) / 4 = 75, mean high (3 x 150 + 200) / 4 = 162.5; 2 runs saved (tests/
    # test_report_search.py works out the 2 by hand): 150-325 J
    assert (eff.mean_energy_low_j, eff.mean_energy_high_j) == (75.0, 162.5)
    assert "random search would have saved 2 run(s): about 200 J (5.56e-05 kWh) (150–325 J)" in _sentences(tmp_path)


def test_a_run_without_a_basis_leaves_the_saving_without_an_interval(tmp_path) -> None:
    for index, ((lr, bs), value) in enumerate(GRID.items()):
        _trial(tmp_path, index, {"lr": lr, "batch_size": bs}, value, None if index == 2 else (80.0, 150.0))
    assert "about 200 J (5.56e-05 kWh) (no basis for an interval)" in _sentences(tmp_path)


def test_a_bayesian_estimate_carries_the_interval(tmp_path) -> None:
    for index, ((lr, bs), value) in enumerate(GRID.items()):
        _trial(tmp_path, index, {"lr": lr, "batch_size": bs}, value, (80.0, 150.0), method="tpe")
    # 2 random trials (as for the grid) x 80..150 J
    assert "about 2 random trial(s), about 200 J (5.56e-05 kWh) (160–300 J)" in _sentences(tmp_path)

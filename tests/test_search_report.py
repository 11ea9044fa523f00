"""``green-callbacks report`` over a search engine's own data (docs/search.md): an Optuna study on SQLite (and a
journal file) joined with its records counts the trial that failed before its run began (no record), takes each
trial's end from the study, and bad input (an unknown study, a missing storage or folder, no optuna) is one line and
exit status 2. (The Ray experiment folder: tests/test_search_ray.py, which runs Ray.)"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from green_callbacks.core.record import find_records, read_record  # noqa: E402
from green_callbacks.report.command import add_report_arguments, run_report  # noqa: E402

STEP_J = 2.0
NAME = "loop-lr"


def _parse(argv: list[str]) -> Any:
    import argparse

    return add_report_arguments(argparse.ArgumentParser()).parse_args(argv)


def objective_for(records: str) -> Any:
    """Trial 2 fails before its run begins (no record); trial 3 prunes after its first epoch; trial 4 returns NaN,
    which Optuna marks FAIL although its run (and record) completed; the others complete 2 epochs."""
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.loop import Tracker
    from green_callbacks.optuna import green_objective

    @green_objective
    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        if trial.number == 2:
            raise ValueError("the data loader could not start")  # before the run: nothing measured
        tracker = Tracker(sensors=[StepEnergySensor("cpu", STEP_J, scope="node")], carbon_intensity=100.0,
                          output_dir=records, monitor="loss", mode="min", hyperparameters={"lr": lr})
        loss = 1.0
        with tracker:
            for epoch in range(2):
                with tracker.epoch() as ep:
                    tracker.step(samples=4)
                    loss = lr * (epoch + 1)
                    ep.metrics["loss"] = loss
                trial.report(loss, epoch)
                if trial.number == 3:
                    raise optuna.TrialPruned("pruned after its first epoch")
        return math.nan if trial.number == 4 else loss

    return objective


def run_study(storage: Any, records: str) -> Any:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=NAME, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective_for(records), n_trials=6, catch=(ValueError,))
    return study


def check(capsys: Any, records: Path, argv: list[str], study: Any) -> None:
    state = optuna.trial.TrialState
    assert [t.state for t in study.trials] == [state.COMPLETE, state.COMPLETE, state.FAIL, state.PRUNED, state.FAIL,
                                               state.COMPLETE]
    data = {d["search"]["trial"]: d for d in map(read_record, find_records([records]))}
    assert sorted(data) == [0, 1, 3, 4, 5]  # trial 2 has no record
    assert data[4]["search"]["state"] == "complete"  # the record's own view; Optuna says FAIL
    capsys.readouterr()
    assert run_report(_parse([str(records), *argv, "--format", "json"])) == 0
    report = json.loads(capsys.readouterr().out)
    [sweep] = report["sweeps"]
    assert sweep["engine_note"] == (
        f"6 trial(s) in the optuna study {NAME!r}, 5 with a record; without one: 1 failed — their energy was not "
        "measured and is not in the search's cost (a failed trial without a record failed before its run began).")
    assert (sweep["pruned_runs"], sweep["failed_runs"]) == (1, 1)  # trial 4's end is the study's: failed
    assert sweep["total_energy_j"] == pytest.approx(sum(d["totals"]["energy_j"] for d in data.values()), rel=1e-12)
    assert run_report(_parse([str(records), *argv])) == 0
    text = capsys.readouterr().out
    assert "6 trial(s) in the optuna study 'loop-lr', 5 with a record; without one: 1 failed" in " ".join(text.split())
    assert run_report(_parse([str(records)])) == 0  # without the study: the records alone
    assert "with a record" not in capsys.readouterr().out


def test_report_joins_an_optuna_sqlite_study_with_its_records(tmp_path: Path, capsys: Any) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = run_study(url, str(tmp_path / "records"))
    check(capsys, tmp_path / "records", ["--optuna-storage", url, "--study", NAME], study)


def test_report_joins_an_optuna_journal_study_with_its_records(tmp_path: Path, capsys: Any) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "study.log"
    study = run_study(JournalStorage(JournalFileBackend(str(path))), str(tmp_path / "records"))
    check(capsys, tmp_path / "records", ["--optuna-storage", str(path), "--study", NAME], study)


def test_bad_engine_input_is_one_line_and_exit_2(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="other", storage=url)
    records = tmp_path / "records"
    records.mkdir()

    def one_line(argv: list[str], expected: str) -> None:
        capsys.readouterr()
        assert run_report(_parse(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err

    one_line([str(records), "--optuna-storage", url, "--study", "nope"],
             "no study 'nope' in the Optuna storage " + url + " (its studies: 'other')")
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    one_line([str(records), "--optuna-storage", missing, "--study", "other"], "does not exist")
    assert not (tmp_path / "missing.db").exists()  # nothing created
    one_line([str(records), "--optuna-storage", str(tmp_path / "study.log"), "--study", "other"],
             "neither a journal file nor a database URL")
    one_line([str(records), "--optuna-storage", url], "--optuna-storage and --study go together")
    one_line([str(records), "--ray-experiment", str(tmp_path / "no-such-folder")], "no Ray experiment folder at")
    one_line([str(records), "--ray-experiment", str(records)], "is not a Ray Tune experiment folder")
    one_line([], "give PATH")
    monkeypatch.setitem(sys.modules, "optuna", None)
    one_line([str(records), "--optuna-storage", url, "--study", "other"],
             '--optuna-storage needs optuna: pip install "green-callbacks[optuna]"')
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text("{}", encoding="utf-8")
    if importlib.util.find_spec("ray") is not None:  # a torn snapshot
        one_line([str(records), "--ray-experiment", str(experiment)], "cannot read the Ray experiment in")
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    one_line([str(records), "--ray-experiment", str(experiment)],
             '--ray-experiment needs Ray Tune: pip install "green-callbacks[ray]"')

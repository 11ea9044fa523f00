"""A run bound to a search engine's trial (green_callbacks.core.trial), without any engine installed: the record's
search is the engine's identity with ``search=`` on top, its state how the run ended (pruned included), the
trial's binding gets the record's totals; a W&B sweep agent's run names its sweep from the environment; and a
search's analysis does not depend on the order its records are found in."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from green_callbacks.core.record import find_records, read_record
from green_callbacks.core.sensors.fake import StepEnergySensor
from green_callbacks.core.trial import TrialOutcome, bound, final_state, merged_search

STEP_J = 5.0


class FakeEngineTrial:
    """A search engine's trial as the binding protocol sees it (the engines' own bindings are tested with them)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.outcomes: list[TrialOutcome] = []

    def identity(self) -> dict[str, Any]:
        return {"name": "engine-study", "engine": "fake", "method": "RandomSampler", "trial": self.number,
                "space": {"lr": {"distribution": "log", "low": 1e-4, "high": 1e-1}}}

    def finished(self, outcome: TrialOutcome) -> None:
        self.outcomes.append(outcome)


class TrialPruned(Exception):
    """Named like Optuna's: a run ended by it is a pruned trial."""


def run(tmp_path: Path, *, lr: float = 0.01, loss: float = 1.0, epochs: int = 2, raise_at: int | None = None,
        **kwargs: Any) -> Path:
    from green_callbacks.loop import Tracker

    tracker = Tracker(sensors=[StepEnergySensor("cpu", STEP_J, scope="node")], carbon_intensity=100.0,
                      output_dir=str(tmp_path), monitor="val_loss", hyperparameters={"lr": lr}, **kwargs)
    try:
        with tracker:
            for epoch in range(epochs):
                with tracker.epoch() as ep:
                    tracker.step(samples=4)
                    ep.metrics["val_loss"] = loss / (epoch + 1)
                if raise_at == epoch:
                    raise TrialPruned(f"pruned at epoch {epoch}")
    except TrialPruned:
        pass
    assert tracker.record_path is not None
    return tracker.record_path


def test_a_bound_run_records_the_engines_identity_and_hands_back_its_totals(tmp_path: Path) -> None:
    trial = FakeEngineTrial(3)
    with bound(trial):
        path = run(tmp_path)
    record = read_record(path)
    assert record["search"] == {"name": "engine-study", "method": "random", "engine": "fake", "trial": 3,
                                "state": "complete",
                                "space": {"lr": {"distribution": "log", "low": 1e-4, "high": 1e-1}}}
    [outcome] = trial.outcomes
    assert outcome.state == "complete" and outcome.epochs == 2 and outcome.record_path == str(path)
    assert outcome.energy_j == record["totals"]["energy_j"] > 0
    assert outcome.attributes()["green_energy_kwh"] == record["totals"]["energy_j"] / 3.6e6
    assert outcome.emissions_gco2e == record["totals"]["emissions_gco2e"]


def test_a_pruned_trial_says_pruned_and_keeps_its_epochs(tmp_path: Path) -> None:
    trial = FakeEngineTrial(1)
    with bound(trial):
        path = run(tmp_path, epochs=3, raise_at=1)
    record = read_record(path)
    assert record["search"]["state"] == "pruned" and record["status"] == "failed"
    assert len(record["epochs"]) == 2 and trial.outcomes[0].state == "pruned"
    assert trial.outcomes[0].energy_j == record["totals"]["energy_j"] > 0


def test_what_the_user_declares_wins_key_by_key(tmp_path: Path) -> None:
    with bound(FakeEngineTrial(0)):
        path = run(tmp_path, search={"name": "mine", "method": "grid"})
    search = read_record(path)["search"]
    assert (search["name"], search["method"], search["trial"], search["engine"]) == ("mine", "grid", 0, "fake")


def test_outside_a_trial_nothing_changes(tmp_path: Path) -> None:
    path = run(tmp_path, search="plain")
    assert read_record(path)["search"] == {"name": "plain"}  # as declared: no engine, no state added
    assert merged_search(None, None) is None


def test_final_state() -> None:
    assert final_state("failed", "TrialPruned: trial 3 pruned") == "pruned"
    assert final_state("failed", "optuna.exceptions.TrialPruned: x") == "pruned"
    assert final_state("failed", "ValueError: TrialPruned") == "failed"
    assert final_state("interrupted", "KeyboardInterrupt: ") == "failed"
    assert final_state("completed", None) == "complete"


def test_a_wandb_sweep_run_names_its_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123xy")
    monkeypatch.setenv("WANDB_RUN_ID", "run7")
    path = run(tmp_path, search={"name": "abc123xy", "method": "bayes"})  # method: only the W&B API knows it
    assert read_record(path)["search"] == {"name": "abc123xy", "method": "bayes", "engine": "wandb",
                                           "trial": "run7", "state": "complete"}
    monkeypatch.delenv("WANDB_SWEEP_ID")
    path = run(tmp_path / "after")
    assert read_record(path)["search"] is None


def test_a_search_reads_the_same_whatever_the_order_of_its_files(tmp_path: Path) -> None:
    """Sensitivity sums over the runs: taken in file order, a search read from an engine's experiment folder (one
    subfolder per trial) and from the records' folder differed in the last digits of its importance."""
    from green_callbacks.report.build import build_report
    from green_callbacks.report.render import render_json
    from green_callbacks.report.runs import load_runs

    lrs = (0.0048, 0.0103, 0.0629, 0.0021)
    losses = (0.8313, 0.4121, 0.0937, 1.2771)
    for i, (lr, loss) in enumerate(zip(lrs, losses, strict=True)):
        run(tmp_path / str(i), lr=lr, loss=loss, search={"name": "s", "method": "random", "trial": i,
                                                        "space": {"lr": "log"}})
    loaded = load_runs([tmp_path])
    reports = {json.dumps(json.loads(render_json(build_report(dataclasses.replace(loaded, runs=order))))["sweep"],
                          sort_keys=True)
               for order in itertools.permutations(loaded.runs)}
    assert len(reports) == 1
    assert len(list(find_records([tmp_path]))) == 4

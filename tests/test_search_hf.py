"""HF ``Trainer.hyperparameter_search`` (Optuna backend) with the callback attached optimises what it optimises
without it: the dict ``evaluate()`` returns, from which the default objective sums every metric, is the Trainer's
own (no ``green/`` key added), so each trial's objective value is the same to the last bit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
optuna = pytest.importorskip("optuna")

from transformers import Trainer, TrainingArguments  # noqa: E402
from transformers.trainer_utils import default_compute_objective  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from green_callbacks.core.record import find_records, read_record  # noqa: E402

N_TRIALS = 3


class Tiny(torch.nn.Module):
    """A two-layer classifier; its ``width`` is the searched hyperparameter."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))

    def forward(self, x: Any, labels: Any = None) -> Any:
        logits = self.net(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


def samples() -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return [{"x": x[i], "labels": y[i]} for i in range(16)]


def quiet_setup(tmp_path: Path, *, epochs: int, eval_strategy: str) -> tuple[list[dict[str, Any]], Any]:
    """The samples and the Trainer's arguments of a search, with HF's and Optuna's logging quiet."""
    hf_logging.set_verbosity_error()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = TrainingArguments(str(tmp_path / "hf"), num_train_epochs=epochs, per_device_train_batch_size=4,
                             per_device_eval_batch_size=8, eval_strategy=eval_strategy, save_strategy="no",
                             logging_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0)
    return samples(), args


def search(tmp_path: Path, callbacks: list[Any]) -> tuple[list[float], list[list[str]]]:
    """Run a 3-trial search; the objective of each trial and the keys of the dict it was computed from."""
    data, args = quiet_setup(tmp_path, epochs=1, eval_strategy="no")

    def model_init(trial: Any) -> Tiny:
        return Tiny(8 if trial is None else trial.suggest_int("width", 2, 16))  # the Trainer asks before hp_space

    def compute_metrics(prediction: Any) -> dict[str, float]:  # one metric besides the loss, as a new user writes
        logits = torch.as_tensor(prediction.predictions)
        return {"margin": float((logits[:, 1] - logits[:, 0]).abs().mean())}

    values: list[float] = []
    keys: list[list[str]] = []

    def objective(metrics: dict[str, float]) -> float:
        keys.append(sorted(metrics))
        values.append(default_compute_objective(metrics))
        return values[-1]

    trainer = Trainer(args=args, model_init=model_init, train_dataset=data, eval_dataset=data,
                      compute_metrics=compute_metrics, callbacks=callbacks)
    trainer.hyperparameter_search(
        hp_space=lambda trial: {"width": trial.suggest_int("width", 2, 16),
                                "learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)},
        compute_objective=objective, n_trials=N_TRIALS, direction="maximize", backend="optuna",
        sampler=optuna.samplers.RandomSampler(seed=0), study_name="hf-search",
        storage=f"sqlite:///{tmp_path / 'study.db'}")
    return values, keys


def test_hyperparameter_search_objective_is_unchanged_by_the_callback(tmp_path: Path) -> None:
    from green_callbacks.transformers import GreenCallback

    without, keys_without = search(tmp_path / "plain", [])
    callback = GreenCallback(carbon_intensity=100.0, output_dir=str(tmp_path / "records"))  # the machine's sensors
    with_green, keys_with = search(tmp_path / "green", [callback])
    assert len(without) == N_TRIALS and all(math.isfinite(v) for v in without)
    assert keys_with == keys_without  # no green/ key in the dict the objective is computed from
    assert not [k for trial in keys_with for k in trial if k.startswith("green/")]
    assert with_green == without  # bit for bit: the same trials, the same objective
    records = [read_record(p) for p in find_records([tmp_path / "records"])]
    fits = [r for r in records if r.get("kind") == "fit"]
    assert len(fits) == N_TRIALS and all(r["status"] == "completed" for r in fits)
    # each record is its trial's, read from the Trainer's own trial (no wrapper, no search= given)
    assert sorted(r["search"]["trial"] for r in fits) == list(range(N_TRIALS))
    for record in fits:
        assert {k: record["search"][k] for k in ("name", "engine", "method", "state")} == {
            "name": "hf-search", "engine": "optuna", "method": "random", "state": "complete"}
        assert record["search"]["space"] == {
            "width": {"distribution": "linear", "low": 2, "high": 16},
            "learning_rate": {"distribution": "log", "low": 1e-3, "high": 1e-1}}
    study = optuna.load_study(study_name="hf-search", storage=f"sqlite:///{tmp_path / 'green' / 'study.db'}")
    by_trial = {r["search"]["trial"]: r for r in fits}
    for trial in study.trials:  # the totals reached the trial while HF's objective ran
        assert trial.user_attrs["green_energy_j"] == by_trial[trial.number]["totals"]["energy_j"]


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report (its first epoch's evaluation), no other: which trial is pruned does not
    depend on the values."""

    def prune(self, study: Any, trial: Any) -> bool:
        return trial.number == 1


def test_a_pruned_hyperparameter_search_trial_is_pruned_in_its_record(tmp_path: Path) -> None:
    """HF ends a pruned trial with ``on_train_end`` and then raises ``TrialPruned`` out of ``train()``: the record
    says ``pruned`` (not ``complete``), keeps its complete epoch, and its energy is in the search's cost, the same
    in the user attributes, the records and the report."""
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.optuna import search_totals
    from green_callbacks.report.runs import load_runs
    from green_callbacks.report.sweep import analyze_sweep, comparable_groups
    from green_callbacks.transformers import GreenCallback

    data, args = quiet_setup(tmp_path, epochs=2, eval_strategy="epoch")
    green = GreenCallback(sensors=[StepEnergySensor("cpu", 2.0, scope="node")], carbon_intensity=100.0,
                          output_dir=str(tmp_path / "records"), monitor="eval_loss", mode="min")
    trainer = Trainer(args=args, model_init=lambda trial: Tiny(4), train_dataset=data, eval_dataset=data,
                      callbacks=[green])
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    trainer.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)},
        n_trials=3, direction="minimize", backend="optuna", sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=PruneTrialOne(), study_name="hf-pruned", storage=storage)
    study = optuna.load_study(study_name="hf-pruned", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states == {0: optuna.trial.TrialState.COMPLETE, 1: optuna.trial.TrialState.PRUNED,
                      2: optuna.trial.TrialState.COMPLETE}
    fits = {r["search"]["trial"]: r for r in map(read_record, find_records([tmp_path / "records"]))
            if r.get("kind") == "fit"}
    assert sorted(fits) == [0, 1, 2]
    pruned = fits[1]
    assert pruned["search"]["state"] == "pruned"
    assert pruned["status"] == "failed" and pruned["error"].startswith("TrialPruned")
    assert len(pruned["epochs"]) == 1 and pruned["partial_epoch"] is None  # its one complete epoch is kept
    assert [fits[n]["search"]["state"] for n in (0, 2)] == ["complete", "complete"]
    assert [len(fits[n]["epochs"]) for n in (0, 2)] == [2, 2]
    for trial in study.trials:
        record = fits[trial.number]
        assert trial.user_attrs["green_state"] == record["search"]["state"]
        assert trial.user_attrs["green_energy_j"] == record["totals"]["energy_j"] > 0
    everything = sum(r["totals"]["energy_j"] for r in fits.values())
    assert search_totals(study).energy_j == pytest.approx(everything, rel=1e-12)
    assert search_totals(study).pruned == 1
    runs = load_runs([tmp_path / "records"]).runs
    # the report reads the pruned trial as pruned (the search's decision), the others as the fits they were
    assert sorted(r.status for r in runs) == ["completed", "completed", "pruned"]
    groups = comparable_groups(runs)
    assert len(groups) == 1
    sweep = analyze_sweep(groups[0][1])
    assert sweep is not None and sweep.pruned_runs == 1 and sweep.failed_runs == 0
    assert sweep.total_energy_j == pytest.approx(everything, rel=1e-12)
    assert sweep.energy_stopped_j == pytest.approx(pruned["totals"]["energy_j"], rel=1e-12)

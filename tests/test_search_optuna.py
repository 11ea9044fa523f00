"""Optuna studies as searches (green_callbacks.optuna): a study of 8 trials with a pruner over a tiny Lightning model,
run by one process (in-memory storage) and by two processes on one journal file and one SQLite database, is one
search of 8 trials in the records (each trial once, its number, params' distributions, sampler and end), the pruned
trials' energy in the search's cost, user attributes equal to the records' totals; a study budget stops the study
before it would exceed it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")
torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from green_callbacks.core.record import find_records, read_record  # noqa: E402

STEP_J = 2.0  # joules per sensor read (StepEnergySensor)
INTENSITY = 100.0  # gCO2e/kWh
EPOCHS = 3
ROOT = Path(__file__).resolve().parents[1]


class Tiny(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.lr = lr

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class PruneOdd(pl.Callback):
    """Reports a value per epoch the way a pruning callback does and raises ``TrialPruned`` when told to: the value
    is 1 for odd trial numbers, so ``ThresholdPruner(upper=0.5, n_warmup_steps=1)`` prunes exactly the odd trials,
    after their second epoch, whichever worker runs them."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        self.trial.report(float(self.trial.number % 2), trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned at epoch {trainer.current_epoch}")


def loaders() -> tuple[Any, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=g)
    data = TensorDataset(x, x.sum(1, keepdim=True))
    return DataLoader(data, batch_size=4), DataLoader(data, batch_size=8)


def objective_for(records: str) -> Any:
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.lightning import GreenCallback
    from green_callbacks.optuna import green_objective

    @green_objective
    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.suggest_categorical("opt", ["sgd"])
        green = GreenCallback(sensors=[StepEnergySensor("cpu", STEP_J, scope="node")], carbon_intensity=INTENSITY,
                              output_dir=records, monitor="val_loss")
        trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             callbacks=[green, PruneOdd(trial)])  # green first: the epoch is closed when it prunes
        train, val = loaders()
        trainer.fit(Tiny(lr), train, val)
        return float(trainer.callback_metrics["val_loss"])

    return objective


def run_study(storage: Any, records: str, n_trials: int, seed: int, callbacks: list[Any] | None = None,
              prune: bool = True) -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.ThresholdPruner(upper=0.5, n_warmup_steps=1) if prune else optuna.pruners.NopPruner()
    study = optuna.create_study(study_name="tiny-lr", storage=storage, load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=seed), pruner=pruner)
    study.optimize(objective_for(records), n_trials=n_trials, callbacks=callbacks or [])
    return study


def journal(path: str) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(path))


def worker(kind: str, where: str, records: str, seed: int) -> None:
    """One worker process of the shared study (run by the two-process test)."""
    import warnings

    warnings.simplefilter("ignore")
    run_study(journal(where) if kind == "journal" else where, records, 4, seed)


def check_search(study: Any, records: Path) -> None:
    from green_callbacks.report.runs import load_runs
    from green_callbacks.report.sweep import analyze_sweep, comparable_groups

    state = optuna.trial.TrialState
    trials = study.get_trials()
    assert len(trials) == 8 and sorted(t.number for t in trials) == list(range(8))
    data = [read_record(p) for p in find_records([records])]
    assert len(data) == 8
    by_trial = {d["search"]["trial"]: d for d in data}
    assert sorted(by_trial) == list(range(8))  # each trial once
    for t in trials:
        record = by_trial[t.number]
        search = record["search"]
        assert search["name"] == "tiny-lr" and search["engine"] == "optuna" and search["method"] == "random"
        assert search["space"] == {"lr": {"distribution": "log", "low": 1e-3, "high": 1e-1},
                                   "opt": {"distribution": "categorical", "choices": ["sgd"]}}
        pruned = t.number % 2 == 1
        assert t.state == (state.PRUNED if pruned else state.COMPLETE)
        assert search["state"] == ("pruned" if pruned else "complete")
        assert len(record["epochs"]) == (2 if pruned else EPOCHS)  # a pruned trial keeps its epochs
        totals = record["totals"]
        assert totals["energy_j"] > 0
        attrs = t.user_attrs
        assert attrs["green_state"] == search["state"]
        assert attrs["green_energy_j"] == totals["energy_j"]
        assert attrs["green_energy_kwh"] == totals["energy_j"] / 3.6e6
        assert attrs["green_emissions_gco2e"] == totals["emissions_gco2e"]
        assert attrs["green_train_flops"] == totals["train_flops"] and attrs["green_epochs"] == len(record["epochs"])
        # emissions by hand: energy (J) / 3.6e6 x intensity (PUE 1)
        assert totals["emissions_gco2e"] == pytest.approx(totals["energy_j"] / 3.6e6 * INTENSITY, rel=1e-12)
    runs = load_runs([records]).runs
    groups = comparable_groups(runs)
    assert len(groups) == 1 and len(groups[0][1]) == 8  # one search
    sweep = analyze_sweep(groups[0][1])
    assert sweep is not None and sweep.pruned_runs == 4 and sweep.failed_runs == 0
    everything = sum(d["totals"]["energy_j"] for d in data)
    assert sweep.total_energy_j == pytest.approx(everything, rel=1e-12)
    assert sweep.energy_stopped_j == pytest.approx(
        sum(d["totals"]["energy_j"] for d in data if d["search"]["state"] == "pruned"), rel=1e-12)
    from green_callbacks.optuna import search_totals

    totals = search_totals(study)
    assert (totals.trials, totals.measured, totals.pruned, totals.running) == (8, 8, 4, 0)
    assert totals.energy_j == pytest.approx(everything, rel=1e-12)


@pytest.mark.slow
def test_one_process_in_memory_study_is_one_search(tmp_path: Path) -> None:
    study = run_study(None, str(tmp_path / "records"), 8, seed=0)
    check_search(study, tmp_path / "records")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_processes_on_one_storage_are_one_search(kind: str, tmp_path: Path) -> None:
    records = str(tmp_path / "records")
    where = str(tmp_path / "study.log") if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    storage = journal(where) if kind == "journal" else where
    optuna.create_study(study_name="tiny-lr", storage=storage)  # created once, loaded by both workers
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from tests.test_search_optuna import worker; worker(*sys.argv[1:4], int(sys.argv[4]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, kind, where, records, str(seed)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for seed in (1, 2)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    check_search(optuna.load_study(study_name="tiny-lr", storage=storage), tmp_path / "records")


def test_a_study_budget_stops_before_the_search_would_exceed_it(tmp_path: Path) -> None:
    """Every trial costs the same energy E (the same reads of a step sensor); a budget of 3.5 E lets 3 trials run:
    after the third, 3 E spent plus the next at the mean E would make 4 E > 3.5 E. One warning says so."""
    from green_callbacks.optuna import GreenStudyCallback

    first = run_study(None, str(tmp_path / "probe"), 1, seed=0, prune=False)
    cost_j = first.trials[0].user_attrs["green_energy_j"]
    assert cost_j > 0
    budget = GreenStudyCallback(budget_kwh=3.5 * cost_j / 3.6e6)
    with pytest.warns(UserWarning, match="would exceed its budget") as caught:
        study = run_study(None, str(tmp_path / "records"), 8, seed=0, callbacks=[budget], prune=False)
    assert len([w for w in caught if "would exceed its budget" in str(w.message)]) == 1
    assert len(study.trials) == 3
    spent = sum(t.user_attrs["green_energy_j"] for t in study.trials)
    assert spent == pytest.approx(3 * cost_j, rel=1e-12) and spent <= 3.5 * cost_j
    assert budget.totals is not None and budget.totals.trials == 3 and budget.stop_reason is not None
    records = [read_record(p) for p in find_records([tmp_path / "records"])]
    assert sum(r["totals"]["energy_j"] for r in records) == pytest.approx(spent, rel=1e-12)


def test_budget_and_identity_errors() -> None:
    from green_callbacks.optuna import GreenStudyCallback, green_search

    with pytest.raises(ValueError, match="budget_kwh must be a finite number > 0"):
        GreenStudyCallback(budget_kwh=0)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), study_name="s")
    trial = study.ask()
    trial.suggest_int("layers", 1, 4)
    trial.suggest_float("dropout", 0.0, 0.5, step=0.1)
    search = green_search(trial)
    assert search == {"name": "s", "engine": "optuna", "method": "TPESampler", "trial": 0,
                      "space": {"layers": {"distribution": "linear", "low": 1, "high": 4},
                                "dropout": {"distribution": "linear", "low": 0.0, "high": 0.5, "step": 0.1}}}
    from green_callbacks.core.search import normalize_search

    assert normalize_search(search)["method"] == "tpe"


class PruneOddInValidation(pl.Callback):
    """As Optuna's ``PyTorchLightningPruningCallback`` does: reports in ``on_validation_end`` and raises
    ``TrialPruned`` there, so the epoch is cut short in its validation (odd trials, at their second epoch)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if trainer.sanity_checking:
            return
        self.trial.report(float(self.trial.number % 2), trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned at epoch {trainer.current_epoch}")


def test_an_epoch_cut_short_by_pruning_is_in_the_search_cost(tmp_path: Path) -> None:
    """A trial pruned in its validation keeps the cut epoch in ``partial_epoch`` (not in its totals, which cover
    complete epochs); the search's cost counts it: the report's search total, its pruned trials' energy and the
    study callback's totals are the records' totals plus the cut epochs' energy, and agree."""
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.lightning import GreenCallback
    from green_callbacks.optuna import GreenStudyCallback, green_objective
    from green_callbacks.report.runs import load_runs
    from green_callbacks.report.sweep import analyze_sweep, comparable_groups

    records = str(tmp_path / "records")

    @green_objective
    def objective(trial: Any) -> float:
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        green = GreenCallback(sensors=[StepEnergySensor("cpu", STEP_J, scope="node")], carbon_intensity=INTENSITY,
                              output_dir=records, monitor="val_loss")
        trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             callbacks=[green, PruneOddInValidation(trial)])
        train, val = loaders()
        trainer.fit(Tiny(lr), train, val)
        return float(trainer.callback_metrics["val_loss"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), study_name="cut",
                                pruner=optuna.pruners.ThresholdPruner(upper=0.5, n_warmup_steps=1))
    budget = GreenStudyCallback(budget_kwh=1.0)  # far away: only its totals are read
    study.optimize(objective, n_trials=4, callbacks=[budget])
    data = {d["search"]["trial"]: d for d in map(read_record, find_records([records]))}
    assert sorted(data) == [0, 1, 2, 3]
    cut = {n: data[n]["partial_epoch"]["energy_j"] for n in (1, 3)}
    for n in (1, 3):
        record = data[n]
        assert record["search"]["state"] == "pruned" and len(record["epochs"]) == 1
        assert record["partial_epoch"]["epoch"] == 1 and cut[n] > 0
        attrs = study.trials[n].user_attrs
        assert attrs["green_energy_j"] == record["totals"]["energy_j"]  # the totals: complete epochs
        assert attrs["green_partial_epoch_energy_j"] == cut[n]
    assert data[0]["partial_epoch"] is None and data[2]["partial_epoch"] is None
    cost = sum(d["totals"]["energy_j"] for d in data.values()) + cut[1] + cut[3]
    groups = comparable_groups(load_runs([records]).runs)
    assert len(groups) == 1
    sweep = analyze_sweep(groups[0][1])
    assert sweep is not None and sweep.pruned_runs == 2
    assert sweep.total_energy_j == pytest.approx(cost, rel=1e-12)
    assert sweep.energy_cut_epochs_j == pytest.approx(cut[1] + cut[3], rel=1e-12)
    assert sweep.energy_stopped_j == pytest.approx(
        data[1]["totals"]["energy_j"] + data[3]["totals"]["energy_j"] + cut[1] + cut[3], rel=1e-12)
    assert sweep.progress[-1].energy_j == pytest.approx(cost, rel=1e-12)
    from green_callbacks.report.render import sweep_sentences

    assert any("of epochs cut short" in s and "not in those runs' totals" in s for s in sweep_sentences(sweep))
    assert budget.totals is not None and budget.totals.energy_j == pytest.approx(cost, rel=1e-12)
    assert budget.totals.measured == 4 and budget.totals.pruned == 2

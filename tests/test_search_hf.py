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


def search(tmp_path: Path, callbacks: list[Any]) -> tuple[list[float], list[list[str]]]:
    """Run a 3-trial search; the objective of each trial and the keys of the dict it was computed from."""
    hf_logging.set_verbosity_error()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = samples()
    args = TrainingArguments(str(tmp_path / "hf"), num_train_epochs=1, per_device_train_batch_size=4,
                             per_device_eval_batch_size=8, eval_strategy="no", save_strategy="no",
                             logging_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0)

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

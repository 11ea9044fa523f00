"""Issue 8, budgets through the three adapters: each stops after exactly the epoch whose projection first exceeds the
budget, and the run record says so.

Energy comes from one ``ConstantPowerSensor`` (100 W) read on the fake clock; the training itself advances the clock
from a per-batch hook, by a number of seconds that depends on the epoch. Each epoch has 2 training batches (20
samples in batches of 10) and no validation, so epoch e costs 100 W × 2 × TICK_S[e]:

    TICK_S = 1, 1, 1, 2, 3, 3 s per batch  →  epoch energies E = 200, 200, 200, 400, 600, 600 J, 6 epochs planned.

The projection after epoch k (budget.py: total so far + mean of the epochs after the first × epochs remaining;
epoch 0 alone is its own rate) is, by hand:

    k=0: 200 + 200 × 5                         = 1200 J
    k=1: 400 + 200 × 4                         = 1200 J
    k=2: 600 + 200 × 3                         = 1200 J
    k=3: 1000 + (200+200+400)/3 × 2            = 1533.33 J
    k=4: 1600 + (200+200+400+600)/4 × 1        = 1950 J
    k=5: 2200 + 0                              = 2200 J

* an energy budget of 1500 J is first exceeded by the projection after epoch 3 (the actual total is then 1000 J):
  the run stops after 4 epochs;
* emissions at 400 gCO2e/kWh and PUE 1.5 are 400 × 1.5 / 3.6e6 = 1/6000 g per joule; a budget of 0.32 g is 1920 J:
  first exceeded after epoch 4, the run stops after 5 epochs;
* with ``budget_action="warn"`` the 1500 J budget is recorded as exceeded after epoch 3 but all 6 epochs run;
* a 2500 J budget is never exceeded (2200 J at the end): 6 epochs, no stop reason.
"""

from __future__ import annotations

import math
import os
import statistics
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")


from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.core.sensors.fake import ConstantPowerSensor  # noqa: E402
from tests.models import HFModel, Samples, keras_mlp, lightning_module, mlp  # noqa: E402

POWER_W = 100.0
TICK_S = (1.0, 1.0, 1.0, 2.0, 3.0, 3.0)
PLANNED = len(TICK_S)  # 6 epochs
N_SAMPLES, BATCH = 20, 10
BATCHES = N_SAMPLES // BATCH  # 2
J_PER_KWH = 3.6e6
INTENSITY, PUE = 400.0, 1.5
G_PER_J = INTENSITY * PUE / J_PER_KWH  # 1/6000 g per joule

EPOCH_J = [POWER_W * BATCHES * t for t in TICK_S]  # 200, 200, 200, 400, 600, 600


def hand_projection_j(k: int) -> float:
    """The projected total after epoch k, written out as in the module docstring."""
    return [200 + 200 * 5, 400 + 200 * 4, 600 + 200 * 3, 1000 + (200 + 200 + 400) / 3 * 2,
            1600 + (200 + 200 + 400 + 600) / 4 * 1, 2200.0][k]


CASES = {
    # name: (GreenCallback budget kwargs, epochs that run, epoch after which the budget is first exceeded)
    "energy-stop": ({"budget_kwh": 1500 / J_PER_KWH}, 4, 3),
    "emissions-stop": ({"budget_gco2e": 0.32}, 5, 4),
    "energy-warn": ({"budget_kwh": 1500 / J_PER_KWH, "budget_action": "warn"}, 6, 3),
    "never": ({"budget_kwh": 2500 / J_PER_KWH}, 6, None),
}


def green_kwargs(tmp_path: Path, budget: dict[str, Any]) -> dict[str, Any]:
    return dict(carbon_intensity=INTENSITY, pue=PUE, output_dir=str(tmp_path / "green"),
                sensors=[ConstantPowerSensor("cpu", POWER_W, scope="node")], **budget)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 4, generator=g)
    return x, (x[:, 0] > 0).long()


# ------------------------------------------------------------------------------------ one run per framework
# Each returns (epochs the framework actually began, the green/ metrics it logged per epoch, the record).
def run_lightning(tmp_path: Path, fake_clock: Any, budget: dict[str, Any], **trainer_args: Any):
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    green = GreenCallback(**green_kwargs(tmp_path, budget))
    begun: list[int] = []
    logged: list[dict[str, float]] = []

    class Drive(pl.Callback):  # the clock moves in the batch hook (the FLOP engine replays the step on a meta copy)
        def on_train_epoch_start(self, trainer, pl_module):
            begun.append(trainer.current_epoch)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            fake_clock.advance(TICK_S[trainer.current_epoch])

        def on_train_epoch_end(self, trainer, pl_module):  # after GreenCallback: what it logged this epoch
            logged.append({k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("green/")})

    trainer = pl.Trainer(max_epochs=PLANNED, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[green, Drive()], **trainer_args)
    module = lightning_module(mlp(seed=0), steps=("training",))
    trainer.fit(module, DataLoader(TensorDataset(*data()), batch_size=BATCH))
    assert trainer.current_epoch == len(begun)  # Lightning's own count of finished epochs
    return begun, logged, read_record(green.record_path)


def run_keras(tmp_path: Path, fake_clock: Any, budget: dict[str, Any], **fit_args: Any):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from green_callbacks.keras import GreenCallback

    keras.utils.set_random_seed(0)
    model = keras_mlp(4, 8, 2)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    green = GreenCallback(**green_kwargs(tmp_path, budget))
    begun: list[int] = []

    class Drive(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            begun.append(epoch)

        def on_train_batch_begin(self, batch, logs=None):
            fake_clock.advance(TICK_S[begun[-1]])

    x, y = (t.numpy() for t in data())
    history = model.fit(x, y, batch_size=BATCH, epochs=PLANNED, shuffle=False, verbose=0, callbacks=[green, Drive()],
                        **fit_args)
    assert history.epoch == begun  # Keras' own list of the epochs that ran
    logged = [{k: float(v[i]) for k, v in history.history.items() if k.startswith("green/")}
              for i in range(len(history.epoch))]
    return begun, logged, read_record(green.record_path)


def run_transformers(tmp_path: Path, fake_clock: Any, budget: dict[str, Any], **hf_args: Any):
    pytest.importorskip("transformers")
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from green_callbacks.transformers import GreenCallback

    hf_logging.set_verbosity_error()
    begun: list[int] = []

    class Drive(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            begun.append(len(begun))

        def on_step_begin(self, args, state, control, **kwargs):
            fake_clock.advance(TICK_S[begun[-1]])

    settings = dict(logging_strategy="epoch", eval_strategy="no", save_strategy="no")
    settings.update(hf_args)
    args = TrainingArguments(str(tmp_path / "out"), num_train_epochs=PLANNED, per_device_train_batch_size=BATCH,
                             report_to="none", use_cpu=True, disable_tqdm=True, seed=0, **settings)
    green = GreenCallback(**green_kwargs(tmp_path, budget))
    evaluated = Samples(*data()) if settings["eval_strategy"] != "no" else None
    trainer = Trainer(model=HFModel(mlp(seed=0)), args=args, train_dataset=Samples(*data()), eval_dataset=evaluated,
                      callbacks=[green, Drive()])
    trainer.train()
    assert trainer.state.epoch == pytest.approx(len(begun))  # the Trainer's own epoch count
    logged = [{k: float(v) for k, v in h.items() if k.startswith("green/")} for h in trainer.state.log_history
              if "green/epoch_energy_kwh" in h]
    return begun, logged, read_record(green.record_path)


RUNNERS = {"lightning": run_lightning, "keras": run_keras, "transformers": run_transformers}


def run(framework: str, tmp_path: Path, fake_clock: Any, budget: dict[str, Any], **extra: Any):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = RUNNERS[framework](tmp_path, fake_clock, budget, **extra)
    ours = [str(w.message) for w in caught if str(w.message).startswith("green_callbacks: ")
            and "budget" in str(w.message)]
    return (*out, ours)


@pytest.mark.parametrize("framework", list(RUNNERS))
@pytest.mark.parametrize("case", list(CASES))
def test_stops_after_the_epoch_whose_projection_first_exceeds_the_budget(tmp_path, fake_clock, framework, case):
    budget, epochs_run, exceeded_at = CASES[case]
    begun, logged, record, budget_warnings = run(framework, tmp_path, fake_clock, budget)

    # the framework really ran that many epochs (not just the record)
    assert begun == list(range(epochs_run)), (framework, case, begun)
    assert [row["epoch"] for row in record["epochs"]] == list(range(epochs_run))
    assert record["status"] == "completed"
    assert [row["energy_j"] for row in record["epochs"]] == pytest.approx(EPOCH_J[:epochs_run])

    # every epoch logged the projection of the whole run, as computed by hand
    assert len(logged) == epochs_run
    for k, metrics in enumerate(logged):
        assert metrics["green/projected_total_energy_kwh"] == pytest.approx(hand_projection_j(k) / J_PER_KWH)
        assert metrics["green/projected_total_emissions_gco2e"] == pytest.approx(hand_projection_j(k) * G_PER_J)

    reason = record["stop_reason"]
    if exceeded_at is None:
        assert reason is None
        assert not budget_warnings
        return
    kind = "energy" if "budget_kwh" in budget else "emissions"
    assert reason.startswith(f"budget: {kind} projected for the whole run"), reason
    assert ("budget_action='warn'" in reason) == (budget.get("budget_action") == "warn")
    assert len(budget_warnings) == 1  # once, on the epoch that first exceeded it
    then = "training goes on" if budget.get("budget_action") == "warn" else "training stops at the end of this epoch"
    assert then in budget_warnings[0]

    # the record's projection is the one of the last epoch that ran
    last = epochs_run - 1
    projection = record["budget"]["projection"]
    assert projection["energy_j"]["total"] == pytest.approx(sum(EPOCH_J[:epochs_run]))
    assert projection["energy_j"]["projected"] == pytest.approx(hand_projection_j(last))
    assert projection["emissions_gco2e"]["projected"] == pytest.approx(hand_projection_j(last) * G_PER_J)
    assert record["budget"]["planned_epochs"] == PLANNED
    assert record["budget"]["action"] == budget.get("budget_action", "stop")
    if case == "energy-stop":  # the band after epoch 3: ± the spread of epochs 1-3 × the 2 epochs remaining
        mean = (200 + 200 + 400) / 3
        spread = math.sqrt(((200 - mean) ** 2 * 2 + (400 - mean) ** 2) / (3 - 1))  # sample std, 115.47
        assert spread == pytest.approx(statistics.stdev([200.0, 200.0, 400.0]))
        assert projection["energy_j"]["low"] == pytest.approx(1000 + mean * 2 - spread * 2)  # 1302.4 J
        assert projection["energy_j"]["high"] == pytest.approx(1000 + mean * 2 + spread * 2)  # 1764.3 J
        assert record["budget"]["budget_kwh"] == pytest.approx(1500 / J_PER_KWH)


@pytest.mark.parametrize(
    "hf_args",
    [
        {"eval_strategy": "epoch", "logging_strategy": "epoch"},  # the epoch closes in on_evaluate
        {"eval_strategy": "no", "logging_strategy": "steps"},  # ... in on_epoch_end (no epoch-end log follows)
    ],
    ids=["closed-on-evaluate", "closed-on-epoch-end"],
)
def test_transformers_stops_whichever_event_closes_the_epoch(tmp_path, fake_clock, hf_args):
    """The HF adapter closes an epoch in one of three events (on_log is covered above): the stop works in each."""
    begun, logged, record, _ = run("transformers", tmp_path, fake_clock, CASES["energy-stop"][0], **hf_args)
    assert begun == [0, 1, 2, 3]
    assert len(logged) == len(record["epochs"]) == 4
    assert record["stop_reason"].startswith("budget: energy projected")
    if hf_args["eval_strategy"] == "epoch":  # the evaluation ran inside each epoch window
        assert all("eval_loss" in row["metrics"] for row in record["epochs"])


def test_keras_initial_epoch_plans_only_the_epochs_this_fit_runs(tmp_path, fake_clock):
    """fit(epochs=6, initial_epoch=3) runs epochs 3, 4, 5: 3 epochs. After the first (400 J) the projection is
    400 × 3 = 1200 J, not 400 × 6 = 2400 J (which would stop a 1500 J budget after one epoch of a 1600 J run)."""
    begun, logged, record, _ = run("keras", tmp_path, fake_clock, {}, initial_epoch=3)
    assert begun == [3, 4, 5]
    assert record["budget"]["planned_epochs"] == 3
    assert logged[0]["green/projected_total_energy_kwh"] == pytest.approx(400 * 3 / J_PER_KWH)


def test_lightning_max_steps_shorter_than_max_epochs_is_planned(tmp_path, fake_clock):
    """max_epochs=6 but max_steps=4 with 2 batches per epoch: the run is 2 epochs, 200 + 200 = 400 J. A 1000 J budget
    must not stop it; planning 6 epochs projects 200 × 6 = 1200 J after epoch 0 and stops a run that fits."""
    begun, _, record, _ = run("lightning", tmp_path, fake_clock, {"budget_kwh": 1000 / J_PER_KWH}, max_steps=4)
    assert record["stop_reason"] is None
    assert begun == [0, 1]
    assert record["budget"]["planned_epochs"] == 2

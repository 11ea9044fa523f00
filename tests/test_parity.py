"""Adapter parity: one synthetic run driven through Lightning, Keras (torch backend) and HF transformers.

DESIGN.md: "The same synthetic run driven through all three adapters must give identical values". The run:

* the same MLP, Linear(8→16) – ReLU – Linear(16→2), starting from the same weights (the torch weights are copied into
  the Keras Dense layers, kernel = weightᵀ), trained by plain SGD (lr 0.1, constant) on cross-entropy;
* 25 training samples in batches of 10 (10, 10 and a partial 5), 7 validation samples (one batch of 7), 3 epochs,
  a validation pass at the end of every epoch;
* energy from ``StepEnergySensor``s (gpu 1 J, cpu 2 J, ram 0.5 J per read = 3.5 J per read of the three), so the
  energies depend only on *where* the adapters read, not on the wall clock; ``carbon_intensity=300``, ``pue=1.5``;
* convergence on the validation loss under each framework's own name (``val_loss``, ``val_loss``, ``eval_loss``).

The sensors are read at four boundaries per epoch: epoch start, evaluation start, evaluation end, epoch end. So, by
hand, an epoch is 3 reads = 10.5 J, its evaluation 1 read = 3.5 J, its training part 7 J.

FLOPs by hand (2·M·N·K per matmul; bias, ReLU and the loss are not matmuls; the first layer computes no input
gradient in the backward, the data needs none). Per sample:
  forward  2·8·16 + 2·16·2                    = 256 + 64       = 320
  backward dW₁ 2·8·16 + dW₂ 2·16·2 + dX₂ 2·16·2 = 256 + 64 + 64  = 384
  training step 704, evaluation step 320; an epoch: 704·25 = 17 600 training FLOPs, 320·7 = 2 240 evaluation FLOPs.

Compared exactly: every ``green/`` key except ``green/epoch_time_s`` (wall clock) — energies, emissions, FLOPs,
totals, FLOPs per joule (FLOPs / training joules, no time in it), projections and the convergence keys. The
convergence keys depend on the validation-loss *values*; the setup makes the best epoch the same everywhere (the
loss falls every epoch from the same start), and the test checks that precondition (the best epoch recorded by each
run is the last one) before comparing them.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from torch import nn  # noqa: E402

from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.core.sensors.fake import StepEnergySensor  # noqa: E402
from green_callbacks.core.session import METRIC_KEYS  # noqa: E402
from green_callbacks.core.water import lookup_water  # noqa: E402

N_IN, N_HIDDEN, N_OUT = 8, 16, 2
N_TRAIN, N_VAL, BATCH, EPOCHS = 25, 7, 10, 3
LR = 0.1
INTENSITY, PUE = 300.0, 1.5
GPU_J, CPU_J, RAM_J = 1.0, 2.0, 0.5
J_PER_KWH = 3.6e6

# ------------------------------------------------------------------------------------ hand-computed references
PER_READ_J = GPU_J + CPU_J + RAM_J  # 3.5 J per read of the three sensors
EPOCH_READS, EVAL_READS = 3, 1  # epoch start→(eval start, eval end, epoch end); eval start→eval end
EPOCH_J = EPOCH_READS * PER_READ_J  # 10.5 J
EVAL_J = EVAL_READS * PER_READ_J  # 3.5 J
TRAIN_J = EPOCH_J - EVAL_J  # 7 J
FWD_PER_SAMPLE = 2 * N_IN * N_HIDDEN + 2 * N_HIDDEN * N_OUT  # 320
BWD_PER_SAMPLE = 2 * N_IN * N_HIDDEN + 2 * N_HIDDEN * N_OUT + 2 * N_HIDDEN * N_OUT  # 384 (no dX for layer 1)
EPOCH_TRAIN_FLOPS = (FWD_PER_SAMPLE + BWD_PER_SAMPLE) * N_TRAIN  # 704 · 25 = 17 600
EPOCH_EVAL_FLOPS = FWD_PER_SAMPLE * N_VAL  # 320 · 7 = 2 240
EPOCH_GCO2E = EPOCH_J / J_PER_KWH * INTENSITY * PUE  # 10.5 J = 2.9167e-6 kWh → 1.3125e-3 g

# wall clock: differs between runs by nature (embodied emissions are amortised over the epoch's wall time)
TIME_KEYS = {"green/epoch_time_s", "green/epoch_embodied_gco2e", "green/total_embodied_gco2e"}
# water: IT energy × (default WUE 0.49 L/kWh + PUE × the world's off-site L/kWh, as the grid has no country)
WATER_L_PER_KWH = 0.49 + PUE * lookup_water("world").offsite_l_per_kwh
COMPARED_KEYS = [k for k in METRIC_KEYS if k not in TIME_KEYS]


def expected_epoch(epoch: int) -> dict[str, float]:
    """The green/ metrics of epoch ``epoch`` (0-based) by hand, when the best epoch so far is this one."""
    n = epoch + 1
    return {
        "green/epoch_energy_kwh": EPOCH_J / J_PER_KWH,
        "green/epoch_gpu_energy_kwh": EPOCH_READS * GPU_J / J_PER_KWH,
        "green/epoch_cpu_energy_kwh": EPOCH_READS * CPU_J / J_PER_KWH,
        "green/epoch_ram_energy_kwh": EPOCH_READS * RAM_J / J_PER_KWH,
        "green/epoch_eval_energy_kwh": EVAL_J / J_PER_KWH,
        "green/epoch_emissions_gco2e": EPOCH_GCO2E,
        "green/epoch_train_flops": EPOCH_TRAIN_FLOPS,
        "green/epoch_eval_flops": EPOCH_EVAL_FLOPS,
        "green/total_energy_kwh": n * EPOCH_J / J_PER_KWH,
        "green/total_emissions_gco2e": n * EPOCH_GCO2E,
        "green/total_train_flops": n * EPOCH_TRAIN_FLOPS,
        "green/flops_to_convergence": n * EPOCH_TRAIN_FLOPS,
        "green/energy_to_convergence_kwh": n * EPOCH_J / J_PER_KWH,
        "green/emissions_to_convergence_gco2e": n * EPOCH_GCO2E,
        "green/epochs_to_convergence": n,
        "green/train_flops_per_joule": EPOCH_TRAIN_FLOPS / TRAIN_J,  # 17 600 / 7
        # every epoch costs the same, so the projection of the 3-epoch run is 3 epochs' worth from epoch 0 on
        "green/projected_total_energy_kwh": EPOCHS * EPOCH_J / J_PER_KWH,
        "green/projected_total_emissions_gco2e": EPOCHS * EPOCH_GCO2E,
        "green/total_water_l": n * EPOCH_J / J_PER_KWH * WATER_L_PER_KWH,
    }


# ------------------------------------------------------------------------------------ the shared run
def sensors() -> list[StepEnergySensor]:
    return [StepEnergySensor("gpu", GPU_J), StepEnergySensor("cpu", CPU_J, scope="node"),
            StepEnergySensor("ram", RAM_J, scope="node")]


def green_kwargs(tmp_path: Path, name: str, monitor: str) -> dict[str, Any]:
    return dict(carbon_intensity=INTENSITY, pue=PUE, monitor=monitor, sensors=sensors(),
                output_dir=str(tmp_path / name / "green"))


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_VAL, N_IN, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def mlp() -> nn.Sequential:
    """The shared architecture, with the same initial weights every time."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(N_IN, N_HIDDEN), nn.ReLU(), nn.Linear(N_HIDDEN, N_OUT))


def run_lightning(tmp_path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    xt, yt, xv, yv = data()
    green = GreenCallback(**green_kwargs(tmp_path, "lightning", "val_loss"))
    per_epoch: list[dict[str, float]] = []

    class Collect(pl.Callback):  # after GreenCallback in the list: sees what it logged this epoch
        def on_train_epoch_end(self, trainer, pl_module):
            per_epoch.append(dict(green.last_metrics))

    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[green, Collect()])
    trainer.fit(Module(), DataLoader(TensorDataset(xt, yt), batch_size=BATCH),
                DataLoader(TensorDataset(xv, yv), batch_size=BATCH))
    logged = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("green/")}
    assert logged == pytest.approx(per_epoch[-1], rel=0, abs=0, nan_ok=True)  # what reached the loggers
    return per_epoch, read_record(green.record_path)


def run_keras(tmp_path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    from green_callbacks.keras import GreenCallback

    torch_net = mlp()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((N_IN,)), keras.layers.Dense(N_HIDDEN, activation="relu"),
                              keras.layers.Dense(N_OUT)])
    for layer, linear in zip(model.layers, (torch_net[0], torch_net[2]), strict=True):
        layer.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xt, yt, xv, yv = (t.numpy() for t in data())
    green = GreenCallback(**green_kwargs(tmp_path, "keras", "val_loss"))
    history = model.fit(xt, yt, batch_size=BATCH, epochs=EPOCHS, validation_data=(xv, yv), shuffle=False,
                        verbose=0, callbacks=[green])
    per_epoch = [{k: float(history.history[k][e]) for k in METRIC_KEYS} for e in range(len(history.epoch))]
    return per_epoch, read_record(green.record_path)


class HFModel(nn.Module):
    """The shared MLP as a model the HF Trainer can train: ``forward(x, labels)`` returns the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class Samples(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def run_transformers(tmp_path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from green_callbacks.transformers import GreenCallback

    hf_logging.set_verbosity_error()
    xt, yt, xv, yv = data()
    args = TrainingArguments(
        str(tmp_path / "transformers" / "out"), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH, eval_strategy="epoch", logging_strategy="epoch", save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=LR, optim="sgd",
        lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
    )
    green = GreenCallback(**green_kwargs(tmp_path, "transformers", "eval_loss"))
    trainer = Trainer(model=HFModel(), args=args, train_dataset=Samples(xt, yt), eval_dataset=Samples(xv, yv),
                      callbacks=[green])
    trainer.train()
    per_epoch = [{k: float(h[k]) for k in METRIC_KEYS} for h in trainer.state.log_history
                 if "green/epoch_energy_kwh" in h]
    return per_epoch, read_record(green.record_path)


RUNNERS = {"lightning": run_lightning, "keras": run_keras, "transformers": run_transformers}
pytestmark = pytest.mark.slow  # three real trainings in the module fixture: about 4-6 s on 2 cores


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[dict[str, float]], dict[str, Any]]]:
    if keras.backend.backend() != "torch":
        pytest.skip(f"adapter parity runs Keras on the torch backend; KERAS_BACKEND is {keras.backend.backend()}")
    tmp_path = tmp_path_factory.mktemp("parity")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # frameworks' own hints (few workers, CPU, ...)
        return {name: runner(tmp_path) for name, runner in RUNNERS.items()}


def same(a: float, b: float) -> bool:
    """Equal up to float rounding of the same arithmetic (NaN equals NaN)."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def test_every_key_every_epoch_in_all_three(runs):
    for name, (per_epoch, record) in runs.items():
        assert len(per_epoch) == EPOCHS, name
        assert len(record["epochs"]) == EPOCHS, name
        for e, metrics in enumerate(per_epoch):
            assert set(metrics) == set(METRIC_KEYS), (name, e)
            assert all(isinstance(v, float) for v in metrics.values()), (name, e)


def test_best_epoch_is_the_last_in_all_three(runs):
    """Precondition of comparing the convergence keys: the same best epoch everywhere (the loss falls each epoch)."""
    for name, (_, record) in runs.items():
        monitor = {"lightning": "val_loss", "keras": "val_loss", "transformers": "eval_loss"}[name]
        losses = [row["metrics"][monitor] for row in record["epochs"]]
        assert losses == sorted(losses, reverse=True) and len(set(losses)) == EPOCHS, (name, losses)
        assert record["convergence"]["monitor"] == monitor
        assert record["convergence"]["best"]["epoch"] == EPOCHS - 1, name


@pytest.mark.parametrize("name", list(RUNNERS))
def test_each_adapter_equals_the_hand_computation(runs, name):
    per_epoch, _ = runs[name]
    for e, metrics in enumerate(per_epoch):
        expected = expected_epoch(e)
        wrong = {k: (metrics[k], v) for k, v in expected.items() if not math.isclose(metrics[k], v, rel_tol=1e-9)}
        assert not wrong, f"{name} epoch {e}: (got, expected) {wrong}"


@pytest.mark.parametrize("other", ["keras", "transformers"])
def test_identical_values_across_adapters(runs, other):
    reference, _ = runs["lightning"]
    values, _ = runs[other]
    for e in range(EPOCHS):
        differ = {k: (reference[e][k], values[e][k]) for k in COMPARED_KEYS if not same(reference[e][k], values[e][k])}
        assert not differ, f"lightning vs {other}, epoch {e}: {differ}"


@pytest.mark.parametrize("other", ["keras", "transformers"])
def test_identical_run_records_across_adapters(runs, other):
    """The records agree too: per-epoch rows (energies by component, methods, FLOPs, emissions, totals), the run's
    totals, the carbon block and the projection — everything but times and the frameworks' own metrics."""
    _, reference = runs["lightning"]
    _, record = runs[other]

    def comparable(row: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k not in ("time_s", "metrics")}
        out["totals"] = {k: v for k, v in row["totals"].items() if k != "time_s"}
        return out

    for e in range(EPOCHS):
        assert comparable(record["epochs"][e]) == comparable(reference["epochs"][e]), e  # same arithmetic: same floats
    assert comparable({"totals": record["totals"]}) == comparable({"totals": reference["totals"]})
    assert record["carbon"] == reference["carbon"]
    assert record["footprint"]["water"] == reference["footprint"]["water"]
    assert record["methods"] == reference["methods"]
    assert record["budget"]["planned_epochs"] == reference["budget"]["planned_epochs"] == EPOCHS
    assert record["budget"]["projection"] == reference["budget"]["projection"]
    best, best_ref = record["convergence"]["best"], reference["convergence"]["best"]
    assert {k: v for k, v in best.items() if k not in ("time_s", "value")} == {
        k: v for k, v in best_ref.items() if k not in ("time_s", "value")}
    assert record["status"] == reference["status"] == "completed"


def test_hf_estimate_is_nan_not_zero_for_a_plain_module(tmp_path):
    """The Trainer cannot estimate FLOPs of a plain nn.Module (its total_flos stays 0): logged as NaN, never 0."""
    from transformers import Trainer, TrainingArguments

    from green_callbacks.transformers import HF_TOTAL_FLOS_KEY, GreenCallback

    xt, yt, _, _ = data()
    args = TrainingArguments(str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=BATCH,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    green = GreenCallback(**green_kwargs(tmp_path, "hf-nan", "eval_loss"))
    trainer = Trainer(model=HFModel(), args=args, train_dataset=Samples(xt, yt), callbacks=[green])
    trainer.train()
    [entry] = [h for h in trainer.state.log_history if HF_TOTAL_FLOS_KEY in h]
    assert math.isnan(entry[HF_TOTAL_FLOS_KEY])

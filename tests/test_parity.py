"""Adapter parity: one synthetic run driven through Lightning, Keras (torch backend) and HF transformers.

The project's rule "the same synthetic run driven through all three adapters must give identical values". The run:

* the same MLP, Linear(8→16) – ReLU – Linear(16→2), starting from the same weights (the torch weights are copied into
  the Keras Dense layers, kernel = weightᵀ), trained by plain SGD (lr 0.1, constant) on cross-entropy;
* 25 training samples in batches of 10 (10, 10 and a partial 5), 7 validation samples (one batch of 7), 3 epochs,
  a validation pass at the end of every epoch;
* energy from ``StepEnergySensor``s (gpu 1 J, cpu 2 J, ram 0.5 J per read = 3.5 J per read of the three), so the
  energies depend only on *where* the adapters read, not on the wall clock; ``carbon_intensity=300``, ``pue=1.5``;
* convergence on the validation loss under each framework's own name (``val_loss``, ``val_loss``, ``eval_loss``);
* a fake clock (green_callbacks' only clock) moved by 1 s at the start of every training batch and 0.5 s at every
  validation batch, from each framework's own batch hooks; so an epoch lasts 3 + 0.5 = 3.5 s, of which 3 s train.

The sensors are read at four boundaries per epoch: epoch start, evaluation start, evaluation end, epoch end. So, by
hand, an epoch is 3 reads = 10.5 J, its evaluation 1 read = 3.5 J, its training part 7 J.

FLOPs by hand (2·M·N·K per matmul; bias, ReLU and the loss are not matmuls; the first layer computes no input
gradient in the backward, the data needs none). Per sample:
  forward  2·8·16 + 2·16·2                    = 256 + 64       = 320
  backward dW₁ 2·8·16 + dW₂ 2·16·2 + dX₂ 2·16·2 = 256 + 64 + 64  = 384
  training step 704, evaluation step 320; an epoch: 704·25 = 17 600 training FLOPs, 320·7 = 2 240 evaluation FLOPs.

Throughput by hand, over the 3 s of training: 25 / 3 samples/s, 17 600 / 3 training FLOP/s; no tokens (the batches
have no ``input_ids``) and no MFU (the sensors name no accelerator with a known peak): NaN.

Compared exactly: every ``green/`` key — energies, emissions, time, FLOPs, totals, FLOPs per joule, throughput,
projections and the convergence keys. The
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
from tests import models  # noqa: E402

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

# water: IT energy × (default WUE 0.49 L/kWh + PUE × the world's off-site L/kWh, as the grid has no country)
WATER_L_PER_KWH = 0.49 + PUE * lookup_water("world").offsite_l_per_kwh
TRAIN_BATCHES, TRAIN_TICK_S, VAL_TICK_S = 3, 1.0, 0.5  # the fake clock: per training / validation batch
TRAIN_TIME_S = TRAIN_BATCHES * TRAIN_TICK_S  # 3 s
COMPARED_KEYS = list(METRIC_KEYS)  # the fake clock makes the time keys reproducible too
CLOCK: Any = None  # the fake clock of the module's runs (installed by the ``runs`` fixture)


def tick(seconds: float) -> None:
    CLOCK.advance(seconds)


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
        "green/epoch_time_s": TRAIN_TIME_S + VAL_TICK_S,  # 3.5 s
        "green/samples_per_s": N_TRAIN / TRAIN_TIME_S,  # 25 / 3
        "green/train_flops_per_s": EPOCH_TRAIN_FLOPS / TRAIN_TIME_S,  # 17 600 / 3
        "green/tokens_per_s": math.nan,
        "green/mfu": math.nan,
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
    return models.mlp(N_IN, N_HIDDEN, N_OUT, seed=0)


def run_lightning(tmp_path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    xt, yt, xv, yv = data()
    green = GreenCallback(**green_kwargs(tmp_path, "lightning", "val_loss"))
    per_epoch: list[dict[str, float]] = []

    class Collect(pl.Callback):  # after GreenCallback in the list: sees what it logged this epoch
        def on_train_epoch_end(self, trainer, pl_module):
            per_epoch.append(dict(green.last_metrics))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            tick(TRAIN_TICK_S)

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            tick(VAL_TICK_S)

    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[green, Collect()])
    trainer.fit(models.lightning_module(mlp(), lr=LR), DataLoader(TensorDataset(xt, yt), batch_size=BATCH),
                DataLoader(TensorDataset(xv, yv), batch_size=BATCH))
    logged = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("green/")}
    assert logged == pytest.approx(per_epoch[-1], rel=0, abs=0, nan_ok=True)  # what reached the loggers
    return per_epoch, read_record(green.record_path)


def run_keras(tmp_path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    from green_callbacks.keras import GreenCallback

    torch_net = mlp()
    keras.utils.set_random_seed(0)
    model = models.keras_mlp(N_IN, N_HIDDEN, N_OUT)
    for layer, linear in zip(model.layers, (torch_net[0], torch_net[2]), strict=True):
        layer.set_weights([linear.weight.detach().numpy().T, linear.bias.detach().numpy()])
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    xt, yt, xv, yv = (t.numpy() for t in data())
    green = GreenCallback(**green_kwargs(tmp_path, "keras", "val_loss"))
    ticks = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: tick(TRAIN_TICK_S),
                                           on_test_batch_begin=lambda batch, logs: tick(VAL_TICK_S))
    history = model.fit(xt, yt, batch_size=BATCH, epochs=EPOCHS, validation_data=(xv, yv), shuffle=False,
                        verbose=0, callbacks=[green, ticks])
    per_epoch = [{k: float(history.history[k][e]) for k in METRIC_KEYS} for e in range(len(history.epoch))]
    return per_epoch, read_record(green.record_path)


def run_transformers(tmp_path: Path) -> tuple[list[dict[str, float]], dict[str, Any]]:
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from green_callbacks.transformers import GreenCallback

    class Ticks(TrainerCallback):  # after GreenCallback: its evaluation window is open at the prediction step
        def on_step_begin(self, args, state, control, **kwargs):
            tick(TRAIN_TICK_S)

        def on_prediction_step(self, args, state, control, **kwargs):
            tick(VAL_TICK_S)

    hf_logging.set_verbosity_error()
    xt, yt, xv, yv = data()
    args = TrainingArguments(
        str(tmp_path / "transformers" / "out"), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH, eval_strategy="epoch", logging_strategy="epoch", save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, seed=0, learning_rate=LR, optim="sgd",
        lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
    )
    green = GreenCallback(**green_kwargs(tmp_path, "transformers", "eval_loss"))
    trainer = Trainer(model=models.HFModel(mlp()), args=args, train_dataset=models.Samples(xt, yt),
                      eval_dataset=models.Samples(xv, yv), callbacks=[green, Ticks()])
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
    global CLOCK
    from green_callbacks.core import clock

    tmp_path = tmp_path_factory.mktemp("parity")
    out = {}
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.filterwarnings("ignore", category=UserWarning)  # frameworks' own hints (few workers, CPU, ...)
        for name, runner in RUNNERS.items():
            CLOCK = clock.FakeClock(1000.0)
            patch.setattr(clock, "now_s", CLOCK)
            out[name] = runner(tmp_path)
    return out


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
        wrong = {k: (metrics[k], v) for k, v in expected.items()
                 if not (math.isclose(metrics[k], v, rel_tol=1e-9) or (math.isnan(metrics[k]) and math.isnan(v)))}
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
    trainer = Trainer(model=models.HFModel(mlp()), args=args, train_dataset=models.Samples(xt, yt), callbacks=[green])
    trainer.train()
    [entry] = [h for h in trainer.state.log_history if HF_TOTAL_FLOS_KEY in h]
    assert math.isnan(entry[HF_TOTAL_FLOS_KEY])


def test_record_metrics_hold_the_users_metrics_only(runs):
    """The per-epoch ``metrics`` of the record are the framework's user metrics, never our own ``green/`` keys or
    the progress bar's ``Wh``/``gCO2e`` (which Lightning would hand back one epoch late)."""
    for name, (_, record) in runs.items():
        for row in record["epochs"]:
            own = [k for k in row["metrics"] if k.startswith("green/") or k in ("Wh", "gCO2e")]
            assert not own, (name, row["epoch"], own)


# ------------------------------------------------------------------------------------ one fault, three frameworks
def _break_flops(monkeypatch: pytest.MonkeyPatch) -> None:
    from green_callbacks.core.flops.torch_engine import TorchFlopCounter

    def broken(self, *args, **kwargs):
        raise RuntimeError("injected FLOP fault")

    # the first step of each new signature is counted by observing it: the fault hits the count in all three
    monkeypatch.setattr(TorchFlopCounter, "start_observing", broken)


def _break_eval_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from green_callbacks.core.meter import Meter

    real = Meter.begin

    def begin(self, name):
        if name == "eval":
            raise RuntimeError("injected eval-window fault")
        return real(self, name)

    monkeypatch.setattr(Meter, "begin", begin)


FAULTS = {"flops": _break_flops, "eval": _break_eval_window}


@pytest.mark.parametrize("part", list(FAULTS))
def test_one_fault_degrades_the_same_way_in_all_three(tmp_path, monkeypatch, part):
    """The same injected fault switches off the same part, under the same name, in all three adapters; the rest of
    the run (energy, emissions, totals, the record) stays identical across them."""
    if keras.backend.backend() != "torch":
        pytest.skip("adapter parity runs Keras on the torch backend")
    global CLOCK
    from green_callbacks.core import clock

    monkeypatch.setenv("GREEN_CALLBACKS_STRICT", "0")
    FAULTS[part](monkeypatch)
    results, messages = {}, {}
    for name, runner in RUNNERS.items():
        CLOCK = clock.FakeClock(1000.0)  # the batch hooks tick it: time keys compare exactly, as in ``runs``
        monkeypatch.setattr(clock, "now_s", CLOCK)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[name] = runner(tmp_path / name)
        messages[name] = [str(w.message) for w in caught if "switched off" in str(w.message)]
    for name, (per_epoch, record) in results.items():
        assert record["status"] == "completed", name
        assert list(record["lost"]) == [part] and "injected" in record["lost"][part], (name, record["lost"])
        assert len(record["epochs"]) == len(per_epoch) == EPOCHS, name
        assert messages[name] == [f"green_callbacks: {part} failed and is switched off for the rest of this run "
                                  f"({record['lost'][part]}). Training goes on; the run record lists what was lost. "
                                  "Set GREEN_CALLBACKS_STRICT=1 to raise instead, and please report this."], name
    reference, ref_record = results["lightning"]
    if part == "flops":  # unavailable, never 0; the energy is untouched
        assert all(math.isnan(m["green/epoch_train_flops"]) for m in reference)
        assert all(row["train_flops"] is None for row in ref_record["epochs"])
        assert [m["green/epoch_energy_kwh"] for m in reference] == pytest.approx([EPOCH_J / J_PER_KWH] * EPOCHS)
    else:  # no evaluation window: an epoch is read at its start and end only, one read of the three sensors
        assert [m["green/epoch_energy_kwh"] for m in reference] == pytest.approx([PER_READ_J / J_PER_KWH] * EPOCHS)
        assert [m["green/epoch_eval_flops"] for m in reference] == [EPOCH_EVAL_FLOPS] * EPOCHS
    for other in ("keras", "transformers"):
        values, record = results[other]
        for e in range(EPOCHS):
            differ = {k: (reference[e][k], values[e][k])
                      for k in COMPARED_KEYS if not same(reference[e][k], values[e][k])}
            assert not differ, f"{part}: lightning vs {other}, epoch {e}: {differ}"
            strip = ("time_s", "metrics")
            mine = {k: v for k, v in record["epochs"][e].items() if k not in strip}
            theirs = {k: v for k, v in ref_record["epochs"][e].items() if k not in strip}
            mine["totals"] = {k: v for k, v in mine["totals"].items() if k != "time_s"}
            theirs["totals"] = {k: v for k, v in theirs["totals"].items() if k != "time_s"}
            assert mine == theirs, (part, other, e)

"""The Lightning adapter with a real Trainer, real CSV/TensorBoard loggers and real files.

Energy comes from fake sensors at the hardware boundary, driven by the fake clock, which the model itself advances:
1 s per training batch and 0.5 s per validation batch. With 10 training samples in batches of 4 (4, 4, 2: a partial
last batch) and 6 validation samples in batches of 4 (4, 2), one epoch is 3 × 1 s + 2 × 0.5 s = 4 s, of which 1 s is
validation. The sensors draw 100 W (GPU) + 20 W (CPU) + 5 W (RAM) = 125 W, so an epoch is 500 J and its validation
125 J. The sanity check (two validation batches, 1 s) happens before epoch 0 and must not be counted.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pytest

pytest.importorskip("lightning")
pytest.importorskip("pytorch_lightning")

import lightning.pytorch as lp
import pytorch_lightning as ptl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import METRIC_KEYS
from green_callbacks.lightning import GreenCallback
from tests.models import lightning_module, mlp

J_PER_KWH = 3.6e6
EPOCH_J = 125.0 * (3 * 1.0 + 2 * 0.5)  # 500 J
EVAL_J = 125.0 * (2 * 0.5)  # 125 J
EPOCH_S = 4.0

# FLOPs, by hand (2·M·N·K per matmul; the first layer gets no dX because the input needs no gradient):
# MLP 4 -> 8 -> 2. Per sample: forward 2·4·8 + 2·8·2 = 64 + 32 = 96.
# Backward per sample: layer 2 dW 2·8·2 = 32 and dX 2·8·2 = 32; layer 1 dW 2·4·8 = 64 -> 128. Training step: 224.
TRAIN_FLOPS_PER_SAMPLE = (2 * 4 * 8 + 2 * 8 * 2) + (2 * 8 * 2 + 2 * 8 * 2 + 2 * 4 * 8)
EVAL_FLOPS_PER_SAMPLE = 2 * 4 * 8 + 2 * 8 * 2
EPOCH_TRAIN_FLOPS = TRAIN_FLOPS_PER_SAMPLE * (4 + 4 + 2)  # 2240: batches 4, 4 and the partial 2
EPOCH_EVAL_FLOPS = EVAL_FLOPS_PER_SAMPLE * (4 + 2)  # 576


def sensors():
    return [
        ConstantPowerSensor("gpu", 100.0, scope="device"),
        ConstantPowerSensor("cpu", 20.0, scope="node"),
        ConstantPowerSensor("ram", 5.0, scope="process"),
    ]


def make_module(pl, tick, fail_at_epoch=None, interrupt_at_epoch=None):
    """The 4-8-2 classifier (hyperparameters hidden 8, lr 0.5); the clock moves 1 s per training batch, 0.5 s per
    validation batch; its training step raises in ``fail_at_epoch`` / is interrupted in ``interrupt_at_epoch``."""

    def faults(epoch, batch_idx):
        if epoch == fail_at_epoch:
            raise RuntimeError("boom in epoch 2")
        if epoch == interrupt_at_epoch:
            raise KeyboardInterrupt

    return lightning_module(mlp(4, 8, 2), pl=pl, lr=0.5, hparams={"hidden": 8, "lr": 0.5}, log_train_loss=True,
                            before_training_step=faults, tick=tick, ticks={"train": 1.0, "validation": 0.5})


def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:10], y[:10]), batch_size=4)
    val = DataLoader(TensorDataset(x[10:], y[10:]), batch_size=4)
    return train, val


def trainer(pl, tmp_path, callbacks, max_epochs=3, loggers=None, **kwargs):
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=loggers if loggers is not None else False,
        callbacks=callbacks, default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=2, **kwargs,
    )


def green(**kwargs):
    kwargs.setdefault("carbon_intensity", 400.0)
    return GreenCallback(sensors=sensors(), **kwargs)


def csv_epoch_rows(log_dir):
    """The rows of metrics.csv that carry the green/ metrics, one per epoch."""
    with open(Path(log_dir) / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r for r in rows if r.get("green/epoch_energy_kwh")]


def val_rows(log_dir):
    with open(Path(log_dir) / "metrics.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r.get("val_loss")]


def val_losses(log_dir):
    with open(Path(log_dir) / "metrics.csv", newline="") as handle:
        return {int(r["epoch"]): float(r["val_loss"]) for r in csv.DictReader(handle) if r.get("val_loss")}


@pytest.mark.parametrize("pl", [lp, ptl], ids=["lightning.pytorch", "pytorch_lightning"])
def test_every_key_every_epoch_in_csv_and_tensorboard(tmp_path, fake_clock, pl):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    csv_logger = pl.loggers.CSVLogger(str(tmp_path), name="csv")
    tb_logger = pl.loggers.TensorBoardLogger(str(tmp_path), name="tb")
    callback = green(pue=1.5)
    stopper = pl.callbacks.EarlyStopping(monitor="val_loss", patience=100)
    tr = trainer(pl, tmp_path, [callback, stopper], loggers=[csv_logger, tb_logger])
    tr.fit(make_module(pl, fake_clock.advance), *loaders())

    rows = csv_epoch_rows(csv_logger.log_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # at the step Lightning logs the epoch's own metrics at: its last optimizer step (10 samples in batches of 4:
    # 3 steps per epoch, counted from 0)
    assert [int(r["step"]) for r in rows] == [int(r["step"]) for r in val_rows(csv_logger.log_dir)] == [2, 5, 8]
    losses = val_losses(csv_logger.log_dir)
    best = min(losses, key=losses.get)  # convergence = the epoch of the lowest val_loss (EarlyStopping's monitor)
    for epoch, row in enumerate(rows):
        assert all(row.get(k) not in (None, "") for k in METRIC_KEYS), sorted(set(METRIC_KEYS) - set(row))
        value = {k: float(row[k]) for k in METRIC_KEYS}
        assert value["green/epoch_energy_kwh"] == pytest.approx(EPOCH_J / J_PER_KWH, rel=1e-12)
        assert value["green/epoch_gpu_energy_kwh"] == pytest.approx(100.0 * EPOCH_S / J_PER_KWH, rel=1e-12)
        assert value["green/epoch_cpu_energy_kwh"] == pytest.approx(20.0 * EPOCH_S / J_PER_KWH, rel=1e-12)
        assert value["green/epoch_ram_energy_kwh"] == pytest.approx(5.0 * EPOCH_S / J_PER_KWH, rel=1e-12)
        assert value["green/epoch_eval_energy_kwh"] == pytest.approx(EVAL_J / J_PER_KWH, rel=1e-12)
        assert value["green/epoch_time_s"] == pytest.approx(EPOCH_S)
        # 500 J = 1/7200 kWh, × PUE 1.5 × 400 g/kWh = 1/12 g
        assert value["green/epoch_emissions_gco2e"] == pytest.approx(500 / 3.6e6 * 1.5 * 400, rel=1e-12)
        assert value["green/total_energy_kwh"] == pytest.approx((epoch + 1) * EPOCH_J / J_PER_KWH, rel=1e-12)
        assert value["green/total_emissions_gco2e"] == pytest.approx((epoch + 1) / 12, rel=1e-12)
        assert value["green/epoch_train_flops"] == EPOCH_TRAIN_FLOPS
        assert value["green/epoch_eval_flops"] == EPOCH_EVAL_FLOPS
        assert value["green/total_train_flops"] == (epoch + 1) * EPOCH_TRAIN_FLOPS
        # training FLOPs per joule of training energy: 2240 / (500 - 125)
        assert value["green/train_flops_per_joule"] == pytest.approx(EPOCH_TRAIN_FLOPS / (EPOCH_J - EVAL_J))
        best_so_far = min(range(epoch + 1), key=losses.get)
        assert value["green/epochs_to_convergence"] == best_so_far + 1
        assert value["green/flops_to_convergence"] == (best_so_far + 1) * EPOCH_TRAIN_FLOPS
        assert value["green/energy_to_convergence_kwh"] == pytest.approx((best_so_far + 1) * 500 / 3.6e6, rel=1e-12)
        assert value["green/emissions_to_convergence_gco2e"] == pytest.approx((best_so_far + 1) / 12, rel=1e-12)
        # throughput over the 3 s of training (epoch 4 s less 1 s of validation): 10 samples, 2240 FLOPs
        assert value["green/samples_per_s"] == pytest.approx(10 / 3, rel=1e-12)
        assert value["green/train_flops_per_s"] == pytest.approx(EPOCH_TRAIN_FLOPS / 3, rel=1e-12)
        assert math.isnan(value["green/tokens_per_s"]) and math.isnan(value["green/mfu"])  # no tokens, no GPU peak

    events = EventAccumulator(tb_logger.log_dir)
    events.Reload()
    for key in METRIC_KEYS:
        scalars = events.Scalars(key)
        assert len(scalars) == 3, key
        assert [s.value for s in scalars] == pytest.approx([float(r[key]) for r in rows], rel=1e-6, nan_ok=True)

    record = read_record(callback.record_path)
    assert callback.record_path.parent == Path(csv_logger.log_dir)  # the trainer's log dir (its first logger)
    assert record["status"] == "completed"
    assert record["framework"] == "lightning"
    assert record["hyperparameters"] == {"hidden": 8, "lr": 0.5}
    assert [e["epoch"] for e in record["epochs"]] == [0, 1, 2]
    assert record["convergence"]["monitor"] == "val_loss"  # taken from the trainer's EarlyStopping
    assert record["convergence"]["best"]["epoch"] == best
    assert record["totals"]["energy_j"] == pytest.approx(3 * EPOCH_J)
    assert record["carbon"]["pue"] == 1.5
    # progress bar: compact running totals
    assert float(tr.progress_bar_metrics["Wh"]) == pytest.approx(3 * EPOCH_J / 3600, rel=1e-12)
    assert float(tr.progress_bar_metrics["gCO2e"]) == pytest.approx(3 / 12, rel=1e-12)


def test_console_all_puts_every_key_in_the_progress_bar_and_the_monitors_see_them(tmp_path, fake_clock):
    callback = green(console="all")
    checkpoint = lp.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="green/epoch_energy_kwh",
                                              mode="min", save_top_k=1)
    tr = trainer(lp, tmp_path, [callback, checkpoint], max_epochs=2, enable_checkpointing=True)
    tr.fit(make_module(lp, fake_clock.advance), *loaders())
    assert set(METRIC_KEYS) <= set(tr.progress_bar_metrics)
    assert float(tr.progress_bar_metrics["green/total_energy_kwh"]) == pytest.approx(2 * EPOCH_J / J_PER_KWH)
    assert float(tr.progress_bar_metrics["Wh"]) == pytest.approx(2 * EPOCH_J / 3600)
    assert tr.callback_metrics["green/total_energy_kwh"].dtype == torch.float64
    # ModelCheckpoint monitored a green key: both epochs cost the same 500 J, so the first stays the best
    assert float(checkpoint.best_model_score) == pytest.approx(EPOCH_J / J_PER_KWH, rel=1e-12)
    assert "epoch=0" in Path(checkpoint.best_model_path).name


@pytest.mark.parametrize("skipped", [0, 1], ids=["first-step-of-its-shape", "known-shape"])
def test_a_skipped_step_counts_neither_flops_nor_samples(tmp_path, fake_clock, skipped):
    """A training_step returning None (Lightning skips backward and optimizer): its FLOPs and samples are not counted
    (a known shape's, added when the step began, are taken back; a new shape's forward-only count is dropped, not
    cached for the shape: the next step of that shape is watched with its backward); the next epoch counts all."""
    module = make_module(lp, fake_clock.advance)
    run_step = module.training_step

    def training_step(batch, batch_idx):
        if module.current_epoch == 0 and batch_idx == skipped:  # a batch of 4 samples in the first epoch
            return None
        return run_step(batch, batch_idx)

    module.training_step = training_step
    callback = green()
    trainer(lp, tmp_path, [callback], max_epochs=2).fit(module, *loaders())
    first, second = read_record(callback.record_path)["epochs"]
    assert first["train_flops"] == EPOCH_TRAIN_FLOPS - 4 * TRAIN_FLOPS_PER_SAMPLE  # batches of 4 and 2 only
    assert second["train_flops"] == EPOCH_TRAIN_FLOPS
    assert (first["samples"], second["samples"]) == (6, 10)


def test_monitor_argument_wins_and_output_dir(tmp_path, fake_clock):
    out = tmp_path / "records"
    callback = green(monitor="train_loss", output_dir=str(out))
    stopper = lp.callbacks.EarlyStopping(monitor="val_loss", patience=100)
    trainer(lp, tmp_path, [callback, stopper], max_epochs=2).fit(make_module(lp, fake_clock.advance), *loaders())
    record = read_record(callback.record_path)
    assert callback.record_path.parent == out
    assert record["convergence"]["monitor"] == "train_loss"
    assert record["convergence"]["mode"] == "min"


def test_early_stopping_on_a_green_metric(tmp_path, fake_clock):
    # Totals after each epoch: 500, 1000, 1500 J. A divergence threshold of 1200 J stops after epoch 2 (3 epochs).
    callback = green()
    stopper = lp.callbacks.EarlyStopping(
        monitor="green/total_energy_kwh", mode="min", patience=100, divergence_threshold=1200 / J_PER_KWH
    )
    tr = trainer(lp, tmp_path, [callback, stopper], max_epochs=10)
    tr.fit(make_module(lp, fake_clock.advance), *loaders())
    assert tr.current_epoch == 3  # stopped: 3 epochs ran, not 10
    assert stopper.stopped_epoch == 2
    record = read_record(callback.record_path)
    assert len(record["epochs"]) == 3
    assert record["status"] == "completed"
    assert "green/total_energy_kwh" in record["stop_reason"]


def test_resume_from_checkpoint_continues_totals(tmp_path, fake_clock):
    ckpt = lp.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="{epoch}", save_top_k=-1)
    first = green()
    stopper = lp.callbacks.EarlyStopping(monitor="val_loss", patience=100)
    trainer(lp, tmp_path, [first, stopper, ckpt], max_epochs=2, enable_checkpointing=True).fit(
        make_module(lp, fake_clock.advance), *loaders()
    )
    assert read_record(first.record_path)["totals"]["energy_j"] == pytest.approx(2 * EPOCH_J)

    second = green()
    stopper = lp.callbacks.EarlyStopping(monitor="val_loss", patience=100)
    tr = trainer(lp, tmp_path, [second, stopper], max_epochs=4)
    tr.fit(make_module(lp, fake_clock.advance), *loaders(), ckpt_path=str(tmp_path / "ckpt" / "epoch=1.ckpt"))
    assert second.last_metrics["green/total_energy_kwh"] == pytest.approx(4 * EPOCH_J / J_PER_KWH, rel=1e-12)
    assert second.last_metrics["green/total_train_flops"] == 4 * EPOCH_TRAIN_FLOPS
    assert second.record_path == first.record_path  # the same run goes on in the same record
    record = read_record(second.record_path)
    assert [e["epoch"] for e in record["epochs"]] == [0, 1, 2, 3]
    assert record["totals"]["energy_j"] == pytest.approx(4 * EPOCH_J)
    assert record["totals"]["epochs"] == 4
    assert record["resumed_from"]["epochs"] == 2
    assert record["status"] == "completed"


def test_exception_in_epoch_2_leaves_a_failed_record_with_two_epochs(tmp_path, fake_clock):
    callback = green()
    with pytest.raises(RuntimeError, match="boom"):
        trainer(lp, tmp_path, [callback], max_epochs=5).fit(
            make_module(lp, fake_clock.advance, fail_at_epoch=2), *loaders()
        )
    record = read_record(callback.record_path)
    assert record["status"] == "failed"
    assert "RuntimeError: boom in epoch 2" in record["error"]
    assert [e["epoch"] for e in record["epochs"]] == [0, 1]
    assert record["partial_epoch"]["epoch"] == 2
    assert callback.session.meter is not None and not callback.session.meter.is_open("run")  # sensors stopped


def test_keyboard_interrupt_is_recorded_as_interrupted(tmp_path, fake_clock):
    callback = green()
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl+C ends with sys.exit(1)
        trainer(lp, tmp_path, [callback], max_epochs=5).fit(
            make_module(lp, fake_clock.advance, interrupt_at_epoch=1), *loaders()
        )
    record = read_record(callback.record_path)
    assert record["status"] == "interrupted"
    assert len(record["epochs"]) == 1


def test_two_callbacks_with_different_settings_coexist_in_checkpoints(tmp_path, fake_clock):
    low, high = green(carbon_intensity=100.0), green(carbon_intensity=400.0)
    assert low.state_key != high.state_key
    ckpt = lp.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), filename="last")
    trainer(lp, tmp_path, [low, high, ckpt], max_epochs=1, enable_checkpointing=True).fit(
        make_module(lp, fake_clock.advance), *loaders()
    )
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert saved[low.state_key]["totals"]["emissions_gco2e"] == pytest.approx(500 / 3.6e6 * 100, rel=1e-12)
    assert saved[high.state_key]["totals"]["emissions_gco2e"] == pytest.approx(500 / 3.6e6 * 400, rel=1e-12)
    assert low.record_path != high.record_path


def test_second_fit_with_the_same_callback_is_a_new_run(tmp_path, fake_clock):
    callback = green()
    trainer(lp, tmp_path, [callback], max_epochs=1).fit(make_module(lp, fake_clock.advance), *loaders())
    first_path = callback.record_path
    trainer(lp, tmp_path, [callback], max_epochs=1).fit(make_module(lp, fake_clock.advance), *loaders())
    assert callback.record_path != first_path
    assert read_record(callback.record_path)["totals"]["epochs"] == 1
    assert math.isclose(callback.last_metrics["green/total_energy_kwh"], EPOCH_J / J_PER_KWH, rel_tol=1e-12)


def test_trainer_validate_after_fit_is_not_measured(tmp_path, fake_clock):
    callback = green()
    tr = trainer(lp, tmp_path, [callback], max_epochs=1)
    module = make_module(lp, fake_clock.advance)
    tr.fit(module, *loaders())
    tr.validate(module, loaders()[1], verbose=False)
    record = read_record(callback.record_path)
    assert record["status"] == "completed" and len(record["epochs"]) == 1


def test_the_callback_does_not_change_the_training_even_on_the_real_step_fallback(tmp_path, fake_clock):
    """A step with .item() (impossible on meta) is counted on the training's own step: same weights, exact FLOPs."""

    def fit(callbacks):
        torch.manual_seed(0)
        module = make_module(lp, fake_clock.advance)
        original = module.training_step

        def training_step(batch, batch_idx):
            loss = original(batch, batch_idx)
            module.last_loss = loss.item()  # data-dependent: impossible on a meta tensor
            return loss

        module.training_step = training_step
        trainer(lp, tmp_path, callbacks, max_epochs=2).fit(module, *loaders())
        return module

    plain = fit([])
    callback = green()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*counting one real step.*")  # nothing is replayed any more
        measured = fit([callback])
    for a, b in zip(plain.parameters(), measured.parameters(), strict=True):
        assert torch.equal(a, b)
    assert callback.last_metrics["green/epoch_train_flops"] == EPOCH_TRAIN_FLOPS
    assert callback.last_metrics["green/epoch_eval_flops"] == EPOCH_EVAL_FLOPS


def test_manual_optimization_reports_flops_unavailable(tmp_path, fake_clock):
    module = make_module(lp, fake_clock.advance)
    module.automatic_optimization = False

    def training_step(batch, batch_idx):
        optimizer = module.optimizers()
        x, y = batch
        loss = nn.functional.cross_entropy(module.net(x), y)
        optimizer.zero_grad()
        module.manual_backward(loss)
        optimizer.step()
        return loss

    module.training_step = training_step
    callback = green()
    with pytest.warns(UserWarning, match="manual optimization"):
        trainer(lp, tmp_path, [callback], max_epochs=1).fit(module, *loaders())
    assert math.isnan(callback.last_metrics["green/epoch_train_flops"])
    assert math.isnan(callback.last_metrics["green/epoch_eval_flops"])
    assert callback.last_metrics["green/epoch_energy_kwh"] == pytest.approx(EPOCH_J / J_PER_KWH, rel=1e-12)


def test_a_failing_part_is_switched_off_and_training_goes_on(tmp_path, fake_clock, monkeypatch):
    from green_callbacks.core.flops.tracker import FlopTracker

    def broken(*args, **kwargs):
        raise RuntimeError("engine exploded")

    monkeypatch.setenv("GREEN_CALLBACKS_STRICT", "0")
    monkeypatch.setattr(FlopTracker, "begin", broken)
    callback = green()
    tr = trainer(lp, tmp_path, [callback], max_epochs=2)
    with pytest.warns(RuntimeWarning, match="flops failed and is switched off"):
        tr.fit(make_module(lp, fake_clock.advance), *loaders())
    assert tr.current_epoch == 2
    record = read_record(callback.record_path)
    assert record["status"] == "completed"
    assert "engine exploded" in record["lost"]["flops"]
    assert record["epochs"][1]["train_flops"] is None  # unavailable, never a silent 0
    assert math.isnan(callback.last_metrics["green/total_train_flops"])


def test_missing_lightning_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    monkeypatch.delitem(sys.modules, "green_callbacks.lightning")
    with pytest.raises(ImportError, match=r'pip install "green-callbacks\[lightning\]"'):
        import green_callbacks.lightning  # noqa: F401


def test_quickstart_example_runs_and_prints_the_summary(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).parents[1] / "examples" / "lightning_quickstart.py"  # runs green_callbacks.demo
    spec = importlib.util.spec_from_file_location("lightning_quickstart", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--epochs", "1", "--country", "FR", "--root-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "convergence (val_loss, min): best" in out
    # 2048 samples × 30208 FLOPs (16-64-64-4 MLP, forward 10752 + backward 19456 without the first layer's dX)
    assert "6.187e+07" in out
    (record,) = tmp_path.rglob("green-run-*.json")
    assert read_record(record)["status"] == "completed"

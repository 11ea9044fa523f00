"""Lightning ``trainer.test`` / ``validate`` / ``predict`` after ``fit``: a real Trainer, real CSV logger, real files.

Energy: fake sensors of known power (GPU 100 W + CPU 20 W + RAM 5 W = 125 W) driven by the fake clock, which the
module advances by 0.25 s at the start of each test / predict batch (in its own batch hook, which Lightning calls
after the callbacks' hook: inside the batch). The phase data: 10 samples in batches of 4, 4 and 2.

By hand:
- batches 1 (4 samples, first of shape (4, 4)) and 3 (2 samples, first of shape (2, 4)) are warm-up: 0.5 s, 62.5 J;
- batch 2 is the steady part: 0.25 s, 31.25 J, 4 samples -> 7.8125 J per sample, 0.128 samples per joule,
  7.8125 / 3600 × 1000 Wh per 1,000 samples, mean power 125 W, latency p50 = p95 = 0.25 s;
- the whole phase: 0.75 s, 93.75 J; emissions 93.75 / 3.6e6 kWh × 400 g/kWh;
- forward FLOPs of the MLP 4 -> 8 -> 2: 2·4·8 + 2·8·2 = 96 per sample, 960 for the 10 samples.
The fit before it: 1 epoch of 3 training batches at 1 s and 2 validation batches at 0.5 s = 4 s = 500 J, so the
break-even is 500 / 7.8125 = 64 predictions.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from green_callbacks.core.phase import phase_metric_keys
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.lightning import GreenCallback
from tests.models import lightning_module, mlp

J_PER_KWH = 3.6e6
POWER_W = 125.0
BATCH_S = 0.25
PHASE_S = 3 * BATCH_S
STEADY_J = POWER_W * BATCH_S  # 31.25 J for 4 samples
J_PER_SAMPLE = STEADY_J / 4  # 7.8125
FIT_J = POWER_W * (3 * 1.0 + 2 * 0.5)  # 500 J
FLOPS_PER_SAMPLE = 2 * 4 * 8 + 2 * 8 * 2  # 96


def sensors():
    return [
        ConstantPowerSensor("gpu", 100.0, scope="device"),
        ConstantPowerSensor("cpu", 20.0, scope="node"),
        ConstantPowerSensor("ram", 5.0, scope="process"),
    ]


def make_module(tick):
    """The 4-8-2 classifier: the clock moves 1 s per training batch, 0.5 s per validation batch of ``fit``,
    ``BATCH_S`` per test / predict batch and per validation batch outside ``fit``; it predicts the argmax."""
    return lightning_module(mlp(4, 8, 2), steps=("training", "validation", "test", "predict"),
                            predict=lambda out: out.argmax(-1), tick=tick,
                            ticks={"train": 1.0, "validation": 0.5, "validate": BATCH_S, "test": BATCH_S,
                                   "predict": BATCH_S})


def data(n: int = 10, batch_size: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=batch_size)


def make_trainer(tmp_path: Path, callback: GreenCallback) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, callbacks=[callback], default_root_dir=str(tmp_path),
        logger=pl.loggers.CSVLogger(str(tmp_path), name="csv"), enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )


def expected(kind: str) -> dict[str, float]:
    k = f"green/{kind}_"
    return {
        k + "energy_kwh": POWER_W * PHASE_S / J_PER_KWH,
        k + "gpu_energy_kwh": 100.0 * PHASE_S / J_PER_KWH,
        k + "cpu_energy_kwh": 20.0 * PHASE_S / J_PER_KWH,
        k + "ram_energy_kwh": 5.0 * PHASE_S / J_PER_KWH,
        k + "emissions_gco2e": POWER_W * PHASE_S / J_PER_KWH * 400.0,
        k + "time_s": PHASE_S,
        k + "batches": 3.0,
        k + "samples": 10.0,
        k + "flops": FLOPS_PER_SAMPLE * 10.0,
        k + "energy_per_sample_j": J_PER_SAMPLE,
        k + "wh_per_1000_samples": J_PER_SAMPLE / 3600.0 * 1000.0,
        k + "samples_per_joule": 1.0 / J_PER_SAMPLE,
        k + "emissions_per_sample_gco2e": J_PER_SAMPLE / J_PER_KWH * 400.0,
        k + "flops_per_sample": float(FLOPS_PER_SAMPLE),
        k + "mean_power_w": POWER_W,
        k + "latency_p50_s": BATCH_S,
        k + "latency_p95_s": BATCH_S,
        k + "warmup_batches": 2.0,
        k + "warmup_time_s": 2 * BATCH_S,
        k + "warmup_energy_kwh": POWER_W * 2 * BATCH_S / J_PER_KWH,
    }


def test_test_after_fit_logs_exact_figures_and_writes_a_linked_record(tmp_path, fake_clock):
    callback = GreenCallback(sensors=sensors(), carbon_intensity=400.0)
    trainer = make_trainer(tmp_path, callback)
    module = make_module(fake_clock.advance)
    trainer.fit(module, data(), data(6))
    fit_record = callback.record_path

    results = trainer.test(module, data())
    assert not [k for k in results[0] if k.startswith("green/")]  # what trainer.test returns is the user's own
    want = expected("test")
    got = callback.last_phase_metrics
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    assert set(phase_metric_keys("test")) == set(got)  # every key, NaN where unavailable (tokens: no mask here)
    assert callback.last_phase is not None and callback.last_phase.kind == "test"
    assert callback.last_phase.energy_per_sample_j == pytest.approx(J_PER_SAMPLE)

    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("green/test_energy_per_sample_j")]
    assert len(rows) == 1 and float(rows[0]["green/test_energy_per_sample_j"]) == pytest.approx(J_PER_SAMPLE)

    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "test" and record["status"] == "completed"
    assert record["training"]["record"] == Path(fit_record).name
    assert record["training"]["energy_j"] == pytest.approx(FIT_J)
    assert record["break_even"]["samples_for_energy"] == pytest.approx(FIT_J / J_PER_SAMPLE)  # 64
    assert record["phase"]["warmup_latencies_s"] == pytest.approx([BATCH_S, BATCH_S])
    assert Path(callback.last_phase_record_path).parent == Path(fit_record).parent
    fit = read_record(fit_record)  # rewritten in full: it lists the phase run with its model
    assert fit["kind"] == "fit" and len(fit["epochs"]) == 1 and fit["epochs_log"] is None
    assert [p["kind"] for p in fit["phases"]] == ["test"]
    assert fit["phases"][0]["record"] == Path(callback.last_phase_record_path).name
    assert fit["phases"][0]["energy_per_sample_j"] == pytest.approx(J_PER_SAMPLE)


def test_predict_and_validate_outside_fit(tmp_path, fake_clock):
    callback = GreenCallback(sensors=sensors(), carbon_intensity=400.0)
    trainer = make_trainer(tmp_path, callback)
    module = make_module(fake_clock.advance)

    predictions = trainer.predict(module, data())  # no fit before: a standalone phase
    assert [p.shape[0] for p in predictions] == [4, 4, 2]
    metrics = callback.last_phase_metrics
    for key, value in expected("predict").items():
        assert metrics[key] == pytest.approx(value, rel=1e-9), key
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "predict" and record["training"] is None and record["break_even"] is None

    results = trainer.validate(module, data())
    assert not [k for k in results[0] if k.startswith("green/")]
    for key, value in expected("validate").items():
        assert callback.last_phase_metrics[key] == pytest.approx(value, rel=1e-9), key


def test_fit_validation_is_not_a_phase(tmp_path, fake_clock):
    callback = GreenCallback(sensors=sensors(), carbon_intensity=400.0)
    trainer = make_trainer(tmp_path, callback)
    trainer.fit(make_module(fake_clock.advance), data(), data(6))
    assert callback.last_phase is None
    assert callback.last_metrics["green/epoch_eval_energy_kwh"] == pytest.approx(POWER_W * 1.0 / J_PER_KWH)


def test_a_failing_test_step_leaves_a_failed_record(tmp_path, fake_clock):
    callback = GreenCallback(sensors=sensors(), carbon_intensity=400.0)
    trainer = make_trainer(tmp_path, callback)
    module = make_module(fake_clock.advance)

    def boom(batch, batch_idx):
        raise RuntimeError("boom in test_step")

    module.test_step = boom
    with pytest.raises(RuntimeError, match="boom"):
        trainer.test(module, data())
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "test" and record["status"] == "failed" and "boom" in record["error"]
    assert record["phase"]["energy_j"] == pytest.approx(POWER_W * BATCH_S)  # the first batch's tick


def test_predict_with_the_machines_own_sensors(tmp_path):
    """A real run: no fake sensor, no fake clock. The numbers are not known in advance; their form is."""
    import warnings

    callback = GreenCallback(carbon_intensity=400.0)
    trainer = make_trainer(tmp_path, callback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "some energy is not measured on this machine", short-window notes
        trainer.predict(make_module(lambda seconds: None), data(64, 8))
    phase = callback.last_phase
    assert phase is not None and phase.samples == 64 and phase.batches == 8 and phase.warmup_batches == 1
    assert phase.flops == FLOPS_PER_SAMPLE * 64  # counted, not measured: exact on any machine
    assert phase.quality in ("measured", "below-sensor-resolution", "unavailable")
    if phase.energy_j is None:  # nothing measurable here: unavailable, never 0
        assert phase.quality == "unavailable" and math.isnan(callback.last_phase_metrics["green/predict_energy_kwh"])
    else:
        assert phase.energy_j > 0 and phase.energy_per_sample_j is not None and phase.energy_per_sample_j > 0
        assert set(phase.resolution_s) == {n for n, j in phase.component_energy_j.items() if j is not None}
    assert phase.latency_p50_s is not None and 0 < phase.latency_p50_s <= phase.latency_p95_s
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "predict" and record["components"]


@pytest.mark.slow
def test_test_under_ddp_sums_ranks_and_counts_the_node_once(tmp_path):
    """2 ranks × 2 test batches of 4 at 0.25 s, on one node (tests/scripts/lightning_ddp_phase.py).

    By hand: each rank's phase is 0.5 s (warm-up batch 1, steady batch 2). Energy: GPU 2 × 100 W × 0.5 s = 100 J,
    RAM 2 × 5 W × 0.5 s = 5 J, the node's CPU once: 20 W × 0.5 s = 10 J -> 115 J; the steady half 57.5 J for 2 × 4
    samples -> 7.1875 J per sample; job power 2 × 100 + 20 + 2 × 5 = 230 W; FLOPs 96 × 16.
    """
    import json
    import os
    import subprocess
    import sys

    script = Path(__file__).parent / "scripts" / "lightning_ddp_phase.py"
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK")}
    env.update(GREEN_CALLBACKS_STRICT="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["results"] == ranks[1]["results"]  # every rank holds the sums
    assert not [k for k in ranks[0]["returned"] if k.startswith("green/")]  # trainer.test's return: the user's own
    got = ranks[0]["results"]
    assert got["green/test_samples"] == 16 and got["green/test_batches"] == 4 and got["green/test_warmup_batches"] == 2
    assert got["green/test_energy_kwh"] == pytest.approx(115.0 / J_PER_KWH, rel=1e-9)
    assert got["green/test_cpu_energy_kwh"] == pytest.approx(10.0 / J_PER_KWH, rel=1e-9)
    assert got["green/test_energy_per_sample_j"] == pytest.approx(57.5 / 8, rel=1e-9)
    assert got["green/test_mean_power_w"] == pytest.approx(230.0, rel=1e-9)
    assert got["green/test_flops"] == FLOPS_PER_SAMPLE * 16
    records = sorted(tmp_path.glob("green-run-*.json"))
    kinds = sorted(read_record(p).get("kind") for p in records)
    assert kinds == ["fit", "test"]  # written by global rank zero only


def test_a_step_a_meta_copy_cannot_run_is_counted_on_the_real_step(tmp_path, fake_clock):
    """A predict_step with ``.item()`` on an activation (no value on a meta copy): its FLOPs are observed on the real
    step, exact: 96 per sample."""
    module = make_module(fake_clock.advance)

    def predict_step(batch, batch_idx, dataloader_idx=0):
        out = module.net(batch[0])
        return out * float(out.sum().item() != 0)

    module.predict_step = predict_step
    callback = GreenCallback(sensors=sensors(), carbon_intensity=400.0)
    make_trainer(tmp_path, callback).predict(module, data())
    assert callback.last_phase_metrics["green/predict_flops"] == FLOPS_PER_SAMPLE * 10


def test_a_failing_flop_count_is_nan_and_recorded_the_rest_measured(tmp_path, fake_clock, monkeypatch):
    """Outside strict mode, a FLOP count that fails (injected into the counter's step key): FLOPs NaN, warned once
    and named in the record's ``lost``; energy and rates as by hand."""
    from green_callbacks.core.flops import torch_engine

    monkeypatch.setenv("GREEN_CALLBACKS_STRICT", "0")

    def broken(*args, **kwargs):
        raise RuntimeError("injected counting failure")

    monkeypatch.setattr(torch_engine.TorchFlopCounter, "step_key", broken)
    module = make_module(fake_clock.advance)
    callback = GreenCallback(sensors=sensors(), carbon_intensity=400.0)
    with pytest.warns(RuntimeWarning, match="phase flops"):
        make_trainer(tmp_path, callback).predict(module, data())
    metrics = callback.last_phase_metrics
    assert math.isnan(metrics["green/predict_flops"]) and math.isnan(metrics["green/predict_flops_per_sample"])
    assert metrics["green/predict_energy_per_sample_j"] == pytest.approx(J_PER_SAMPLE)
    record = read_record(callback.last_phase_record_path)
    assert "phase flops" in record["lost"] and record["phase"]["flops"] is None

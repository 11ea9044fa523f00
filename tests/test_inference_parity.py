"""Phase parity: one ``predict`` of the same model on the same data through Lightning, Keras (torch) and HF.

The model, data and sensors are those of tests/test_parity.py: the MLP 8 -> 16 -> 2, ``StepEnergySensor``s adding
1 + 2 + 0.5 = 3.5 J per read of the three, ``carbon_intensity=300``, ``pue=1.5``. The phase predicts the 25
training samples in batches of 10, 10 and 5.

The sensors are read where the phase needs them, the same in every adapter: once at the start (it opens the phase
and the first warm-up window), at the end of batch 1 (the first warm-up window closes), at the start and end of
batch 3 (the first of its shape: its own warm-up window) and at the end. By hand:
- the phase: reads 1 -> 5 = 4 × 3.5 = 14 J; its warm-up windows: 2 × 3.5 = 7 J; the steady batch 2: 7 J, 10 samples
  -> 0.7 J per sample;
- forward FLOPs: 2·8·16 + 2·16·2 = 320 per sample, 8,000 for 25.
Compared exactly across the three: every ``green/predict_...`` key except those made of wall-clock time.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
pytest.importorskip("transformers")
keras = pytest.importorskip("keras")

from green_callbacks.core.phase import phase_metric_keys  # noqa: E402
from green_callbacks.core.record import read_record  # noqa: E402
from tests.models import HFModel, Samples, keras_mlp, lightning_module  # noqa: E402
from tests.test_parity import (  # noqa: E402
    BATCH,
    INTENSITY,
    N_HIDDEN,
    N_IN,
    N_OUT,
    N_TRAIN,
    PER_READ_J,
    PUE,
    data,
    mlp,
    sensors,
)

J_PER_KWH = 3.6e6
PHASE_J = 4 * PER_READ_J  # 14 J
WARMUP_J = 2 * PER_READ_J  # 7 J
J_PER_SAMPLE = (PHASE_J - WARMUP_J) / BATCH  # 0.7 J
FWD_PER_SAMPLE = 2 * N_IN * N_HIDDEN + 2 * N_HIDDEN * N_OUT  # 320
TIME_SUFFIXES = ("time_s", "latency_p50_s", "latency_p95_s", "mean_power_w", "warmup_time_s")
COMPARED = [k for k in phase_metric_keys("predict") if not k.endswith(TIME_SUFFIXES)]
pytestmark = pytest.mark.slow


def kwargs(tmp_path: Path, name: str) -> dict[str, Any]:
    return dict(carbon_intensity=INTENSITY, pue=PUE, sensors=sensors(), output_dir=str(tmp_path / name))


def predict_lightning(tmp_path: Path) -> tuple[dict[str, float], Path]:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    green = GreenCallback(**kwargs(tmp_path, "lightning"))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                         callbacks=[green])
    xt, _, _, _ = data()
    trainer.predict(lightning_module(mlp(), steps=("predict",)), DataLoader(TensorDataset(xt), batch_size=BATCH))
    return green.last_phase_metrics, green.last_phase_record_path


def predict_keras(tmp_path: Path) -> tuple[dict[str, float], Path]:
    from green_callbacks.keras import GreenCallback

    model = keras_mlp(N_IN, N_HIDDEN, N_OUT)
    green = GreenCallback(**kwargs(tmp_path, "keras"))
    xt, _, _, _ = data()
    model.predict(xt.numpy(), batch_size=BATCH, verbose=0, callbacks=[green])
    return green.last_phase_metrics, green.last_phase_record_path


def predict_transformers(tmp_path: Path) -> tuple[dict[str, float], Path]:
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from green_callbacks.transformers import GreenCallback

    hf_logging.set_verbosity_error()
    xt, yt, _, _ = data()
    args = TrainingArguments(str(tmp_path / "hf-out"), per_device_eval_batch_size=BATCH, report_to="none",
                             use_cpu=True, disable_tqdm=True)
    green = GreenCallback(**kwargs(tmp_path, "transformers"))
    trainer = Trainer(model=HFModel(mlp()), args=args, callbacks=[green])
    output = trainer.predict(Samples(xt, yt))
    assert not [k for k in output.metrics if k.startswith("green/")]  # PredictionOutput.metrics: the Trainer's own
    return green.last_phase_metrics, green.last_phase_record_path


RUNNERS = {"lightning": predict_lightning, "keras": predict_keras, "transformers": predict_transformers}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, float], Path]]:
    if keras.backend.backend() != "torch":
        pytest.skip(f"phase parity runs Keras on the torch backend; KERAS_BACKEND is {keras.backend.backend()}")
    tmp_path = tmp_path_factory.mktemp("phase-parity")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        return {name: runner(tmp_path) for name, runner in RUNNERS.items()}


@pytest.mark.parametrize("name", list(RUNNERS))
def test_each_adapter_equals_the_hand_computation(runs, name):
    metrics, record_path = runs[name]
    expected = {
        "green/predict_energy_kwh": PHASE_J / J_PER_KWH,
        "green/predict_gpu_energy_kwh": 4 * 1.0 / J_PER_KWH,
        "green/predict_emissions_gco2e": PHASE_J / J_PER_KWH * INTENSITY * PUE,
        "green/predict_batches": 3.0,
        "green/predict_samples": float(N_TRAIN),
        "green/predict_flops": float(FWD_PER_SAMPLE * N_TRAIN),
        "green/predict_flops_per_sample": float(FWD_PER_SAMPLE),
        "green/predict_energy_per_sample_j": J_PER_SAMPLE,
        "green/predict_samples_per_joule": 1.0 / J_PER_SAMPLE,
        "green/predict_wh_per_1000_samples": J_PER_SAMPLE / 3600.0 * 1000.0,
        "green/predict_emissions_per_sample_gco2e": J_PER_SAMPLE / J_PER_KWH * INTENSITY * PUE,
        "green/predict_warmup_batches": 2.0,
        "green/predict_warmup_energy_kwh": WARMUP_J / J_PER_KWH,
    }
    wrong = {k: (metrics[k], v) for k, v in expected.items() if not math.isclose(metrics[k], v, rel_tol=1e-9)}
    assert not wrong, f"{name}: (got, expected) {wrong}"
    assert math.isnan(metrics["green/predict_tokens_in"])  # no attention_mask in these inputs: unavailable
    assert read_record(record_path)["kind"] == "predict"


@pytest.mark.parametrize("other", ["keras", "transformers"])
def test_identical_values_across_adapters(runs, other):
    reference, ref_path = runs["lightning"]
    values, path = runs[other]
    differ = {k: (reference[k], values[k]) for k in COMPARED
              if not ((math.isnan(reference[k]) and math.isnan(values[k])) or reference[k] == values[k])}
    assert not differ, f"lightning vs {other}: {differ}"
    ref_phase, phase = read_record(ref_path)["phase"], read_record(path)["phase"]
    timeless = ("duration_s", "warmup_time_s", "steady_time_s", "mean_power_w", "latency_p50_s", "latency_p95_s",
                "warmup_latencies_s", "notes")
    assert {k: v for k, v in phase.items() if k not in timeless} == {
        k: v for k, v in ref_phase.items() if k not in timeless}

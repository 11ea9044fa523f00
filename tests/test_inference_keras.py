"""Keras 3 (torch backend) ``model.evaluate`` / ``model.predict`` with the callback, after ``fit`` and standalone.

Energy: fake sensors of known power (GPU 100 W + CPU 20 W + RAM 5 W = 125 W) on the fake clock. The model's
``train_step`` advances the clock 1 s, its ``test_step`` / ``predict_step`` 0.25 s (inside Keras' step function,
so inside the batch; the FLOP engine replays only ``model(x)``, which does not tick). The phase data: 10 samples
in batches of 4, 4 and 2.

By hand (as in tests/test_inference_lightning.py): warm-up = batches 1 and 3 (the first of each shape), 0.5 s; the
steady batch 2: 0.25 s = 31.25 J for 4 samples = 7.8125 J per sample; the phase 0.75 s = 93.75 J; forward FLOPs of
Dense 4 -> 8 -> 2: 2·4·8 + 2·8·2 = 96 per sample. The fit before: 3 training batches × 1 s = 375 J, so the
break-even is 375 / 7.8125 = 48 predictions.
"""

from __future__ import annotations

import math
import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - the suite runs with KERAS_BACKEND=torch
    pytest.skip("these tests drive the torch backend", allow_module_level=True)

import numpy as np  # noqa: E402  (numpy comes with keras)

from green_callbacks.core.phase import phase_metric_keys  # noqa: E402
from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.core.sensors.fake import ConstantPowerSensor  # noqa: E402
from green_callbacks.keras import GreenCallback  # noqa: E402

J_PER_KWH = 3.6e6
POWER_W = 125.0
BATCH_S = 0.25
PHASE_S = 3 * BATCH_S
J_PER_SAMPLE = POWER_W * BATCH_S / 4  # 7.8125
FIT_J = POWER_W * 3 * 1.0  # 375
FLOPS_PER_SAMPLE = 2 * 4 * 8 + 2 * 8 * 2  # 96


def sensors():
    return [
        ConstantPowerSensor("gpu", 100.0, scope="device"),
        ConstantPowerSensor("cpu", 20.0, scope="node"),
        ConstantPowerSensor("ram", 5.0, scope="process"),
    ]


TICK = []  # the fake clock's advance, set by make_model
FAIL_AT = []  # predict_step raises at this call (1-based) when set


@keras.saving.register_keras_serializable(package="green_tests")
class Ticking(keras.Sequential):
    """A Sequential whose steps advance the fake clock (the FLOP engine's meta copy calls only ``model(x)``)."""

    def train_step(self, data):
        TICK[0](1.0)
        return super().train_step(data)

    def test_step(self, data):
        TICK[0](BATCH_S)
        return super().test_step(data)

    def predict_step(self, data):
        TICK[0](BATCH_S)
        TICK.append(None)
        if FAIL_AT and len(TICK) - 1 == FAIL_AT[0]:
            raise RuntimeError("boom in predict")
        return super().predict_step(data)


def make_model(tick):
    TICK[:] = [tick]
    FAIL_AT[:] = []
    keras.utils.set_random_seed(0)
    model = Ticking([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def data(n: int = 10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def expected(kind: str) -> dict[str, float]:
    k = f"green/{kind}_"
    return {
        k + "energy_kwh": POWER_W * PHASE_S / J_PER_KWH,
        k + "gpu_energy_kwh": 100.0 * PHASE_S / J_PER_KWH,
        k + "emissions_gco2e": POWER_W * PHASE_S / J_PER_KWH * 400.0 * 1.5,
        k + "time_s": PHASE_S,
        k + "batches": 3.0,
        k + "samples": 10.0,
        k + "flops": FLOPS_PER_SAMPLE * 10.0,
        k + "energy_per_sample_j": J_PER_SAMPLE,
        k + "wh_per_1000_samples": J_PER_SAMPLE / 3600.0 * 1000.0,
        k + "samples_per_joule": 1.0 / J_PER_SAMPLE,
        k + "flops_per_sample": float(FLOPS_PER_SAMPLE),
        k + "mean_power_w": POWER_W,
        k + "latency_p50_s": BATCH_S,
        k + "latency_p95_s": BATCH_S,
        k + "warmup_batches": 2.0,
        k + "warmup_time_s": 2 * BATCH_S,
    }


def green(tmp_path):
    return GreenCallback(sensors=sensors(), carbon_intensity=400.0, pue=1.5, output_dir=str(tmp_path))


def test_evaluate_after_fit_returns_and_records_exact_figures(tmp_path, fake_clock):
    callback = green(tmp_path)
    model = make_model(fake_clock.advance)
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=4, callbacks=[callback], verbose=0)
    fit_record = callback.record_path

    result = model.evaluate(x, y, batch_size=4, callbacks=[callback], verbose=0, return_dict=True)
    assert list(result) == ["loss"]  # what evaluate returns is Keras' own: no green/ key added to it
    for key, value in expected("evaluate").items():
        assert callback.last_phase_metrics[key] == pytest.approx(value, rel=1e-9), key
    assert set(phase_metric_keys("evaluate")) == set(callback.last_phase_metrics)
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "evaluate" and record["training"]["record"] == fit_record.name
    assert record["break_even"]["samples_for_energy"] == pytest.approx(FIT_J / J_PER_SAMPLE)  # 48
    fit = read_record(fit_record)
    assert fit["kind"] == "fit" and [p["kind"] for p in fit["phases"]] == ["evaluate"]

    # return_dict=False: Keras' own return value is left as it was (a scalar loss), the figures are on the callback
    loss = model.evaluate(x, y, batch_size=4, callbacks=[callback], verbose=0)
    assert isinstance(loss, float) and math.isfinite(loss)
    assert callback.last_phase_metrics["green/evaluate_energy_per_sample_j"] == pytest.approx(J_PER_SAMPLE)


def test_predict_standalone_keeps_the_figures_on_the_callback(tmp_path, fake_clock):
    callback = green(tmp_path)
    model = make_model(fake_clock.advance)
    x, _ = data()
    out = model.predict(x, batch_size=4, callbacks=[callback], verbose=0)
    assert out.shape == (10, 2)
    for key, value in expected("predict").items():
        assert callback.last_phase_metrics[key] == pytest.approx(value, rel=1e-9), key
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "predict" and record["training"] is None
    assert record["phase"]["samples"] == 10 and record["phase"]["steady_samples"] == 4
    assert not hasattr(model.predict_function, "_green_callback")  # unwrapped after the call


def test_fit_validation_is_not_a_phase(tmp_path, fake_clock):
    callback = green(tmp_path)
    model = make_model(fake_clock.advance)
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=4, validation_data=(x, y), callbacks=[callback], verbose=0)
    assert callback.last_phase is None


def test_a_failing_predict_leaves_a_failed_record(tmp_path, fake_clock):
    callback = green(tmp_path)
    model = make_model(fake_clock.advance)
    FAIL_AT[:] = [3]  # the third batch raises after its 0.25 s
    x, _ = data()
    with pytest.raises(RuntimeError, match="boom"):
        model.predict(x, batch_size=4, callbacks=[callback], verbose=0)
    record = read_record(callback.last_phase_record_path)
    assert record["kind"] == "predict" and record["status"] == "failed" and "boom" in record["error"]
    assert record["phase"]["batches"] == 2 and record["phase"]["energy_j"] == pytest.approx(POWER_W * PHASE_S)
    assert not hasattr(model.predict_function, "_green_callback")

"""Keras 3 adapter: real fit(), real CSVLogger/History/EarlyStopping, real files.

Runs on whichever backend KERAS_BACKEND selects (tox: torch; the keras-jax / keras-tensorflow envs: jax,
tensorflow). Backend-specific checks skip on the other backends.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import warnings

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from green_callbacks._adapter import METRIC_KEYS  # noqa: E402
from green_callbacks.core.sensors.fake import StepEnergySensor  # noqa: E402
from green_callbacks.keras import GreenCallback  # noqa: E402

BACKEND = keras.backend.backend()
N_IN, N_HIDDEN, N_OUT = 8, 16, 1
N_TRAIN, N_VAL, BATCH = 25, 7, 10  # two full batches of 10 and a partial one of 5; one validation batch of 7


def _green(tmp_path, **kwargs):
    return GreenCallback(carbon_intensity=100.0, output_dir=str(tmp_path / "runs"),
                         sensors=[StepEnergySensor("cpu", 5.0)], **kwargs)


def _model(run_eagerly=False, layers=()):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((N_IN,)), *layers, keras.layers.Dense(N_HIDDEN, activation="relu"),
                              keras.layers.Dense(N_OUT)])
    model.compile(optimizer="adam", loss="mse", run_eagerly=run_eagerly)
    return model


def _data(n):
    import numpy as np

    x = np.random.default_rng(0).random((n, N_IN), dtype="float32")
    return x, x.sum(axis=1, keepdims=True)


def _record(callback):
    with open(callback.record_path) as fh:
        return json.load(fh)


def _matmul_train(b):
    """Hand count, fwd + bwd of Dense(8→16) then Dense(16→1) on a batch of b (2 FLOPs per multiply-add)."""
    fwd = 2 * b * N_IN * N_HIDDEN + 2 * b * N_HIDDEN * N_OUT
    dw = 2 * b * N_IN * N_HIDDEN + 2 * b * N_HIDDEN * N_OUT  # weight gradients of both layers
    dx = 2 * b * N_HIDDEN * N_OUT  # input gradient of the second layer only: the first layer's input is data
    return fwd + dw + dx


def _matmul_eval(b):
    return 2 * b * N_IN * N_HIDDEN + 2 * b * N_HIDDEN * N_OUT


def test_every_key_every_epoch_in_csvlogger_and_history_whatever_the_order(tmp_path):
    epochs = 3
    green = _green(tmp_path)
    csv_path = tmp_path / "log.csv"
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10)
    x, y = _data(N_TRAIN)
    # GreenCallback listed LAST: it moves itself before CSVLogger and EarlyStopping at on_train_begin.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no order warning: the known loggers are handled
        warnings.filterwarnings("ignore", message=".*world average.*")
        warnings.filterwarnings("ignore", message=".*not measured.*")
        history = _model().fit(x, y, validation_data=_data(N_VAL), epochs=epochs, batch_size=BATCH, verbose=0,
                               callbacks=[keras.callbacks.CSVLogger(str(csv_path)), stopper, green])
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == epochs
    for key in METRIC_KEYS:
        assert len(history.history[key]) == epochs, key
        for row in rows:
            assert key in row and row[key] != "", key
    for row, energy in zip(rows, history.history["green/epoch_energy_kwh"], strict=True):
        assert float(row["green/epoch_energy_kwh"]) == pytest.approx(energy)
        assert energy > 0 and math.isfinite(energy)
    assert all(isinstance(v, float) for v in history.history["green/total_energy_kwh"])
    record = _record(green)
    assert record["status"] == "completed" and len(record["epochs"]) == epochs
    assert record["convergence"]["monitor"] == "val_loss"  # taken from the EarlyStopping in callbacks
    assert record["flops"]["backend"] == BACKEND


def test_training_and_validation_flops_per_epoch(tmp_path):
    green = _green(tmp_path)
    x, y = _data(N_TRAIN)
    history = _model().fit(x, y, validation_data=_data(N_VAL), epochs=2, batch_size=BATCH, verbose=0,
                           callbacks=[green])
    full, partial = N_TRAIN // BATCH, N_TRAIN % BATCH  # 2 batches of 10, 1 of 5
    matmul_epoch = full * _matmul_train(BATCH) + _matmul_train(partial)  # 2·6080 + 3040 = 15200
    assert matmul_epoch == 15200
    per_step = _record(green)["flops"]["per_step"]
    if BACKEND == "torch":  # matmul-only convention: exact
        assert history.history["green/epoch_train_flops"] == [float(matmul_epoch)] * 2
        assert history.history["green/epoch_eval_flops"] == [float(_matmul_eval(N_VAL))] * 2
        assert history.history["green/total_train_flops"] == [float(matmul_epoch), 2.0 * matmul_epoch]
        return
    # JAX / TensorFlow: the logged count is all ops; its matmul part is exactly the hand count.
    assert per_step[f"train [[{BATCH}, {N_IN}], [{BATCH}, 1]]"]["matmul_flops"] == _matmul_train(BATCH)
    assert per_step[f"train [[{partial}, {N_IN}], [{partial}, 1]]"]["matmul_flops"] == _matmul_train(partial)
    assert per_step[f"eval [[{N_VAL}, {N_IN}], [{N_VAL}, 1]]"]["matmul_flops"] == _matmul_eval(N_VAL)
    logged = (full * per_step[f"train [[{BATCH}, {N_IN}], [{BATCH}, 1]]"]["flops"]
              + per_step[f"train [[{partial}, {N_IN}], [{partial}, 1]]"]["flops"])
    assert history.history["green/epoch_train_flops"] == [logged] * 2
    assert logged > matmul_epoch  # loss, elementwise ops and the Adam update come on top (docs/keras.md)
    if BACKEND == "jax":  # one FLOP tracker: each signature counted once by XLA (train 10 and 5 rows, eval 10),
        flops = _record(green)["flops"]  # never re-checked on a later step: labelled so (#24, #25)
        assert flops["counts"]["meta"] == 3 and flops["counts"]["observed"] == 0
        assert flops["epoch_methods"] == ["counted-once"] * 2 and "not re-checked" in flops["epoch_notes"][0]
        assert flops["convention"] == "all-ops"


def test_the_flops_section_reads_back_whole(tmp_path):
    """The record's ``flops`` is one type written and read: the reader keeps every key the Keras adapter and the FLOP
    tracker wrote, in order (the adapter's first), and the type writes it back the same."""
    from green_callbacks.core.record import parse_record
    from green_callbacks.core.record_sections import to_json

    green = _green(tmp_path, monitor="val_loss", mode="min")
    x, y = _data(N_TRAIN)
    _model().fit(x, y, validation_data=_data(N_VAL), epochs=1, batch_size=BATCH, verbose=0, callbacks=[green])
    written = _record(green)
    info = parse_record(written).flops
    assert list(written["flops"])[:4] == ["backend", "method", "convention", "per_step"]
    assert info.backend == BACKEND and set(info.per_step) == set(written["flops"]["per_step"])
    assert list(to_json(info)) == list(written["flops"]) and to_json(info) == written["flops"]


class _FailAt(keras.layers.Layer):
    """Identity layer that raises ``error`` once ``armed`` (set by a callback at a given epoch)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.error: BaseException = RuntimeError()
        self.armed = False

    def call(self, x):
        if self.armed:
            raise self.error
        return x


class _Arm(keras.callbacks.Callback):
    def __init__(self, layer, epoch):
        super().__init__()
        self.layer, self.epoch = layer, epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.layer.armed = epoch == self.epoch


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "failed"),
                                                (KeyboardInterrupt(), "interrupted")])
def test_a_step_that_raises_closes_the_record(tmp_path, error, status):
    layer = _FailAt()
    layer.error = error
    model = _model(run_eagerly=True, layers=[layer])
    green = _green(tmp_path)
    x, y = _data(N_TRAIN)
    with pytest.raises(type(error)):
        model.fit(x, y, epochs=3, batch_size=BATCH, verbose=0, callbacks=[green, _Arm(layer, 1)])
    record = _record(green)
    assert record["status"] == status
    assert len(record["epochs"]) == 1  # epoch 0 completed, epoch 1 cut short
    assert record["partial_epoch"]["epoch"] == 1
    if status == "failed":
        assert record["error"].startswith("RuntimeError") and "boom" in record["error"]
    assert model.train_function is not None and not hasattr(model.train_function, "_green_callback")


def test_a_failure_outside_the_steps_is_closed_at_the_next_fit(tmp_path):
    class Broken(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise ValueError("callback broke")

    green = _green(tmp_path)
    x, y = _data(N_TRAIN)
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _model().fit(x, y, epochs=2, batch_size=BATCH, verbose=0, callbacks=[green, Broken()])
    first = green.record_path
    assert _record(green)["status"] == "running"  # no hook saw it (documented); atexit or the next fit closes it
    _model().fit(x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[green])
    with open(first) as fh:
        assert json.load(fh)["status"] == "failed"
    assert green.record_path != first and _record(green)["status"] == "completed"


def test_unknown_callbacks_before_it_are_named_in_a_warning(tmp_path):
    class Mine(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    x, y = _data(N_TRAIN)
    with pytest.warns(UserWarning, match="Mine run\\(s\\) before GreenCallback"):
        _model().fit(x, y, epochs=1, batch_size=BATCH, verbose=0, callbacks=[Mine(), _green(tmp_path)])


def test_no_batch_hook_keeps_async_dispatch(tmp_path):
    if not keras.src.backend.IS_THREAD_SAFE:
        pytest.skip(f"{BACKEND} has no async batch dispatch")
    callbacks = keras.callbacks.CallbackList([_green(tmp_path)], model=_model())
    assert callbacks._async_train and callbacks._async_test


def test_explicit_monitor_wins_and_convergence_is_reported(tmp_path):
    green = _green(tmp_path, monitor="loss")
    x, y = _data(N_TRAIN)
    history = _model().fit(x, y, epochs=2, batch_size=BATCH, verbose=0, callbacks=[green])
    assert _record(green)["convergence"]["monitor"] == "loss"
    assert all(v >= 1 for v in history.history["green/epochs_to_convergence"])


def test_tensorboard_sees_the_keys(tmp_path):
    pytest.importorskip("tensorflow")  # keras.callbacks.TensorBoard needs TensorFlow on every backend
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    x, y = _data(N_TRAIN)
    _model().fit(x, y, epochs=2, batch_size=BATCH, verbose=0,
                 callbacks=[keras.callbacks.TensorBoard(str(logdir), write_graph=False), _green(tmp_path)])
    events = EventAccumulator(str(logdir / "train"), size_guidance={"tensors": 0})
    events.Reload()
    assert "epoch_green/epoch_energy_kwh" in events.Tags()["tensors"]
    assert len(events.Tensors("epoch_green/epoch_energy_kwh")) == 2


def test_import_without_a_usable_backend_names_the_fix(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed: keras' default backend loads")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["HOME"] = str(tmp_path)  # no ~/.keras/keras.json: keras defaults to tensorflow
    proc = subprocess.run([sys.executable, "-c", "import green_callbacks.keras"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "KERAS_BACKEND=torch|jax|tensorflow" in proc.stderr
    assert 'pip install "green-callbacks[keras]"' in proc.stderr


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_standalone_evaluate_and_predict_count_their_batches_or_say_unavailable(tmp_path, steps_per_execution):
    """``evaluate`` / ``predict`` outside ``fit``, 25 samples in batches of 10, 10, 5, on every backend. By hand with
    the step sensor (5 J a read): reads at the phase's start, the end of warm-up batch 1, around warm-up batch 3 and
    at the end: 20 J in all, 10 J of warm-up, the steady batch 2 10 J for 10 samples: 1 sample per joule. JAX notes
    the batches its iterator yields (several per call with ``steps_per_execution``); TensorFlow runs them inside a
    graph: batches, samples and per-sample figures are unavailable (NaN), never 0, and the sensors are read at the
    phase's start and end only (5 J)."""
    if BACKEND == "torch" and steps_per_execution > 1:
        pytest.skip("the torch backend runs one step per call")
    model = _model()
    model.compile(optimizer="adam", loss="mse", steps_per_execution=steps_per_execution)
    x, y = _data(N_TRAIN)
    for kind in ("evaluate", "predict"):
        green = _green(tmp_path)
        if kind == "evaluate":
            model.evaluate(x, y, batch_size=BATCH, callbacks=[green], verbose=0)
        else:
            model.predict(x, batch_size=BATCH, callbacks=[green], verbose=0)
        metrics = green.last_phase_metrics
        # TensorFlow: no batch is seen, so the sensors are read at the phase's start and end only: 5 J
        joules = 5.0 if BACKEND == "tensorflow" else 20.0
        assert metrics[f"green/{kind}_energy_kwh"] == pytest.approx(joules / 3.6e6)
        counted = ("batches", "samples", "warmup_batches", "samples_per_joule", "energy_per_sample_j")
        if BACKEND == "tensorflow":
            for suffix in counted:
                assert math.isnan(metrics[f"green/{kind}_{suffix}"]), suffix
            continue
        assert metrics[f"green/{kind}_batches"] == 3 and metrics[f"green/{kind}_samples"] == N_TRAIN
        assert metrics[f"green/{kind}_warmup_batches"] == 2
        assert metrics[f"green/{kind}_samples_per_joule"] == pytest.approx(1.0)
        assert metrics[f"green/{kind}_energy_per_sample_j"] == pytest.approx(1.0)
        if BACKEND == "jax":  # steps dispatched asynchronously: no per-batch latency
            assert math.isnan(metrics[f"green/{kind}_latency_p50_s"])
        if BACKEND == "torch":
            assert metrics[f"green/{kind}_flops"] == _matmul_eval(N_TRAIN)

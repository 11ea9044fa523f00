"""What a new user meets with their own scripts: the convergence metric chosen for them, a misspelt ``monitor=``,
the wrong adapter, a quiet console, and a logger that refuses NaN.

Each run is a real fit of a tiny model in the real framework, with a fake energy sensor (one CPU sensor: the GPU
keys are then NaN, which is what a logger refusing NaN meets on every CPU machine).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
transformers = pytest.importorskip("transformers")
os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.core.sensors.fake import StepEnergySensor  # noqa: E402
from tests.models import HFModel, Samples, keras_mlp, lightning_module, linear  # noqa: E402

pytestmark = pytest.mark.slow  # real fits, a few seconds in all

N_IN, N_TRAIN, N_VAL, BATCH, EPOCHS = 4, 12, 6, 4, 2


def _sensors() -> list[StepEnergySensor]:
    return [StepEnergySensor("cpu", 2.0, scope="node")]


def _kwargs(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"carbon_intensity": 100.0, "sensors": _sensors(), "output_dir": str(tmp_path / "green"), **extra}


def _data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_TRAIN + N_VAL, N_IN, generator=g)
    y = (x[:, 0] > 0).long()
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _messages(caught: list[warnings.WarningMessage], *needles: str) -> list[str]:
    return [str(w.message) for w in caught if all(n in str(w.message) for n in needles)]


# ---------------------------------------------------------------------------------------------- Lightning
def _lightning_fit(tmp_path: Path, green: Any, *, validate: bool = True, logger: Any = False) -> pl.Trainer:
    xt, yt, xv, yv = _data()
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0, callbacks=[green])
    val = DataLoader(TensorDataset(xv, yv), batch_size=BATCH) if validate else None
    trainer.fit(lightning_module(linear(N_IN, 2, seed=0)), DataLoader(TensorDataset(xt, yt), batch_size=BATCH), val)
    return trainer


# ---------------------------------------------------------------------------------------------- Keras
def _keras_model(metrics: tuple[str, ...] = ()) -> Any:
    model = keras_mlp(N_IN, None, 2, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=list(metrics))
    return model


def _keras_fit(green: Any, *, metrics: tuple[str, ...] = (), verbose: int = 0) -> Any:
    xt, yt, xv, yv = (t.numpy() for t in _data())
    return _keras_model(metrics).fit(xt, yt, batch_size=BATCH, epochs=EPOCHS, validation_data=(xv, yv),
                                     shuffle=False, verbose=verbose, callbacks=[green])


# ---------------------------------------------------------------------------------------------- transformers
def _hf_trainer(tmp_path: Path, green: Any, *, evaluate: bool = True) -> Any:
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    xt, yt, xv, yv = _data()
    args = TrainingArguments(str(tmp_path / "hf"), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=BATCH, eval_strategy="epoch" if evaluate else "no",
                             logging_strategy="epoch", save_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True, seed=0)
    return Trainer(model=HFModel(linear(N_IN, 2, seed=0)), args=args, train_dataset=Samples(xt, yt),
                   eval_dataset=Samples(xv, yv) if evaluate else None, callbacks=[green])


# ============================================================================ #14.1 convergence by default
def test_lightning_uses_the_validation_loss_when_nothing_names_a_metric(tmp_path):
    from green_callbacks.lightning import GreenCallback

    green = GreenCallback(**_kwargs(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _lightning_fit(tmp_path, green)
    record = read_record(green.record_path)
    assert record["convergence"]["monitor"] == "val_loss"
    assert record["convergence"]["mode"] == "min"
    assert math.isfinite(green.last_metrics["green/flops_to_convergence"])
    said = _messages(caught, "'val_loss'", "monitor=")
    assert len(said) == 1, [str(w.message) for w in caught]


def test_keras_uses_val_loss_when_validation_data_is_given(tmp_path):
    from green_callbacks.keras import GreenCallback

    green = GreenCallback(**_kwargs(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _keras_fit(green)
    assert read_record(green.record_path)["convergence"]["monitor"] == "val_loss"
    assert all(math.isfinite(v) for v in history.history["green/flops_to_convergence"])
    assert len(_messages(caught, "'val_loss'", "monitor=")) == 1


def test_transformers_uses_eval_loss_when_it_evaluates_every_epoch(tmp_path):
    from green_callbacks.transformers import GreenCallback

    green = GreenCallback(**_kwargs(tmp_path))
    trainer = _hf_trainer(tmp_path, green)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert read_record(green.record_path)["convergence"]["monitor"] == "eval_loss"
    logged = [h["green/flops_to_convergence"] for h in trainer.state.log_history if "green/flops_to_convergence" in h]
    assert logged and all(math.isfinite(v) for v in logged)
    assert len(_messages(caught, "'eval_loss'", "monitor=")) == 1


def test_no_validation_at_all_is_said_once_and_stays_nan(tmp_path):
    from green_callbacks.lightning import GreenCallback

    green = GreenCallback(**_kwargs(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _lightning_fit(tmp_path, green, validate=False)
    assert math.isnan(green.last_metrics["green/flops_to_convergence"])
    assert read_record(green.record_path)["convergence"]["monitor"] is None
    assert len(_messages(caught, "no validation", "monitor=")) == 1, [str(w.message) for w in caught]


def test_the_framework_metric_still_wins_over_the_validation_loss(tmp_path):
    from green_callbacks.keras import GreenCallback

    green = GreenCallback(**_kwargs(tmp_path))
    stopper = keras.callbacks.EarlyStopping(monitor="val_acc", mode="max", patience=5)
    xt, yt, xv, yv = (t.numpy() for t in _data())
    _keras_model(("acc",)).fit(xt, yt, batch_size=BATCH, epochs=EPOCHS, validation_data=(xv, yv), verbose=0,
                               callbacks=[green, stopper])
    convergence = read_record(green.record_path)["convergence"]
    assert (convergence["monitor"], convergence["mode"]) == ("val_acc", "max")


# ============================================================================ #14.2 a monitor that never appears
def test_a_misspelt_monitor_is_named_once_with_the_closest_match(tmp_path):
    from green_callbacks.lightning import GreenCallback

    green = GreenCallback(**_kwargs(tmp_path, monitor="val_losss"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _lightning_fit(tmp_path, green)
    said = _messages(caught, "'val_losss'")
    assert len(said) == 1, [str(w.message) for w in caught]
    assert "'val_loss'" in said[0]  # the closest match, and among the metrics listed


def test_keras_val_accuracy_while_the_model_logs_val_acc(tmp_path):
    from green_callbacks.keras import GreenCallback

    green = GreenCallback(**_kwargs(tmp_path, monitor="val_accuracy"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _keras_fit(green, metrics=("acc",))
    said = _messages(caught, "'val_accuracy'")
    assert len(said) == 1 and "'val_acc'" in said[0], [str(w.message) for w in caught]


# ============================================================================ #14.4 the wrong adapter
def _fit_with(framework: str, callback: Any, tmp_path: Path) -> None:
    if framework == "lightning":
        _lightning_fit(tmp_path, callback)
    elif framework == "keras":
        _keras_fit(callback)
    else:
        _hf_trainer(tmp_path, callback).train()


PAIRS = [(given, used) for given in ("lightning", "keras", "transformers")
         for used in ("lightning", "keras", "transformers") if given != used]


@pytest.mark.parametrize(("given", "used"), PAIRS)
def test_the_wrong_adapter_names_the_right_import(tmp_path, given, used):
    import importlib

    adapter = importlib.import_module(f"green_callbacks.{given}").GreenCallback(**_kwargs(tmp_path))
    with pytest.raises(TypeError) as info:
        _fit_with(used, adapter, tmp_path)
    assert f"from green_callbacks.{used} import GreenCallback" in str(info.value)


# ============================================================================ #14.9 quiet consoles
def test_keras_progress_line_is_compact_but_every_key_is_in_history(tmp_path, capfd):
    from green_callbacks.core.session import METRIC_KEYS
    from green_callbacks.keras import GreenCallback

    history = _keras_fit(GreenCallback(**_kwargs(tmp_path)), verbose=2)
    printed = capfd.readouterr().out
    assert "Wh" in printed and "gCO2e" in printed
    assert "green/epoch_cpu_energy_kwh" not in printed
    assert set(METRIC_KEYS) <= set(history.history)


def test_keras_console_all_shows_every_key(tmp_path, capfd):
    from green_callbacks.keras import GreenCallback

    _keras_fit(GreenCallback(**_kwargs(tmp_path, console="all")), verbose=2)
    assert "green/epoch_cpu_energy_kwh" in capfd.readouterr().out


def test_transformers_prints_a_compact_line_but_logs_every_key(tmp_path, capfd):
    from green_callbacks.core.session import METRIC_KEYS
    from green_callbacks.transformers import GreenCallback

    trainer = _hf_trainer(tmp_path, GreenCallback(**_kwargs(tmp_path)))
    trainer.train()
    printed = capfd.readouterr().out
    assert "green/epoch_cpu_energy_kwh" not in printed
    assert "'loss'" in printed  # the Trainer's own log line is untouched
    entries = [h for h in trainer.state.log_history if "green/epoch_energy_kwh" in h]
    assert len(entries) == EPOCHS and all(set(METRIC_KEYS) <= set(h) for h in entries)


def test_console_setting_is_checked_at_construction():
    from green_callbacks.lightning import GreenCallback

    with pytest.raises(ValueError, match="console"):
        GreenCallback(console="loud")


# ============================================================================ #15.3 a logger that refuses NaN
class _NoNaNLogger(pl.loggers.Logger):
    """A logger that, like some tracking services, refuses NaN values."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "no-nan"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        bad = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v)]
        if bad:
            raise ValueError(f"NaN is not a valid metric value: {bad}")
        self.received.append(dict(metrics))


def test_a_logger_refusing_nan_does_not_stop_the_fit(tmp_path):
    from green_callbacks.lightning import GreenCallback

    logger = _NoNaNLogger()
    green = GreenCallback(**_kwargs(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _lightning_fit(tmp_path, green, logger=logger)
    assert trainer.current_epoch == EPOCHS
    assert read_record(green.record_path)["status"] == "completed"
    green_rows = [m for m in logger.received if "green/epoch_cpu_energy_kwh" in m]
    assert len(green_rows) == EPOCHS  # the measured keys still arrive
    assert all("green/epoch_gpu_energy_kwh" not in m for m in green_rows)  # the unavailable ones are left out
    assert len(_messages(caught, "NaN", "no-nan")) == 1, [str(w.message) for w in caught]


# ============================================================================ #14.3 a CPU-only run is complete
def test_a_cpu_run_marks_the_gpu_not_used_and_nothing_missing(tmp_path):
    """The machine's own sensors on a CPU fit: the GPU is 'not-used' (not 'unavailable'), no epoch misses a
    component, the total is the CPU and RAM energy, and no warning calls GPU energy unmeasured."""
    from green_callbacks.lightning import GreenCallback

    green = GreenCallback(carbon_intensity=100.0, output_dir=str(tmp_path / "green"), monitor="val_loss")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _lightning_fit(tmp_path, green)
    record = read_record(green.record_path)
    assert record["components"]["gpu"]["method"] == "not-used"
    assert record["methods"]["gpu"] == ["not-used"]
    for row in record["epochs"]:
        assert row["missing_components"] == []
        assert row["component_method"]["gpu"] == "not-used"
        assert row["energy_j"] == pytest.approx(row["component_energy_j"]["cpu"] + row["component_energy_j"]["ram"])
    assert not _messages(caught, "gpu:", "unavailable")

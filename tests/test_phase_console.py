"""What the console shows of a phase run outside ``fit``, and what the phase returns, in all three front ends.

With ``console="compact"`` (the default) the console shows the phase's ``Wh`` and ``gCO2e`` at most, never the ~24
``green/<phase>_...`` keys; ``console="all"`` shows them. Either way the figures reach the loggers (and
``callback.last_phase_metrics``), and the dict the framework returns is its own: no ``green/`` key is added to it
(a caller may compute from it, e.g. ``hyperparameter_search``'s default objective sums ``evaluate()``'s metrics).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
import numpy as np  # noqa: E402  (numpy comes with torch)

from green_callbacks.core.sensors.fake import ConstantPowerSensor  # noqa: E402
from tests.models import HFModel, keras_mlp, lightning_module  # noqa: E402


def green(module: Any, tmp_path: Path, console: str) -> Any:
    return module.GreenCallback(sensors=[ConstantPowerSensor("gpu", 100.0)], carbon_intensity=400.0,
                                output_dir=str(tmp_path), console=console)


def data() -> tuple[Any, Any]:
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    return x, (x[:, 0] > 0).long()


# ------------------------------------------------------------------------------------------------ Keras
@pytest.mark.parametrize("console", ["compact", "all"])
def test_keras_evaluate_console_and_return(console: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    import green_callbacks.keras as adapter

    model = keras_mlp(4, None, 2, seed=0)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = (t.numpy() for t in data())
    seen: list[dict[str, Any]] = []
    after = keras.callbacks.LambdaCallback(on_test_end=lambda logs: seen.append(dict(logs)))
    callback = green(adapter, tmp_path, console)
    capfd.readouterr()
    returned = model.evaluate(x, y, batch_size=4, callbacks=[callback, after], verbose=1, return_dict=True)
    out = capfd.readouterr().out
    assert list(returned) == ["loss"]  # Keras' own dict
    assert seen and "green/evaluate_energy_kwh" in seen[0]  # the callbacks after this one get every key
    if console == "compact":
        assert "green/" not in out and "Wh" in out and "gCO2e" in out and "loss" in out
    else:
        assert "green/evaluate_energy_kwh" in out and "green/evaluate_samples_per_joule" in out


# ------------------------------------------------------------------------------------------------ transformers
@pytest.mark.parametrize("console", ["compact", "all"])
def test_transformers_evaluate_console_and_return(console: str, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    import green_callbacks.transformers as adapter

    hf_logging.set_verbosity_error()

    x, y = data()
    samples = [{"x": x[i], "labels": y[i]} for i in range(10)]
    args = transformers.TrainingArguments(str(tmp_path / "hf"), per_device_eval_batch_size=4, report_to="none",
                                          use_cpu=True, disable_tqdm=True)  # the PrinterCallback prints each log
    callback = green(adapter, tmp_path, console)
    trainer = transformers.Trainer(model=HFModel(torch.nn.Linear(4, 2)), args=args, callbacks=[callback])
    capfd.readouterr()
    returned = trainer.evaluate(samples)
    out = capfd.readouterr().out
    assert "eval_loss" in returned and not [k for k in returned if k.startswith("green/")]
    assert all(np.isfinite(v) for v in returned.values())  # a sum of them (hyperparameter_search) stays a number
    logged = [h for h in trainer.state.log_history if "green/evaluate_energy_kwh" in h]
    assert len(logged) == 1  # log_history and report_to get every key
    if console == "compact":
        assert "green/" not in out and "'Wh'" in out and "'gCO2e'" in out and "eval_loss" in out
    else:
        assert "green/evaluate_energy_kwh" in out


# ------------------------------------------------------------------------------------------------ Lightning
@pytest.mark.parametrize("console", ["compact", "all"])
def test_lightning_test_console_and_return(console: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    import green_callbacks.lightning as adapter

    callback = green(adapter, tmp_path, console)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="csv")
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback])
    capfd.readouterr()
    returned = trainer.test(lightning_module(torch.nn.Linear(4, 2), steps=("test",)),
                            DataLoader(TensorDataset(*data()), batch_size=4))
    out = capfd.readouterr().out
    assert [list(r) for r in returned] == [["test_loss"]]  # the user's own results
    assert "test_loss" in out  # Lightning's results table
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("green/test_energy_kwh")]
    assert len(rows) == 1  # the loggers get every key
    if console == "compact":
        assert "green/" not in out
    else:
        assert "green/test_energy_kwh" in out and "green/test_samples_per_joule" in out

"""examples/minimal_adapter.py: the smallest real adapter (docs/adapters.md) measures a toy framework's fit.

The toy trains Linear(4 -> 8) - ReLU - Linear(8 -> 2) on 12 samples (3 batches of 4) and validates on 8 (2 batches).
FLOPs by hand (2·M·N·K per matmul): forward 2·4·8 + 2·8·2 = 64 + 32 = 96 per sample; backward dW₁ 64 + dW₂ 32 + dX₂
32 = 128 (no dX for the first layer); 224 per training sample: 224 · 12 = 2688 training FLOPs per epoch, 96 · 8 = 768
evaluation FLOPs. The fake clock advances 1 s per training batch at a constant 100 W GPU + 20 W CPU + 5 W RAM:
125 J per batch, 375 J per epoch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor

torch = pytest.importorskip("torch")
EXAMPLE = Path(__file__).parents[1] / "examples" / "minimal_adapter.py"


def load_example():
    spec = importlib.util.spec_from_file_location("minimal_adapter", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sensors():
    return [ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node"),
            ConstantPowerSensor("ram", 5.0, scope="process")]


def test_the_minimal_adapter_measures_a_fit(tmp_path, fake_clock, monkeypatch):
    example = load_example()
    step = example.ToyTrainer._call

    def ticking(self, hook, *args):  # the clock of the hardware boundary: 1 s per training batch
        if hook == "on_train_batch_end":
            fake_clock.advance(1.0)
        return step(self, hook, *args)

    monkeypatch.setattr(example.ToyTrainer, "_call", ticking)
    callback = example.main(["--epochs", "2", "--output-dir", str(tmp_path)], carbon_intensity=400.0,
                            monitor="val_loss", sensors=sensors())
    record = read_record(callback.record_path)
    assert record["status"] == "completed" and record["framework"] == "toy"
    assert [e["train_flops"] for e in record["epochs"]] == [2688.0, 2688.0]
    assert [e["eval_flops"] for e in record["epochs"]] == [768.0, 768.0]
    assert [e["energy_j"] for e in record["epochs"]] == pytest.approx([375.0, 375.0])
    assert callback.last_metrics["green/epoch_train_flops"] == 2688.0


def test_the_minimal_adapter_closes_a_failed_fit(tmp_path, fake_clock):
    example = load_example()

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 7:  # epoch 1, second training batch (epoch 0: 3 training + 2 validation)
                raise RuntimeError("boom")
            return self.net(x)

    callback = example.GreenCallback(carbon_intensity=400.0, monitor="val_loss", output_dir=str(tmp_path),
                                     sensors=sensors())
    trainer = example.ToyTrainer(Broken(), max_epochs=2, callbacks=[callback], output_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(example.data(12, 4, seed=0), example.data(8, 4, seed=1))
    record = read_record(callback.record_path)
    assert record["status"] == "failed" and len(record["epochs"]) == 1

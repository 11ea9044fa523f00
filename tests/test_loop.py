"""The plain-loop Tracker: hand-computed keys, throughput and MFU, log hooks, record, never-break guard.

The run: MLP 4 -> 8 -> 2 trained on 32 samples in batches of 4 (8 steps) and evaluated on 8 samples in batches of 4
(2 steps) per epoch, 2 epochs. The fake clock moves 1 s per training step and 0.5 s per evaluation step, so an epoch
is 8 + 1 = 9 s, of which 8 s train. Sensors: GPU 100 W (named as an H100 SXM board), CPU 20 W, RAM 5 W.

By hand:
- energy per epoch: (100 + 20 + 5) W x 9 s = 1125 J; evaluation 125 W x 1 s = 125 J; training 1000 J;
- FLOPs (2·M·N·K per matmul): forward 2·4·8 + 2·8·2 = 64 + 32 = 96 per sample; backward dW₁ 64 + dW₂ 32 +
  dX₂ 32 = 128 (no dX for the first layer: the data needs no gradient): 224 per training sample, 96 per evaluated one;
  per epoch 224·32 = 7168 training and 96·8 = 768 evaluation FLOPs;
- throughput over the 8 s of training: 32/8 = 4 samples/s, 7168/8 = 896 FLOP/s;
- MFU: 896 / 67e12 at fp32 (the H100 SXM's dense FP32 peak), 896 / 989.4e12 at bf16.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import warnings
from typing import Any

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import METRIC_KEYS

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from green_callbacks.loop import LogHook, Tracker  # noqa: E402
from tests.models import mlp  # noqa: E402

J_PER_KWH = 3.6e6
TRAIN_FLOPS, EVAL_FLOPS = 224 * 32, 96 * 8
H100_FP32, H100_BF16 = 67e12, 989.4e12


class NamedGpu(ConstantPowerSensor):
    """A constant-power GPU that reports its board name, as NVML does (the hardware boundary)."""

    def info(self) -> dict[str, Any]:
        return {**super().info(), "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}


def sensors() -> list[Any]:
    return [NamedGpu("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node"),
            ConstantPowerSensor("ram", 5.0, scope="process")]


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def train(tracker: Tracker, model: nn.Module, tick, epochs: int = 2) -> list[dict[str, float]]:
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = []
    with tracker:
        for epoch in range(epochs):
            with tracker.epoch() as ep:
                for i in range(0, 32, 4):
                    batch = (x[i:i + 4], y[i:i + 4])
                    opt.zero_grad()
                    loss_of(model, batch).backward()
                    opt.step()
                    tick(1.0)
                    tracker.step(batch)
                with tracker.evaluation(), torch.no_grad():
                    losses = []
                    for i in range(32, 40, 4):
                        losses.append(float(loss_of(model, (x[i:i + 4], y[i:i + 4]))))
                        tick(0.5)
                        tracker.eval_step((x[i:i + 4], y[i:i + 4]))
                ep.metrics["val_loss"] = sum(losses) / len(losses) - epoch  # falls every epoch
            out.append(ep.green)
    return out


def test_hand_computed_keys_throughput_and_mfu(tmp_path, fake_clock):
    model = mlp(seed=0)
    logged: list[dict[str, float]] = []
    tracker = Tracker(carbon_intensity=100.0, monitor="val_loss", output_dir=str(tmp_path), sensors=sensors(),
                      model=model, forward=loss_of, log=logged.append)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_epoch = train(tracker, model, fake_clock.advance)

    assert logged == per_epoch and len(per_epoch) == 2
    for n, metrics in enumerate(per_epoch, start=1):
        assert set(metrics) == set(METRIC_KEYS) and all(isinstance(v, float) for v in metrics.values())
        assert metrics["green/epoch_time_s"] == 9.0
        assert metrics["green/epoch_energy_kwh"] == pytest.approx(1125 / J_PER_KWH, rel=1e-12)
        assert metrics["green/epoch_eval_energy_kwh"] == pytest.approx(125 / J_PER_KWH, rel=1e-12)
        assert metrics["green/epoch_train_flops"] == TRAIN_FLOPS
        assert metrics["green/epoch_eval_flops"] == EVAL_FLOPS
        assert metrics["green/total_train_flops"] == n * TRAIN_FLOPS
        assert metrics["green/train_flops_per_joule"] == pytest.approx(TRAIN_FLOPS / 1000, rel=1e-12)
        assert metrics["green/samples_per_s"] == 4.0
        assert metrics["green/train_flops_per_s"] == 896.0
        assert metrics["green/mfu"] == pytest.approx(896 / H100_FP32, rel=1e-12)
        assert math.isnan(metrics["green/tokens_per_s"])  # (x, y) batches carry no tokens
        assert metrics["green/epochs_to_convergence"] == n
        assert metrics["green/flops_to_convergence"] == n * TRAIN_FLOPS

    record = read_record(tracker.record_path)
    assert record["framework"] == "loop" and record["status"] == "completed"
    assert [row["samples"] for row in record["epochs"]] == [32, 32]
    assert [row["train_time_s"] for row in record["epochs"]] == [8.0, 8.0]
    assert record["throughput"]["peak_flops_per_s"] == H100_FP32
    assert record["throughput"]["compute_dtype"] == "fp32"
    assert record["totals"]["train_flops"] == 2 * TRAIN_FLOPS


def test_mfu_at_the_compute_dtype_and_nan_with_a_reason(tmp_path, fake_clock, caplog):
    model = mlp(seed=0)
    tracker = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path), model=model,
                      forward=loss_of, dtype=torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [metrics] = train(tracker, model, fake_clock.advance, epochs=1)
    assert metrics["green/mfu"] == pytest.approx(896 / H100_BF16, rel=1e-12)

    cpu = [ConstantPowerSensor("cpu", 20.0, scope="node")]  # no accelerator: no peak, never a guess
    tracker = Tracker(carbon_intensity=100.0, sensors=cpu, output_dir=str(tmp_path), model=model, forward=loss_of,
                      monitor="val_loss")  # named: the default-metric notice is not what this test counts
    with caplog.at_level(logging.INFO, logger="green_callbacks"), warnings.catch_warnings():
        warnings.simplefilter("error")  # expected on a CPU: said in the log, not warned
        [metrics] = train(tracker, model, fake_clock.advance, epochs=1)
    said = [r.getMessage() for r in caplog.records if "green/mfu" in r.getMessage()]
    assert len(said) == 1 and "no accelerator with a known peak" in said[0]  # once, not every epoch
    assert math.isnan(metrics["green/mfu"]) and metrics["green/train_flops_per_s"] == 896.0
    assert "no accelerator" in read_record(tracker.record_path)["throughput"]["mfu_unavailable"]


def test_an_accelerator_without_a_known_peak_is_warned_once(tmp_path, fake_clock):
    class UnknownGpu(ConstantPowerSensor):
        def info(self) -> dict[str, Any]:
            return {**super().info(), "devices": [{"name": "NVIDIA Future X1"}]}

    model = mlp(seed=0)
    tracker = Tracker(carbon_intensity=100.0, sensors=[UnknownGpu("gpu", 100.0)], output_dir=str(tmp_path),
                      model=model, forward=loss_of)
    with pytest.warns(UserWarning, match=r"green/mfu is NaN in this run: 'NVIDIA Future X1' has no dense fp32 peak"
                      ) as caught:
        metrics = train(tracker, model, fake_clock.advance, epochs=2)
    assert len([w for w in caught if "green/mfu" in str(w.message)]) == 1
    assert all(math.isnan(m["green/mfu"]) for m in metrics)


def test_tokens_from_input_ids_and_explicit_counts(tmp_path, fake_clock):
    """A mapping batch with ``input_ids`` of shape (4, 6): 4 samples and 24 tokens per step (padding included)."""
    tracker = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracker, tracker.epoch() as ep:
            for _ in range(3):
                fake_clock.advance(2.0)
                tracker.step({"input_ids": torch.zeros(4, 6, dtype=torch.long), "labels": torch.zeros(4)})
            tracker.step(samples=2, tokens=10)  # counts the user knows better (e.g. packed sequences)
    assert ep.green["green/samples_per_s"] == (3 * 4 + 2) / 6.0
    assert ep.green["green/tokens_per_s"] == (3 * 24 + 10) / 6.0
    assert math.isnan(ep.green["green/epoch_train_flops"])  # no model=: FLOPs unavailable, never 0
    assert math.isnan(ep.green["green/train_flops_per_s"]) and math.isnan(ep.green["green/mfu"])


def test_summary_writer_add_scalar_gets_every_key_with_the_epoch_as_step(tmp_path, fake_clock):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    model = mlp(seed=0)
    writer = SummaryWriter(str(tmp_path / "tb"))
    tracker = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path), model=model,
                      forward=loss_of, log=writer.add_scalar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_epoch = train(tracker, model, fake_clock.advance)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(METRIC_KEYS)
    samples = events.Scalars("green/samples_per_s")
    assert [(s.step, s.value) for s in samples] == [(0, 4.0), (1, 4.0)]
    flops = events.Scalars("green/total_train_flops")
    assert [s.value for s in flops] == [per_epoch[0]["green/total_train_flops"], 2 * TRAIN_FLOPS]


def test_log_hook_shapes():
    calls: list[tuple[Any, ...]] = []

    def with_step(metrics, step=None):
        calls.append(("dict", dict(metrics), step))

    def scalar(name, value, step=None):
        calls.append(("scalar", name, value, step))

    def wandb_like(data, step=None, commit=None):
        calls.append(("wandb", dict(data), step))

    wandb_like.__module__ = "wandb.sdk.wandb_run"
    LogHook(with_step)({"green/a": 1.0}, 3)
    LogHook(scalar)({"green/a": 1.0, "green/b": 2.0}, 4)
    LogHook(wandb_like)({"green/a": 1.0}, 5)  # W&B keeps its own growing step
    LogHook(wandb_like, step=True)({"green/a": 1.0}, 6)
    LogHook(print, step=False)({"green/a": 1.0}, 7)
    assert calls == [("dict", {"green/a": 1.0}, 3), ("scalar", "green/a", 1.0, 4), ("scalar", "green/b", 2.0, 4),
                     ("wandb", {"green/a": 1.0}, None), ("wandb", {"green/a": 1.0}, 6)]


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="log= must be a callable"):
        Tracker(country="world", log="wandb")
    with pytest.raises(ValueError, match="dtype='int8' is not a known compute dtype"):
        Tracker(country="world", dtype="int8")
    with pytest.raises(ValueError, match="pue"):
        Tracker(country="world", pue=-1.0)  # the callbacks' own validation: same keywords, same errors
    with pytest.raises(TypeError):
        Tracker(country="world", not_an_argument=1)
    with pytest.raises(ValueError, match="planned_epochs"):
        Tracker(country="world", planned_epochs=0)


def test_a_failing_logger_raises_in_strict_mode(tmp_path, fake_clock):
    def broken(metrics):
        raise RuntimeError("logger down")

    tracker = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path), log=broken)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="logger down"), tracker, tracker.epoch():
            tracker.step(samples=1)
    assert read_record(tracker.record_path)["status"] == "failed"


def test_a_failing_logger_never_breaks_the_loop(tmp_path, fake_clock, monkeypatch):
    monkeypatch.delenv("GREEN_CALLBACKS_STRICT", raising=False)
    calls = []

    def broken(metrics):
        calls.append(1)
        raise RuntimeError("logger down")

    tracker = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path), log=broken)
    with pytest.warns(RuntimeWarning, match="logging failed and is switched off") as caught, tracker:
        for _ in range(3):
            with tracker.epoch():
                fake_clock.advance(1.0)
                tracker.step(samples=4)
    assert len([w for w in caught if "logging failed" in str(w.message)]) == 1 and calls == [1]
    record = read_record(tracker.record_path)
    assert record["status"] == "completed" and len(record["epochs"]) == 3 and "logging" in record["lost"]


def test_an_exception_in_the_loop_ends_the_record_failed_with_the_partial_epoch(tmp_path, fake_clock):
    tracker = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ZeroDivisionError), tracker:
            with tracker.epoch():
                fake_clock.advance(1.0)
            with tracker.epoch():
                fake_clock.advance(1.0)
                1 / 0  # noqa: B018
    record = read_record(tracker.record_path)
    assert record["status"] == "failed" and "ZeroDivisionError" in record["error"]
    assert len(record["epochs"]) == 1 and record["partial_epoch"]["epoch"] == 1


def test_resume_continues_the_totals(tmp_path, fake_clock):
    first = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with first, first.epoch():
            fake_clock.advance(1.0)
            first.step(samples=4)
        state = first.state_dict()
        second = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path))
        second.load_state_dict(state)
        with second, second.epoch() as ep:
            fake_clock.advance(1.0)
    assert ep.index == 1
    assert ep.green["green/total_energy_kwh"] == pytest.approx(2 * 125 / J_PER_KWH, rel=1e-12)
    assert read_record(second.record_path)["totals"]["epochs"] == 2


def test_importing_the_loop_module_imports_no_framework():
    code = ("import sys, green_callbacks, green_callbacks.loop; "
            "print(','.join(m for m in ('torch', 'lightning', 'keras', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_device_indices_pick_the_gpu_whose_energy_is_measured():
    from green_callbacks.core.devices import module_device, torch_devices

    def _device_indices(device, model):  # what Tracker.start passes the session
        return torch_devices(device if device is not None else module_device(model)).indices

    assert _device_indices("cuda:1", None) == [1]
    assert _device_indices(torch.device("cuda", 2), None) == [2]
    assert _device_indices(3, None) == [3]
    assert _device_indices("cpu", None) == []  # training on CPU: no GPU energy, said as such
    assert _device_indices(None, mlp(seed=0)) == []  # the model's parameters are on the CPU
    assert _device_indices(None, None) is None  # unknown: every visible GPU is measured

"""Activation checkpointing: model FLOPs leave the recompute out (equal to the run without checkpointing), hardware
FLOPs keep it (equal to everything the device ran), and ``green/hfu`` sits beside ``green/mfu``."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from green_callbacks.core.flops import FlopTracker  # noqa: E402
from green_callbacks.core.flops.formulas import custom_flop_mapping  # noqa: E402
from tests.models import Blocks  # noqa: E402


def _truth(model, x, loss):
    """Everything the device ran, by torch's own counter (with the engine's formulas), on a copy."""
    copy_ = copy.deepcopy(model)
    with FlopCounterMode(display=False, custom_mapping=custom_flop_mapping()) as counter:
        loss(copy_, x).backward()
    return counter.get_total_flops()


def _tracked(model, batches, loss):
    tracker = FlopTracker()
    for x in batches:
        tracker.begin("train", model, x)
        loss(model, x).backward()
        tracker.end()
    return tracker.take_epoch(), tracker


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_blocks_give_model_flops_of_the_plain_run_and_hardware_flops_with_the_recompute(reentrant):
    torch.manual_seed(0)
    plain = Blocks(None)
    ckpt = Blocks(reentrant)
    ckpt.load_state_dict(plain.state_dict())

    def loss(m, b):
        return m(b[0]).pow(2).sum()

    batches = [(torch.randn(8, 6),) for _ in range(3)]
    model_truth = 3 * _truth(plain, batches[0], loss)
    hardware_truth = 3 * _truth(ckpt, batches[0], loss)
    assert hardware_truth > model_truth  # the recompute is real work
    epoch, tracker = _tracked(ckpt, batches, loss)
    assert epoch.train_flops == model_truth
    assert epoch.train_hardware_flops == hardware_truth
    assert tracker.info()["activation_checkpointing"] is True
    plain_epoch, plain_tracker = _tracked(plain, batches, loss)
    assert plain_epoch.train_flops == plain_epoch.train_hardware_flops == model_truth
    assert plain_tracker.info()["activation_checkpointing"] is False


def test_hf_gradient_checkpointing_keeps_the_recompute_out_of_model_flops():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                     attn_implementation="eager", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    plain = transformers.GPT2LMHeadModel(config).train()
    ckpt = transformers.GPT2LMHeadModel(config).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.gradient_checkpointing_enable()
    ids = torch.randint(0, 64, (2, 12))
    batch = {"input_ids": ids, "labels": ids}

    def loss(m, b):
        return m(**b).loss

    model_truth, hardware_truth = _truth(plain, batch, loss), _truth(ckpt, batch, loss)
    assert hardware_truth > model_truth
    epoch, _ = _tracked(ckpt, [batch], loss)
    assert (epoch.train_flops, epoch.train_hardware_flops) == (model_truth, hardware_truth)


def test_hfu_uses_the_mfu_definition_with_hardware_flops():
    from green_callbacks.core.metric_keys import THROUGHPUT_KEYS, throughput_metrics
    from green_callbacks.core.throughput import throughput

    t = throughput(train_time_s=2.0, samples=None, tokens=None, train_flops=6e12, peak_flops_per_s=1e13,
                   train_hardware_flops=8e12)
    assert t.mfu == pytest.approx(6e12 / (2.0 * 1e13))
    assert t.hfu == pytest.approx(8e12 / (2.0 * 1e13))
    metrics = throughput_metrics(t)
    assert "green/hfu" in THROUGHPUT_KEYS
    assert metrics["green/hfu"] == pytest.approx(0.4) and metrics["green/mfu"] == pytest.approx(0.3)


def test_lightning_fit_with_checkpointing_records_model_and_hardware_flops(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from green_callbacks.core.record import read_record
    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.lightning import GreenCallback

    class Module(pl.LightningModule):
        def __init__(self, reentrant):
            super().__init__()
            self.net = Blocks(reentrant)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).pow(2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 6)), batch_size=8)
    module = Module(False)
    per_step_model = _truth(Blocks(None), (torch.randn(8, 6),), lambda m, b: m(b[0]).pow(2).sum())
    per_step_hardware = _truth(module.net, (torch.randn(8, 6),), lambda m, b: m(b[0]).pow(2).sum())
    callback = GreenCallback(carbon_intensity=100.0, sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback], max_epochs=1,
                         default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(module, data)
    assert callback.last_metrics["green/epoch_train_flops"] == 2 * per_step_model
    assert "green/hfu" in callback.last_metrics
    record = read_record(callback.record_path)
    assert record["epochs"][0]["train_hardware_flops"] == 2 * per_step_hardware
    assert record["flops"]["activation_checkpointing"] is True

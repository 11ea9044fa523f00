"""``trainer.test`` after a 1-epoch fit under DDP (2 processes, gloo, CPU); run by tests/test_inference_lightning.py.

Usage: python lightning_ddp_phase.py OUTPUT_DIR

Test data: 16 samples in batches of 4; the DistributedSampler gives each rank 8 (2 batches). Each process draws
100 W (GPU, per device) + 20 W (CPU, per node) + 5 W (RAM, per process) on its fake clock, which the module advances
0.25 s per test batch (1 s per training batch). Every rank writes ``rank<N>.json``: the callback's
``last_phase_metrics``, the dict ``trainer.test`` returned, and its ``last_phase_record_path``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from green_callbacks.core import clock
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.lightning import GreenCallback

warnings.filterwarnings("ignore")


class Classifier(pl.LightningModule):
    def __init__(self, tick) -> None:
        super().__init__()
        self.tick = tick
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def on_train_batch_start(self, batch, batch_idx):
        self.tick(1.0)

    def on_test_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self.tick(0.25)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", nn.functional.cross_entropy(self.net(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    out_dir = Path(sys.argv[1])
    fake_clock = clock.FakeClock(1000.0)
    clock.now_s = fake_clock
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = (x[:, 0] > 0).long()
    callback = GreenCallback(
        carbon_intensity=100.0,
        output_dir=str(out_dir),
        sensors=[
            ConstantPowerSensor("gpu", 100.0, scope="device"),
            ConstantPowerSensor("cpu", 20.0, scope="node"),
            ConstantPowerSensor("ram", 5.0, scope="process"),
        ],
    )
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(out_dir),
        callbacks=[callback],
    )
    module = Classifier(fake_clock.advance)
    trainer.fit(module, DataLoader(TensorDataset(x[:16], y[:16]), batch_size=4))
    results = trainer.test(module, DataLoader(TensorDataset(x[16:], y[16:]), batch_size=4))
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "rank": trainer.global_rank,
        "results": callback.last_phase_metrics,
        "returned": results[0],
        "record_path": None if callback.last_phase_record_path is None else str(callback.last_phase_record_path),
    }))


if __name__ == "__main__":
    os.environ.setdefault("GREEN_CALLBACKS_STRICT", "1")
    main()

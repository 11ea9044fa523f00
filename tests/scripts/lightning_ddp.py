"""A Lightning fit with GreenCallback, fake sensors and a fake clock; run by tests/test_lightning_ddp.py.

Usage: python lightning_ddp.py OUTPUT_DIR LAYOUT
  LAYOUT "single": one process.
  LAYOUT "ddp":    Trainer(strategy="ddp", accelerator="cpu", devices=2): Lightning re-launches this script as rank 1.
  LAYOUT "ddp-compiled": as "ddp", fitting torch.compile(model) (FLOPs counted on a meta copy of the uncompiled module).
  LAYOUT "nodes":  Trainer(num_nodes=2, devices=1): the test starts one process per simulated node, with NODE_RANK,
                   LOCAL_RANK=0, WORLD_SIZE=2, MASTER_ADDR and MASTER_PORT set, so each rank is its node's leader.

Data: 32 training samples in batches of 4 and 16 validation samples in batches of 4, so every rank sees only full
batches. The model advances the fake clock by 1 s per training batch and 0.5 s per validation batch. Every rank
writes ``rank<N>.json`` (its last green/ metrics and the record path) into OUTPUT_DIR. The test imports ``fit`` to
run the single-process layout in its own process.
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

warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class Classifier(pl.LightningModule):
    def __init__(self, tick) -> None:
        super().__init__()
        self.tick = tick
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def on_train_batch_start(self, batch, batch_idx):
        self.tick(1.0)

    def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self.tick(0.5)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(out_dir: Path, layout: str, tick) -> tuple[GreenCallback, pl.Trainer]:
    """Train 2 epochs in ``layout``; ``tick(seconds)`` advances the fake clock."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    y = (x[:, 0] > 0).long()
    train = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=4)
    val = DataLoader(TensorDataset(x[32:], y[32:]), batch_size=4)
    callback = GreenCallback(
        carbon_intensity=100.0,
        output_dir=str(out_dir),
        sensors=[
            ConstantPowerSensor("gpu", 100.0, scope="device"),
            ConstantPowerSensor("cpu", 20.0, scope="node"),
            ConstantPowerSensor("ram", 5.0, scope="process"),
        ],
    )
    layouts = {
        "single": {"devices": 1},
        "ddp": {"devices": 2, "strategy": "ddp"},
        "ddp-compiled": {"devices": 2, "strategy": "ddp"},
        "nodes": {"devices": 1, "num_nodes": 2, "strategy": "ddp"},
    }
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(out_dir), callbacks=[callback],
        **layouts[layout],
    )
    module = Classifier(tick)
    trainer.fit(torch.compile(module) if layout == "ddp-compiled" else module, train, val)
    return callback, trainer


def main() -> None:
    out_dir, layout = Path(sys.argv[1]), sys.argv[2]
    fake_clock = clock.FakeClock(1000.0)
    clock.now_s = fake_clock  # the hardware boundary: time, as the fake sensors see it
    callback, trainer = fit(out_dir, layout, fake_clock.advance)
    result = {
        "rank": trainer.global_rank,
        "local_rank": trainer.local_rank,
        "world_size": trainer.world_size,
        "metrics": callback.last_metrics,
        "record_path": str(callback.record_path),
    }
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("GREEN_CALLBACKS_STRICT", "1")
    main()

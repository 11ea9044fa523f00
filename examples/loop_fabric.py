"""Tracker in a Lightning Fabric loop: the ``green/`` metrics go to Fabric's loggers through ``fabric.log_dict``.

    python examples/loop_fabric.py [--epochs 3] [--devices 1] [--country FR] [--output-dir green_runs]

Runs on the CPU (``--devices 2`` starts two processes with the gloo backend: values are summed over both, and only
rank zero logs and writes the record).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from green_callbacks.loop import Tracker


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--country", default="FR")
    parser.add_argument("--output-dir", default="green_runs")
    args = parser.parse_args(argv)

    fabric = L.Fabric(accelerator="cpu", devices=args.devices,
                      strategy="ddp" if args.devices > 1 else "auto",
                      loggers=CSVLogger(args.output_dir, name="fabric", version=0))
    fabric.launch()
    fabric.seed_everything(0)
    x = torch.randn(512, 32)
    y = (x[:, :4].sum(dim=1) > 0).long()
    train = fabric.setup_dataloaders(DataLoader(TensorDataset(x[:384], y[:384]), batch_size=32))
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = fabric.setup(model, optimizer)

    tracker = Tracker(country=args.country, output_dir=args.output_dir, model=model,
                      log=fabric.log_dict, dtype=str(fabric.strategy.precision.precision))
    with tracker:
        for _ in range(args.epochs):
            with tracker.epoch():
                for batch in train:
                    optimizer.zero_grad()
                    fabric.backward(loss_of(model, batch))
                    optimizer.step()
                    tracker.step(batch)
    for logger in fabric.loggers:
        logger.finalize("success")
    fabric.print(f"run record: {tracker.record_path}")
    return None if tracker.record_path is None else Path(tracker.record_path)


if __name__ == "__main__":
    main()

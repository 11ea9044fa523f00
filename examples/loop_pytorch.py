"""Tracker in a plain PyTorch training loop, on synthetic data, on the CPU (or the first GPU if there is one).

    python examples/loop_pytorch.py [--epochs 3] [--country FR] [--output-dir green_runs]

Every epoch the ``green/`` metrics go to TensorBoard (``SummaryWriter.add_scalar``) and the run record is written
into ``--output-dir``; ``green-callbacks report --output-dir`` turns it into a report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from green_callbacks.loop import Tracker


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--country", default="FR")
    parser.add_argument("--output-dir", default="green_runs")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    x = torch.randn(512, 32)
    y = (x[:, :4].sum(dim=1) > 0).long()
    train = DataLoader(TensorDataset(x[:384], y[:384]), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(x[384:], y[384:]), batch_size=64)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    writer = SummaryWriter(str(Path(args.output_dir) / "tensorboard"))

    tracker = Tracker(country=args.country, monitor="val_loss", output_dir=args.output_dir,
                      model=model, log=writer.add_scalar, planned_epochs=args.epochs)
    with tracker:
        for epoch in range(args.epochs):
            with tracker.epoch() as ep:
                model.train()
                for xb, yb in train:
                    batch = (xb.to(device), yb.to(device))
                    optimizer.zero_grad()
                    loss_of(model, batch).backward()
                    optimizer.step()
                    tracker.step(batch)  # samples (and tokens) from the batch, FLOPs counted once per shape
                model.eval()
                with tracker.evaluation(), torch.no_grad():
                    total = 0.0
                    for xb, yb in val:
                        batch = (xb.to(device), yb.to(device))
                        total += float(loss_of(model, batch)) * len(xb)
                        tracker.eval_step(batch)
                ep.metrics["val_loss"] = total / len(val.dataset)
            wh, rate = ep.green["green/epoch_energy_kwh"] * 1000, ep.green["green/samples_per_s"]
            print(f"epoch {epoch}: val_loss {ep.metrics['val_loss']:.4f}, {wh:.4f} Wh, {rate:.0f} samples/s")
            if tracker.should_stop:  # a budget_kwh= / budget_gco2e= would be exceeded
                break
    writer.close()
    print(f"run record: {tracker.record_path}")
    return Path(tracker.record_path)


if __name__ == "__main__":
    main()

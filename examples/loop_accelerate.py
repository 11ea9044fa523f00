"""Tracker in an HF Accelerate loop: the ``green/`` metrics go to Accelerate's trackers through ``accelerator.log``.

    python examples/loop_accelerate.py [--epochs 3] [--country FR] [--output-dir green_runs]

``accelerate launch --num_processes 2 --cpu examples/loop_accelerate.py`` runs it on two CPU processes: values are
summed over both, and only the main process logs and writes the record.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from green_callbacks.loop import Tracker


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def main(argv: list[str] | None = None) -> Path | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--country", default="FR")
    parser.add_argument("--output-dir", default="green_runs")
    args = parser.parse_args(argv)

    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=args.output_dir)
    accelerator.init_trackers("loop_accelerate")
    torch.manual_seed(0)
    x = torch.randn(512, 32)
    y = (x[:, :4].sum(dim=1) > 0).long()
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train = DataLoader(TensorDataset(x[:384], y[:384]), batch_size=32)
    model, optimizer, train = accelerator.prepare(model, optimizer, train)

    tracker = Tracker(country=args.country, output_dir=args.output_dir, model=model,
                      log=accelerator.log, dtype=accelerator.mixed_precision if accelerator.mixed_precision != "no"
                      else None)
    with tracker:
        for _ in range(args.epochs):
            with tracker.epoch():
                for batch in train:
                    optimizer.zero_grad()
                    accelerator.backward(loss_of(model, batch))
                    optimizer.step()
                    tracker.step(batch)
    accelerator.end_training()
    accelerator.print(f"run record: {tracker.record_path}")
    return None if tracker.record_path is None else Path(tracker.record_path)


if __name__ == "__main__":
    main()

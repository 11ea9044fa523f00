"""GreenCallback in a real PyTorch Lightning run: a small MLP on a synthetic 4-class task, on the CPU, in seconds.

    green-callbacks demo [--epochs 5] [--country FR] [--root-dir DIR]
    python examples/lightning_quickstart.py [same options]

This is the project's main job (README command #1); it lives in the package so that an installed
``green-callbacks`` runs it.

The only line that concerns green_callbacks is ``callbacks=[GreenCallback(...), ...]``. Every epoch the green/
metrics go to the Trainer's loggers (here a CSVLogger) and to ``trainer.callback_metrics``; at the end this script
prints the per-epoch table, the convergence summary and the footprint (operational emissions beside embodied
emissions and water, and a few greener grids as counterfactuals) from the run record the callback wrote.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from green_callbacks.core.record import read_record
from green_callbacks.lightning import GreenCallback, _pl
from green_callbacks.report.footprint import FootprintOptions, footprint_text
from green_callbacks.report.summary import format_epoch_table, format_run_summary


def synthetic_blobs(n: int, *, dim: int = 16, classes: int = 4, seed: int = 0) -> TensorDataset:
    """``n`` points around ``classes`` fixed Gaussian centres in ``dim`` dimensions (overlapping, so not trivial)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)) * 1.5
    labels = torch.randint(0, classes, (n,), generator=g)
    points = centres[labels] + torch.randn(n, dim, generator=g) * 3.0
    return TensorDataset(points, labels)


class BlobClassifier(_pl.LightningModule):
    """A 16-64-64-4 MLP trained with Adam and cross-entropy."""

    def __init__(self, hidden: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 4))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Train, then print the epoch table and the run summary. Returns 0 when the run completed."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--country", default=None, help="ISO country code of the grid, e.g. FR (default: world)")
    parser.add_argument("--root-dir", default=None, help="folder for logs and the run record (default: a new temp dir)")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    args = parser.parse_args(argv)

    try:
        green = GreenCallback(country=args.country)  # convergence follows EarlyStopping's val_loss
    except ValueError as err:  # a bad --country: one line saying what to pass, not a traceback
        parser.exit(2, f"{parser.prog}: --country: {err}\n")
    root = args.root_dir or tempfile.mkdtemp(prefix="green-lightning-")
    torch.manual_seed(0)
    train = DataLoader(synthetic_blobs(2048, seed=0), batch_size=64, shuffle=True)
    val = DataLoader(synthetic_blobs(500, seed=1), batch_size=128)  # 500 = 3 × 128 + 116: a partial last batch

    trainer = _pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=root,
        logger=_pl.loggers.CSVLogger(root, name="quickstart"),
        callbacks=[green, _pl.callbacks.EarlyStopping(monitor="val_loss", patience=3)],
        enable_progress_bar=args.progress,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=8,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(BlobClassifier(), train, val)

    record = read_record(green.record_path)
    print(format_epoch_table(record))
    print()
    print(format_run_summary(record))
    footprint = footprint_text(record, FootprintOptions(cloud_regions=False, lowest=3))
    if footprint:  # embodied emissions and water beside the operational emissions (docs/footprint.md)
        print()
        print(footprint, end="")
    print(f"\nLightning logs (metrics.csv with every green/ column): {trainer.log_dir}")
    return 0 if record["status"] == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())

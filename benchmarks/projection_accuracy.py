"""How close is the budget projection to the run's actual total? A real Lightning run on this machine's sensors.

Run: python benchmarks/projection_accuracy.py [--epochs 10] [--repeats 3] [--samples 8192] [--after 1 2 3]
     [--threads N]

Trains the demo's MLP (green_callbacks/demo.py: 16-64-64-4, Adam, synthetic blobs) on the CPU for ``--epochs``
epochs with no early stopping, so that the run really reaches the planned number of epochs the projection assumes.
Each repeat is a fresh Python process, as a user's run is (the first epoch of a process carries the warm-up).
After each epoch the callback logs ``green/projected_total_energy_kwh``; this script keeps the value logged after
epoch N (1-based, ``--after``) and compares it with the total energy the run finally recorded:

    relative error = (projected after epoch N - actual total) / actual total

It also says whether the actual total fell inside the band [low, high] of that projection (budget.project on the
first N epochs of the record: the band needs two epochs after the warm-up one, so it is zero-wide after epoch 2).
The sensors are the machine's own (NVML, RAPL, or the labelled CPU-time / RSS estimates where those are missing):
the methods are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

J_PER_KWH = 3.6e6


def one_run(
    epochs: int, samples: int, seed: int, root: str, threads: int | None = None
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train once; the green/ metrics logged after each epoch, and the final run record."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from torch.utils.data import DataLoader

    from green_callbacks.core.record import read_record
    from green_callbacks.demo import BlobClassifier, synthetic_blobs
    from green_callbacks.lightning import GreenCallback, _pl

    torch.manual_seed(seed)
    train = DataLoader(synthetic_blobs(samples, seed=seed), batch_size=64, shuffle=True)
    val = DataLoader(synthetic_blobs(1000, seed=seed + 1000), batch_size=128)
    green = GreenCallback(carbon_intensity=100.0, output_dir=root)
    logged: list[dict[str, float]] = []

    class Keep(_pl.Callback):  # listed after GreenCallback: sees what it logged this epoch
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            logged.append(dict(green.last_metrics))

    trainer = _pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, default_root_dir=root, logger=False,
                          callbacks=[green, Keep()], enable_progress_bar=False, enable_model_summary=False,
                          enable_checkpointing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(BlobClassifier(), train, val)
    return logged, read_record(green.record_path)


def summarise(logged: list[dict[str, float]], record: dict[str, Any], after: int) -> dict[str, float]:
    from green_callbacks.core.budget import project

    actual_j = record["totals"]["energy_j"]
    projected_j = logged[after - 1]["green/projected_total_energy_kwh"] * J_PER_KWH
    band = project([row["energy_j"] for row in record["epochs"][:after]], record["budget"]["planned_epochs"])
    return {
        "projected_j": projected_j,
        "actual_j": actual_j,
        "error": (projected_j - actual_j) / actual_j,
        "low_j": band.low or float("nan"),
        "high_j": band.high or float("nan"),
        "inside": float((band.low or 0.0) <= actual_j <= (band.high or 0.0)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8192, help="training samples per epoch (batches of 64)")
    parser.add_argument("--after", type=int, nargs="+", default=[1, 2, 3], help="epochs (1-based) to project after")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # one run, JSON on stdout
    args = parser.parse_args(argv)

    if args.worker is not None:
        with tempfile.TemporaryDirectory(prefix="green-projection-") as root:
            logged, record = one_run(args.epochs, args.samples, args.worker, root, args.threads)
        print("RESULT " + json.dumps({"logged": logged, "record": record}))
        return 0

    import torch

    threads = args.threads or torch.get_num_threads()
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} with {threads} threads, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    errors: dict[int, list[float]] = {n: [] for n in args.after}
    for repeat in range(args.repeats):
        worker = subprocess.run(
            [sys.executable, __file__, "--worker", str(repeat), "--epochs", str(args.epochs),
             "--samples", str(args.samples), "--threads", str(args.threads)],
            capture_output=True, text=True, check=True)
        line = next(x for x in worker.stdout.splitlines() if x.startswith("RESULT "))
        result = json.loads(line[len("RESULT "):])
        logged, record = result["logged"], result["record"]
        epoch_j = [row["energy_j"] for row in record["epochs"]]
        methods = ", ".join(f"{k}={'/'.join(v)}" for k, v in record["methods"].items())
        print(f"run {repeat + 1}: {len(epoch_j)} epochs, total {record['totals']['energy_j']:.1f} J "
              f"({record['totals']['time_s']:.1f} s); per epoch J: {', '.join(f'{e:.1f}' for e in epoch_j)}")
        print(f"       methods: {methods}")
        for n in args.after:
            s = summarise(logged, record, n)
            errors[n].append(s["error"])
            print(f"       after epoch {n}: projected {s['projected_j']:.1f} J vs actual {s['actual_j']:.1f} J "
                  f"-> error {s['error']:+.1%}; band [{s['low_j']:.1f}, {s['high_j']:.1f}] J "
                  f"{'contains' if s['inside'] else 'misses'} the actual total")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for n, values in errors.items():
        worst = max(values, key=abs)
        print(f"after epoch {n}: mean error {statistics.fmean(values):+.1%}, "
              f"mean |error| {statistics.fmean(abs(v) for v in values):.1%}, worst {worst:+.1%} "
              f"over {len(values)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

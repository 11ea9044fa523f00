"""Train one adapter (tests/faults/harness.py) in a process of its own, for the signal and concurrency tests.

Usage: python train.py ADAPTER OUTPUT_DIR [--epochs N] [--step-s SECONDS] [--workers N] [--plain]

Each training step sleeps ``--step-s`` seconds, so a test can wait for epoch N on disk and then send a signal.
Energy comes from step sensors (2 J CPU, 1 J RAM per read). Whatever escapes ``fit`` is re-raised, as it would be in
the user's own script. ``--plain`` trains without the callback (the baseline a fault must not change); it prints
"epoch N" before each epoch's first step, so that a test knows how far it got.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from green_callbacks.core.sensors.fake import StepEnergySensor
from tests.faults.harness import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("adapter")
    parser.add_argument("output_dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--step-s", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (forked)")
    parser.add_argument("--plain", action="store_true")
    args = parser.parse_args()
    pause = args.step_s

    def action(epoch: int, step: int) -> None:
        if step == 0:
            print(f"epoch {epoch}", flush=True)
        time.sleep(pause)

    options = {} if args.plain else {
        "output_dir": args.output_dir,
        "sensors": [StepEnergySensor("cpu", 2.0, scope="node"), StepEnergySensor("ram", 1.0, scope="node")],
    }
    run = train(args.adapter, Path(args.output_dir) / f"work-{args.adapter}", epochs=args.epochs, action=action,
                num_workers=args.workers,
                with_callback=not args.plain, **options)
    if run.callback is not None:
        print(f"record {run.callback.record_path}", flush=True)
    if run.error is not None:
        raise run.error


if __name__ == "__main__":
    main()

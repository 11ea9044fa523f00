"""What the loop Tracker costs per training step: its lock, its forward hook, the whole step, as ratios in one run.

The loop: an MLP 32 -> 64 -> 10 on batches of 32 (CPU, one thread), SGD. ``Tracker(model=...)`` is given the model;
every step after the first is a cache hit (one batch signature).

1. ``tracker.step(batch)`` alone, ``--calls`` times, with its lock (``threading.Lock``) and with the lock replaced by
   ``contextlib.nullcontext()`` (no thread safety): median microseconds per call of ``--repeats`` interleaved
   rounds, and their ratio: the cost of thread safety.
2. The model's forward with the tracker's forward pre-hook attached and without it (the same module, the hook
   removed): microseconds per forward.
3. A whole step (zero_grad, forward, backward, SGD step, ``tracker.step``) against the same step without a tracker.

``--before PATH``: also time ``tracker.step(batch)`` alone with the package found under ``PATH`` (e.g. a checkout
of an earlier commit), in a subprocess, alternating with this tree's, ``--repeats`` times each.

    python benchmarks/tracker_step_cost.py [--calls 20000] [--repeats 5] [--before /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any


def _setup(out: str) -> tuple[Any, Any, Any, Any]:
    import torch
    from torch import nn

    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.loop import Tracker

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    batch = (torch.randn(32, 32), torch.randint(0, 10, (32,)))
    tracker = Tracker(carbon_intensity=100.0, output_dir=out, model=model,
                      sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    tracker.start()
    tracker.epoch_start()
    model(batch[0]).sum().backward()
    tracker.step(batch)  # the signature is counted once; every later call is a cache hit
    return torch, model, batch, tracker


def _per_call_us(fn: Any, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def step_only(calls: int) -> float:
    """Microseconds per ``tracker.step(batch)`` on a cached signature (this tree or ``--before``'s)."""
    with tempfile.TemporaryDirectory() as out:
        _, _, batch, tracker = _setup(out)
        us = _per_call_us(lambda: tracker.step(batch), calls)
        tracker.finish()
    return us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=str, default=None)
    parser.add_argument("--step-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.step_only:
        print(json.dumps(step_only(args.calls)))
        return

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        torch, model, batch, tracker = _setup(out)
        watch = tracker._watch
        real_lock = tracker._lock
        locked, unlocked = [], []
        for _ in range(args.repeats):
            tracker._lock = watch._lock = real_lock
            locked.append(_per_call_us(lambda: tracker.step(batch), args.calls))
            tracker._lock = watch._lock = contextlib.nullcontext()
            unlocked.append(_per_call_us(lambda: tracker.step(batch), args.calls))
        tracker._lock = watch._lock = real_lock

        x = batch[0]
        hooked, bare = [], []
        with torch.no_grad():
            for _ in range(args.repeats):
                hooked.append(_per_call_us(lambda: model(x), args.calls // 4))
                watch._hook.remove()
                bare.append(_per_call_us(lambda: model(x), args.calls // 4))
                watch._hook = model.register_forward_pre_hook(watch._before_forward, with_kwargs=True)

        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def train_step(track: bool) -> None:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
            opt.step()
            if track:
                tracker.step(batch)

        tracked, untracked = [], []
        for _ in range(args.repeats):
            tracked.append(_per_call_us(lambda: train_step(True), args.calls // 10))
            watch._hook.remove()
            untracked.append(_per_call_us(lambda: train_step(False), args.calls // 10))
            watch._hook = model.register_forward_pre_hook(watch._before_forward, with_kwargs=True)
        tracker.finish()

    med = statistics.median
    print(f"tracker.step(batch), cached signature, {args.calls} calls x {args.repeats} (median):")
    print(f"  with its lock     {med(locked):7.2f} us")
    print(f"  without a lock    {med(unlocked):7.2f} us   ratio {med(locked) / med(unlocked):.3f}")
    print(f"model forward (MLP 32-64-10, batch 32, no_grad): hooked {med(hooked):.2f} us, bare {med(bare):.2f} us "
          f"(+{med(hooked) - med(bare):.2f} us)")
    print(f"whole training step: with the tracker {med(tracked):.1f} us, without {med(untracked):.1f} us, "
          f"ratio {med(tracked) / med(untracked):.3f}")

    if args.before:
        here = str(Path(__file__).resolve().parents[1])
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for name, root in (("before", args.before), ("after", here)):
                env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
                done = subprocess.run([sys.executable, __file__, "--step-only", "--calls", str(args.calls)],
                                      env=env, capture_output=True, text=True, check=True)
                times[name].append(float(done.stdout.strip().splitlines()[-1]))
        print(f"tracker.step(batch) alone, {args.before} against this tree, {args.repeats} alternating processes: "
              f"before {med(times['before']):.2f} us, after {med(times['after']):.2f} us, "
              f"ratio {med(times['after']) / med(times['before']):.3f}")


if __name__ == "__main__":
    main()

"""What the loop Tracker costs per training step: its lock, its forward hook, the whole step, as ratios in one run.

The loop: an MLP 32 -> 64 -> 10 on batches of 32 (CPU, one thread), SGD. ``Tracker(model=...)`` is given the model;
every step after the first is a cache hit (one batch signature).

1. ``tracker.step(batch)`` alone, ``--calls`` times, with its lock (``threading.Lock``) and with the lock replaced by
   ``contextlib.nullcontext()`` (no thread safety), in ``--repeats`` x 5 interleaved rounds: the best round's
   microseconds per call (as ``timeit`` reports; the median is printed beside it), and their ratio: the cost of
   thread safety.
2. The tracker's forward pre-hook alone, called with the forward's arguments on a signature already counted (what
   every forward of the model pays): microseconds per call.
3. A whole step (zero_grad, forward, backward, SGD step, ``tracker.step``) against the same step without a tracker.

``--before PATH``: also time ``tracker.step(batch)`` alone, a whole step with the tracker and the same step without
one, with the package found under ``PATH`` (e.g. a checkout of an earlier commit) and with this tree's, in
subprocesses that alternate, ``--repeats`` times each.

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


def step_only(calls: int) -> list[float]:
    """Microseconds per ``tracker.step(batch)`` on a cached signature, per whole training step with the tracker and
    per the same step without one (this tree or ``--before``'s), best of 5 rounds each."""
    with tempfile.TemporaryDirectory() as out:
        torch, model, batch, tracker = _setup(out)
        torch.set_num_threads(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def train_step() -> None:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
            opt.step()

        def tracked_step() -> None:
            train_step()
            tracker.step(batch)

        alone = min(_per_call_us(lambda: tracker.step(batch), calls // 5) for _ in range(5))
        tracked = min(_per_call_us(tracked_step, calls // 50) for _ in range(5))
        tracker.finish()  # the hooks go with the run: the same step, untracked
        bare = min(_per_call_us(train_step, calls // 50) for _ in range(5))
    return [alone, tracked, bare]


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
        for _ in range(args.repeats * 5):
            tracker._lock = watch._lock = real_lock
            locked.append(_per_call_us(lambda: tracker.step(batch), args.calls // 5))
            tracker._lock = watch._lock = contextlib.nullcontext()
            unlocked.append(_per_call_us(lambda: tracker.step(batch), args.calls // 5))
        tracker._lock = watch._lock = real_lock

        inputs = (batch[0],)
        hook = [_per_call_us(lambda: watch._before_forward(model, inputs, {}), args.calls) for _ in range(args.repeats)]

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
    rounds = f"{args.repeats * 5} rounds of {args.calls // 5} calls"
    print(f"tracker.step(batch), cached signature, {rounds}, best (median):")
    print(f"  with its lock     {min(locked):6.2f} us ({med(locked):.2f})")
    print(f"  without a lock    {min(unlocked):6.2f} us ({med(unlocked):.2f})   "
          f"ratio {min(locked) / min(unlocked):.3f} ({med(locked) / med(unlocked):.3f})")
    print(f"the forward pre-hook alone, a counted signature: {min(hook):.2f} us per forward ({med(hook):.2f})")
    print(f"whole training step: with the tracker {med(tracked):.1f} us, without {med(untracked):.1f} us, "
          f"ratio {med(tracked) / med(untracked):.3f}")

    if args.before:
        here = str(Path(__file__).resolve().parents[1])
        times: dict[str, list[list[float]]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for name, root in (("before", args.before), ("after", here)):
                env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
                done = subprocess.run([sys.executable, __file__, "--step-only", "--calls", str(args.calls)],
                                      env=env, capture_output=True, text=True, check=True)
                times[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        b = [med(t[i] for t in times["before"]) for i in range(3)]
        a = [med(t[i] for t in times["after"]) for i in range(3)]
        print(f"{args.before} (before) against this tree (after), {args.repeats} alternating processes each, median:")
        print(f"  tracker.step(batch) alone      before {b[0]:6.2f} us, after {a[0]:6.2f} us, ratio {a[0] / b[0]:.3f}")
        print(f"  training step with the tracker before {b[1]:6.1f} us, after {a[1]:6.1f} us, ratio {a[1] / b[1]:.3f}")
        print(f"  the same step untracked        before {b[2]:6.1f} us, after {a[2]:6.1f} us "
              f"(tracked/untracked: before {b[1] / b[2]:.3f}, after {a[1] / a[2]:.3f})")

if __name__ == "__main__":
    main()

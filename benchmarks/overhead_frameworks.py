"""Overhead of GreenCallback in the HF ``Trainer`` and in Keras ``fit`` (torch backend), CPU, as ratios to untracked.

The same method as ``benchmarks/overhead.py`` (Lightning), for the two other adapters:

- workload: ``hf`` a 784-1024-1024-10 MLP ``nn.Module`` returning ``{"loss", "logits"}`` trained by
  ``transformers.Trainer`` (``eval_strategy="epoch"``, ``logging_strategy="epoch"``, ``report_to=[]``,
  ``save_strategy="no"``, ``use_cpu=True``); ``keras`` the same MLP as ``keras.Sequential`` of ``Dense`` layers
  (``KERAS_BACKEND=torch``, Adam, ``validation_data``). Synthetic data, ``--steps`` training and ``--val-steps``
  validation batches per epoch, torch on ``--threads`` threads.
- variants: ``none`` (no callback) and ``green`` (``GreenCallback(country="FR", output_dir=tmp)``). The timed region
  is creating the callback, the model and the Trainer (HF) or compiled model (Keras), and the fit.
- one warm-up round of each, then ``--repeats`` interleaved rounds (none green, green none, ...): median, IQR and
  min-max per variant, ratio of the medians to ``none``.
- attributed cost: every method GreenCallback overrides (plus the per-step entry points that are not hooks: the
  FLOP wrapper's ``begin``/``end`` and ``add_batch`` that the forward hooks call in HF, the step-function wrapper's
  ``_note_batches`` in Keras, and a hook
  attached for one watched step, ``on_pre_optimizer_step`` in HF) is wrapped *on
  the instance* with a timer; the sum per fit is the callback's own time on the training thread, robust to other
  load on the machine, given as % of the untracked fit's median. The framework's dispatch of events to the callback
  is not in it (only in the A/B).

    KERAS_BACKEND=torch python benchmarks/overhead_frameworks.py [--frameworks hf,keras] [--repeats 5]
        [--epochs 4] [--steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("GREEN_CALLBACKS_STRICT", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from overhead import CallLog, machine, quartiles, time_attached_hooks  # benchmarks/overhead.py

FRAMEWORKS = ("hf", "keras")
# called by the forward pre-hook and forward hook: per forward, not Trainer events
HF_EXTRA = ("_engine.flops.begin", "_engine.flops.end", "_engine.add_batch")
# called around the train/test function (InstancePatches.around): per step, not Keras hooks
KERAS_EXTRA = ("_step_begin", "_step_end")


def time_instance(cb: Any, log: CallLog, extra: tuple[str, ...]) -> Any:
    """Wrap, on ``cb`` itself, every ``on_*`` method its class overrides and the ``extra`` ones with a timer."""
    for name in dir(type(cb)):
        if name.startswith("on_") and name in vars(type(cb)) and callable(getattr(cb, name)):
            setattr(cb, name, log.wrap(name, getattr(cb, name)))
    for name in extra:  # "a.b.c": the attribute c of cb.a.b (wrapped on that object)
        *path, attr = name.split(".")
        owner = functools.reduce(getattr, path, cb)
        setattr(owner, attr, log.wrap(name, getattr(owner, attr)))
    return time_attached_hooks(cb, log)


# ---------------------------------------------------------------------------------------------- HF Trainer


class _Batches:
    """A map-style dataset of ``{"x", "labels"}`` rows (synthetic, fixed seed)."""

    def __init__(self, n: int, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "labels": self.y[i]}


def hf_model(hidden: int) -> Any:
    import torch

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(784, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, 10),
            )

        def forward(self, x: Any, labels: Any = None) -> dict[str, Any]:
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
            return out

    torch.manual_seed(0)
    return MLP()


def hf_fit(ctx: dict[str, Any], callbacks: list[Any]) -> Any:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=ctx["root"], num_train_epochs=ctx["epochs"], per_device_train_batch_size=ctx["batch_size"],
        per_device_eval_batch_size=ctx["batch_size"], eval_strategy="epoch", logging_strategy="epoch",
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, seed=0, learning_rate=1e-3,
    )
    trainer = Trainer(model=hf_model(ctx["hidden"]), args=args, train_dataset=ctx["train"],
                      eval_dataset=ctx["val"], callbacks=callbacks)
    trainer.train()
    return trainer


def hf_run(ctx: dict[str, Any], green: bool, log: CallLog) -> None:
    if not green:
        hf_fit(ctx, [])
        return
    from green_callbacks.transformers import GreenCallback

    hf_fit(ctx, [time_instance(log.wrap("__init__", GreenCallback)(country="FR", output_dir=ctx["root"]),
                               log, HF_EXTRA)])


def hf_step_times(ctx: dict[str, Any]) -> list[float]:
    from transformers import TrainerCallback

    times: list[float] = []
    start = [0.0]

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            start[0] = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - start[0])

    hf_fit(ctx, [StepTimer()])
    return times


def hf_context(args: argparse.Namespace, root: str) -> dict[str, Any]:
    n, nv = args.batch_size * args.steps, args.batch_size * args.val_steps
    return {"root": root, "epochs": args.epochs, "hidden": args.hidden, "batch_size": args.batch_size,
            "train": _Batches(n, 0), "val": _Batches(nv, 1)}


# ---------------------------------------------------------------------------------------------- Keras


def keras_fit(ctx: dict[str, Any], callbacks: list[Any]) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    h = ctx["hidden"]
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(h, activation="relu"),
                              keras.layers.Dense(h, activation="relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(ctx["x"], ctx["y"], batch_size=ctx["batch_size"], epochs=ctx["epochs"],
              validation_data=(ctx["xv"], ctx["yv"]), shuffle=False, verbose=0, callbacks=callbacks)
    return model


def keras_run(ctx: dict[str, Any], green: bool, log: CallLog) -> None:
    if not green:
        keras_fit(ctx, [])
        return
    from green_callbacks.keras import GreenCallback

    keras_fit(ctx, [time_instance(log.wrap("__init__", GreenCallback)(country="FR", output_dir=ctx["root"]),
                                  log, KERAS_EXTRA)])


def keras_step_times(ctx: dict[str, Any]) -> list[float]:
    import keras

    times: list[float] = []
    start = [0.0]

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            start[0] = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - start[0])

    keras_fit(ctx, [StepTimer()])
    return times


def keras_context(args: argparse.Namespace, root: str) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    n, nv = args.batch_size * args.steps, args.batch_size * args.val_steps
    return {"root": root, "epochs": args.epochs, "hidden": args.hidden, "batch_size": args.batch_size,
            "x": rng.standard_normal((n, 784), dtype=np.float32), "y": rng.integers(0, 10, n),
            "xv": rng.standard_normal((nv, 784), dtype=np.float32), "yv": rng.integers(0, 10, nv)}


SETUP: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., None], Callable[..., list[float]]]] = {
    "hf": (hf_context, hf_run, hf_step_times),
    "keras": (keras_context, keras_run, keras_step_times),
}


# ---------------------------------------------------------------------------------------------- main


def bench(fw: str, args: argparse.Namespace, root: str) -> dict[str, Any]:
    make_ctx, run, step_fn = SETUP[fw]
    ctx = make_ctx(args, root)
    fit_s: dict[str, list[float]] = {"none": [], "green": []}
    cpu_s: dict[str, list[float]] = {"none": [], "green": []}
    own_s: list[float] = []
    calls: list[dict[str, list[float]]] = []
    warmup: dict[str, float] = {}

    def once(variant: str, record: bool) -> None:
        gc.collect()
        log = CallLog()
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            run(ctx, variant == "green", log)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        if not record:
            warmup[variant] = elapsed
            if variant == "green":
                warmup["green_own"] = log.total_s
            return
        fit_s[variant].append(elapsed)
        cpu_s[variant].append(cpu)
        if variant == "green":
            own_s.append(log.total_s)
            calls.append(log.calls)

    for v in ("none", "green"):
        once(v, record=False)
    with contextlib.redirect_stdout(io.StringIO()):
        steps = step_fn(ctx)
    steady = steps[len(steps) // args.epochs:]  # the first epoch (warm-up) left out
    loads = [os.getloadavg()[0]]
    for r in range(args.repeats):
        order = ("none", "green") if r % 2 == 0 else ("green", "none")
        for v in order:
            once(v, record=True)
        loads.append(os.getloadavg()[0])
        print(f"[{fw}] round {r + 1}/{args.repeats} (load {loads[-1]:.2f}): "
              + ", ".join(f"{v} {fit_s[v][-1]:.3f}s" for v in order), flush=True)
    return {"step_s": steps, "steady_step_s": steady, "fit_s": fit_s, "cpu_s": cpu_s, "green_own_s": own_s,
            "calls_s": calls, "warmup_s": warmup, "load_avg": loads}


def report(fw: str, res: dict[str, Any]) -> None:
    q1, med, q3 = quartiles(res["steady_step_s"])
    print(f"\n## {fw}: training step median {med * 1e3:.1f} ms (IQR {q1 * 1e3:.1f}-{q3 * 1e3:.1f}), "
          f"{len(res['step_s'])} steps per fit; load average {min(res['load_avg']):.2f}-{max(res['load_avg']):.2f}")
    for label, table in (("wall time of the fit", res["fit_s"]), ("CPU time of the process", res["cpu_s"])):
        base = statistics.median(table["none"])
        print(f"\n{label}:\n| variant | median (s) | IQR (s) | min-max (s) | ratio of medians to none |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for v in ("none", "green"):
            a, m, b = quartiles(table[v])
            print(f"| {v} | {m:.3f} | {a:.3f}-{b:.3f} | {min(table[v]):.3f}-{max(table[v]):.3f} | {m / base:.4f} |")
    base = statistics.median(res["fit_s"]["none"])
    own = statistics.median(res["green_own_s"])
    print(f"\nattributed cost (GreenCallback's own calls on the training thread): median {own * 1e3:.1f} ms per fit "
          f"= {own / base * 100:.2f} % of the untracked fit ({base:.3f} s); first fit in the process "
          f"{res['warmup_s'].get('green_own', float('nan')) * 1e3:.1f} ms")
    merged: dict[str, list[float]] = {}
    for c in res["calls_s"]:
        for name, ts in c.items():
            merged.setdefault(name, []).extend(ts)
    fits = len(res["calls_s"])
    print("\n| call | calls per fit | ms per fit | median µs | max ms |\n| --- | ---: | ---: | ---: | ---: |")
    for name, ts in sorted(merged.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {name} | {len(ts) / fits:.0f} | {sum(ts) / fits * 1e3:.2f} | {statistics.median(ts) * 1e6:.1f} | "
              f"{max(ts) * 1e3:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50, help="training batches per epoch")
    parser.add_argument("--val-steps", type=int, default=10, help="validation batches per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="write every measurement to this file")
    args = parser.parse_args()

    import torch

    warnings.simplefilter("ignore")
    for name in ("transformers", "accelerate", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        raise SystemExit(f"unknown frameworks {sorted(unknown)}; choose from {FRAMEWORKS}")

    from importlib.metadata import version

    info = {"machine": machine(), "args": vars(args), "keras_backend": os.environ["KERAS_BACKEND"],
            "versions": {p: version(p) for p in ("transformers", "keras", "green-callbacks")}}
    print(json.dumps(info, indent=1), flush=True)
    root = tempfile.mkdtemp(prefix="green-bench-fw-")
    results = {fw: bench(fw, args, root) for fw in frameworks}
    for fw in frameworks:
        report(fw, results[fw])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**info, **results}, f, indent=1, default=str)


if __name__ == "__main__":
    main()

"""Overhead of energy trackers on the same Lightning CPU training, as a ratio to the untracked run.

Variants (one ``Trainer.fit`` each, same model, data, seed and settings):

- ``none``          no tracker;
- ``green``         ``green_callbacks.lightning.GreenCallback(country="FR", output_dir=tmp)``;
- ``codecarbon``    ``codecarbon.OfflineEmissionsTracker(country_iso_code="FRA")`` started before and stopped
                    after ``trainer.fit`` (its defaults otherwise: 15 s measurement period, CSV output);
- ``carbontracker`` ``carbontracker.tracker.CarbonTracker(epochs=E)`` driven by a Lightning callback
                    (``epoch_start`` / ``epoch_end`` at the train-epoch hooks; defaults otherwise);
- ``zeus``          ``zeus.monitor.ZeusMonitor()`` with one ``begin_window`` / ``end_window`` per epoch;
- ``empty``         the control of the method: a Lightning callback with every hook GreenCallback defines, each
                    doing nothing, timed the same way. Its "tracker calls" are what the timing itself and a hook
                    called right after the framework's own work (cold caches) cost: the floor any callback pays.

The timed region of every variant is the same: creating the tracker and the ``Trainer``, ``fit``, stopping the
tracker. One warm-up round of every variant runs first (imports, CodeCarbon's hardware detection, torch's
first-call costs) and is reported separately. Then ``--repeats`` rounds run interleaved, the order rotated each
round (ABCDE, BCDEA, ...), so drift of a noisy machine hits all variants alike. The report gives, per variant,
the median fit time, its min-max and inter-quartile range, and the ratio of the medians to ``none``, plus what
each tracker measured (energy by component), the step time of the workload, and a breakdown of where
GreenCallback's time goes (every hook timed; ``--profile`` adds a cProfile of one fit).

    python benchmarks/overhead.py [--repeats 7] [--epochs 4] [--steps 50] [--threads 0] [--json out.json]

Needs the benchmark environment (``pip install -c constraints/test.txt -r benchmarks/requirements.txt``); a
peer that is not installed, or that refuses to run here, is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import gc
import io
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

VARIANTS = ("none", "green", "codecarbon", "carbontracker", "zeus", "empty")


# ---------------------------------------------------------------------------------------------- workload


def make_module(hidden: int, lr: float = 1e-3) -> Any:
    import lightning.pytorch as pl
    import torch

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(784, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, 10),
            )

        def forward(self, x: Any) -> Any:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=lr)

    return MLP()


def make_loaders(batch_size: int, steps: int, val_steps: int) -> tuple[Any, Any]:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    n, nv = batch_size * steps, batch_size * val_steps
    train = TensorDataset(torch.randn(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))
    val = TensorDataset(torch.randn(nv, 784, generator=g), torch.randint(0, 10, (nv,), generator=g))
    return DataLoader(train, batch_size=batch_size, shuffle=False), DataLoader(val, batch_size=batch_size)


def make_trainer(epochs: int, callbacks: list[Any], root: str) -> Any:
    import lightning.pytorch as pl

    return pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, num_sanity_val_steps=0,
    )


# ---------------------------------------------------------------------------------------------- variants


def _lightning_callback(**hooks: Callable[..., None]) -> Any:
    """A Lightning callback whose hooks are the given functions (each called with trainer, pl_module)."""
    import lightning.pytorch as pl

    def hook(fn: Callable[[], None]) -> Callable[..., None]:
        return lambda self, trainer, module: fn()

    return type("_Hooks", (pl.Callback,), {name: hook(fn) for name, fn in hooks.items()})()


class CallLog:
    """Durations of the tracker's calls on the training thread, by name (wall time, so waits count too)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls.setdefault(name, []).append(time.perf_counter() - t0)

        return timed

    @property
    def total_s(self) -> float:
        return sum(sum(v) for v in self.calls.values())


def time_attached_hooks(cb: Any, log: CallLog) -> Any:
    """Time the hooks ``cb`` attaches to itself for one step (``_watch_backward``: a watched step's
    before-optimizer event), as well as the attaching: a hook the class does not define cannot hide its cost."""
    attach = cb._watch_backward

    def timed_attach(hook: str) -> None:
        attach(hook)
        setattr(cb, hook, log.wrap(hook, getattr(cb, hook)))

    cb._watch_backward = log.wrap("_watch_backward", timed_attach)
    return cb


def green_hooks(cls: Any) -> list[str]:
    """Every Lightning hook the callback class defines itself (all of them are timed: none can hide its cost)."""
    return sorted(name for name, value in vars(cls).items()
                  if callable(value) and (name.startswith("on_") or name in ("setup", "teardown")))


def timed_green_class(log: CallLog) -> Any:
    """GreenCallback with its hooks and its constructor timed. (Lightning reads ``state_key`` on every hook call of
    every callback, to name the profiler action; GreenCallback's is a plain attribute, so there is no call to time.)"""
    from green_callbacks.lightning import GreenCallback

    hooks = green_hooks(GreenCallback)
    namespace: dict[str, Any] = {name: log.wrap(name, getattr(GreenCallback, name)) for name in hooks}
    namespace["__init__"] = log.wrap("__init__", GreenCallback.__init__)
    return type("GreenCallback", (GreenCallback,), namespace)


def run_none(ctx: dict[str, Any], log: CallLog) -> dict[str, Any]:
    make_trainer(ctx["epochs"], [], ctx["root"]).fit(ctx["module"](), *ctx["loaders"])
    return {}


def run_green(ctx: dict[str, Any], log: CallLog) -> dict[str, Any]:
    cb = time_attached_hooks(timed_green_class(log)(country="FR", output_dir=ctx["root"]), log)
    make_trainer(ctx["epochs"], [cb], ctx["root"]).fit(ctx["module"](), *ctx["loaders"])
    rows = cb.session.rows
    comp: dict[str, float | None] = {}
    for name in ("cpu", "ram", "gpu"):
        values = [r.component_energy_j.get(name) for r in rows]
        comp[name] = None if not values or any(v is None for v in values) else float(sum(values))
    return {"energy_j": comp, "measured_s": float(sum(r.time_s for r in rows)) if rows else None,
            "methods": dict(rows[-1].component_method) if rows else None,
            "train_flops": cb.last_metrics.get("green/total_train_flops")}


def run_codecarbon(ctx: dict[str, Any], log: CallLog) -> dict[str, Any]:
    from codecarbon import OfflineEmissionsTracker

    tracker = log.wrap("__init__", OfflineEmissionsTracker)(
        country_iso_code="FRA", output_dir=ctx["root"], log_level="warning")
    log.wrap("start", tracker.start)()
    try:
        make_trainer(ctx["epochs"], [], ctx["root"]).fit(ctx["module"](), *ctx["loaders"])
    finally:
        log.wrap("stop", tracker.stop)()
    d = tracker.final_emissions_data
    kwh = 3.6e6
    return {"energy_j": {"cpu": d.cpu_energy * kwh, "ram": d.ram_energy * kwh, "gpu": d.gpu_energy * kwh},
            "measured_s": d.duration, "cpu_power_w": d.cpu_power, "ram_power_w": d.ram_power,
            "methods": {"cpu": getattr(tracker, "_conf", {}).get("cpu_model", "?")}}


def run_carbontracker(ctx: dict[str, Any], log: CallLog) -> dict[str, Any]:
    from carbontracker.tracker import CarbonTracker

    captured: dict[str, Any] = {}

    class Capturing(CarbonTracker):  # keeps the energy it prints (it has no getter)
        def _output_actual(self) -> None:
            captured["kwh_with_pue"] = float(self.tracker.total_energy_per_epoch().sum())
            captured["epoch_s"] = [float(t) for t in self.tracker.epoch_times]
            super()._output_actual()

    with contextlib.redirect_stdout(io.StringIO()):
        tracker = log.wrap("__init__", Capturing)(epochs=ctx["epochs"], log_dir=os.path.join(ctx["root"], "ct"),
                                                  verbose=0)
    cb = _lightning_callback(on_train_epoch_start=log.wrap("epoch_start", tracker.epoch_start),
                             on_train_epoch_end=log.wrap("epoch_end", tracker.epoch_end))
    make_trainer(ctx["epochs"], [cb], ctx["root"]).fit(ctx["module"](), *ctx["loaders"])
    if not tracker.deleted:
        log.wrap("stop", tracker.stop)()
    if "kwh_with_pue" not in captured:
        return {"note": "carbontracker reported nothing"}
    return {"energy_j": {"cpu": captured["kwh_with_pue"] * 3.6e6 / 1.58},  # its PUE 1.58 removed: IT energy
            "measured_s": float(sum(captured["epoch_s"])), "pue_applied_by_tool": 1.58}


def run_zeus(ctx: dict[str, Any], log: CallLog) -> dict[str, Any]:
    from zeus.monitor import ZeusMonitor

    monitor = log.wrap("__init__", ZeusMonitor)()
    windows: list[Any] = []
    begin, end = log.wrap("begin_window", monitor.begin_window), log.wrap("end_window", monitor.end_window)
    cb = _lightning_callback(on_train_epoch_start=lambda: begin("epoch"),
                             on_train_epoch_end=lambda: windows.append(end("epoch")))
    make_trainer(ctx["epochs"], [cb], ctx["root"]).fit(ctx["module"](), *ctx["loaders"])
    gpu = sum(sum(w.gpu_energy.values()) for w in windows) if any(w.gpu_energy for w in windows) else None
    cpu = None if any(w.cpu_energy is None for w in windows) else sum(sum(w.cpu_energy.values()) for w in windows)
    return {"energy_j": {"gpu": gpu, "cpu": cpu}, "measured_s": float(sum(w.time for w in windows)),
            "note": f"gpu_indices={monitor.gpu_indices}, cpu_indices={monitor.cpu_indices}"}


def run_empty(ctx: dict[str, Any], log: CallLog) -> dict[str, Any]:
    import lightning.pytorch as pl

    from green_callbacks.lightning import GreenCallback

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    hooks = [*green_hooks(GreenCallback), "on_before_optimizer_step"]  # the per-step hooks a callback may define
    cb = type("Empty", (pl.Callback,), {name: log.wrap(name, nothing) for name in hooks})()
    make_trainer(ctx["epochs"], [cb], ctx["root"]).fit(ctx["module"](), *ctx["loaders"])
    return {}


RUNNERS: dict[str, Callable[[dict[str, Any], CallLog], dict[str, Any]]] = {
    "none": run_none, "green": run_green, "codecarbon": run_codecarbon,
    "carbontracker": run_carbontracker, "zeus": run_zeus, "empty": run_empty,
}


# ---------------------------------------------------------------------------------------------- instruments


def step_times(ctx: dict[str, Any]) -> list[float]:
    """Training-step durations (batch start to batch end, so forward, backward, optimizer) of an untracked fit."""
    import lightning.pytorch as pl

    times: list[float] = []
    start: list[float] = [0.0]

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            start[0] = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            times.append(time.perf_counter() - start[0])

    make_trainer(ctx["epochs"], [StepTimer()], ctx["root"]).fit(ctx["module"](), *ctx["loaders"])
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0.0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "rapl": os.path.isdir("/sys/class/powercap/intel-rapl"), "date": time.strftime("%Y-%m-%d")}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lightning", "green-callbacks", "codecarbon", "carbontracker", "zeus"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50, help="training batches per epoch")
    parser.add_argument("--val-steps", type=int, default=10, help="validation batches per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default; 1 keeps CPU time stable on a shared machine)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--profile", action="store_true", help="cProfile one GreenCallback fit; print its top")
    parser.add_argument("--json", help="write every measurement to this file")
    args = parser.parse_args()

    import torch

    warnings.simplefilter("ignore")
    for name in ("lightning", "lightning.pytorch", "codecarbon", "carbontracker", "zeus"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("GREEN_CALLBACKS_STRICT", "0")

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")

    root = tempfile.mkdtemp(prefix="green-bench-")

    def module() -> Any:
        torch.manual_seed(0)
        return make_module(args.hidden)

    ctx: dict[str, Any] = {"epochs": args.epochs, "root": root, "module": module,
                           "loaders": make_loaders(args.batch_size, args.steps, args.val_steps)}
    info = {"machine": machine(), "versions": versions(), "args": vars(args)}
    print(json.dumps(info, indent=1))

    steps = step_times(ctx)
    steady = steps[len(steps) // args.epochs:] if args.epochs > 1 else steps[1:]  # warm-up left out
    q1, med, q3 = quartiles(steady)
    print(f"training step: median {med * 1e3:.1f} ms (IQR {q1 * 1e3:.1f}-{q3 * 1e3:.1f}), "
          f"{len(steps)} steps per fit")

    results: dict[str, list[float]] = {v: [] for v in variants}
    cpu_results: dict[str, list[float]] = {v: [] for v in variants}
    tracker_main: dict[str, list[float]] = {v: [] for v in variants}  # tracker calls on the training thread
    other_cpu: dict[str, list[float]] = {v: [] for v in variants}  # CPU of every thread but the training one
    extras: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    calls: dict[str, list[dict[str, list[float]]]] = {v: [] for v in variants}
    failures: dict[str, str] = {}
    warmup: dict[str, dict[str, Any]] = {}

    def run(variant: str, record: bool) -> None:
        if variant in failures:
            return
        gc.collect()
        log = CallLog()
        t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                extra = RUNNERS[variant](ctx, log)
        except BaseException as exc:  # SystemExit included: carbontracker exits on its own errors
            failures[variant] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            return
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        others = cpu - (time.thread_time() - m0)
        if record:
            results[variant].append(elapsed)
            cpu_results[variant].append(cpu)
            tracker_main[variant].append(log.total_s)
            other_cpu[variant].append(others)
            extras[variant].append(extra)
            calls[variant].append(log.calls)
        else:
            warmup[variant] = {"fit_s": elapsed, "tracker_main_s": log.total_s,
                               "calls_s": {k: sum(v) for k, v in log.calls.items()}}

    for v in variants:
        run(v, record=False)
    loads = [os.getloadavg()[0]]
    for r in range(args.repeats):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            run(v, record=True)
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.repeats} (load {loads[-1]:.2f}): "
              + ", ".join(f"{v} {results[v][-1]:.3f}s/{cpu_results[v][-1]:.3f}cpu-s" for v in order if results[v]),
              flush=True)
    print(f"1-minute load average during the rounds: {min(loads):.2f}-{max(loads):.2f} "
          f"({os.cpu_count()} logical CPUs; above that, other processes competed for the cores)")

    print("\nA/B: the fit as a whole (subject to everything else the machine runs)")
    for label, table in (("wall time of the fit", results), ("CPU time of this process (all threads)", cpu_results)):
        base = statistics.median(table["none"]) if table.get("none") else None
        print(f"\n{label}:")
        print("| variant | median (s) | IQR (s) | min-max (s) | ratio of medians to none |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for v in variants:
            if v in failures:
                print(f"| {v} | failed: {failures[v][:80]} | | | |")
                continue
            xs = table[v]
            q1, med, q3 = quartiles(xs)
            ratio = f"{med / base:.4f}" if base else "-"
            print(f"| {v} | {med:.3f} | {q1:.3f}-{q3:.3f} | {min(xs):.3f}-{max(xs):.3f} | {ratio} |")

    base_fit = statistics.median(results["none"]) if results.get("none") else None
    base_other = statistics.median(other_cpu["none"]) if other_cpu.get("none") else 0.0
    print("\nAttributed cost: the tracker's own work, timed where it happens (robust to other load), as % of the "
          "untracked fit's median wall time")
    print("| variant | tracker calls on the training thread: median ms (%) | CPU of other threads above none: "
          "median ms (%) | sum (%) | first fit in the process: tracker calls ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for v in variants:
        if v in failures or not results[v]:
            continue
        main_ms = statistics.median(tracker_main[v]) * 1e3
        bg_ms = (statistics.median(other_cpu[v]) - base_other) * 1e3
        pct = (lambda ms: f"{ms / (base_fit * 1e3) * 100:.2f} %") if base_fit else (lambda ms: "-")
        first = warmup.get(v, {}).get("tracker_main_s")
        print(f"| {v} | {main_ms:.1f} ({pct(main_ms)}) | {bg_ms:.1f} ({pct(bg_ms)}) | {pct(main_ms + bg_ms)} | "
              f"{'-' if first is None else f'{first * 1e3:.1f}'} |")

    print("\nwhat each tracker measured (last fit):")
    for v in variants:
        if extras.get(v):
            print(f"  {v}: {extras[v][-1]}")

    for v in variants:
        if not calls.get(v) or v == "none":
            continue
        merged: dict[str, list[float]] = {}
        for log_calls in calls[v]:
            for name, ts in log_calls.items():
                merged.setdefault(name, []).extend(ts)
        fits = len(calls[v])
        print(f"\n{v}: calls on the training thread, over {fits} fits (per fit: total / {fits})")
        print("| call | calls per fit | ms per fit | median µs | max ms |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, ts in sorted(merged.items(), key=lambda kv: -sum(kv[1])):
            print(f"| {name} | {len(ts) / fits:.0f} | {sum(ts) / fits * 1e3:.2f} | {statistics.median(ts) * 1e6:.1f} | "
                  f"{max(ts) * 1e3:.2f} |")

    if args.profile and "green" in variants:
        prof = cProfile.Profile()
        with contextlib.redirect_stdout(io.StringIO()):
            prof.runcall(run_green, ctx, CallLog())
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
        stats.print_stats(r"green_callbacks", 30)
        print("\ncProfile of one GreenCallback fit (entries under green_callbacks, by cumulative time):")
        print("\n".join(out.getvalue().splitlines()[-40:]))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({**info, "step_s": steps, "fit_s": results, "fit_cpu_s": cpu_results,
                       "load_avg": loads, "warmup": warmup, "measured": extras, "tracker_main_s": tracker_main,
                       "other_threads_cpu_s": other_cpu, "failures": failures, "calls_s": calls},
                      f, indent=1, default=str)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Checks of the NVML path on a real NVIDIA GPU, in under five minutes (prepared; needs a machine with a GPU).

1. NVML read latency: ``nvmlDeviceGetTotalEnergyConsumption``, ``nvmlDeviceGetPowerUsage`` and
   ``nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT)``; ``--reads`` calls each, p50/p99 in µs.
2. Energy-counter update period: the counter polled as fast as possible for ``--poll-s`` seconds, idle and under a
   matmul load; the intervals between changes of its value (median, p10, p90).
3. Counter vs integrated power: over a ``--load-s`` matmul load, the counter's difference against the trapezoid
   integral of power sampled every 10 ms (``nvmlDeviceGetPowerUsage``; and instant power where the field exists).
4. GreenCallback's per-epoch GPU energy against direct counter reads taken by a second callback at the same
   epoch boundaries (a Lightning fit on the GPU).
5. Overhead on the GPU: the same Lightning fit with and without GreenCallback, interleaved, ``--repeats`` each;
   median wall time and ratio.

Prints one JSON document (and writes it to ``--json``). Exits with status 2, printing why, where there is no
GPU or NVML. Run it from the repository root in the benchmark environment::

    python benchmarks/gpu_validation.py --json "$OUT/gpu_validation.json"
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float], scale: float = 1.0) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p10": percentile(values, 10) * scale, "p50": statistics.median(values) * scale,
            "p90": percentile(values, 90) * scale, "p99": percentile(values, 99) * scale}


# ---------------------------------------------------------------------------------------------- 1. latency


def read_latency(nv: Any, handle: Any, reads: int) -> dict[str, Any]:
    calls: dict[str, Callable[[], Any]] = {
        "nvmlDeviceGetTotalEnergyConsumption": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle),
        "nvmlDeviceGetPowerUsage": lambda: nv.nvmlDeviceGetPowerUsage(handle),
    }
    if hasattr(nv, "NVML_FI_DEV_POWER_INSTANT"):
        calls["nvmlDeviceGetFieldValues(POWER_INSTANT)"] = lambda: nv.nvmlDeviceGetFieldValues(
            handle, [nv.NVML_FI_DEV_POWER_INSTANT])
    out: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            call()
        except Exception as exc:
            out[name] = f"unsupported: {type(exc).__name__}: {exc}"
            continue
        times = []
        for _ in range(reads):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out[name] = summary(times, 1e6)  # µs
    return out


# ---------------------------------------------------------------------------------------------- 2. update period


class MatmulLoad:
    """Back-to-back bf16 matmuls on the GPU, launched from the calling thread until ``stop``."""

    def __init__(self, size: int = 8192) -> None:
        import torch

        self.torch = torch
        self.a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
        self.b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)

    def run_for(self, seconds: float, during: Callable[[], None] | None = None) -> None:
        """Keeps the GPU busy for ``seconds``; ``during`` is called between launches (e.g. a poll)."""
        end = time.perf_counter() + seconds
        pending = 0
        while time.perf_counter() < end:
            self.torch.mm(self.a, self.b)  # the launch is the point; the result is dropped
            pending += 1
            if pending >= 4:  # keep a few kernels queued, no more
                self.torch.cuda.synchronize()
                pending = 0
            if during is not None:
                during()
        self.torch.cuda.synchronize()


def counter_update_period(nv: Any, handle: Any, seconds: float, load: MatmulLoad | None) -> dict[str, Any]:
    changes: list[float] = []
    last = [nv.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()]

    def poll() -> None:
        value = nv.nvmlDeviceGetTotalEnergyConsumption(handle)
        now = time.perf_counter()
        if value != last[0]:
            changes.append(now - last[1])
            last[0], last[1] = value, now

    if load is None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            poll()
    else:
        import threading

        stop = threading.Event()

        def poller() -> None:
            while not stop.is_set():
                poll()

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        load.run_for(seconds)
        stop.set()
        thread.join()
    return {"intervals_between_changes_ms": summary(changes[1:], 1e3)}  # the first interval is partial


# ---------------------------------------------------------------------------------------------- 3. counter vs power


def counter_vs_power(nv: Any, handle: Any, load: MatmulLoad, seconds: float) -> dict[str, Any]:
    import threading

    samples: list[tuple[float, float, float | None]] = []  # time, average-power W, instant-power W
    stop = threading.Event()

    def instant() -> float | None:
        if not hasattr(nv, "NVML_FI_DEV_POWER_INSTANT"):
            return None
        try:
            value = nv.nvmlDeviceGetFieldValues(handle, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
            if getattr(value, "nvmlReturn", 0) != 0:
                return None
            return float(value.value.uiVal) / 1000.0
        except Exception:
            return None

    def sampler() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), nv.nvmlDeviceGetPowerUsage(handle) / 1000.0, instant()))
            stop.wait(0.01)

    thread = threading.Thread(target=sampler, daemon=True)
    e0, t0 = nv.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()
    thread.start()
    load.run_for(seconds)
    stop.set()
    thread.join()
    e1, t1 = nv.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter()

    def trapezoid(index: int) -> float | None:
        pts = [(t, watts[index]) for t, *watts in samples if watts[index] is not None]
        if len(pts) < 2:
            return None
        return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(pts))

    counter_j = (e1 - e0) / 1000.0
    avg_j, inst_j = trapezoid(0), trapezoid(1)
    return {"window_s": t1 - t0, "counter_j": counter_j, "counter_mean_w": counter_j / (t1 - t0),
            "samples": len(samples), "power_usage_trapezoid_j": avg_j, "instant_power_trapezoid_j": inst_j,
            "power_usage_vs_counter": None if avg_j is None else avg_j / counter_j,
            "instant_vs_counter": None if inst_j is None else inst_j / counter_j,
            "note": "samples cover the load only; the counter window adds the reads around it (a few ms)"}


# ---------------------------------------------------------------------------------------------- 4, 5. Lightning


def lightning_parts(nv: Any, handle: Any, epochs: int, steps: int, repeats: int) -> dict[str, Any]:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4096, 8192), torch.nn.GELU(), torch.nn.Linear(8192, 4096),
                                           torch.nn.GELU(), torch.nn.Linear(4096, 10))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    g = torch.Generator().manual_seed(0)
    n = 512 * steps
    data = TensorDataset(torch.randn(n, 4096, generator=g), torch.randint(0, 10, (n,), generator=g))

    class CounterReads(pl.Callback):
        """Reads the energy counter at the same epoch boundaries as GreenCallback (after a synchronize)."""

        def __init__(self) -> None:
            self.epochs_j: list[float] = []
            self._start = 0

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self._start = nv.nvmlDeviceGetTotalEnergyConsumption(handle)

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            self.epochs_j.append((nv.nvmlDeviceGetTotalEnergyConsumption(handle) - self._start) / 1000.0)

    def fit(callbacks: list[Any]) -> float:
        torch.manual_seed(0)
        trainer = pl.Trainer(max_epochs=epochs, accelerator="gpu", devices=1, callbacks=callbacks, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tempfile.mkdtemp())
        loader = DataLoader(data, batch_size=512, pin_memory=True)
        t0 = time.perf_counter()
        trainer.fit(Net(), loader)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    # 4. agreement, per epoch: the direct reader is listed after ours (Lightning calls callbacks in list order,
    # so at epoch start it reads after ours and at epoch end after ours too: same ordering at both ends)
    green, direct = GreenCallback(country="FR", output_dir=tempfile.mkdtemp()), CounterReads()
    with contextlib.redirect_stdout(io.StringIO()):
        fit([green, direct])
    ours = [row.component_energy_j.get("gpu") for row in green.session.rows]
    methods = [row.component_method.get("gpu") for row in green.session.rows]
    agreement = [{"epoch": i, "green_j": o, "direct_j": d, "ratio": None if not o or not d else o / d,
                  "method": m} for i, (o, d, m) in enumerate(zip(ours, direct.epochs_j, methods, strict=False))]

    # 5. overhead, interleaved
    with contextlib.redirect_stdout(io.StringIO()):
        fit([])  # warm-up
        times: dict[str, list[float]] = {"none": [], "green": []}
        for r in range(repeats):
            for variant in (("none", "green") if r % 2 == 0 else ("green", "none")):
                cbs = [GreenCallback(country="FR", output_dir=tempfile.mkdtemp())] if variant == "green" else []
                times[variant].append(fit(cbs))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"per_epoch_energy": agreement,
            "overhead": {"fit_s": times, "median_s": med, "ratio_green_to_none": med["green"] / med["none"],
                         "epochs": epochs, "steps_per_epoch": steps}}


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU to check")
    parser.add_argument("--reads", type=int, default=10000)
    parser.add_argument("--poll-s", type=float, default=3.0)
    parser.add_argument("--load-s", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    try:
        import pynvml as nv

        nv.nvmlInit()
        handle = nv.nvmlDeviceGetHandleByIndex(args.gpu)
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device (a CPU build of torch?)")
    except Exception as exc:
        print(f"gpu_validation: no usable GPU here ({type(exc).__name__}: {exc}); nothing to check.", file=sys.stderr)
        return 2

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    started = time.perf_counter()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "gpu": text(nv.nvmlDeviceGetName(handle)),
        "driver": text(nv.nvmlSystemGetDriverVersion()),
        "torch": torch.__version__, "cuda": torch.version.cuda,
    }
    steps: list[tuple[str, Callable[[], Any]]] = []
    load: list[MatmulLoad] = []

    def get_load() -> MatmulLoad:
        if not load:
            load.append(MatmulLoad())
            load[0].run_for(2.0)  # warm up clocks and kernels
        return load[0]

    steps.append(("read_latency_us", lambda: read_latency(nv, handle, args.reads)))
    steps.append(("counter_update_idle", lambda: counter_update_period(nv, handle, args.poll_s, None)))
    steps.append(("counter_update_load", lambda: counter_update_period(nv, handle, args.poll_s, get_load())))
    steps.append(("counter_vs_power", lambda: counter_vs_power(nv, handle, get_load(), args.load_s)))
    steps.append(("lightning", lambda: lightning_parts(nv, handle, args.epochs, args.steps, args.repeats)))
    for name, step in steps:
        t0 = time.perf_counter()
        try:
            result[name] = step()
        except Exception as exc:  # report and go on: one broken part must not hide the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        result.setdefault("durations_s", {})[name] = round(time.perf_counter() - t0, 2)
        print(f"# {name} done in {result['durations_s'][name]} s", file=sys.stderr, flush=True)
    result["total_s"] = round(time.perf_counter() - started, 1)
    text_out = json.dumps(result, indent=1, default=str)
    print(text_out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

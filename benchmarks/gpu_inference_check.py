"""Prepared GPU check of inference phases on a real NVML GPU (a few minutes; not run yet: no GPU was lent).

Run on a CUDA machine with torch+CUDA, lightning and nvidia-ml-py:
    python benchmarks/gpu_inference_check.py [--size 4096] [--batches 400]

What it checks, with Lightning ``trainer.predict`` of an MLP (size × size, 4 layers, batch 256) on ``cuda:0``:
1. the GPU component is measured by the NVML energy counter (``nvml-energy-counter``) and is > 0;
2. the steady J per sample of a long phase (``--batches``) and of a phase half as long agree within 10 %: the
   warm-up (first batch, with cuBLAS initialisation) is kept out of the rates;
3. a phase of 2 batches (well under the counter's ~100 ms) is labelled ``below-sensor-resolution``;
4. the mean power lies between the board's idle and its power limit (``nvmlDeviceGetPowerManagementLimit``).
Prints the figures and PASS/FAIL per check; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            layers = []
            for _ in range(4):
                layers += [nn.Linear(args.size, args.size), nn.ReLU()]
            self.net = nn.Sequential(*layers)

        def predict_step(self, batch, batch_idx):
            return self.net(batch[0]).sum(dim=1)

    folder = tempfile.mkdtemp(prefix="green-gpu-inference-")
    module = Module()

    def phase(batches: int):
        data = DataLoader(TensorDataset(torch.randn(256 * batches, args.size)), batch_size=256)
        green = GreenCallback(carbon_intensity=300.0, output_dir=folder)
        trainer = pl.Trainer(accelerator="gpu", devices=1, logger=False, callbacks=[green], enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, default_root_dir=folder)
        trainer.predict(module, data, return_predictions=False)
        return green.last_phase

    results = []

    def check(name: str, ok: bool, detail: str) -> None:
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")

    long_run = phase(args.batches)
    half_run = phase(args.batches // 2)
    short_run = phase(2)
    for label, r in (("long", long_run), ("half", half_run), ("short", short_run)):
        print(f"{label:5s}: {r.batches} batches, {r.duration_s:.3f} s, gpu {r.component_energy_j.get('gpu')} J "
              f"({r.component_method.get('gpu')}), {r.energy_per_sample_j} J/sample, {r.mean_power_w} W, "
              f"p50 {r.latency_p50_s} s, warm-up {r.warmup_time_s:.3f} s, quality {r.quality}")

    gpu_j = long_run.component_energy_j.get("gpu")
    check("NVML energy counter", long_run.component_method.get("gpu") == "nvml-energy-counter" and bool(gpu_j),
          f"method {long_run.component_method.get('gpu')}, {gpu_j} J")
    a, b = long_run.energy_per_sample_j, half_run.energy_per_sample_j
    check("steady J/sample stable", a is not None and b is not None and abs(a - b) <= 0.1 * max(a, b),
          f"{a} vs {b} J per sample")
    check("short phase labelled", short_run.quality == "below-sensor-resolution",
          f"quality {short_run.quality}, steady {short_run.steady_time_s:.4f} s")
    try:
        import pynvml

        pynvml.nvmlInit()
        limit_w = pynvml.nvmlDeviceGetPowerManagementLimit(pynvml.nvmlDeviceGetHandleByIndex(0)) / 1000.0
    except Exception as err:  # the check is informative only without the limit
        limit_w = None
        print(f"(power limit unreadable: {err})")
    gpu_power = None if not gpu_j else gpu_j / long_run.duration_s
    check("GPU power plausible", gpu_power is not None and (limit_w is None or 20.0 < gpu_power <= limit_w * 1.05),
          f"{gpu_power} W over the phase, limit {limit_w} W")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What measuring a predict loop costs per batch, on this machine.

Run: python benchmarks/inference_cost.py [--batches 2000] [--repeats 5]

Three measurements over ``--repeats`` interleaved rounds (the per-batch path: median; the A/B loops: the best
round of each, the one least disturbed by other load on a shared machine):

1. the per-batch path alone: ``PhaseSession.batch_start(batch)`` + ``batch_end()`` (a clock read at each end, the
   batch's shapes, the lazy ``attention_mask.sum()``), for a tuple batch ``(x, y)`` and for a tokenised dict batch
   (``input_ids``, ``attention_mask``, ``labels``); in microseconds per batch;
2. a plain torch predict loop (an MLP 256 -> 512 -> 256 -> 10, batches of 64, CPU, ``torch.inference_mode``)
   with and without the phase calls: the ratio of the loop times and the difference per batch;
3. Lightning ``trainer.predict`` of the same model and data, without and with ``GreenCallback``: the ratio of the
   call times and the difference per batch (this includes the phase's start, its FLOP counter watching the first
   batch of each input shape and its record write, not only the per-batch path).

The machine the figures in docs/inference.md come from is shared and small (2 cores), so only the ratios measured in
one run are reported, never absolute times as a property of the library.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.phase_session import PhaseSession
from green_callbacks.core.sensors.fake import ConstantPowerSensor


def _phase(folder: str) -> PhaseSession:
    phase = PhaseSession(GreenConfig(carbon_intensity=300.0, output_dir=folder), framework="bench", kind="predict",
                         sensors=[ConstantPowerSensor("gpu", 100.0)])
    phase.start()
    return phase


def per_batch_path(batch: object, batches: int, folder: str) -> float:
    """Microseconds per batch of batch_start + batch_end (steady batches: the signature is already known)."""
    phase = _phase(folder)
    phase.batch_start(batch)
    phase.batch_end()  # the warm-up batch, outside the timing
    t0 = time.perf_counter()
    for _ in range(batches):
        phase.batch_start(batch)
        phase.batch_end()
    elapsed = time.perf_counter() - t0
    phase.end()
    return elapsed / batches * 1e6


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def plain_loop(net: nn.Module, data: list[torch.Tensor], folder: str | None) -> tuple[float, float]:
    """(seconds of the loop, seconds of the phase's start + end: sensors, FLOP-free summary, one record write)."""
    fixed = 0.0
    phase = None
    if folder is not None:
        t0 = time.perf_counter()
        phase = _phase(folder)
        fixed += time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in data:
            if phase is not None:
                phase.batch_start((x,))
            net(x)
            if phase is not None:
                phase.batch_end()
    elapsed = time.perf_counter() - t0
    if phase is not None:
        t0 = time.perf_counter()
        phase.end()
        fixed += time.perf_counter() - t0
    return elapsed, fixed


def lightning_predict(data: list[torch.Tensor], folder: str, with_callback: bool) -> float:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model()

        def predict_step(self, batch, batch_idx):
            return self.net(batch[0])

    loader = DataLoader(TensorDataset(torch.cat(data)), batch_size=data[0].shape[0])
    callbacks = [GreenCallback(carbon_intensity=300.0, output_dir=folder)] if with_callback else []
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=callbacks, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=folder)
    module = Module()
    t0 = time.perf_counter()
    trainer.predict(module, loader, return_predictions=False)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-lightning", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    folder = tempfile.mkdtemp(prefix="green-inference-cost-")

    tuple_batch = (torch.randn(64, 256), torch.randint(0, 10, (64,)))
    mask = torch.ones(64, 128, dtype=torch.long)
    mask[:, 100:] = 0
    dict_batch = {"input_ids": torch.randint(0, 1000, (64, 128)), "attention_mask": mask,
                  "labels": torch.randint(0, 2, (64,))}
    paths: dict[str, list[float]] = {"tuple": [], "dict": []}
    for _ in range(args.repeats):
        paths["tuple"].append(per_batch_path(tuple_batch, args.batches, folder))
        paths["dict"].append(per_batch_path(dict_batch, args.batches, folder))
    print("1. per-batch path (batch_start + batch_end), median of repeats:")
    print(f"   tuple batch (x, y):                          {statistics.median(paths['tuple']):7.2f} us/batch")
    print(f"   dict batch with attention_mask (lazy sum):   {statistics.median(paths['dict']):7.2f} us/batch")

    net = model()
    loop_batches = max(args.batches // 4, 50)
    data = [torch.randn(64, 256) for _ in range(loop_batches)]
    plain_loop(net, data[:20], None)  # warm the allocator and kernels
    base, measured, fixed = [], [], []
    for i in range(args.repeats):  # alternate which goes first: drifting load then favours neither
        if i % 2:
            base.append(plain_loop(net, data, None)[0])
        loop, once = plain_loop(net, data, folder)
        measured.append(loop)
        fixed.append(once)
        if not i % 2:
            base.append(plain_loop(net, data, None)[0])
    b, m = min(base), min(measured)  # best of the interleaved repeats: the least disturbed by other load
    print(f"2. plain torch predict loop, {loop_batches} batches of 64 (MLP 256-512-256-10, 1 thread):")
    print(f"   untracked {b / loop_batches * 1e6:8.1f} us/batch, measured {m / loop_batches * 1e6:8.1f} us/batch: "
          f"ratio {m / b:.4f}, +{(m - b) / loop_batches * 1e6:.2f} us/batch")
    print(f"   once per phase (start + end, one record written): {statistics.median(fixed) * 1e3:.2f} ms")
    path_us = statistics.median(paths["tuple"])
    print(f"   the per-batch path of 1. is {path_us / (b / loop_batches * 1e6) * 100:.2f} % of an untracked batch here "
          "(the A/B difference above is within this machine's noise when it is smaller than that)")

    if not args.skip_lightning:
        pl_batches = max(args.batches // 10, 50)
        pl_data = data[:pl_batches] if pl_batches <= len(data) else [torch.randn(64, 256) for _ in range(pl_batches)]
        lightning_predict(pl_data[:10], folder, True)  # import and first-call costs outside the timing
        lightning_predict(pl_data[:10], folder, False)
        base, measured = [], []
        for _ in range(args.repeats):
            base.append(lightning_predict(pl_data, folder, False))
            measured.append(lightning_predict(pl_data, folder, True))
        b, m = min(base), min(measured)  # best of the interleaved repeats: the least disturbed by other load
        n = len(pl_data)
        print(f"3. Lightning trainer.predict, {n} batches of 64, without / with GreenCallback:")
        print(f"   {b:.3f} s / {m:.3f} s: ratio {m / b:.4f}, +{(m - b) * 1e3:.1f} ms per call "
              "(the machine's sensors started, one FLOP count per input shape, one record written)")


if __name__ == "__main__":
    main()

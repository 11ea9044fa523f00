"""A plain-loop run with Tracker, fake sensors and a fake clock; run by tests/test_loop_distributed.py.

Usage: python loop_dist.py OUTPUT_DIR LAYOUT     (under torchrun for the distributed layouts)
  LAYOUT "single": one process, no process group.
  LAYOUT "fsdp2":  torchrun --nproc-per-node 2: the model sharded with FSDP2 (``fully_shard``) over both ranks.
  LAYOUT "nodes":  torchrun --nnodes 2 --nproc-per-node 1 --node-rank {0,1} (two launchers, one per simulated
                   node): each rank is its node's leader; the model is sharded with FSDP2 across the two "nodes".
  LAYOUT "ddp":    torchrun --nproc-per-node 2 with DistributedDataParallel.
  LAYOUT "deepspeed": torchrun --nproc-per-node 2, DeepSpeed ZeRO stage 3 on the CPU (DS_ACCELERATOR=cpu, gloo).

Data: 32 training samples in batches of 4 and 8 evaluation samples in batches of 4, split evenly over the ranks
(rank r takes every world-size-th batch). The fake clock moves 1 s per training batch and 0.5 s per evaluation batch.
Sensors: GPU 100 W (per device), CPU 20 W (per node), RAM 5 W (per process). Every rank writes ``rank<N>.json``
(its ranks, its last green/ metrics, the record path) into OUTPUT_DIR.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from green_callbacks.core import clock
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.loop import Tracker

warnings.filterwarnings("ignore", category=UserWarning)


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def run(out_dir: Path, layout: str, tick) -> tuple[Tracker, dict[str, int]]:
    distributed = layout != "single"
    if layout == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    elif distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    if layout in ("fsdp2", "nodes"):
        from torch.distributed.fsdp import fully_shard

        fully_shard(model[0])
        fully_shard(model)
    elif layout == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = (x[:, 0] > 0).long()
    train = [(x[i:i + 4], y[i:i + 4]) for i in range(0, 32, 4)][rank::world]
    val = [(x[i:i + 4], y[i:i + 4]) for i in range(32, 40, 4)][rank::world]
    if layout == "deepspeed":
        config = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
                  "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True}
        model, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = Tracker(
        carbon_intensity=100.0,
        output_dir=str(out_dir),
        sensors=[
            ConstantPowerSensor("gpu", 100.0, scope="device"),
            ConstantPowerSensor("cpu", 20.0, scope="node"),
            ConstantPowerSensor("ram", 5.0, scope="process"),
        ],
        model=model,
        forward=loss_of,
    )
    with tracker:
        for _ in range(2):
            with tracker.epoch():
                for batch in train:
                    with tracker.step(batch):
                        if layout == "deepspeed":
                            model.backward(loss_of(model, batch))
                        else:
                            optimizer.zero_grad()
                            loss_of(model, batch).backward()
                    (model if layout == "deepspeed" else optimizer).step()
                    tick(1.0)
                with tracker.evaluation(), torch.no_grad():
                    for batch in val:
                        loss_of(model, batch)
                        tick(0.5)
                        tracker.eval_step(batch)
    info = {"rank": rank, "local_rank": int(os.environ.get("LOCAL_RANK", 0)), "world_size": world}
    if distributed:
        dist.destroy_process_group()
    return tracker, info


def main() -> None:
    out_dir, layout = Path(sys.argv[1]), sys.argv[2]
    fake_clock = clock.FakeClock(1000.0)
    clock.now_s = fake_clock  # the hardware boundary: time, as the fake sensors see it
    tracker, info = run(out_dir, layout, fake_clock.advance)
    result = {**info, "metrics": tracker.last_metrics, "record_path": str(tracker.record_path)}
    (out_dir / f"rank{info['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("GREEN_CALLBACKS_STRICT", "1")
    main()
    # Everything the test reads is written: end without the interpreter's teardown, where a torch 2.13 gloo rank
    # can abort on a loaded machine ("terminate called without an active exception", SIGABRT; a plain DDP script
    # without green_callbacks does it too).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

"""Tracker under sharded and multi-node training: FSDP2, DDP and DeepSpeed ZeRO-3 on 2 CPU processes (gloo), and 2
simulated nodes. The DeepSpeed case runs where ``deepspeed`` is installed (it is not a test dependency).

The script tests/scripts/loop_dist.py trains MLP 4 -> 8 -> 2 for 2 epochs on 32 training samples (batches of 4) and
evaluates 8 samples (batches of 4), the batches split evenly over the ranks. Each process draws 100 W (GPU, per
device) + 20 W (CPU, per node) + 5 W (RAM, per process); its fake clock moves 1 s per training batch and 0.5 s per
evaluation batch.

- One process: 8 + 2 batches -> 8 + 1 = 9 s per epoch -> (100 + 20 + 5) W x 9 s = 1125 J.
- One node, 2 ranks (FSDP2, DDP or ZeRO-3): each rank 4 + 1 batches -> 4.5 s. GPU 2 x 450 = 900 J, RAM 2 x 22.5 =
  45 J, the CPU package once (node leader only): 90 J -> 1035 J per epoch; evaluation (2 x 105 + 20) W x 0.5 s = 115 J.
- 2 nodes x 1 rank (``torchrun --nnodes 2``, FSDP2 across the nodes): both ranks lead their node, so each node's CPU
  counts once: 900 + 2 x 90 + 45 = 1125 J per epoch.

FLOPs by hand (2·M·N·K per matmul): training 224 per sample (forward 64 + 32; backward dW₁ 64 + dW₂ 32 + dX₂ 32),
evaluation 96: per epoch 224 x 32 = 7168 and 96 x 8 = 768, however the ranks split the data and shard the weights.
Samples per second over the training time: one process 32 / 8 s = 4; two ranks 32 / 4 s = 8.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record

pytest.importorskip("torch")
SCRIPT = Path(__file__).parent / "scripts" / "loop_dist.py"
pytestmark = pytest.mark.slow
J_PER_KWH = 3.6e6
TRAIN_FLOPS, EVAL_FLOPS = 224 * 32, 96 * 8


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _torchrun(out: Path, layout: str, *launcher: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK")}
    env.update(GREEN_CALLBACKS_STRICT="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               PYTHONPATH=os.pathsep.join([str(SCRIPT.parents[2]), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, str(SCRIPT), str(out), layout]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output[-4000:]


def _results(out: Path) -> tuple[list[dict], dict]:
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    records = list(out.glob("green-run-*.json"))
    assert len(records) == 1, records  # one record, written by global rank zero
    return ranks, read_record(records[0])


def _single(out: Path, tick) -> dict[str, float]:
    spec = importlib.util.spec_from_file_location("loop_dist_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tracker, _ = script.run(out, "single", tick)
    return tracker.last_metrics


@pytest.mark.parametrize("layout", ["fsdp2", "ddp", "deepspeed"])
def test_one_node_two_ranks_exact_flops_and_the_node_once(tmp_path, fake_clock, layout):
    pytest.importorskip("torch.distributed.fsdp")
    if layout == "deepspeed":  # not a dependency of the suite: runs where DeepSpeed is installed (CPU accelerator)
        pytest.importorskip("deepspeed", exc_type=ImportError)
    out = tmp_path / layout
    out.mkdir()
    proc = _torchrun(out, layout, "--standalone", "--nproc-per-node", "2")  # torchrun picks a free port itself
    (tmp_path / "single").mkdir()
    single = _single(tmp_path / "single", fake_clock.advance)
    _wait(proc)
    ranks, record = _results(out)
    assert [(r["rank"], r["local_rank"]) for r in ranks] == [(0, 0), (1, 1)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # every rank holds the sums
    metrics = ranks[0]["metrics"]

    # FLOPs of the sharded run equal the unsharded single-process count, and the hand count
    assert metrics["green/epoch_train_flops"] == single["green/epoch_train_flops"] == TRAIN_FLOPS
    assert metrics["green/epoch_eval_flops"] == single["green/epoch_eval_flops"] == EVAL_FLOPS
    assert metrics["green/total_train_flops"] == 2 * TRAIN_FLOPS

    # energy: devices and processes summed over ranks, the node's CPU package once
    assert metrics["green/epoch_cpu_energy_kwh"] == pytest.approx(90 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_energy_kwh"] == pytest.approx(1035 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_eval_energy_kwh"] == pytest.approx(115 / J_PER_KWH, rel=1e-12)
    assert single["green/epoch_energy_kwh"] == pytest.approx(1125 / J_PER_KWH, rel=1e-12)

    # throughput: all ranks' samples over the training time
    assert metrics["green/samples_per_s"] == 8.0 and single["green/samples_per_s"] == 4.0
    assert metrics["green/train_flops_per_s"] == TRAIN_FLOPS / 4.0

    assert record["world_size"] == 2 and record["status"] == "completed" and record["framework"] == "loop"
    assert record["totals"]["energy_j"] == pytest.approx(2 * 1035)
    assert record["totals"]["train_flops"] == 2 * TRAIN_FLOPS
    assert [row["samples"] for row in record["epochs"]] == [32, 32]


def test_two_simulated_nodes_count_each_node_once_and_sum_once(tmp_path):
    pytest.importorskip("torch.distributed.fsdp")
    port = _free_port()
    procs = [
        _torchrun(tmp_path, "nodes", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
                  "--master-addr", "127.0.0.1", "--master-port", port)
        for node in (0, 1)
    ]
    _wait(*procs)
    ranks, record = _results(tmp_path)
    assert [(r["rank"], r["local_rank"]) for r in ranks] == [(0, 0), (1, 0)]  # two node leaders
    metrics = ranks[0]["metrics"]
    assert metrics["green/epoch_cpu_energy_kwh"] == pytest.approx(2 * 90 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_gpu_energy_kwh"] == pytest.approx(900 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_energy_kwh"] == pytest.approx(1125 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_train_flops"] == TRAIN_FLOPS and metrics["green/epoch_eval_flops"] == EVAL_FLOPS
    # totals summed once: two epochs of the whole cluster, not once per node
    assert metrics["green/total_energy_kwh"] == pytest.approx(2 * 1125 / J_PER_KWH, rel=1e-12)
    assert record["world_size"] == 2 and record["totals"]["energy_j"] == pytest.approx(2 * 1125)
    assert record["totals"]["train_flops"] == 2 * TRAIN_FLOPS

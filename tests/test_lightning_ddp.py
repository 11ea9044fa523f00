"""The Lightning adapter under real DDP (2 processes, gloo, CPU) and a simulated 2-node layout.

The script tests/scripts/lightning_ddp.py trains 2 epochs on 32 training samples (batches of 4) and 16 validation
samples (batches of 4). Each process draws 100 W (GPU, per device) + 20 W (CPU, per node) + 5 W (RAM, per process),
and its fake clock moves 1 s per training batch and 0.5 s per validation batch.

- One process: 8 + 4 batches -> 8 + 2 = 10 s per epoch -> 1000 + 200 + 50 = 1250 J.
- DDP on one node, 2 ranks: each rank 4 + 2 batches -> 4 + 1 = 5 s. GPU 2 × 500 = 1000 J, RAM 2 × 25 = 50 J, and the
  CPU package once (node leader only): 100 J -> 1150 J per epoch.
- 2 nodes × 1 rank: both ranks lead their node, so the CPU is counted twice: 1000 + 200 + 50 = 1250 J per epoch.

FLOPs by hand (MLP 4 -> 8 -> 2): training 224 per sample (forward 64 + 32; backward: layer 2 dW 32 + dX 32, layer 1
dW 64, no dX), evaluation 96 per sample. Per epoch: 224 × 32 = 7168 and 96 × 16 = 1536, however the ranks split it.
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

pytest.importorskip("lightning")

SCRIPT = Path(__file__).parent / "scripts" / "lightning_ddp.py"
pytestmark = pytest.mark.slow
J_PER_KWH = 3.6e6
TRAIN_FLOPS_PER_EPOCH = 224 * 32
EVAL_FLOPS_PER_EPOCH = 96 * 16


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK")}
    env.update(GREEN_CALLBACKS_STRICT="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _run(out: Path, layout: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), layout], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(**env))


def _wait(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, output[-3000:]


def _results(out: Path) -> tuple[list[dict], dict]:
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    records = list(out.glob("green-run-*.json"))
    assert len(records) == 1, records  # one record, written by global rank zero
    return ranks, read_record(records[0])


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _fit_single_process(out: Path, tick) -> tuple[dict, dict]:
    spec = importlib.util.spec_from_file_location("lightning_ddp_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    callback, _ = script.fit(out, "single", tick)
    return {"metrics": callback.last_metrics}, read_record(callback.record_path)


def test_ddp_two_ranks_sum_and_count_the_node_once(tmp_path, fake_clock):
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    proc = _run(ddp, "ddp")
    only, single_record = _fit_single_process(tmp_path / "single", fake_clock.advance)
    _wait(proc)
    ranks, record = _results(ddp)
    assert [r["rank"] for r in ranks] == [0, 1] and [r["local_rank"] for r in ranks] == [0, 1]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # every rank holds the sums
    metrics = ranks[0]["metrics"]

    # FLOPs across ranks equal the single-process count, and the hand count
    assert metrics["green/epoch_train_flops"] == only["metrics"]["green/epoch_train_flops"] == TRAIN_FLOPS_PER_EPOCH
    assert metrics["green/epoch_eval_flops"] == only["metrics"]["green/epoch_eval_flops"] == EVAL_FLOPS_PER_EPOCH
    assert metrics["green/total_train_flops"] == 2 * TRAIN_FLOPS_PER_EPOCH

    # energy: devices and processes summed over ranks, the node's CPU once
    assert metrics["green/epoch_gpu_energy_kwh"] == pytest.approx(2 * 100 * 5 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_ram_energy_kwh"] == pytest.approx(2 * 5 * 5 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_cpu_energy_kwh"] == pytest.approx(20 * 5 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_energy_kwh"] == pytest.approx(1150 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_eval_energy_kwh"] == pytest.approx((2 * 105 + 20) * 1.0 / J_PER_KWH, rel=1e-12)
    assert only["metrics"]["green/epoch_energy_kwh"] == pytest.approx(1250 / J_PER_KWH, rel=1e-12)

    assert record["world_size"] == 2 and record["status"] == "completed"
    assert record["totals"]["energy_j"] == pytest.approx(2 * 1150)
    assert record["totals"]["train_flops"] == single_record["totals"]["train_flops"] == 2 * TRAIN_FLOPS_PER_EPOCH


def test_two_simulated_nodes_each_count_their_cpu(tmp_path):
    port = _free_port()
    procs = [
        _run(tmp_path, "nodes", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=str(node), LOCAL_RANK="0",
             WORLD_SIZE="2")
        for node in (0, 1)
    ]
    _wait(*procs)
    ranks, record = _results(tmp_path)
    assert [r["rank"] for r in ranks] == [0, 1] and [r["local_rank"] for r in ranks] == [0, 0]
    metrics = ranks[0]["metrics"]
    assert metrics["green/epoch_cpu_energy_kwh"] == pytest.approx(2 * 20 * 5 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_energy_kwh"] == pytest.approx(1250 / J_PER_KWH, rel=1e-12)
    assert metrics["green/epoch_train_flops"] == TRAIN_FLOPS_PER_EPOCH
    assert record["world_size"] == 2
    assert record["totals"]["energy_j"] == pytest.approx(2 * 1250)


def test_ddp_of_a_compiled_module_counts_flops(tmp_path):
    """fit(torch.compile(model)) under DDP: FLOPs were NaN for the whole run; now exact on every rank (#14.8)."""
    proc = _run(tmp_path, "ddp-compiled")
    _wait(proc)
    ranks, record = _results(tmp_path)
    metrics = ranks[0]["metrics"]
    assert metrics["green/epoch_train_flops"] == TRAIN_FLOPS_PER_EPOCH
    assert metrics["green/epoch_eval_flops"] == EVAL_FLOPS_PER_EPOCH
    assert record["totals"]["train_flops"] == 2 * TRAIN_FLOPS_PER_EPOCH

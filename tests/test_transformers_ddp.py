"""The HF adapter under real DDP: ``torchrun --nproc_per_node=2`` on CPU with gloo.

Totals are sums over both ranks and only rank zero writes the run record. Energies by hand: per epoch the meter
reads 4 times (epoch begin, eval begin, eval end, epoch end), i.e. 3 reads' worth of energy, 1 of them evaluation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch.distributed")

from green_callbacks.core.record import read_record

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "scripts" / "hf_ddp_train.py"
J_PER_KWH = 3.6e6


def test_two_ranks_sum_and_rank_zero_writes(tmp_path):
    from tests.test_transformers import BATCH, N_EVAL, N_TRAIN, S, forward_flops, train_step_flops

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = [json.loads((tmp_path / f"result-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in results] == [2, 2]
    entries = results[0]["entries"]
    assert len(entries) == 2
    for mine, theirs in zip(entries, results[1]["entries"], strict=True):  # every rank logs the reduced numbers
        assert {k: v for k, v in mine.items() if k != "green/epoch_time_s"} == {
            k: v for k, v in theirs.items() if k != "green/epoch_time_s"}  # (time: each rank's own clock)

    # GPU: rank 0 adds 1 J per read, rank 1 adds 2 J -> 3 J per read over the job; CPU (2 J) and RAM (0.5 J) are
    # node-level: counted once, by the node leader. 3 reads per epoch.
    gpu_j, cpu_j, ram_j = 3 * (1.0 + 2.0), 3 * 2.0, 3 * 0.5
    steps = N_TRAIN // BATCH  # 4 steps per epoch over the job (2 per rank)
    for n, entry in enumerate(entries, start=1):
        assert entry["green/epoch_gpu_energy_kwh"] == pytest.approx(gpu_j / J_PER_KWH)
        assert entry["green/epoch_cpu_energy_kwh"] == pytest.approx(cpu_j / J_PER_KWH)
        assert entry["green/epoch_ram_energy_kwh"] == pytest.approx(ram_j / J_PER_KWH)
        assert entry["green/epoch_eval_energy_kwh"] == pytest.approx((1.0 + 2.0 + 2.0 + 0.5) / J_PER_KWH)
        assert entry["green/total_energy_kwh"] == pytest.approx(n * (gpu_j + cpu_j + ram_j) / J_PER_KWH)
        assert entry["green/epoch_train_flops"] == steps * train_step_flops(BATCH, S)
        assert entry["green/epoch_eval_flops"] == (N_EVAL // BATCH) * forward_flops(BATCH, S)
        hf = 6 * results[0]["non_embedding_parameters"] * BATCH * S * steps * n  # HF sums its estimate over ranks
        assert entry["green/hf_total_flos"] == hf
    assert results[0]["total_flos"] == entries[-1]["green/hf_total_flos"]

    # One record, by rank zero, covering both ranks.
    records = list((tmp_path / "hf").glob("green-run-*.json"))
    assert [str(p) for p in records] == [results[0]["record_path"]]
    record = read_record(records[0])
    assert record["status"] == "completed" and record["world_size"] == 2
    assert record["totals"]["energy_j"] == pytest.approx(2 * (gpu_j + cpu_j + ram_j))

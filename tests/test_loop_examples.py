"""The plain-loop examples run as users run them (a subprocess, real sensors, real loggers), 2 epochs each.

Every example trains Linear(32 -> 64) - ReLU - Linear(64 -> 2) on 384 training samples per epoch. FLOPs by hand
(2·M·N·K per matmul): forward 2·32·64 + 2·64·2 = 4096 + 256 = 4352 per sample; backward dW₁ 4096 + dW₂ 256 + dX₂ 256
= 4608 (no dX for the first layer); 8960 per training sample, 8960 · 384 = 3 440 640 per epoch. The PyTorch example
also evaluates 128 samples per epoch: 4352 · 128 = 557 056 evaluation FLOPs.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.core.session import METRIC_KEYS

pytest.importorskip("torch")
EXAMPLES = Path(__file__).parents[1] / "examples"
TRAIN_FLOPS = 8960 * 384
EVAL_FLOPS = 4352 * 128
pytestmark = pytest.mark.slow


def run_example(name: str, out: Path, *extra: str) -> Path:
    env = {**os.environ, "GREEN_CALLBACKS_STRICT": "1", "PYTHONPATH": str(EXAMPLES.parent)}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--epochs", "2", "--output-dir", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [record] = out.glob("green-run-*.json")
    return record


def check_record(path: Path, *, eval_flops: float | None) -> dict:
    record = read_record(path)
    assert record["framework"] == "loop" and record["status"] == "completed"
    assert [row["train_flops"] for row in record["epochs"]] == [TRAIN_FLOPS, TRAIN_FLOPS]
    assert [row["samples"] for row in record["epochs"]] == [384, 384]
    if eval_flops is not None:
        assert [row["eval_flops"] for row in record["epochs"]] == [eval_flops, eval_flops]
    return record


def test_plain_pytorch_example_logs_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    check_record(run_example("loop_pytorch.py", tmp_path), eval_flops=EVAL_FLOPS)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(METRIC_KEYS)
    assert [(s.step, s.value) for s in events.Scalars("green/epoch_train_flops")] == [(0, TRAIN_FLOPS),
                                                                                       (1, TRAIN_FLOPS)]
    assert all(s.value > 0 for s in events.Scalars("green/samples_per_s"))


def test_fabric_example_logs_through_log_dict(tmp_path):
    pytest.importorskip("lightning")
    check_record(run_example("loop_fabric.py", tmp_path), eval_flops=None)
    with open(tmp_path / "fabric" / "version_0" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [0, 1]  # the epoch as Fabric's step
    assert set(METRIC_KEYS) <= set(rows[0])  # every key from the first epoch on
    assert [float(r["green/epoch_train_flops"]) for r in rows] == [TRAIN_FLOPS, TRAIN_FLOPS]
    assert math.isnan(float(rows[0]["green/tokens_per_s"]))


def test_accelerate_example_logs_through_accelerator_log(tmp_path):
    pytest.importorskip("accelerate")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    check_record(run_example("loop_accelerate.py", tmp_path), eval_flops=None)
    events = EventAccumulator(str(tmp_path / "loop_accelerate"))
    events.Reload()
    assert set(METRIC_KEYS) <= set(events.Tags()["scalars"])
    assert [(s.step, s.value) for s in events.Scalars("green/total_train_flops")] == [(0, TRAIN_FLOPS),
                                                                                       (1, 2 * TRAIN_FLOPS)]


def test_fabric_example_under_ddp_on_two_processes(tmp_path):
    """``--devices 2``: Fabric launches a second rank (gloo); the FLOPs and samples summed over both equal the
    single-process counts (each rank trains on half the batches), and only rank zero writes the record and logs."""
    pytest.importorskip("lightning")
    record = check_record(run_example("loop_fabric.py", tmp_path, "--devices", "2"), eval_flops=None)
    assert record["world_size"] == 2
    with open(tmp_path / "fabric" / "version_0" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["green/total_train_flops"]) for r in rows] == [TRAIN_FLOPS, 2 * TRAIN_FLOPS]

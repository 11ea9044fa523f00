"""A measured run killed by SIGTERM, SIGINT or SIGKILL leaves a readable record of its last complete epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record

SCRIPT = Path(__file__).parent / "scripts" / "session_epochs.py"
pytestmark = pytest.mark.slow


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path), "0.2", "1000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    record_path = Path(proc.stdout.readline().strip())
    for line in proc.stdout:  # wait for two complete epochs
        if line.startswith("epoch 1 done"):
            break
    return proc, record_path


@pytest.mark.parametrize(
    ("signum", "status", "returncode"),
    [
        (signal.SIGTERM, "interrupted", -signal.SIGTERM),  # the process still dies of SIGTERM, as without us
        (signal.SIGINT, "interrupted", -signal.SIGINT),  # uncaught KeyboardInterrupt: Python re-raises SIGINT
        (signal.SIGKILL, "running", -signal.SIGKILL),  # no handler can run: the last written record stays
    ],
)
def test_signal_leaves_last_complete_epoch(tmp_path, signum, status, returncode):
    proc, record_path = _start(tmp_path)
    proc.send_signal(signum)
    proc.wait(timeout=30)
    assert proc.returncode == returncode
    record = read_record(record_path)
    assert record["status"] == status
    assert len(record["epochs"]) >= 2
    assert record["epochs"][1]["epoch"] == 1
    # 10 W over each ~0.2 s epoch: a plausible, non-zero energy in every complete epoch
    assert all(row["component_energy_j"]["cpu"] > 0 for row in record["epochs"])
    assert not list(tmp_path.glob(".green-run-*.tmp"))  # no temporary file left behind

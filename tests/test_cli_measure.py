"""``green-callbacks measure -- CMD``: a real command, measured, summarised, recorded, exit code passed on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def measure(tmp_path: Path, *cmd: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "green_callbacks.cli", "measure", "--output-dir", str(tmp_path), *extra, "--", *cmd],
        capture_output=True, text=True, timeout=120, env={**os.environ, "GREEN_CALLBACKS_RAPL_ROOT": str(tmp_path)},
    )


def test_measure_busy_loop_reports_estimate_and_unavailable_gpu(tmp_path):
    result = measure(tmp_path, sys.executable, "-c", BUSY.format(s=1.0), extra=("--country", "FR"))
    assert result.returncode == 0, result.stderr
    text = result.stderr
    assert "cpu energy:" in text and "estimate-cpu-time" in text
    assert "gpu energy: unavailable" in text
    assert "gCO2e/kWh (FR;" in text and "Ember" in text
    [path] = tmp_path.glob("green-run-*.json")
    record = read_record(path)
    assert record["status"] == "completed" and record["framework"] == "measure"
    cpu_j = record["epochs"][0]["component_energy_j"]["cpu"]
    # the child burnt ~1 s of CPU time at 12 W per core: about 12 J (interpreter start-up adds a little)
    assert 10.0 <= cpu_j <= 30.0
    assert record["epochs"][0]["component_energy_j"]["gpu"] is None


def test_measure_passes_on_exit_code(tmp_path):
    result = measure(tmp_path, sys.executable, "-c", "import sys; sys.exit(3)", extra=("--carbon-intensity", "50"))
    assert result.returncode == 3
    [path] = tmp_path.glob("green-run-*.json")
    assert read_record(path)["status"] == "failed"


def test_measure_bad_input(tmp_path):
    result = measure(tmp_path, "true", extra=("--country", "Atlantis"))
    assert result.returncode == 2 and "Atlantis" in result.stderr
    result = subprocess.run([sys.executable, "-m", "green_callbacks.cli", "measure"], capture_output=True, text=True)
    assert result.returncode == 2 and "give the command after --" in result.stderr


@pytest.mark.slow
def test_measure_sigterm_forwards_and_records(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "green_callbacks.cli", "measure", "--output-dir", str(tmp_path), "--interval", "0.2",
         "--carbon-intensity", "100", "--", sys.executable, "-c", "import time; time.sleep(60)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        paths = list(tmp_path.glob("green-run-*.json"))
        if paths and len(read_record(paths[0])["epochs"]) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM  # the child died of the forwarded SIGTERM
    record = read_record(paths[0])
    assert record["status"] == "interrupted" and len(record["epochs"]) >= 2

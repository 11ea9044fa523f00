"""Output faults: a full or read-only output folder, a corrupt older record beside ours, two runs in one folder.

The tests run as root, so ``chmod`` would block nothing: the faults are injected at the file-system boundary of
green_callbacks/core/record_writer.py (its ``os`` and ``tempfile`` modules are replaced by proxies that fail the way
the kernel does: ``ENOSPC`` on the rename and on appending to the epoch log, ``EACCES`` on creating a file). Energy
comes from step sensors (2 J CPU and 1 J RAM per read), so no GPU or RAPL warning mixes in.

A failed write is an outside condition; its warning is the non-strict behaviour, so these tests run lenient
(strict mode re-raises it, to keep the test suite honest about paths).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from green_callbacks.core import record_writer as record_module
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import StepEnergySensor
from green_callbacks.report.runs import load_runs
from tests.faults.harness import ADAPTERS, EPOCHS, STEPS_PER_EPOCH, epochs_of, only, train

SCRIPT = Path(__file__).parent / "scripts" / "train.py"


def sensors():
    return [StepEnergySensor("cpu", 2.0, scope="node"), StepEnergySensor("ram", 1.0, scope="node")]


class _Proxy:
    """A module stand-in: everything is the real module's, except what a subclass overrides."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)


class FullDisk(_Proxy):
    """``os`` for record_writer.py: while ``full``, the rename of the finished temporary file and every append to
    the epoch log fail with ENOSPC."""

    full = False
    failures = 0

    def replace(self, src, dst) -> None:
        if self.full:
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        self._real.replace(src, dst)

    def write(self, fd, data) -> int:
        if self.full:
            self.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._real.write(fd, data)


class ReadOnlyFolder(_Proxy):
    """``tempfile`` for record_writer.py: the temporary file cannot be created (EACCES), as in a read-only folder."""

    attempts = 0

    def mkstemp(self, *args, dir=None, **kwargs):
        self.attempts += 1
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))


class ReadOnlyOs(_Proxy):
    """``os`` for record_writer.py: no file can be created (the epoch log), as in a read-only folder."""

    attempts = 0

    def open(self, path, flags, *args):
        self.attempts += 1
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def test_full_disk_warns_once_and_the_next_write_catches_up(adapter, tmp_path, monkeypatch, lenient):
    disk = FullDisk(os)
    monkeypatch.setattr(record_module, "os", disk)
    out = tmp_path / "runs"
    seen_during_fault: list[dict] = []

    def action(epoch: int, step: int) -> None:
        if (epoch, step) == (0, 1):
            disk.full = True  # the ends of epochs 0 and 1 cannot be written
        if (epoch, step) == (2, 0):
            seen_during_fault.append(read_record(next(out.glob("green-run-*.json"))))
            disk.full = False

    run = train(adapter, tmp_path, output_dir=str(out), sensors=sensors(), action=action)
    assert run.error is None and run.probe.steps == EPOCHS * STEPS_PER_EPOCH
    assert disk.failures >= 1  # the end of epoch 0, and of epoch 1 if its background write ran before the fix
    # during the fault the file on disk was the last complete write (the start: running, no epoch), never torn
    assert seen_during_fault[0]["status"] == "running" and seen_during_fault[0]["epochs"] == []
    record = run.record  # retried after epoch 2: everything measured is on disk
    assert record["status"] == "completed"
    assert epochs_of(record) == [0, 1, 2]
    message = only(run.green_warnings(), "could not write the run record")
    assert "No space left on device" in message and "output_dir=" in message
    assert len(run.green_warnings()) == 1
    assert not list(out.glob(".green-run-*.tmp"))  # the failed temporary files were removed


def test_read_only_output_folder_never_breaks_the_training(adapter, tmp_path, monkeypatch, lenient):
    folder = ReadOnlyFolder(tempfile)
    monkeypatch.setattr(record_module, "tempfile", folder)
    no_files = ReadOnlyOs(os)
    monkeypatch.setattr(record_module, "os", no_files)
    run = train(adapter, tmp_path, output_dir=str(tmp_path / "runs"), sensors=sensors())
    assert run.error is None and run.probe.steps == EPOCHS * STEPS_PER_EPOCH
    # the header at the start and the full record at the end were tried; every epoch's line too (and retried)
    assert folder.attempts >= 2 and no_files.attempts >= EPOCHS
    assert not Path(run.callback.record_path).exists()
    session = run.callback.session  # what was measured is still in memory, for the loggers
    assert session.status == "completed" and [row.epoch for row in session.rows] == [0, 1, 2]
    message = only(run.green_warnings(), "could not write the run record")
    assert "Permission denied" in message
    assert len(run.green_warnings()) == 1


def test_corrupt_older_record_in_the_same_folder(adapter, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    corrupt = out / "green-run-20200101T000000Z-deadbeef.json"
    corrupt.write_bytes(b'{"schema": "green-callbacks/run/1", "status": "runn')  # a write cut short
    run = train(adapter, tmp_path, output_dir=str(out), sensors=sensors())
    assert run.error is None
    assert corrupt.read_bytes() == b'{"schema": "green-callbacks/run/1", "status": "runn'  # untouched
    assert run.green_warnings() == []  # the callback never reads old records
    loaded = load_runs([out])  # the report reads ours and names the corrupt one with the reason
    assert [r.record["run_id"] for r in loaded.runs] == [run.record["run_id"]]
    assert [(Path(p).name, "not a readable run record" in why) for p, why in loaded.skipped] == [
        (corrupt.name, True)
    ]


@pytest.mark.slow
def test_three_runs_writing_to_one_folder_at_once(tmp_path):
    """One process per adapter, started together, all writing their record into one folder."""
    out = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "KERAS_BACKEND": "torch"}
    procs = [
        subprocess.Popen([sys.executable, str(SCRIPT), name, str(out), "--epochs", "3", "--step-s", "0.02"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ADAPTERS
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    records = [read_record(path) for path in sorted(out.glob("green-run-*.json"))]
    assert sorted(r["framework"] for r in records) == sorted(ADAPTERS)  # three files: none clobbered another
    assert len({r["run_id"] for r in records}) == 3
    assert all(r["status"] == "completed" and epochs_of(r) == [0, 1, 2] for r in records)
    assert not list(out.glob(".green-run-*.tmp"))
    for path in out.glob("green-run-*.json"):
        json.loads(path.read_text())  # each one whole, plain JSON

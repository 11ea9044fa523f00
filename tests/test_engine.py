"""The engine and its record writer: constructor, output folder, odd hyperparameters, the append-only record format,
file modes, stale temporary files, SIGHUP to ``measure``, the metric filter. Real files; sensors are fakes."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import pydoc
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from green_callbacks._adapter import GreenCallbackBase
from green_callbacks.core import record_writer
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.metric_keys import user_metrics
from green_callbacks.core.record import read_record
from green_callbacks.core.record_writer import epochs_log_name
from green_callbacks.core.sensors.fake import StepEnergySensor
from green_callbacks.core.session import Session

DATA = Path(__file__).parent / "data" / "records"


def sensors() -> list[StepEnergySensor]:
    return [StepEnergySensor("cpu", 2.0, scope="node"), StepEnergySensor("ram", 1.0, scope="node")]


def session(tmp_path: Path, **config) -> Session:
    config.setdefault("output_dir", str(tmp_path))
    config.setdefault("carbon_intensity", 100.0)
    return Session(GreenConfig(**config), framework="test", sensors=sensors(), dist=DistInfo(),
                   reducer=lambda v: list(v))


# ------------------------------------------------------------------------------------------------ constructor
def _adapters():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    out = []
    for name in ("lightning", "keras", "transformers"):
        module = pytest.importorskip(f"green_callbacks.{name}", exc_type=ImportError)
        out.append(module.GreenCallback)
    return out


def test_one_constructor_with_real_keywords_in_all_three_adapters():
    expected = [f.name for f in dataclasses.fields(GreenConfig)] + ["sensors"]
    base = inspect.signature(GreenCallbackBase.__init__).parameters
    # the config's fields and defaults are the constructor's: one list of settings
    assert [n for n in base if n != "self"] == expected
    for f in dataclasses.fields(GreenConfig):
        assert base[f.name].default == f.default, f.name
    for cls in _adapters():
        params = inspect.signature(cls).parameters
        assert list(params) == expected, cls.__module__
        assert all(p.kind is p.KEYWORD_ONLY for p in params.values()), cls.__module__
        shown = pydoc.render_doc(cls, renderer=pydoc.plaintext)  # what help(GreenCallback) prints
        [line] = [ln for ln in shown.splitlines() if ln.startswith(" |  GreenCallback(")]
        assert "country: 'str | None' = None" in line and "**" not in line, cls.__module__


# ------------------------------------------------------------------------------------------------ #14.5 output_dir
def test_empty_output_dir_is_rejected():
    with pytest.raises(ValueError, match="output_dir='' is empty"):
        GreenConfig(output_dir="")


def test_output_dir_that_is_a_file_is_rejected(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        GreenConfig(output_dir=str(afile))
    with pytest.raises(ValueError, match="cannot be created"):
        GreenConfig(output_dir=str(afile / "runs"))


def test_output_dir_that_cannot_be_written_is_rejected(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(ValueError, match="cannot be written"):
        GreenConfig(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cannot be created"):
        GreenConfig(output_dir=str(tmp_path / "new" / "runs"))


def test_output_dir_to_be_created_is_fine(tmp_path):
    assert GreenConfig(output_dir=str(tmp_path / "a" / "b")).output_dir == str(tmp_path / "a" / "b")


# ------------------------------------------------------------------------------------------------ #15.2 hyperparameters
class _Unprintable:
    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_unserialisable_hyperparameters_never_cost_the_record(tmp_path):
    torch = pytest.importorskip("torch")
    s = session(tmp_path)
    hyper = {
        "complex": torch.tensor([1 + 2j, 3 - 1j]),
        "complex_scalar": torch.tensor(1 + 2j),
        "meta": torch.empty(3, device="meta"),
        "odd": _Unprintable(),
        "lr": torch.tensor(0.5),
        "nested": {"z": complex(1, 2), "ok": [1, 2.5, None]},
    }
    s.start(hyperparameters=hyper)
    s.epoch_start()
    s.epoch_end({})
    s.finish("completed")
    record = read_record(s.record_path)
    h = record["hyperparameters"]
    assert record["status"] == "completed" and len(record["epochs"]) == 1
    assert h["lr"] == 0.5
    assert isinstance(h["complex"], str) and "1.+2.j" in h["complex"]
    assert isinstance(h["complex_scalar"], str) and isinstance(h["meta"], str)
    assert h["odd"] == "<unserialisable _Unprintable: RuntimeError>"
    assert h["nested"] == {"z": "(1+2j)", "ok": [1, 2.5, None]}


# ------------------------------------------------------------------------------------------------ record format
def test_running_record_is_a_header_plus_an_append_only_epoch_log(tmp_path):
    s = session(tmp_path)
    s.start()
    s.flush()  # the machine and versions, captured in the background, are in the header from here on
    header_sizes = []
    for _ in range(5):
        s.epoch_start()
        s.epoch_end({"loss": 1.0})
        s.flush()
        header_sizes.append(s.record_path.stat().st_size)
    header = json.loads(s.record_path.read_text())
    log = s.record_path.with_name(epochs_log_name(s.record_path))
    assert header["schema"] == "green-callbacks/run/1.1"
    assert header["epochs"] == [] and header["epochs_log"] == log.name
    lines = log.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2, 3, 4]  # each epoch appended once
    assert max(header_sizes) - min(header_sizes) < 200  # the header does not grow with the epochs
    assert [e["epoch"] for e in read_record(s.record_path)["epochs"]] == [0, 1, 2, 3, 4]  # the reader joins them
    s.finish("completed")
    final = json.loads(s.record_path.read_text())
    assert final["epochs_log"] is None and [e["epoch"] for e in final["epochs"]] == [0, 1, 2, 3, 4]
    assert not log.exists()


def test_a_torn_last_line_of_the_epoch_log_is_ignored(tmp_path):
    s = session(tmp_path)
    s.start()
    for _ in range(2):
        s.epoch_start()
        s.epoch_end({})
    s.flush()
    log = s.record_path.with_name(epochs_log_name(s.record_path))
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 2, "time_s": 1.')  # a kill in the middle of an append
    assert [e["epoch"] for e in read_record(s.record_path)["epochs"]] == [0, 1]
    s.finish("completed")


def test_a_first_version_record_still_reads():
    path = DATA / "single" / "green-run-single.json"
    data = json.loads(path.read_text())
    assert data["schema"] == "green-callbacks/run/1" and "epochs_log" not in data
    record = read_record(path)
    assert record["status"] == data["status"] and len(record["epochs"]) == len(data["epochs"]) > 0


def _run_and_sigkill(tmp_path: Path, setup: str, after_epochs: str) -> Path:
    """Run a Session of three 2 J epochs in a child interpreter (``setup`` before it starts, ``after_epochs`` after
    them), SIGKILL it there, and return its record's path."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.sensors.fake import StepEnergySensor
from green_callbacks.core.session import Session
{setup}
s = Session(GreenConfig(output_dir={str(tmp_path)!r}, carbon_intensity=100.0), framework="test",
            sensors=[StepEnergySensor("cpu", 2.0, scope="node")], dist=DistInfo(), reducer=lambda v: list(v))
s.start()
for _ in range(3):
    s.epoch_start()
    s.epoch_end({{}})
{after_epochs}
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    [path] = tmp_path.glob("green-run-*.json")
    return path


def test_sigkill_leaves_every_completed_epoch_readable(tmp_path):
    record = read_record(_run_and_sigkill(tmp_path, "", "s.flush()\ns.epoch_start()"))
    assert record["status"] == "running"
    assert [e["epoch"] for e in record["epochs"]] == [0, 1, 2]
    assert [e["energy_j"] for e in record["epochs"]] == [2.0, 2.0, 2.0]  # one read of 2 J per epoch


def test_sigkill_before_the_header_is_replaced_still_reads_every_epoch_and_its_totals(tmp_path):
    """Headers are replaced at most every HEADER_INTERVAL_S: killed with only the first header on disk, the record
    still has every completed epoch, and its totals are those of the last one (the reader takes them from the log)."""
    setup = "import green_callbacks.core.record_writer as writer\nwriter.HEADER_INTERVAL_S = 3600.0"
    path = _run_and_sigkill(tmp_path, setup, "")
    assert json.loads(path.read_text())["totals"]["epochs"] == 0  # the first header: nothing replaced it
    record = read_record(path)
    assert [e["epoch"] for e in record["epochs"]] == [0, 1, 2]
    assert record["totals"]["epochs"] == 3 and record["totals"]["energy_j"] == 6.0  # 3 epochs x 2 J


def test_the_header_is_replaced_at_most_once_per_interval_and_at_once_on_flush(tmp_path, monkeypatch):
    from green_callbacks.core import record_writer

    def on_disk():
        return json.loads(s.record_path.read_text())["totals"]["epochs"]

    monkeypatch.setattr(record_writer, "HEADER_INTERVAL_S", 3600.0)
    s = session(tmp_path)
    s.start()
    assert on_disk() == 0  # the first header: written at once
    log = s.record_path.with_name(epochs_log_name(s.record_path))
    for _ in range(2):
        s.epoch_start()
        s.epoch_end({})
    deadline = time.monotonic() + 30
    while log.read_text().count("\n") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.read_text().count("\n") == 2  # epoch lines are not held back
    assert on_disk() == 0  # the header waits for its interval
    assert s.flush() and on_disk() == 2  # a flush writes the newest one now
    monkeypatch.setattr(record_writer, "HEADER_INTERVAL_S", 0.0)
    s.epoch_start()
    s.epoch_end({})
    s.sink.flush()  # the sink's own flush: only what the session handed it (no stale header forced)
    assert on_disk() == 3  # once the interval has passed, the epoch's end hands the writer a new header
    s.finish("completed")
    assert json.loads(s.record_path.read_text())["totals"]["epochs"] == 3


# ------------------------------------------------------------------------------------------------ #15.8 file mode
def test_records_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        s = session(tmp_path)
        s.start()
        s.flush()
        assert s.record_path.stat().st_mode & 0o777 == 0o644
        s.finish("completed")
        assert s.record_path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(previous)


# ------------------------------------------------------------------------------------------------ #15.9 temp files
def test_stale_temporary_files_of_dead_processes_are_removed_at_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    machine = record_writer._machine()  # this host, boot and PID namespace: its process ids can be checked here
    stale = tmp_path / f".green-run-tmp-{machine}-{dead.pid}-abc123.tmp"
    stale.write_text("{")
    alive = tmp_path / f".green-run-tmp-{machine}-{os.getppid()}-def456.tmp"  # a live process (pytest's parent)
    alive.write_text("{")
    other = tmp_path / ".other.tmp"
    other.write_text("x")
    s = session(tmp_path)
    s.start()
    s.finish("completed")
    assert not stale.exists()
    assert alive.exists() and other.exists()


# ------------------------------------------------------------------------------------------------ #15.8 SIGHUP
@pytest.mark.slow
def test_measure_forwards_sighup_and_records_interrupted(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "green_callbacks.cli", "measure", "--output-dir", str(tmp_path), "--interval", "0.2",
         "--carbon-intensity", "100", "--", sys.executable, "-c", "import time; time.sleep(60)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "GREEN_CALLBACKS_RAPL_ROOT": str(tmp_path)},
    )
    deadline = time.monotonic() + 30
    paths: list[Path] = []
    while time.monotonic() < deadline:
        paths = list(tmp_path.glob("green-run-*.json"))
        if paths and len(read_record(paths[0])["epochs"]) >= 1:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGHUP)
    proc.wait(timeout=30)
    assert proc.returncode == 128 + signal.SIGHUP, proc.stderr.read()  # the child died of the forwarded SIGHUP
    record = read_record(paths[0])
    assert record["status"] == "interrupted" and record["error"] == "SIGHUP"


# ------------------------------------------------------------------------------------------------ #14.7 metrics
def test_user_metrics_leave_out_our_own_keys():
    np = pytest.importorskip("numpy")
    got = user_metrics({"loss": 0.5, "Wh": 1.0, "gCO2e": 2.0, "green/total_energy_kwh": 3.0, "flag": True,
                        "name": "x", "arr1": np.array([2.0]), "arr2": np.array([1.0, 2.0]), "nan": math.nan})
    assert set(got) == {"loss", "arr1", "nan"} and got["arr1"] == 2.0

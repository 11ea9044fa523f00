"""The typed run record (core/record.py): schema 1.0 records still read, schema 1.1 with an epochs log (a torn last
line included), and the reader's file rules (regular files only, a size cap)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from green_callbacks.core.record import (
    SCHEMA,
    CarbonInfo,
    RecordError,
    RunRecord,
    load_record,
    max_record_bytes,
    parse_record,
    read_record,
)
from green_callbacks.report.runs import load_runs, summarize_run

RECORDS = Path(__file__).parent / "data" / "records"
SINGLE = RECORDS / "single" / "green-run-single.json"


def _single() -> dict:
    return json.loads(SINGLE.read_text())


def test_a_first_version_record_reads_into_the_typed_record() -> None:
    record = load_record(SINGLE)
    assert isinstance(record, RunRecord) and record.schema == "green-callbacks/run/1"
    assert (record.status, record.framework, record.run_id[:6]) == ("completed", "lightning", "single")
    assert record.carbon == CarbonInfo(56.0, "Ember via Our World in Data", 2023, "FRA", "lifecycle", "country", 1.2)
    assert [e.epoch for e in record.epochs] == [0, 1, 2]
    assert record.epochs[1].component_energy_j == {"gpu": 600.0, "cpu": 30.0, "ram": 10.0}
    assert record.epochs[1].metrics == {"val_loss": 0.5} and record.epochs_log is None
    assert record.totals.energy_j == 1920.0 and record.totals.epochs == 3
    assert record.convergence.best.epoch == 1 and record.convergence.mode == "min"
    assert record.components["gpu"].device_names == ("NVIDIA H100 80GB HBM3",)
    assert record.methods["ram"] == ("estimate-ram-per-gb",)
    assert record["run_id"] == record.run_id and record.path == str(SINGLE)  # also a read-only mapping
    plain = read_record(SINGLE)
    assert isinstance(plain, dict) and plain["_path"] == str(SINGLE) and len(plain["epochs"]) == 3


def test_schema_versions() -> None:
    assert SCHEMA == "green-callbacks/run/1.1"
    for schema in ("green-callbacks/run/1", "green-callbacks/run/1.1", "green-callbacks/run/1.7"):
        assert parse_record({**_single(), "schema": schema}).schema == schema
    with pytest.raises(RecordError, match="is not the version this green_callbacks reads"):
        parse_record({**_single(), "schema": "green-callbacks/run/2.0"})
    with pytest.raises(RecordError, match="not a green-callbacks run record"):
        parse_record({**_single(), "schema": "other/1"})


def _running(folder: Path, inline: int, log_lines: list[str]) -> Path:
    """A schema 1.1 record of a run still going: ``inline`` epochs in the file, the rest in its epochs log."""
    data = _single()
    epochs = data["epochs"]
    log = "green-run-20261130T000000Z-abcd1234.epochs.jsonl"
    header = {**data, "schema": "green-callbacks/run/1.1", "status": "running", "epochs": epochs[:inline],
              "epochs_log": log}
    path = folder / "green-run-20261130T000000Z-abcd1234.json"
    path.write_text(json.dumps(header))
    (folder / log).write_text("".join(log_lines))
    return path


def test_an_epochs_log_is_joined_to_the_inline_epochs(tmp_path) -> None:
    epochs = _single()["epochs"]
    path = _running(tmp_path, 1, [json.dumps(e) + "\n" for e in epochs[1:]])
    record = load_record(path)
    assert [e.epoch for e in record.epochs] == [0, 1, 2]  # one inline + two from the log
    assert record.epochs_log == "green-run-20261130T000000Z-abcd1234.epochs.jsonl"
    assert summarize_run(record).energy_j == 1920.0  # totals as the header says
    assert [e["epoch"] for e in read_record(path)["epochs"]] == [0, 1, 2]


@pytest.mark.parametrize("torn", [
    '{"epoch": 2, "time_s": 2.0, "energ',          # cut short by a kill: no newline
    '{"epoch": 2, "time_s": 2.0, "energ\n',        # invalid JSON on the last line
    '{"epoch": 2, "time_s": 2.0}',                 # valid JSON but not newline-terminated: not yet complete
])
def test_a_torn_last_line_of_the_log_is_ignored(tmp_path, torn) -> None:
    epochs = _single()["epochs"]
    path = _running(tmp_path, 0, [json.dumps(epochs[0]) + "\n", json.dumps(epochs[1]) + "\n", torn])
    assert [e.epoch for e in load_record(path).epochs] == [0, 1]


def test_a_bad_line_inside_the_log_is_an_error(tmp_path) -> None:
    epochs = _single()["epochs"]
    path = _running(tmp_path, 0, [json.dumps(epochs[0]) + "\n", "not json\n", json.dumps(epochs[1]) + "\n"])
    with pytest.raises(RecordError, match="line 2 of the epochs log"):
        load_record(path)


@pytest.mark.parametrize("name", ["../green-run-x.epochs.jsonl", "/etc/passwd", "sub/green-run-x.epochs.jsonl",
                                  "green-run-x.json", "notes.txt"])
def test_the_epochs_log_must_be_a_plain_file_name(name) -> None:
    with pytest.raises(RecordError, match="epochs_log"):
        parse_record({**_single(), "epochs_log": name})


def test_a_fifo_as_epochs_log_is_refused_without_blocking(tmp_path) -> None:
    path = _running(tmp_path, 1, [])
    log = tmp_path / "green-run-20261130T000000Z-abcd1234.epochs.jsonl"
    log.unlink()
    os.mkfifo(log)
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(_catch(lambda: load_record(path))), daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], RecordError) and "not a regular file (a FIFO)" in str(result[0])


def _catch(call):
    try:
        return call()
    except Exception as err:
        return err


def test_size_cap_default_env_and_argument(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GREEN_CALLBACKS_MAX_RECORD_MB", raising=False)
    assert max_record_bytes() == 64 * 1024 * 1024
    monkeypatch.setenv("GREEN_CALLBACKS_MAX_RECORD_MB", "0.5")
    assert max_record_bytes() == 512 * 1024
    assert max_record_bytes(2) == 2 * 1024 * 1024  # the argument wins
    big = tmp_path / "green-run-big.json"
    big.write_text(json.dumps({**_single(), "padding": "x" * 600_000}))
    loaded = load_runs([tmp_path])
    assert loaded.runs == () and "larger than the 0.5 MiB read at most" in loaded.skipped[0][1]
    assert len(load_runs([tmp_path], max_bytes=max_record_bytes(1)).runs) == 1
    monkeypatch.setenv("GREEN_CALLBACKS_MAX_RECORD_MB", "lots")
    with pytest.raises(ValueError, match="GREEN_CALLBACKS_MAX_RECORD_MB"):
        max_record_bytes()
    with pytest.raises(ValueError, match="above 0"):
        max_record_bytes(0)

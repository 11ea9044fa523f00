"""Security: no network unless a live provider is configured, the API token never leaks, records are plain JSON that
is never unpickled or evaluated, and output paths with ``~``, spaces and relative parts work.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import pickle
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from green_callbacks.core.live import ElectricityMapsProvider
from green_callbacks.core.sensors.fake import StepEnergySensor
from green_callbacks.report.command import run_report
from green_callbacks.report.runs import load_runs
from tests.faults.harness import EPOCHS, epochs_of, train

TOKEN = "em-SECRET-token-5f3a9c1e7b"


def sensors():
    return [StepEnergySensor("cpu", 2.0, scope="node"), StepEnergySensor("ram", 1.0, scope="node")]


# ------------------------------------------------------------------------------------------------ no network


def test_no_network_traffic_without_a_live_provider(adapter, tmp_path, monkeypatch):
    attempts: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                attempts.append(address)
                raise OSError("network access in a test of green_callbacks")
            return real(self, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guard(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(real_connect_ex))
    # the machine's own sensors and the packaged country table: everything a default run touches
    run = train(adapter, tmp_path, country="DE", carbon_intensity=None, output_dir=str(tmp_path / "runs"))
    assert run.error is None, repr(run.error)
    assert attempts == []
    record = run.record
    assert record["status"] == "completed" and epochs_of(record) == list(range(EPOCHS))
    assert record["carbon"]["location"] == "DE" and record["carbon"]["kind"] != "live"


# ------------------------------------------------------------------------------------------------ the API token


class _Answer500(BaseHTTPRequestHandler):
    """Answers every request with HTTP 500, its reason phrase echoing the token (as a careless proxy might)."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        _Answer500.seen.append((self.path, self.headers.get("auth-token")))
        self.send_response(500, f"upstream rejected token {self.headers.get('auth-token')}")
        self.end_headers()
        self.wfile.write(f'{{"error": "bad token {self.headers.get("auth-token")}"}}'.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_500():
    _Answer500.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v3"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as sock:  # bind, note the port, close: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v3"


@pytest.mark.parametrize("where", ["closed_port", "server_500"])
def test_api_token_never_appears_in_record_log_warning_or_error(adapter, tmp_path, where, request, caplog, capfd):
    base_url = request.getfixturevalue(where)
    provider = ElectricityMapsProvider(zone="DE", token=TOKEN, base_url=base_url, timeout_s=2)
    caplog.set_level(logging.DEBUG)
    crash = RuntimeError("crash after the live look-up")

    def action(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 0):
            raise crash  # an error path too: its text goes into the record

    run = train(adapter, tmp_path, carbon_intensity=None, live_intensity=provider,
                output_dir=str(tmp_path / "runs"), sensors=sensors(), action=action)
    if where == "server_500":  # the request was really made, the token in its header only, never in the URL
        assert _Answer500.seen and all(header == TOKEN and TOKEN not in path for path, header in _Answer500.seen)
    record = run.record
    assert record["status"] == "failed"
    assert record["carbon"]["kind"] != "live" and record["carbon"]["location"] == "DE"  # the table fallback
    texts = {
        "record": Path(run.callback.record_path).read_text(),
        "warnings": "\n".join(str(w.message) for w in run.caught),
        "log": caplog.text,
        "output": "".join(capfd.readouterr()),
        "error": f"{run.error!r} {run.error}",
        "config": repr(run.callback.config),
        "provider": f"{provider!r} {provider.last_error}",
    }
    for name, text in texts.items():
        assert TOKEN not in text, f"the token leaked into the {name}"
    live_warnings = [w for w in texts["warnings"].splitlines() if "Electricity Maps" in w]
    assert live_warnings, "the failed look-up was not reported"
    if where == "server_500":
        assert "HTTP 500" in texts["warnings"] and "<hidden>" in texts["warnings"]


# ------------------------------------------------------------------------------------------------ plain JSON only


def test_records_are_plain_json_never_unpickled_or_evaluated(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    payload = f"__import__('os').system('touch {marker}')"
    folder = tmp_path / "records"
    folder.mkdir()
    crafted = {
        "schema": "green-callbacks/run/1", "run_id": payload, "framework": payload, "status": "completed",
        "error": payload, "carbon": {"py/object": "os.system", "source": payload}, "components": {},
        "hyperparameters": {"lr": payload, "!!python/object/apply:os.system": [str(marker)]},
        "totals": {"epochs": 0}, "epochs": [],
    }
    (folder / "green-run-crafted.json").write_text(json.dumps(crafted))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "green-run-pickled.json").write_bytes(pickle.dumps(Evil()))

    def forbidden(*args, **kwargs):
        raise AssertionError("a record was unpickled or evaluated")

    for module, name in ((pickle, "loads"), (pickle, "load"), (builtins, "eval")):  # exec: the import system's
        monkeypatch.setattr(module, name, forbidden)
    loaded = load_runs([folder])
    assert [Path(p).name for p, _ in loaded.skipped] == ["green-run-pickled.json"]  # not JSON: skipped, not run
    assert [r.record["run_id"] for r in loaded.runs] == [payload]  # the text is kept as text
    for fmt in ("text", "markdown", "html", "json"):
        assert run_report({"paths": [str(folder)], "format": fmt, "out": str(tmp_path / f"report.{fmt}")}) == 0
    assert not marker.exists()


def test_a_written_record_holds_only_json_types(adapter, tmp_path):
    run = train(adapter, tmp_path, output_dir=str(tmp_path / "runs"), sensors=sensors())

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert plain(json.loads(Path(run.callback.record_path).read_text(encoding="utf-8")))


# ------------------------------------------------------------------------------------------------ paths


def test_output_dir_with_home_spaces_and_relative_parts(adapter, tmp_path, monkeypatch):
    home = tmp_path / "home of user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    run = train(adapter, tmp_path / "w1", output_dir="~/my runs/tmp/../green records", sensors=sensors())
    assert run.error is None
    assert Path(run.callback.record_path).parent.resolve() == (home / "my runs" / "green records").resolve()
    assert epochs_of(run.record) == list(range(EPOCHS))

    cwd = tmp_path / "the cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def wander(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 0):
            os.chdir(elsewhere)  # the user's code changes directory mid-run

    run = train(adapter, tmp_path / "w2", output_dir="./rel runs/../records", sensors=sensors(), action=wander)
    assert run.error is None
    written = list((cwd / "records").glob("green-run-*.json"))
    assert len(written) == 1 and not list(elsewhere.rglob("green-run-*.json"))
    assert epochs_of(json.loads(written[0].read_text())) == list(range(EPOCHS))

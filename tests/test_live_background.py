"""A live intensity never holds the training: one deadline per request, fetched off the training thread.

Real loopback servers (raw sockets, so that they can answer one byte at a time); nothing is faked but the sensors.
The proofs are by structure, not by timing: a server that will not answer until the test has seen the constructor
return, a server whose answer is still unfinished when the run has settled its intensity.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from green_callbacks.core.live import ElectricityMapsProvider
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.loop import Tracker

TOKEN = "tok-SECRET-live-background"
BODY = json.dumps({"zone": "DE", "carbonIntensity": 312, "datetime": "2025-03-04T10:00:00.000Z"}).encode()
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
DE_TABLE = 380.9  # the packaged table value for DE, the fallback of zone "DE"


class Trickle:
    """A one-connection-at-a-time HTTP server that sends ``ANSWER`` one byte every ``pause_s``.

    ``hold``: before the first byte, it waits (at most ``hold_s``) for this event; ``held_until_set`` says whether it
    came. ``closed_early``: the client closed before the whole answer was sent; ``sent``: bytes sent so far."""

    def __init__(self, pause_s: float, hold: threading.Event | None = None, hold_s: float = 20.0) -> None:
        self.pause_s = pause_s
        self.hold = hold
        self.hold_s = hold_s
        self.held_until_set: bool | None = None
        self.client_open_after_hold: bool | None = None
        self.requests = 0
        self.sent = 0
        self.closed_early = False
        self.finished = threading.Event()  # one connection handled to its end (answered or abandoned)
        self.hold_over = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        self.requests += 1
        if self.hold is not None:
            self.held_until_set = self.hold.wait(self.hold_s)
            self.client_open_after_hold = not _closed_by_peer(conn)
            self.hold_over.set()
        for i in range(len(ANSWER)):
            if self._stop.is_set() or _closed_by_peer(conn):
                self.closed_early = True
                break
            try:
                conn.sendall(ANSWER[i:i + 1])
            except OSError:
                self.closed_early = True
                break
            self.sent += 1
            if self.pause_s:
                time.sleep(self.pause_s)
        self.finished.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()


def _closed_by_peer(conn: socket.socket) -> bool:
    """The client closed (or shut down) its side: readable, and nothing to read."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@contextmanager
def trickle(pause_s: float, **kwargs: object) -> Iterator[Trickle]:
    server = Trickle(pause_s, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _provider(server: Trickle, timeout_s: float) -> ElectricityMapsProvider:
    return ElectricityMapsProvider("DE", token=TOKEN, base_url=server.base_url, timeout_s=timeout_s)


def _one_epoch(tracker: Tracker) -> None:
    with tracker, tracker.epoch():
        tracker.step(None)


def _sensors() -> list[ConstantPowerSensor]:
    return [ConstantPowerSensor("cpu", 20.0, scope="node")]


def _live_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("green-callbacks-live")]


def test_one_deadline_for_the_whole_request() -> None:
    """Every byte comes well within the timeout of a socket read; the answer as a whole does not."""
    with trickle(0.05) as server:
        provider = _provider(server, timeout_s=0.5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = provider.fetch()
        assert server.finished.wait(30)
    assert (value.kind, value.intensity_gco2e_per_kwh) == ("table", DE_TABLE)  # before: the live 312, much later
    assert server.closed_early and 0 < server.sent < len(ANSWER)
    assert [str(w.message) for w in caught if "one deadline" in str(w.message)]


def test_constructing_a_tracker_never_waits_for_the_server(tmp_path) -> None:
    """The server sends nothing until the test has seen ``Tracker(...)`` return; the client still waits then (its
    deadline is 30 s). The one epoch ends before any byte arrives, so the run uses the fallback, and says so."""
    constructed = threading.Event()
    with trickle(0.5, hold=constructed) as server:
        tracker = Tracker(live_intensity=_provider(server, timeout_s=30), output_dir=str(tmp_path),
                          sensors=_sensors())
        constructed.set()
        assert server.hold_over.wait(60)
        assert server.held_until_set and server.client_open_after_hold  # before: the constructor waited for it
        choice = tracker.session.carbon_choice
        assert choice.to_record()["live"] == {"status": "pending", "detail": None}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _one_epoch(tracker)
        assert server.finished.wait(30)
    assert server.closed_early  # the run gave up on the answer it no longer needed
    record = read_record(tracker.record_path)
    assert record["carbon"]["intensity_gco2e_per_kwh"] == DE_TABLE
    assert record["carbon"]["live"]["status"] == "late"
    assert record["epochs"][0]["emissions_gco2e"] == pytest.approx(
        record["epochs"][0]["energy_j"] / 3.6e6 * DE_TABLE)
    late = [w for w in caught if "had not arrived" in str(w.message)]
    assert len(late) == 1 and late[0].filename == __file__  # pointed at this line, not the package's
    assert _live_threads() == []  # the request and its waiter ended with the run


def test_a_live_value_that_arrived_before_the_first_epoch_end_is_used(tmp_path) -> None:
    with trickle(0.0) as server:
        tracker = Tracker(live_intensity=_provider(server, timeout_s=30), output_dir=str(tmp_path),
                          sensors=_sensors())
        assert server.finished.wait(30)
        tracker.session.carbon_choice._thread.join(30)  # the answer is in: the first epoch's end finds it
        _one_epoch(tracker)
    record = read_record(tracker.record_path)
    assert (record["carbon"]["intensity_gco2e_per_kwh"], record["carbon"]["kind"]) == (312.0, "live")
    assert record["carbon"]["live"] == {"status": "received", "detail": None}
    assert record["epochs"][0]["emissions_gco2e"] == pytest.approx(record["epochs"][0]["energy_j"] / 3.6e6 * 312)


def test_a_failed_live_value_falls_back_with_the_reason(tmp_path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there: connection refused
    provider = ElectricityMapsProvider("DE", token=TOKEN, base_url=f"http://127.0.0.1:{port}/v3", timeout_s=30)
    tracker = Tracker(live_intensity=provider, country="FR", output_dir=str(tmp_path), sensors=_sensors())
    tracker.session.carbon_choice._thread.join(30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _one_epoch(tracker)
    record = read_record(tracker.record_path)
    assert (record["carbon"]["location"], record["carbon"]["kind"]) == ("FR", "table")  # the country= given
    assert record["carbon"]["live"]["status"] == "failed" and "cannot reach" in record["carbon"]["live"]["detail"]
    assert [w.filename for w in caught if "live carbon intensity" in str(w.message)] == [__file__]
    assert TOKEN not in json.dumps(record)

"""Tests for the opt-in Electricity Maps provider against a real local HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest

from green_callbacks.core import carbon
from green_callbacks.core.carbon import resolve_carbon
from green_callbacks.core.live import ElectricityMapsProvider

TOKEN = "tok-SECRET-9f8e7d6c5b4a"
OK_BODY = {
    "zone": "DE",
    "carbonIntensity": 312,
    "datetime": "2025-03-04T10:00:00.000Z",
    "updatedAt": "2025-03-04T09:52:10.000Z",
    "emissionFactorType": "lifecycle",
    "isEstimated": False,
    "estimationMethod": None,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mode = "ok"
    body: bytes = b""
    release: threading.Event
    requests: list[tuple[str, dict[str, str]]]
    location: str = ""
    redirect_status: int = 302


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        mode = self.server.mode
        if mode == "slow":
            self.server.release.wait(5)
            return
        if mode == "redirect":
            self.send_response(self.server.redirect_status)
            self.send_header("Location", self.server.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = {"401": 401, "500": 500}.get(mode, 200)
        body = self.server.body if status == 200 else b'{"error": "nope"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def _serving() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.release = threading.Event()
    srv.requests = []
    srv.body = json.dumps(OK_BODY).encode()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    with _serving() as srv:
        yield srv


@pytest.fixture
def other_server(server: _Server) -> Iterator[_Server]:
    """A second loopback server, reached by another host name ('localhost' rather than '127.0.0.1')."""
    with _serving() as srv:
        srv.body = json.dumps({**OK_BODY, "carbonIntensity": 999}).encode()
        yield srv


def _base_url(srv: _Server) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host}:{port}/v3"


def _provider(srv: _Server, zone: str = "DE", timeout_s: float = 2.0) -> ElectricityMapsProvider:
    return ElectricityMapsProvider(zone, token=TOKEN, base_url=_base_url(srv), timeout_s=timeout_s)


def _assert_no_token(*texts: object) -> None:
    for text in texts:
        assert TOKEN not in str(text)
        assert "9f8e7d6c5b4a" not in str(text)


def _fetch_recording(provider: ElectricityMapsProvider, **kwargs: object) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = provider.fetch(**kwargs)  # type: ignore[arg-type]
    return value, [str(w.message) for w in caught]


# --- success ------------------------------------------------------------------------------------------------


def test_success_sends_token_in_header_and_returns_live_value(server: _Server) -> None:
    provider = _provider(server)
    value, messages = _fetch_recording(provider)
    assert messages == []
    assert value.intensity_gco2e_per_kwh == 312.0
    assert value.kind == "live"
    assert value.source == "Electricity Maps (live)"
    assert value.location == "DE"
    assert value.year == 2025
    assert value.basis == "lifecycle, latest hourly value, consumption-based"
    assert provider.last_error is None

    [(path, headers)] = server.requests
    assert headers["auth-token"] == TOKEN  # the token reaches the server, in the header only
    parts = urlsplit(path)
    assert parts.path == "/v3/carbon-intensity/latest"
    assert parse_qs(parts.query) == {"zone": ["DE"], "emissionFactorType": ["lifecycle"]}
    assert TOKEN not in path
    _assert_no_token(repr(provider), value.to_record(), provider.url)


def test_estimated_value_is_labelled(server: _Server) -> None:
    server.body = json.dumps({**OK_BODY, "isEstimated": True, "estimationMethod": "TIME_SLICER_AVERAGE"}).encode()
    value = _provider(server).fetch()
    assert value.basis.endswith("estimated by Electricity Maps (TIME_SLICER_AVERAGE)")


def test_token_from_environment(server: _Server) -> None:
    provider = ElectricityMapsProvider(
        "FR", base_url=_base_url(server), environ={"ELECTRICITYMAPS_API_TOKEN": TOKEN}
    )
    provider.fetch()
    assert server.requests[0][1]["auth-token"] == TOKEN
    _assert_no_token(repr(provider))


def test_resolve_carbon_uses_live(server: _Server) -> None:
    value = resolve_carbon(live=_provider(server), environ={})
    assert (value.intensity_gco2e_per_kwh, value.kind) == (312.0, "live")


# --- failures fall back with one token-free warning ---------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "body", "expected"),
    [
        ("401", b"", "HTTP 401"),
        ("500", b"", "HTTP 500"),
        ("ok", b"{not json", "malformed JSON"),
        ("ok", b'{"zone": "DE"}', "no 'carbonIntensity'"),
        ("ok", b'{"carbonIntensity": -3}', "implausible value"),
        ("ok", b'{"carbonIntensity": "lots"}', "implausible value"),
    ],
)
def test_errors_fall_back_to_zone_table_value(server: _Server, mode: str, body: bytes, expected: str) -> None:
    server.mode = mode
    if body:
        server.body = body
    provider = _provider(server)
    value, messages = _fetch_recording(provider)
    # zone "DE" falls back to the packaged Germany row: 380.9 g (Ember/OWID 2023)
    assert (value.intensity_gco2e_per_kwh, value.kind, value.location, value.year) == (380.9, "table", "DE", 2023)
    assert len(messages) == 1
    assert expected in messages[0] and "380.9" in messages[0]
    assert server.requests[0][1]["auth-token"] == TOKEN
    _assert_no_token(*messages, repr(provider), value.to_record(), provider.last_error)


def test_timeout_falls_back_quickly(server: _Server) -> None:
    server.mode = "slow"
    provider = _provider(server, timeout_s=0.3)
    start = time.monotonic()
    value, messages = _fetch_recording(provider)
    elapsed_s = time.monotonic() - start
    assert elapsed_s < 3.0
    assert value.kind == "table" and value.intensity_gco2e_per_kwh == 380.9
    assert len(messages) == 1 and "timeout_s=0.3" in messages[0]
    _assert_no_token(*messages, provider.last_error)


def test_unreachable_server_falls_back(server: _Server) -> None:
    base = _base_url(server)
    server.shutdown()
    server.server_close()  # the port is now closed: connection refused
    provider = ElectricityMapsProvider("DE", token=TOKEN, base_url=base, timeout_s=1)
    value, messages = _fetch_recording(provider)
    assert value.kind == "table" and len(messages) == 1 and "cannot reach" in messages[0]
    _assert_no_token(*messages)


def test_warns_once_per_provider(server: _Server) -> None:
    server.mode = "500"
    provider = _provider(server)
    _, first = _fetch_recording(provider)
    _, second = _fetch_recording(provider)
    assert len(first) == 1 and second == []
    assert len(server.requests) == 2  # it still tries every time
    assert "HTTP 500" in (provider.last_error or "")


def test_recovers_after_a_failure(server: _Server) -> None:
    server.mode = "500"
    provider = _provider(server)
    _fetch_recording(provider)
    server.mode = "ok"
    value = provider.fetch()
    assert value.kind == "live" and provider.last_error is None


def test_resolve_carbon_falls_back_to_the_given_country(server: _Server) -> None:
    server.mode = "401"
    with pytest.warns(UserWarning, match="HTTP 401") as caught:
        value = resolve_carbon(live=_provider(server), country="FR", environ={})
    assert (value.intensity_gco2e_per_kwh, value.location) == (56.0, "FR")  # France, not the zone's Germany
    _assert_no_token(*(str(w.message) for w in caught))


def test_zone_without_table_row_falls_back_to_world(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carbon, "_world_warned", False)
    server.mode = "500"
    value, messages = _fetch_recording(_provider(server, zone="XX-NORTH"))
    assert (value.intensity_gco2e_per_kwh, value.kind, value.location) == (481.0, "default", "world")
    assert len(messages) == 1


# --- construction: clear errors, never the token ------------------------------------------------------------


def test_missing_token_is_an_error() -> None:
    with pytest.raises(ValueError, match="ELECTRICITYMAPS_API_TOKEN"):
        ElectricityMapsProvider("DE", environ={})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"zone": ""},
        {"zone": "DE/../x"},
        {"base_url": "file:///etc/passwd"},
        {"timeout_s": 0},
        {"timeout_s": float("nan")},
        {"emission_factor_type": "marginal"},
    ],
)
def test_bad_arguments_are_errors_without_the_token(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"zone": "DE", "token": TOKEN, **kwargs}
    with pytest.raises(ValueError) as info:
        ElectricityMapsProvider(**arguments)  # type: ignore[arg-type]
    _assert_no_token(info.value, repr(info.value))


def test_live_with_explicit_value_is_an_error_without_the_token() -> None:
    provider = ElectricityMapsProvider("DE", token=TOKEN)
    with pytest.raises(ValueError, match="live") as info:
        resolve_carbon(live=provider, carbon_intensity=100, environ={})
    _assert_no_token(info.value)
    assert "token=<hidden>" in repr(provider)


# --- the token never leaks (#15.7) --------------------------------------------------------------------------


def test_token_read_from_a_file_loses_its_newline_and_works(server: _Server, tmp_path) -> None:
    path = tmp_path / "em-token"
    path.write_text(TOKEN + "\n", encoding="utf-8")  # as `echo TOKEN > file` writes it
    provider = ElectricityMapsProvider("DE", token=path.read_text(), base_url=_base_url(server), timeout_s=2.0)
    value, messages = _fetch_recording(provider)
    assert messages == [] and provider.last_error is None
    assert (value.kind, value.intensity_gco2e_per_kwh) == ("live", 312.0)
    assert server.requests[0][1]["auth-token"] == TOKEN  # sent without the newline
    env_provider = ElectricityMapsProvider(
        "DE", base_url=_base_url(server), environ={"ELECTRICITYMAPS_API_TOKEN": " " + TOKEN + "\r\n"}
    )
    assert env_provider.fetch().kind == "live"
    assert server.requests[1][1]["auth-token"] == TOKEN


@pytest.mark.parametrize("inside", ["\n", " ", "\t", "\x00", "é"])
def test_token_with_characters_a_header_cannot_carry_is_refused_without_showing_it(inside: str) -> None:
    bad = TOKEN[:8] + inside + TOKEN[8:]
    with pytest.raises(ValueError, match="cannot be sent in an HTTP header") as info:
        ElectricityMapsProvider("DE", token=bad)
    _assert_no_token(info.value, repr(info.value))
    assert TOKEN[:8] not in str(info.value) and TOKEN[8:] not in str(info.value)


def test_scrub_hides_escaped_quoted_and_encoded_forms() -> None:
    token = "ab'c\\d\"e/f+g&h=i-0123456789"
    provider = ElectricityMapsProvider("DE", token=token)
    forms = [token, repr(token), repr(token.encode()), json.dumps(token), quote(token, safe=""), quote_plus(token)]
    for form in forms:
        text = provider._scrub(f"error near {form}: invalid header")
        assert "0123456789" not in text and "<hidden>" in text, (form, text)


def test_answer_echoing_the_token_never_reaches_the_record(server: _Server) -> None:
    server.body = json.dumps({
        **OK_BODY, "zone": TOKEN, "emissionFactorType": TOKEN, "isEstimated": True, "estimationMethod": TOKEN,
        "datetime": TOKEN,
    }).encode()
    provider = _provider(server)
    value, messages = _fetch_recording(provider)
    assert messages == [] and (value.kind, value.intensity_gco2e_per_kwh) == ("live", 312.0)
    assert value.location == "DE"  # the zone asked for, not the echoed field
    assert value.basis == "lifecycle, latest hourly value, consumption-based, estimated by Electricity Maps"
    assert value.year is None
    _assert_no_token(value.to_record(), repr(value))
    # an identifier-like echo of the token is also hidden
    plain = "SECRET_9f8e7d6c5b4a"
    server.body = json.dumps({**OK_BODY, "isEstimated": True, "estimationMethod": plain}).encode()
    value = ElectricityMapsProvider("DE", token=plain, base_url=_base_url(server)).fetch()
    assert plain not in json.dumps(value.to_record()) and "<hidden>" in value.basis


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_host_is_not_followed(server: _Server, other_server: _Server, status: int) -> None:
    port = other_server.server_address[1]
    server.mode = "redirect"
    server.redirect_status = status
    server.location = f"http://localhost:{port}/v3/carbon-intensity/latest?zone=DE"
    provider = _provider(server)
    value, messages = _fetch_recording(provider)
    assert other_server.requests == []  # the other host never saw the request, let alone the token
    assert value.kind == "table" and value.intensity_gco2e_per_kwh == 380.9  # not the other host's 999
    assert len(messages) == 1 and f"HTTP {status} redirect to localhost not followed" in messages[0]
    _assert_no_token(*messages, provider.last_error, value.to_record())

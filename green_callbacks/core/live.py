"""Opt-in live grid carbon intensity from Electricity Maps.

Nothing here runs unless a provider is constructed and passed explicitly, e.g.
``resolve_carbon(live=ElectricityMapsProvider(zone="DE"))``. Standard library only (``urllib``).

The API token is a secret: it is sent only in the ``auth-token`` request header, only to the host of
``base_url`` (redirects are never followed, so the header cannot be carried to another host), and it never
appears in ``repr()``, in warnings, in error messages or in the returned :class:`CarbonIntensity` record (the
record's text fields come from the request and from a fixed vocabulary, not from echoed response text). A token
read from a file loses its surrounding whitespace; one with whitespace or control characters inside is refused.

Any failure (network error, timeout, HTTP error status, malformed or implausible response) falls back to a
packaged table value with one warning per provider; it is an expected outside condition, not a bug, so it does
not re-raise in strict mode.

``timeout_s`` is one deadline for the whole request — connecting, the status line, every header, the body — not a
limit per socket read: a server that answers one byte every half second cannot hold a request longer. The request
runs on a daemon thread; at the deadline its connection is shut down (so that thread ends too) and the fetch falls
back. A run never waits for it on the training thread: :class:`green_callbacks.core.carbon.CarbonChoice` fetches in
the background (see docs/carbon.md for when the live value is used).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from green_callbacks.core.carbon import CarbonIntensity, lookup_country, validate_intensity, world_average

__all__ = ["ELECTRICITYMAPS_TOKEN_ENV", "ElectricityMapsProvider"]

ELECTRICITYMAPS_TOKEN_ENV = "ELECTRICITYMAPS_API_TOKEN"
SOURCE = "Electricity Maps (live)"
_ZONE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_FACTOR_TYPES = ("lifecycle", "direct")
_ESTIMATION_METHOD_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: a 3xx answer becomes an ``HTTPError`` (the token must not travel to another host)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class _Connections:
    """The connections one request opened, so that its deadline can shut them down from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []
        self._expired = False

    def add(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.append(connection)
            expired = self._expired
        if expired:  # opened after the deadline: it is shut down as soon as it has a socket (see _watched)
            self.shut(connection)

    def expire(self) -> None:
        """The deadline passed: every socket of this request is shut down (a blocked read returns at once)."""
        with self._lock:
            self._expired = True
            connections = list(self._open)
        for connection in connections:
            self.shut(connection)

    @property
    def expired(self) -> bool:
        return self._expired

    @staticmethod
    def shut(connection: http.client.HTTPConnection) -> None:
        sock = connection.sock
        if sock is not None:
            try:  # the plain socket's shutdown (an SSL socket's own would also drop its state mid-read)
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass


def _watched(connections: _Connections, base: type) -> type:
    """``base`` (urllib's HTTP or HTTPS handler) recording every connection it opens in ``connections``."""

    class Handler(base):  # type: ignore[misc, valid-type]
        def do_open(self, http_class, req, **kwargs):  # type: ignore[no-untyped-def]
            class Connection(http_class):  # type: ignore[misc, valid-type]
                def connect(self) -> None:
                    super().connect()
                    if connections.expired:  # connected after the deadline passed: no read may start
                        connections.shut(self)

            def opened(*args: Any, **kw: Any) -> http.client.HTTPConnection:
                connection = Connection(*args, **kw)
                connections.add(connection)
                return connection

            return super().do_open(opened, req, **kwargs)

    return Handler


def _read_before(response: Any, deadline: float, limit: int) -> bytes:
    """At most ``limit`` bytes of the body, in chunks, stopping at ``deadline`` (``time.monotonic()``)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and time.monotonic() < deadline:
        chunk = response.read1(min(65536, limit - size)) if hasattr(response, "read1") else response.read(limit)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)



def _clean_token(token: object) -> str | None:
    """The token without surrounding whitespace, ``None`` when empty; ``ValueError`` (token-free) when unusable."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise ValueError(f"token must be a string, got {type(token).__name__}.")
    token = token.strip()
    if not token:
        return None
    bad = [i for i, char in enumerate(token) if not ("!" <= char <= "~")]
    if bad:
        raise ValueError(
            f"The Electricity Maps token has {len(bad)} character(s) that cannot be sent in an HTTP header "
            f"(whitespace, control or non-ASCII characters, first at position {bad[0]} of {len(token)}); it is not "
            f"shown here. Check the file or variable it was read from: it should hold the token alone."
        )
    return token


class _LiveError(Exception):
    """A failed fetch; its message is built here and never contains the token."""


class ElectricityMapsProvider:
    """Latest carbon intensity of one Electricity Maps zone (``GET <base_url>/carbon-intensity/latest``).

    Args:
        zone: an Electricity Maps zone id, e.g. ``"DE"``, ``"FR"``, ``"US-CAL-CISO"``, ``"SE-SE3"``.
        token: the API token; if ``None``, read from the environment variable ``ELECTRICITYMAPS_API_TOKEN``.
            Surrounding whitespace (a file's trailing newline) is stripped; a token with whitespace, control or
            non-ASCII characters inside is a ``ValueError`` that does not show it.
        base_url: API root (``https://api.electricitymaps.com/v3``); ``http``/``https`` only.
        timeout_s: seconds allowed for connecting and for each read.
        emission_factor_type: ``"lifecycle"`` (the default, same basis as the packaged country table),
            ``"direct"``, or ``None`` to let the API choose; sent as ``emissionFactorType``.
        environ: where the token variable is read (``os.environ``).

    Electricity Maps values are consumption-based (imports traced) hourly values, whereas the packaged country
    table is production-based annual averages; the record's ``basis`` says which one was used.
    """

    def __init__(
        self,
        zone: str,
        token: str | None = None,
        base_url: str = "https://api.electricitymaps.com/v3",
        timeout_s: float = 5,
        *,
        emission_factor_type: str | None = "lifecycle",
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        if not isinstance(zone, str) or not _ZONE_RE.match(zone.strip()):
            raise ValueError(
                f"zone must be an Electricity Maps zone id such as 'DE', 'FR' or 'US-CAL-CISO' "
                f"(letters, digits, '-' and '_'), got {zone!r}."
            )
        token = _clean_token(token)
        if token is None:
            token = _clean_token(environ.get(ELECTRICITYMAPS_TOKEN_ENV))
        if token is None:
            raise ValueError(
                f"ElectricityMapsProvider needs an API token: pass token=... or set the environment variable "
                f"{ELECTRICITYMAPS_TOKEN_ENV}. Without one, use country=/region= (packaged tables) instead."
            )
        if not isinstance(base_url, str) or urllib.parse.urlsplit(base_url).scheme not in {"http", "https"}:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}.")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
            math.isfinite(timeout_s) and timeout_s > 0
        ):
            raise ValueError(f"timeout_s must be a positive finite number of seconds, got {timeout_s!r}.")
        if emission_factor_type is not None and emission_factor_type not in _FACTOR_TYPES:
            raise ValueError(
                f"emission_factor_type must be 'lifecycle', 'direct' or None, got {emission_factor_type!r}."
            )
        self.zone = zone.strip()
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.emission_factor_type = emission_factor_type
        self.__token = token  # name-mangled and kept out of repr()
        self._warned = False
        self.last_error: str | None = None  # text of the last failure (token-free), None after a success

    def __repr__(self) -> str:
        return (
            f"ElectricityMapsProvider(zone={self.zone!r}, token=<hidden>, base_url={self.base_url!r}, "
            f"timeout_s={self.timeout_s!r})"
        )

    @property
    def url(self) -> str:
        """The request URL (the token is not part of it)."""
        query = {"zone": self.zone}
        if self.emission_factor_type is not None:
            query["emissionFactorType"] = self.emission_factor_type
        return f"{self.base_url}/carbon-intensity/latest?{urllib.parse.urlencode(query)}"

    def fetch(self, fallback: CarbonIntensity | None = None) -> CarbonIntensity:
        """The live value, or ``fallback`` (default: the table value for this zone) with one warning. Returns
        within ``timeout_s`` (one deadline for the whole request)."""
        value, message = self.attempt()
        if value is not None:
            return value
        return self.fall_back(message or "no value", fallback)

    def attempt(self, wake: threading.Event | None = None) -> tuple[CarbonIntensity | None, str | None]:
        """One request, no warning: ``(value, None)``, or ``(None, why)`` with a token-free reason.

        ``wake``: an event that ends the wait before the deadline when set (the caller no longer needs the value);
        the request is then abandoned like one past its deadline. Within ``timeout_s`` either way."""
        try:
            value = self._fetch_live(wake)
        except _LiveError as err:
            message = self._scrub(str(err))
        except Exception as err:  # anything unexpected from urllib/json: still never break the training
            message = self._scrub(f"{type(err).__name__}: {err}")
        else:
            self.last_error = None
            return value, None
        self.last_error = message
        return None, message

    def fall_back(self, message: str, fallback: CarbonIntensity | None = None) -> CarbonIntensity:
        """``fallback`` (default: :meth:`table_fallback`) after a failure ``message``: warned once per provider."""
        chosen = fallback if fallback is not None else self.table_fallback()
        if not self._warned:
            self._warned = True
            from green_callbacks.core.wording import warn_user

            warn_user(
                f"green_callbacks: live carbon intensity from Electricity Maps for zone {self.zone!r} failed "
                f"({message}); using {chosen.intensity_gco2e_per_kwh:g} gCO2e/kWh from {chosen.source} "
                f"({chosen.location}, {chosen.year}) instead. Further failures of this provider are not warned.",
                UserWarning,
            )
        return chosen

    def table_fallback(self) -> CarbonIntensity:
        """Packaged value for the zone's country (the part before the first ``-``), else the world average."""
        country = self.zone.split("-", 1)[0]
        if len(country) == 2:
            try:
                return lookup_country(country)
            except ValueError:
                pass
        return world_average(kind="default")

    # --- internals ------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """``text`` with the token replaced by ``<hidden>`` in every form a message may carry it."""
        token = self.__token
        forms = {
            token,
            repr(token)[1:-1],
            repr(token.encode())[2:-1],
            json.dumps(token)[1:-1],
            urllib.parse.quote(token, safe=""),
            urllib.parse.quote_plus(token),
        }
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, "<hidden>")
        return text

    def _fetch_live(self, wake: threading.Event | None = None) -> CarbonIntensity:
        """The request on a daemon thread, waited for until the deadline (or ``wake``); then its connection is shut
        down, so neither this call nor that thread outlives ``timeout_s`` by more than a moment."""
        connections = _Connections()
        deadline = time.monotonic() + self.timeout_s
        done = wake if wake is not None else threading.Event()
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(self._exchange(connections, deadline))
            except BaseException as err:  # handed to the waiting thread, raised there
                outcome.append(err)
            finally:
                done.set()

        worker = threading.Thread(target=run, name="green-callbacks-live-request", daemon=True)
        worker.start()
        done.wait(self.timeout_s)
        if not outcome:
            given_up = time.monotonic() < deadline  # ``wake`` was set by the caller, not by the request
            connections.expire()
            worker.join(0.5)  # the shut socket ends its read at once; a name look-up cannot be cut (daemon thread)
            if given_up:
                raise _LiveError("abandoned: the run no longer waited for it")
            raise _LiveError(f"no complete answer within timeout_s={self.timeout_s:g} (one deadline for the whole "
                             "request)")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def _exchange(self, connections: _Connections, deadline: float) -> CarbonIntensity:
        request = urllib.request.Request(
            self.url, headers={"auth-token": self.__token, "Accept": "application/json"}, method="GET"
        )
        opener = urllib.request.build_opener(  # built per request: proxy settings are read now, as urlopen does
            _NoRedirect, _watched(connections, urllib.request.HTTPHandler)(),
            _watched(connections, urllib.request.HTTPSHandler)(),
        )
        try:
            with opener.open(request, timeout=self.timeout_s) as response:
                body = _read_before(response, deadline, 1_000_000)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code in _REDIRECT_CODES:
                target = urllib.parse.urlsplit(str(err.headers.get("Location") or "")).hostname or "another URL"
                raise _LiveError(
                    f"HTTP {err.code} redirect to {target} not followed (the token is sent only to "
                    f"{urllib.parse.urlsplit(self.base_url).hostname}; set base_url to the API's final address)"
                ) from None
            reason = err.reason if isinstance(err.reason, str) else ""
            hint = " (check the token and the zone your plan covers)" if err.code in (401, 403) else ""
            raise _LiveError(f"HTTP {err.code} {reason}".rstrip() + hint) from None
        except urllib.error.URLError as err:
            raise _LiveError(f"cannot reach {self.base_url}: {err.reason}") from None
        except TimeoutError:
            raise _LiveError(f"no answer within timeout_s={self.timeout_s:g}") from None
        if time.monotonic() >= deadline:
            raise _LiveError(f"no complete answer within timeout_s={self.timeout_s:g} (one deadline for the whole "
                             "request)")
        return self._parse(body)

    def _parse(self, body: bytes) -> CarbonIntensity:
        try:
            data: Any = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _LiveError("malformed JSON in the response") from None
        if not isinstance(data, dict) or "carbonIntensity" not in data:
            raise _LiveError("response has no 'carbonIntensity' field")
        try:
            value = validate_intensity(data["carbonIntensity"], "carbonIntensity")
        except ValueError as err:
            raise _LiveError(f"implausible value in the response: {err}") from None
        # Text fields never copy the answer: the location is the zone asked for, the basis is built from a fixed
        # vocabulary, so a field that echoes the token (or anything else) cannot reach the record.
        return CarbonIntensity(
            intensity_gco2e_per_kwh=value,
            source=SOURCE,
            year=_year_of(data.get("datetime")),
            location=self.zone,
            basis=self._scrub(_basis_of(data, self.emission_factor_type)),
            kind="live",
        )


def _year_of(stamp: object) -> int | None:
    if isinstance(stamp, str) and len(stamp) >= 4 and stamp[:4].isdigit() and 1900 < int(stamp[:4]) < 2200:
        return int(stamp[:4])
    return None


def _basis_of(data: Mapping[str, Any], requested: str | None) -> str:
    answered = data.get("emissionFactorType")
    factor = answered if answered in _FACTOR_TYPES else requested or "factor type not stated"
    basis = f"{factor}, latest hourly value, consumption-based"
    if data.get("isEstimated") is True:
        method = data.get("estimationMethod")
        if isinstance(method, str) and _ESTIMATION_METHOD_RE.match(method):  # an identifier like TIME_SLICER_AVERAGE
            basis += f", estimated by Electricity Maps ({method})"
        else:
            basis += ", estimated by Electricity Maps"
    return basis

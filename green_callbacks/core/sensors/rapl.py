"""CPU package and DRAM energy from RAPL counters, read through the Linux powercap sysfs tree.

One :class:`RaplReader` owns the counters of a machine; two sensors share it: :class:`RaplCpuSensor` (sum of the
package zones, component ``"cpu"``) and :class:`RaplRamSensor` (sum of the ``dram`` zones, component ``"ram"``).
Both have scope ``"node"``: RAPL measures the whole machine, not this process.

Rules (see ``docs/cpu-and-ram.md``):

- Zones are directories named ``<provider>:N`` (a package, ``psys`` or a top-level ``dram``) and
  ``<provider>:N:M`` (a subzone: ``core``, ``uncore``, ``dram``), for the providers ``intel-rapl``, ``amd-rapl``
  and ``intel-rapl-mmio``. ``core``/``uncore`` are inside their package and never added to it; ``psys`` (the
  platform) overlaps the packages and is never summed with them: it is ignored and listed in ``info()``.
- Mirrors are counted once: two zones of one kind with the same name (``package-0`` twice, or the
  ``intel-rapl-mmio`` copy of ``package-0``), or two die zones of one package (``package-0-die-0``,
  ``package-0-die-1``) whose counters read identical values (several AMD dies report one socket counter).
- ``energy_uj`` wraps at ``max_energy_range_uj``: a negative delta gets one range added. A guard thread reads
  every counter more often than the shortest time a counter can take to wrap, so each window is a sum of
  sub-wrap deltas. A delta implying more than ``absurd_power_w`` (a counter reset, a bogus read) is discarded
  with a note.
- ``energy_uj`` is root-only since CVE-2020-8694: :func:`permission_fix_hint` names the fixes.
- A zone that cannot be read any more makes its component ``unavailable`` from then on (with a note); ``read()``
  never raises for it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from green_callbacks.core import clock
from green_callbacks.core.guard import strict_mode
from green_callbacks.core.sensors.base import UNAVAILABLE, Component, Reading

__all__ = [
    "ABSURD_POWER_W",
    "DEFAULT_POWERCAP_ROOT",
    "METHOD",
    "PROVIDERS",
    "ROOT_ENV_VAR",
    "RaplCpuSensor",
    "RaplRamSensor",
    "RaplReader",
    "RaplZone",
    "Ticker",
    "counter_delta_uj",
    "default_guard_period_s",
    "discover_zones",
    "permission_fix_hint",
    "resolve_root",
]

DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"
ROOT_ENV_VAR = "GREEN_CALLBACKS_RAPL_ROOT"
METHOD = "rapl"
#: Providers in order of preference when two of them expose the same zone (a mirror).
PROVIDERS: tuple[str, ...] = ("intel-rapl", "amd-rapl", "intel-rapl-mmio")
#: A delta implying more than this power in one zone is not believed (a counter reset or a bad read).
ABSURD_POWER_W = 5000.0
#: Deltas are judged over at least this many seconds, so that one ~1 ms counter update read microseconds
#: after the previous read is not mistaken for kilowatts.
PLAUSIBILITY_FLOOR_S = 1.0
#: Power used to size the guard: no CPU package or DRAM zone of today draws this much.
GUARD_SIZING_POWER_W = 1000.0
MAX_GUARD_PERIOD_S = 60.0
MIN_GUARD_PERIOD_S = 1.0
#: Rounds of back-to-back reads used to tell mirrored die counters (always equal) from distinct ones.
MIRROR_READ_ROUNDS = 3

Kind = Literal["package", "dram", "psys", "core", "uncore", "other"]
_ZONE_RE = re.compile(r"^(intel-rapl-mmio|intel-rapl|amd-rapl):(\d+)((?::\d+)*)$")
_DIE_RE = re.compile(r"^(package-\d+)-die-\d+$")


def _read_file(path: str) -> str:
    """Read one sysfs attribute. The single I/O boundary of this module (tests replace it to inject errors)."""
    with open(path, encoding="ascii") as handle:
        return handle.read()


def resolve_root(root: str | os.PathLike[str] | None = None) -> str:
    """The powercap root to use: ``root`` if given, else ``$GREEN_CALLBACKS_RAPL_ROOT``, else the default."""
    if root is not None:
        return os.fspath(root)
    return os.environ.get(ROOT_ENV_VAR) or DEFAULT_POWERCAP_ROOT


def permission_fix_hint(root: str = DEFAULT_POWERCAP_ROOT) -> str:
    """The ways to let a non-root user read RAPL counters, in one paragraph."""
    return (
        "Since CVE-2020-8694 (Intel PLATYPUS) the RAPL counters 'energy_uj' are readable by root only. To let "
        "this user read them, either (a) add a udev rule, e.g. in /etc/udev/rules.d/99-powercap.rules: "
        '\'ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*|intel-rapl-mmio:*", '
        "RUN+=\"/bin/chmod a+r /sys%p/energy_uj\"' then 'sudo udevadm control --reload && sudo udevadm trigger "
        "--subsystem-match=powercap --action=add' (lasts across reboots); or (b) "
        f"'sudo chmod a+r {root}/*:*/energy_uj' (lost at reboot); or (c) in a container, bind-mount the host's "
        "real directory read-only, e.g. '-v /sys/devices/virtual/powercap:/host/powercap:ro' with "
        f"{ROOT_ENV_VAR}=/host/powercap (the entries of /sys/class/powercap are symlinks into it, and the "
        "runtime masks it), with the host files made readable as in (a) or (b). Opening the counters to all "
        "users re-opens the power side channel the CVE is about; on a shared machine prefer a group "
        "(chgrp + chmod g+r). Until then CPU and RAM energy are estimated."
    )


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone as found on disk."""

    zone_id: str
    provider: str
    path: str
    name: str
    kind: Kind
    parent_id: str | None
    max_energy_range_uj: int | None

    @property
    def provider_rank(self) -> int:
        return PROVIDERS.index(self.provider)

    @property
    def index(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.zone_id.split(":")[1:])

    def energy_path(self) -> str:
        return os.path.join(self.path, "energy_uj")

    def describe(self) -> dict[str, Any]:
        return {
            "zone": self.zone_id,
            "name": self.name,
            "kind": self.kind,
            "max_energy_range_uj": self.max_energy_range_uj,
        }


def _classify(name: str, is_subzone: bool) -> Kind:
    if name.startswith("package") and not is_subzone:
        return "package"
    if name in ("dram", "psys", "core", "uncore"):
        return name  # type: ignore[return-value]
    return "other"


def _read_int(path: str) -> int:
    return int(_read_file(path).strip())


def discover_zones(root: str | os.PathLike[str]) -> list[RaplZone]:
    """Every RAPL zone under ``root``, flat (``/sys/class/powercap``) or nested (``/sys/devices/virtual/powercap``).

    Only directories named like a provider or a zone are entered (sysfs has ``subsystem`` links that loop).
    A missing root gives ``[]``. Names and ranges that cannot be read give ``"?"`` and ``None``.
    """
    found: dict[str, str] = {}

    def walk(folder: str, depth: int) -> None:
        if depth > 4:
            return
        try:
            entries = sorted(os.listdir(folder))
        except OSError:
            return
        for entry in entries:
            path = os.path.join(folder, entry)
            if _ZONE_RE.match(entry):
                found.setdefault(entry, path)
                walk(path, depth + 1)
            elif entry in PROVIDERS:
                walk(path, depth + 1)

    walk(os.fspath(root), 0)
    zones: list[RaplZone] = []
    for zone_id, path in found.items():
        match = _ZONE_RE.match(zone_id)
        assert match is not None
        provider, top, rest = match.group(1), match.group(2), match.group(3)
        is_subzone = bool(rest)
        try:
            name = _read_file(os.path.join(path, "name")).strip()
        except (OSError, UnicodeError):
            name = "?"
        try:
            max_range: int | None = _read_int(os.path.join(path, "max_energy_range_uj"))
        except (OSError, ValueError):
            max_range = None
        kind: Kind = _classify(name, is_subzone) if rest.count(":") <= 1 else "other"
        parent = f"{provider}:{top}" if is_subzone else None
        zones.append(RaplZone(zone_id, provider, path, name, kind, parent, max_range))
    zones.sort(key=lambda z: (z.provider_rank, z.index))
    return zones


def counter_delta_uj(previous_uj: int, current_uj: int, max_energy_range_uj: int | None) -> int | None:
    """Energy between two reads of a wrapping counter, in µJ; ``None`` if it went back and the range is unknown.

    A current value below the previous one means the counter passed ``max_energy_range_uj`` once:
    ``delta = current - previous + max_energy_range_uj``.
    """
    delta = current_uj - previous_uj
    if delta >= 0:
        return delta
    if not max_energy_range_uj:
        return None
    return delta + max_energy_range_uj


def default_guard_period_s(
    max_ranges_uj: Iterable[int | None], sizing_power_w: float = GUARD_SIZING_POWER_W
) -> float:
    """How often the guard reads: a quarter of the shortest wrap time at ``sizing_power_w``, within [1 s, 60 s].

    Wrap time = ``max_energy_range_uj × 1e-6 / power``: e.g. 262.1 kJ at 1 kW wraps in 262 s (guard 60 s);
    65.5 kJ (AMD) in 65.5 s (guard 16.4 s).
    """
    wraps = [r * 1e-6 / sizing_power_w for r in max_ranges_uj if r]
    if not wraps:
        return MAX_GUARD_PERIOD_S
    return min(MAX_GUARD_PERIOD_S, max(MIN_GUARD_PERIOD_S, min(wraps) / 4.0))


class Ticker:
    """A daemon thread that calls ``action`` every ``period_s`` seconds until :meth:`stop`.

    An exception from ``action`` stops nothing: it is kept in :attr:`error` for the owner to report (or to
    re-raise in strict mode).
    """

    def __init__(self, action: Callable[[], None], period_s: float, name: str) -> None:
        if not period_s > 0:
            raise ValueError(f"a ticker period must be > 0 s, got {period_s!r}")
        self._action = action
        self.period_s = float(period_s)
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._action()
            except Exception as err:  # kept for the owner; the thread goes on
                if self.error is None:
                    self.error = err

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


@dataclass
class _Counter:
    """Running state of one counted zone."""

    zone: RaplZone
    last_uj: int
    last_s: float
    total_j: float = 0.0
    wraps: int = 0
    discarded_j: float = 0.0
    discarded: int = 0
    lost: str = ""
    last_discard: str = ""


@dataclass
class _Plan:
    counted: dict[str, list[RaplZone]] = field(default_factory=lambda: {"package": [], "dram": []})
    mirrors: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    denied: list[str] = field(default_factory=list)
    denied_kinds: list[str] = field(default_factory=list)
    first_uj: dict[str, int] = field(default_factory=dict)


def _mirror_key(zone: RaplZone, names: dict[str, str]) -> tuple[str, str]:
    """(exact key, die-stripped key): ``package-0`` / ``package-0``; ``package-0-die-1/dram`` / ``package-0/dram``."""
    exact = zone.name if zone.parent_id is None else f"{names.get(zone.parent_id, '?')}/{zone.name}"
    stripped = "/".join(_DIE_RE.sub(r"\1", part) for part in exact.split("/"))
    return exact, stripped


def _plan(zones: Sequence[RaplZone]) -> _Plan:
    plan = _Plan()
    names = {z.zone_id: z.name for z in zones}
    candidates = [z for z in zones if z.kind in ("package", "dram")]
    for zone in zones:
        if zone.kind not in ("package", "dram"):
            why = {
                "psys": "platform zone: overlaps the packages, never summed with them",
                "core": "inside its package: already in the package total",
                "uncore": "inside its package: already in the package total",
            }.get(zone.kind, "not a package or dram zone")
            plan.ignored.append({**zone.describe(), "why": why})

    # Readability, and MIRROR_READ_ROUNDS back-to-back rounds of values for the die-mirror test.
    rounds: list[dict[str, int]] = []
    failed: dict[str, str] = {}
    for _ in range(MIRROR_READ_ROUNDS):
        values: dict[str, int] = {}
        for zone in candidates:
            if zone.zone_id in failed:
                continue
            try:
                values[zone.zone_id] = _read_int(zone.energy_path())
            except PermissionError as err:
                failed[zone.zone_id] = f"permission denied ({err.strerror or err})"
                plan.denied.append(zone.zone_id)
            except (OSError, ValueError) as err:
                failed[zone.zone_id] = f"unreadable ({type(err).__name__}: {err})"
        rounds.append(values)
    plan.first_uj = dict(rounds[0])

    for kind in ("package", "dram"):
        kept: list[tuple[RaplZone, str, str]] = []
        of_kind = [z for z in candidates if z.kind == kind]
        readable = [z for z in of_kind if z.zone_id not in failed]
        for zone in readable:
            exact, stripped = _mirror_key(zone, names)
            twin = None
            rule = ""
            for other, o_exact, o_stripped in kept:
                if o_exact == exact:
                    twin, rule = other, "same name"
                    break
                if o_stripped == stripped and any(
                    r.get(other.zone_id) is not None and r.get(other.zone_id) == r.get(zone.zone_id) for r in rounds
                ):
                    twin, rule = other, "die counter identical to a sibling die"
                    break
            if twin is None:
                kept.append((zone, exact, stripped))
            else:
                plan.mirrors.append({**zone.describe(), "mirror_of": twin.zone_id, "rule": rule})
        kept_exact = {exact for _, exact, _ in kept}
        missing = [
            f"{z.zone_id} ({z.name}): {failed[z.zone_id]}"
            for z in of_kind
            if z.zone_id in failed and _mirror_key(z, names)[0] not in kept_exact
        ]
        if not of_kind:
            plan.reasons[kind] = f"no RAPL {kind} zone found"
        elif missing:
            plan.reasons[kind] = "RAPL zone(s) " + "; ".join(missing)
            if any(z.zone_id in plan.denied for z in of_kind):
                plan.denied_kinds.append(kind)
        else:
            plan.counted[kind] = [z for z, _, _ in kept]
    return plan


class RaplReader:
    """The RAPL counters of one machine, accumulated with wrap correction; shared by the CPU and RAM sensors.

    Args:
        root: powercap root; ``None`` = ``$GREEN_CALLBACKS_RAPL_ROOT`` or ``/sys/class/powercap``.
        guard: run the background guard thread while a sensor is started. Off in tests, which call
            :meth:`poll` by hand (the thread does nothing else).
        guard_period_s: the guard's period; ``None`` = :func:`default_guard_period_s` of the counted zones.
        absurd_power_w: deltas implying more than this many watts in one zone are discarded with a note.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        guard: bool = True,
        guard_period_s: float | None = None,
        absurd_power_w: float = ABSURD_POWER_W,
    ) -> None:
        if not absurd_power_w > 0:
            raise ValueError(f"absurd_power_w must be a positive number of watts, got {absurd_power_w!r}")
        self.root = resolve_root(root)
        self.zones = discover_zones(self.root)
        self._plan = _plan(self.zones)
        self.absurd_power_w = float(absurd_power_w)
        self._lock = threading.Lock()
        now = clock.now_s()
        self._counters: dict[str, list[_Counter]] = {
            kind: [_Counter(z, self._plan.first_uj[z.zone_id], now) for z in zones]
            for kind, zones in self._plan.counted.items()
        }
        ranges = [c.zone.max_energy_range_uj for cs in self._counters.values() for c in cs]
        self.guard_period_s = (
            float(guard_period_s) if guard_period_s is not None else default_guard_period_s(ranges)
        )
        self._guard_enabled = guard
        self._ticker: Ticker | None = None
        self._users = 0
        self._notes: list[str] = []

    # -- what is there ------------------------------------------------------------------------------------------

    def available(self, kind: str) -> bool:
        """Whether ``kind`` (``"package"`` or ``"dram"``) can be measured: found, readable, at least one zone."""
        return bool(self._plan.counted.get(kind))

    def reason(self, kind: str) -> str:
        """Why ``kind`` is not available (``""`` when it is)."""
        if self.available(kind):
            return ""
        return self._plan.reasons.get(kind, f"no RAPL {kind} zone under {self.root}")

    @property
    def permission_denied(self) -> bool:
        """Whether a kind is unavailable because a counter could not be read for lack of permission."""
        return bool(self._plan.denied_kinds)

    # -- reading ------------------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Read every counted zone once and add the wrap-corrected deltas. Called by the guard and by ``read()``."""
        with self._lock:
            now = clock.now_s()
            for counters in self._counters.values():
                for counter in counters:
                    self._advance(counter, now)

    def _advance(self, counter: _Counter, now: float) -> None:
        if counter.lost:
            return
        zone = counter.zone
        try:
            raw = _read_int(zone.energy_path())
        except (OSError, ValueError) as err:
            counter.lost = (
                f"RAPL zone {zone.zone_id} ({zone.name}) could not be read any more ({type(err).__name__}: "
                f"{err}); its energy is unavailable from now on"
            )
            return
        delta_uj = counter_delta_uj(counter.last_uj, raw, zone.max_energy_range_uj)
        elapsed_s = max(now - counter.last_s, 0.0)
        if delta_uj is None:
            self._discard(counter, 0.0, f"{zone.zone_id} went back from {counter.last_uj} to {raw} µJ and its "
                          "max_energy_range_uj is unknown")
        else:
            if raw < counter.last_uj:
                counter.wraps += 1
            delta_j = delta_uj * 1e-6
            limit_j = self.absurd_power_w * max(elapsed_s, PLAUSIBILITY_FLOOR_S)
            if delta_j > limit_j:
                self._discard(
                    counter,
                    delta_j,
                    f"{zone.zone_id} ({zone.name}) jumped by {delta_j:.1f} J in {elapsed_s:.3g} s (more than "
                    f"{self.absurd_power_w:g} W): a counter reset or a bad read, not counted",
                )
            else:
                counter.total_j += delta_j
        counter.last_uj = raw
        counter.last_s = now

    def _discard(self, counter: _Counter, energy_j: float, note: str) -> None:
        counter.discarded += 1
        counter.discarded_j += energy_j
        counter.last_discard = note
        if len(self._notes) < 20:
            self._notes.append(note)

    def total_j(self, kind: str) -> tuple[float | None, str]:
        """Joules counted in ``kind`` since this reader was made (``None`` if unavailable), and a note."""
        with self._lock:
            counters = self._counters.get(kind, [])
            if not counters:
                return None, self.reason(kind)
            lost = [c.lost for c in counters if c.lost]
            if lost:
                return None, "; ".join(lost)
            notes = []
            discarded = sum(c.discarded for c in counters)
            if discarded:
                last = next(c.last_discard for c in reversed(counters) if c.discarded)
                notes.append(f"{discarded} implausible RAPL delta(s) discarded, the last: {last}")
            if self._ticker is not None and self._ticker.error is not None:
                if strict_mode():
                    raise self._ticker.error
                notes.append(f"RAPL guard thread error: {self._ticker.error!r}")
            return sum(c.total_j for c in counters), "; ".join(notes)

    def discarded(self, kind: str) -> int:
        """How many implausible deltas of ``kind`` were left out so far (a window spanning one is unknown)."""
        with self._lock:
            return sum(c.discarded for c in self._counters.get(kind, []))

    # -- guard thread -------------------------------------------------------------------------------------------

    def acquire(self) -> None:
        """A sensor starts: the first one starts the guard thread."""
        with self._lock:
            self._users += 1
            if self._users == 1 and self._guard_enabled and any(self._counters.values()):
                self._ticker = Ticker(self.poll, self.guard_period_s, name="green-callbacks-rapl-guard")
                self._ticker.start()

    def release(self) -> None:
        """A sensor closes: the last one stops the guard thread."""
        ticker = None
        with self._lock:
            self._users = max(self._users - 1, 0)
            if self._users == 0:
                ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop()
            if ticker.error is not None and strict_mode():
                raise ticker.error

    @property
    def guard_running(self) -> bool:
        return self._ticker is not None and self._ticker.alive

    def info(self) -> dict[str, Any]:
        with self._lock:
            counted = {
                kind: [
                    {**c.zone.describe(), "wraps": c.wraps, "discarded": c.discarded, "lost": c.lost or None}
                    for c in counters
                ]
                for kind, counters in self._counters.items()
            }
            return {
                "root": self.root,
                "counted": counted,
                "mirrors_not_counted": list(self._plan.mirrors),
                "ignored": list(self._plan.ignored),
                "unavailable": dict(self._plan.reasons),
                "guard_period_s": self.guard_period_s if self._guard_enabled else None,
                "absurd_power_w": self.absurd_power_w,
                "notes": list(self._notes),
            }


class _RaplSensor:
    """A component read from one kind of RAPL zone of a shared :class:`RaplReader`."""

    component: Component
    kind: str
    scope = "node"
    method = METHOD

    def __init__(self, reader: RaplReader) -> None:
        self.reader = reader
        self._base_j: float | None = None
        self._started = False

    def start(self) -> None:
        if not self._started:
            self.reader.acquire()
            self._started = True
        self.reader.poll()
        self._base_j, _ = self.reader.total_j(self.kind)

    def read(self) -> Reading:
        if not self._started:
            self.start()
        self.reader.poll()
        total, note = self.reader.total_j(self.kind)
        if total is None or self._base_j is None:
            return Reading(None, UNAVAILABLE, note or f"RAPL {self.kind} energy unavailable")
        return Reading(total - self._base_j, METHOD, note, gaps=self.reader.discarded(self.kind))

    def close(self) -> None:
        if self._started:
            self._started = False
            self.reader.release()

    def info(self) -> dict[str, Any]:
        info = self.reader.info()
        return {
            "method": METHOD if self.reader.available(self.kind) else UNAVAILABLE,
            "zones": info["counted"].get(self.kind, []),
            "reason": self.reader.reason(self.kind) or None,
            **{k: v for k, v in info.items() if k != "counted"},
        }


class RaplCpuSensor(_RaplSensor):
    """CPU energy: the sum of the RAPL package zones (cores, caches, uncore; the whole machine's sockets)."""

    component: Component = "cpu"
    kind = "package"


class RaplRamSensor(_RaplSensor):
    """RAM energy: the sum of the RAPL ``dram`` zones (where the platform exposes them; AMD does not)."""

    component: Component = "ram"
    kind = "dram"

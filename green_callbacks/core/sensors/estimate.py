"""Labelled estimates of CPU and RAM energy for when RAPL cannot be read.

- CPU (``"estimate-cpu-tdp"``): where the CPU model is in the packaged TDP table (CodeCarbon's ``cpu_power.csv``,
  MIT; matched by :mod:`green_callbacks.core.sensors.cpu_tdp`) and the machine is not a virtual machine: CPU
  seconds of this process tree × TDP / logical CPUs of the package, i.e. the package's TDP × this process's share
  of its thread time.
- CPU (``"estimate-cpu-time"``, the fallback): CPU seconds used by this process and its children × watts per core.
- RAM (``"estimate-rss"``): ∫ resident memory (GB) × watts per GB dt, by the trapezoid rule over samples.

Both use Green Algorithms' reference values (Lannelongue, Grealey & Inouye, "Green Algorithms: Quantifying the
Carbon Footprint of Computation", Adv. Sci. 2021, doi:10.1002/advs.202100707): 12.0 W per core for an unknown
CPU ("Any" in ``TDP_cpu.csv``) and 0.3725 W per GB of memory (``referenceValues.csv``). Both have scope
``"process"``: they cover this process tree, not the machine. See ``docs/cpu-and-ram.md`` for the limits.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import Any

import psutil

try:
    import resource
except ImportError:  # Windows: psutil reads this process's times too
    resource = None  # type: ignore[assignment]

from green_callbacks.core import clock
from green_callbacks.core.sensors.base import UNAVAILABLE, Component, Reading, boundary_cache
from green_callbacks.core.sensors.cpu_tdp import CpuMatch
from green_callbacks.core.sensors.rapl import Ticker

__all__ = [
    "BYTES_PER_GB",
    "CPU_METHOD",
    "CPU_TDP_METHOD",
    "CPU_WATTS_SOURCE",
    "DEFAULT_CPU_WATTS_PER_CORE",
    "DEFAULT_RAM_WATTS_PER_GB",
    "DEFAULT_RSS_SAMPLE_PERIOD_S",
    "RAM_METHOD",
    "RAM_WATTS_SOURCE",
    "CpuTdpEstimateSensor",
    "CpuTimeEstimateSensor",
    "RssEstimateSensor",
    "cpu_energy_j",
    "process_tree_cpu_seconds",
    "process_tree_rss_bytes",
    "trapezoid_energy_j",
    "validate_watts",
]

CPU_METHOD = "estimate-cpu-time"
CPU_TDP_METHOD = "estimate-cpu-tdp"
RAM_METHOD = "estimate-rss"
DEFAULT_CPU_WATTS_PER_CORE = 12.0
DEFAULT_RAM_WATTS_PER_GB = 0.3725
_GREEN_ALGORITHMS = (
    "Green Algorithms (Lannelongue, Grealey & Inouye, Adv. Sci. 2021, doi:10.1002/advs.202100707)"
)
CPU_WATTS_SOURCE = f"{_GREEN_ALGORITHMS}: 12.0 W per core for an unknown CPU ('Any', data/TDP_cpu.csv)"
RAM_WATTS_SOURCE = f"{_GREEN_ALGORITHMS}: 0.3725 W per GB of memory (data/referenceValues.csv)"
#: A memory "GB" here is a DIMM gigabyte, 2**30 bytes (an "8 GB" DIMM holds 8 GiB).
BYTES_PER_GB = float(2**30)
DEFAULT_RSS_SAMPLE_PERIOD_S = 10.0

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def validate_watts(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number ≥ 0, else a ``ValueError`` saying what is allowed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number of watts ≥ 0, got {value!r} ({type(value).__name__})")
    number = float(value)
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise ValueError(
            f"{name} must be a finite number of watts ≥ 0, got {value!r}; pass e.g. {name}=12.0, or leave it "
            "unset for the Green Algorithms default"
        )
    return number


def cpu_energy_j(cpu_seconds: float, watts_per_core: float) -> float:
    """Joules of ``cpu_seconds`` core-seconds at ``watts_per_core``: ``s × W``."""
    return float(cpu_seconds) * float(watts_per_core)


def trapezoid_energy_j(t0_s: float, rss0_bytes: float, t1_s: float, rss1_bytes: float, watts_per_gb: float) -> float:
    """Joules between two RSS samples: ``(t1 − t0) × (rss0 + rss1) / 2 / 2**30 × W/GB``."""
    return max(t1_s - t0_s, 0.0) * (rss0_bytes + rss1_bytes) / 2.0 / BYTES_PER_GB * watts_per_gb


def _tree(process: psutil.Process, include_children: bool) -> list[psutil.Process]:
    """The process and its descendants. Within one meter read (one epoch boundary) the CPU and RAM estimates share
    one listing through the read's shared cache; the ``Process`` objects are kept between reads (cheap re-reads)."""
    if not include_children:
        return [process]
    shared = boundary_cache()
    key = ("process-tree", process.pid)
    if shared is not None and key in shared:
        return shared[key]
    try:
        kids = _descendants(process)
        tree = [process, *(_known(k) if isinstance(k, int) else k for k in kids)]
    except _GONE:
        return [process]
    if shared is not None:
        shared[key] = tree
    return tree


_PROCESSES: dict[int, psutil.Process] = {}
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _known(pid: int) -> psutil.Process:
    """One ``Process`` per pid, kept (psutil checks its creation time, so a reused pid gets a new one)."""
    proc = _PROCESSES.get(pid)
    if proc is None or not proc.is_running():
        proc = _PROCESSES[pid] = psutil.Process(pid)
        if len(_PROCESSES) > 4096:
            _PROCESSES.clear()
    return proc


def _descendants(process: psutil.Process) -> list[Any]:
    """The live descendants (pids, or ``Process`` objects from psutil's listing); none, without listing anything,
    when this process has no child at all (one system call; the common case of a loop without DataLoader
    workers). On Linux, from ``/proc/<pid>/task/<tid>/children`` (a listing of the threads and a small file each:
    ~50 us in a tight loop, a few hundred at an epoch boundary); else psutil's listing, which reads every process of
    the machine (~1 ms, more on a busy machine)."""
    real = type(process).__module__.split(".")[0] == "psutil"
    if real and process.pid == os.getpid() and not _has_children():
        return []
    if not _PROC_CHILDREN or not real:
        return list(process.children(recursive=True))
    found: list[int] = []
    stack = [process.pid]
    try:
        while stack:
            pid = stack.pop()
            for task in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                        kids = [int(k) for k in handle.read().split()]
                except (FileNotFoundError, ProcessLookupError):
                    continue  # the thread or process ended meanwhile
                found.extend(kids)
                stack.extend(kids)
        return found
    except (OSError, ValueError):  # no /proc, or a kernel without CONFIG_PROC_CHILDREN
        return list(process.children(recursive=True))


def _has_children() -> bool:
    """Whether this process (any of its threads) has a child, running or exited and not yet waited for: ``waitid``
    with ``WNOHANG | WNOWAIT`` answers without waiting and without reaping (a zombie stays for its parent to wait
    for). True where the call is missing or fails: the tree is then listed."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):  # no waitid here (Windows), or a refusal: list the tree
        return True
    return True


def process_tree_cpu_seconds(pid: int | None = None, include_children: bool = True) -> float:
    """CPU seconds (user + system) of a process and, by default, of its children.

    With children: the sum, over the process and its live descendants, of ``user + system + children_user +
    children_system``. ``children_*`` hold the time of descendants that have exited and been waited for, so
    each finished process is counted once, in the nearest live ancestor that reaped it; live ones are counted
    by themselves. Processes that vanish between listing and reading are skipped (the sensor keeps the total
    monotonic).
    """
    root = _root(pid)
    total = 0.0
    for proc in _tree(root, include_children):
        if proc is root and resource is not None and type(proc) is psutil.Process and proc.pid == os.getpid():
            total += _own_cpu_seconds(include_children)  # no file to read, and finer than /proc's 10 ms ticks
            continue
        try:
            times = proc.cpu_times()
        except _GONE:
            continue
        total += times.user + times.system
        if include_children:
            total += times.children_user + times.children_system
    return total


def _own_cpu_seconds(include_reaped: bool) -> float:
    """User + system seconds of this process (all its threads) and, with ``include_reaped``, of the descendants it
    has waited for: what ``/proc/self/stat`` holds, from ``getrusage`` (microseconds, no file read)."""
    own = resource.getrusage(resource.RUSAGE_SELF)  # type: ignore[union-attr]
    total = own.ru_utime + own.ru_stime
    if include_reaped:
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # type: ignore[union-attr]
        total += reaped.ru_utime + reaped.ru_stime
    return total


_SELF: list[psutil.Process] = []


def _root(pid: int | None) -> psutil.Process:
    """``psutil.Process`` of ``pid`` (default: this process, whose object is kept: no creation time to re-read)."""
    if pid is not None and pid != os.getpid():
        return psutil.Process(pid)
    # anew after a fork (another pid), and when the kept object is not of the current psutil.Process class
    if not _SELF or _SELF[0].pid != os.getpid() or type(_SELF[0]) is not psutil.Process:
        _SELF[:] = [psutil.Process(os.getpid())]
    return _SELF[0]


def process_tree_rss_bytes(pid: int | None = None, include_children: bool = True) -> float:
    """Resident set size of a process and, by default, of its live descendants (pages shared between them are
    counted in each: an over-estimate for forked DataLoader workers)."""
    root = _root(pid)
    total = 0
    for proc in _tree(root, include_children):
        try:
            total += proc.memory_info().rss
        except _GONE:
            continue
    return float(total)


class CpuTimeEstimateSensor:
    """CPU energy estimated as CPU seconds × watts per core (``"estimate-cpu-time"``, scope ``"process"``).

    Args:
        watts_per_core: power of one fully busy core; default 12.0 W (Green Algorithms).
        include_children: count child processes (DataLoader workers, the command run by ``green-callbacks
            measure``); default ``True``.
        cpu_seconds: the source of cumulative CPU seconds; default :func:`process_tree_cpu_seconds` of this
            process. Tests pass a fake here.
        reason: why RAPL was not used, for ``info()``.
    """

    component: Component = "cpu"
    scope = "process"
    method = CPU_METHOD

    def __init__(
        self,
        watts_per_core: float | None = None,
        *,
        include_children: bool = True,
        cpu_seconds: Callable[[], float] | None = None,
        reason: str = "",
    ) -> None:
        self.watts_per_core = (
            DEFAULT_CPU_WATTS_PER_CORE
            if watts_per_core is None
            else validate_watts(watts_per_core, "cpu_watts_per_core")
        )
        self.include_children = include_children
        self._source = cpu_seconds or (lambda: process_tree_cpu_seconds(include_children=include_children))
        self.reason = reason
        self.tdp_reason = ""  # why the per-model TDP estimate was not used (set by build_host_sensors)
        self._base_s: float | None = None
        self._last_s = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._base_s = self._source()
            self._last_s = self._base_s

    def read(self) -> Reading:
        if self._base_s is None:
            self.start()
        try:
            now_s = self._source()
        except Exception as err:  # psutil failing on our own process: report, never raise
            return Reading(None, UNAVAILABLE, f"CPU time could not be read ({type(err).__name__}: {err})")
        with self._lock:
            assert self._base_s is not None
            # Monotonic: a child that exited but is not yet reaped can vanish from the sum for a moment.
            self._last_s = max(self._last_s, now_s)
            used_s = self._last_s - self._base_s
        return Reading(cpu_energy_j(used_s, self.watts_per_core), self.method, self._note())

    def _note(self) -> str:
        why = f"; RAPL not used: {self.reason}" if self.reason else ""
        tdp = f"; per-model TDP not used: {self.tdp_reason}" if self.tdp_reason else ""
        return f"estimate: CPU seconds × {self.watts_per_core:g} W per core{why}{tdp}"

    def close(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        default = self.watts_per_core == DEFAULT_CPU_WATTS_PER_CORE
        return {
            "method": CPU_METHOD,
            "formula": "energy_j = cpu_seconds (user+system) × cpu_watts_per_core",
            "cpu_watts_per_core": self.watts_per_core,
            "source": CPU_WATTS_SOURCE if default else "user-provided cpu_watts_per_core",
            "includes_children": self.include_children,
            "rapl_not_used_because": self.reason or None,
            "tdp_not_used_because": self.tdp_reason or None,
        }


class CpuTdpEstimateSensor(CpuTimeEstimateSensor):
    """CPU energy estimated from the CPU model's TDP (``"estimate-cpu-tdp"``, scope ``"process"``):
    ``energy_j = cpu_seconds × tdp_w / threads_per_package``.

    TDP is the package's rated sustained power with all its logical CPUs busy; a process that keeps ``k`` of the
    package's ``n`` logical CPUs busy is charged ``k/n`` of it. Idle power of the package is not charged (it
    belongs to no process). Published error of TDP-based estimates: −60 % to +190 % against RAPL in CodeCarbon's
    own comparison (docs/cpu-and-ram.md).

    Args:
        match: the table row of this CPU (:func:`green_callbacks.core.sensors.cpu_tdp.match_cpu_model`).
        threads_per_package: logical CPUs of one package (``siblings`` in ``/proc/cpuinfo``).
        include_children, cpu_seconds, reason: as :class:`CpuTimeEstimateSensor`.
    """

    method = CPU_TDP_METHOD

    def __init__(
        self,
        match: CpuMatch,
        threads_per_package: int,
        *,
        include_children: bool = True,
        cpu_seconds: Callable[[], float] | None = None,
        reason: str = "",
    ) -> None:
        if not (isinstance(threads_per_package, int) and threads_per_package > 0):
            raise ValueError(f"threads_per_package must be a positive integer, got {threads_per_package!r}")
        self.match = match
        self.threads_per_package = threads_per_package
        super().__init__(validate_watts(match.tdp_w / threads_per_package, "TDP per thread"),
                         include_children=include_children, cpu_seconds=cpu_seconds, reason=reason)

    def _note(self) -> str:
        why = f"; RAPL not used: {self.reason}" if self.reason else ""
        return (f"estimate: CPU seconds × {self.match.tdp_w:g} W TDP ({self.match.row_name}) / "
                f"{self.threads_per_package} logical CPUs{why}")

    def info(self) -> dict[str, Any]:
        return {
            "method": CPU_TDP_METHOD,
            "formula": "energy_j = cpu_seconds (user+system) × tdp_w / threads_per_package",
            "cpu_model": self.match.query,
            "matched_row": self.match.row_name,
            "match": self.match.how,
            "tdp_w": self.match.tdp_w,
            "threads_per_package": self.threads_per_package,
            "watts_per_busy_thread": self.watts_per_core,
            "source": self.match.source,
            "includes_children": self.include_children,
            "rapl_not_used_because": self.reason or None,
        }


class RssEstimateSensor:
    """RAM energy estimated as ∫ RSS × watts per GB dt (``"estimate-rss"``, scope ``"process"``).

    RSS is sampled at ``start()``, at every ``read()`` and, when ``sample_period_s`` is set, by a light
    background thread (default every 10 s), so that an epoch whose memory grows is not integrated from its two
    ends only. Between samples the trapezoid rule assumes a straight line.

    Args:
        watts_per_gb: default 0.3725 W per GB (Green Algorithms); a GB is 2**30 bytes.
        include_children: add the RSS of child processes; default ``True``.
        rss_bytes: the source of the current RSS; default :func:`process_tree_rss_bytes`. Tests pass a fake.
        sample_period_s: the background sampler's period; ``None`` = sample at reads only.
        reason: why RAPL dram was not used, for ``info()``.
    """

    component: Component = "ram"
    scope = "process"
    method = RAM_METHOD

    def __init__(
        self,
        watts_per_gb: float | None = None,
        *,
        include_children: bool = True,
        rss_bytes: Callable[[], float] | None = None,
        sample_period_s: float | None = DEFAULT_RSS_SAMPLE_PERIOD_S,
        reason: str = "",
    ) -> None:
        self.watts_per_gb = (
            DEFAULT_RAM_WATTS_PER_GB if watts_per_gb is None else validate_watts(watts_per_gb, "ram_watts_per_gb")
        )
        if sample_period_s is not None and not (math.isfinite(sample_period_s) and sample_period_s > 0):
            raise ValueError(f"sample_period_s must be a positive number of seconds or None, got {sample_period_s!r}")
        self.include_children = include_children
        self.sample_period_s = sample_period_s
        self._source = rss_bytes or (lambda: process_tree_rss_bytes(include_children=include_children))
        self.reason = reason
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None
        self._energy_j = 0.0
        self._samples = 0
        self._peak_bytes = 0.0
        self._ticker: Ticker | None = None
        self._error = ""

    def start(self) -> None:
        with self._lock:
            self._energy_j = 0.0
            self._samples = 0
            self._last = None
        self.sample()
        if self.sample_period_s is not None and self._ticker is None:
            self._ticker = Ticker(self.sample, self.sample_period_s, name="green-callbacks-rss-sampler")
            self._ticker.start()

    def sample(self) -> None:
        """Take one RSS sample and integrate since the previous one. Called by reads and by the sampler."""
        try:
            rss = float(self._source())
        except Exception as err:  # psutil failing on our own process: report, never raise
            self._error = f"RSS could not be read ({type(err).__name__}: {err})"
            return
        self._error = ""
        with self._lock:
            now = clock.now_s()
            if self._last is not None:
                t0, rss0 = self._last
                self._energy_j += trapezoid_energy_j(t0, rss0, now, rss, self.watts_per_gb)
            self._last = (now, rss)
            self._samples += 1
            self._peak_bytes = max(self._peak_bytes, rss)

    def read(self) -> Reading:
        if self._last is None:
            self.start()
        self.sample()
        with self._lock:
            if self._last is None:
                return Reading(None, UNAVAILABLE, self._error or "RSS could not be read")
            energy = self._energy_j
        why = f"; RAPL dram not used: {self.reason}" if self.reason else ""
        stale = f"; {self._error}, integrated up to the last sample" if self._error else ""
        return Reading(energy, RAM_METHOD, f"estimate: ∫ RSS × {self.watts_per_gb:g} W/GB dt{why}{stale}")

    def close(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop()

    def info(self) -> dict[str, Any]:
        default = self.watts_per_gb == DEFAULT_RAM_WATTS_PER_GB
        return {
            "method": RAM_METHOD,
            "formula": "energy_j = ∫ rss_bytes(t) / 2**30 × ram_watts_per_gb dt (trapezoid over samples)",
            "ram_watts_per_gb": self.watts_per_gb,
            "source": RAM_WATTS_SOURCE if default else "user-provided ram_watts_per_gb",
            "includes_children": self.include_children,
            "sample_period_s": self.sample_period_s,
            "samples": self._samples,
            "peak_rss_bytes": self._peak_bytes,
            "rapl_not_used_because": self.reason or None,
        }

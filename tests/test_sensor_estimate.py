"""CPU-time and RSS estimates: hand-computed energies with fake sources and a fake clock, plus real psutil checks."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import namedtuple
from typing import ClassVar

import psutil
import pytest

from green_callbacks.core import clock
from green_callbacks.core.meter import Meter
from green_callbacks.core.sensors import estimate
from green_callbacks.core.sensors.base import Sensor
from green_callbacks.core.sensors.estimate import (
    CpuTimeEstimateSensor,
    RssEstimateSensor,
    process_tree_cpu_seconds,
    process_tree_rss_bytes,
)

GIB = 2**30


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> clock.FakeClock:
    fake = clock.FakeClock(0.0)
    monkeypatch.setattr(clock, "now_s", fake)
    return fake


class Values:
    """A source that returns the next value at each call (the last one from then on)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


# -- CPU ------------------------------------------------------------------------------------------------------------


def test_cpu_estimate_is_cpu_seconds_times_watts_per_core() -> None:
    sensor = CpuTimeEstimateSensor(cpu_seconds=Values(100.0, 103.5, 110.0))
    assert isinstance(sensor, Sensor)
    assert (sensor.component, sensor.scope) == ("cpu", "process")
    sensor.start()
    first = sensor.read()
    assert first.method == "estimate-cpu-time"
    assert first.energy_j == pytest.approx(3.5 * 12.0)  # 42 J
    assert sensor.read().energy_j == pytest.approx(10.0 * 12.0)  # 120 J


def test_cpu_watts_per_core_override() -> None:
    sensor = CpuTimeEstimateSensor(20.0, cpu_seconds=Values(0.0, 2.25))
    sensor.start()
    assert sensor.read().energy_j == pytest.approx(2.25 * 20.0)  # 45 J
    assert sensor.info()["source"] == "user-provided cpu_watts_per_core"


def test_cpu_total_never_goes_back_when_a_child_briefly_vanishes() -> None:
    # 10 s, then a child exits before being reaped (its 3 s vanish), then it is reaped (they come back).
    sensor = CpuTimeEstimateSensor(cpu_seconds=Values(0.0, 10.0, 7.0, 10.5))
    sensor.start()
    assert [sensor.read().energy_j for _ in range(3)] == pytest.approx([120.0, 120.0, 126.0])


def test_cpu_info_names_constant_source_and_reason() -> None:
    sensor = CpuTimeEstimateSensor(cpu_seconds=Values(0.0), reason="no RAPL package zone found")
    info = sensor.info()
    assert info["method"] == "estimate-cpu-time"
    assert info["cpu_watts_per_core"] == 12.0
    assert "Green Algorithms" in info["source"] and "10.1002/advs.202100707" in info["source"]
    assert info["includes_children"] is True
    assert info["rapl_not_used_because"] == "no RAPL package zone found"


Times = namedtuple("Times", "user system children_user children_system iowait")
Mem = namedtuple("Mem", "rss vms")


class FakeProcess:
    """psutil.Process at the boundary: a tree of processes with fixed times and RSS."""

    table: ClassVar[dict[int, FakeProcess]] = {}

    def __init__(self, pid: int, times: Times, rss: int, kids: list[int], gone: bool = False) -> None:
        self.pid, self.times, self.rss, self.kids, self.gone = pid, times, rss, kids, gone
        FakeProcess.table[pid] = self

    def cpu_times(self) -> Times:
        if self.gone:
            raise psutil.NoSuchProcess(self.pid)
        return self.times

    def memory_info(self) -> Mem:
        if self.gone:
            raise psutil.NoSuchProcess(self.pid)
        return Mem(self.rss, 0)

    def children(self, recursive: bool = False) -> list[FakeProcess]:
        out = []
        for kid in self.kids:
            out.append(FakeProcess.table[kid])
            if recursive:
                out.extend(FakeProcess.table[kid].children(recursive=True))
        return out


@pytest.fixture
def fake_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProcess.table = {}
    FakeProcess(1, Times(5.0, 1.0, 2.0, 0.5, 0.0), 100 * 2**20, [2, 3])  # main: reaped children took 2.5 s
    FakeProcess(2, Times(3.0, 0.25, 0.0, 0.0, 0.0), 40 * 2**20, [4])  # DataLoader worker
    FakeProcess(3, Times(9.0, 9.0, 0.0, 0.0, 0.0), 0, [], gone=True)  # exited between listing and reading
    FakeProcess(4, Times(0.5, 0.0, 1.0, 0.0, 0.0), 10 * 2**20, [])  # grandchild with a reaped child
    monkeypatch.setattr(estimate.psutil, "Process", lambda pid=None: FakeProcess.table[1])


def test_process_tree_cpu_seconds_sums_live_tree_and_reaped_children(fake_tree) -> None:
    # main 5 + 1 + 2 + 0.5 = 8.5; worker 3 + 0.25 = 3.25; gone: skipped; grandchild 0.5 + 1.0 = 1.5 -> 13.25 s
    assert process_tree_cpu_seconds() == pytest.approx(13.25)
    # without children: main's own user + system only
    assert process_tree_cpu_seconds(include_children=False) == pytest.approx(6.0)


def test_process_tree_rss_sums_live_processes(fake_tree) -> None:
    assert process_tree_rss_bytes() == (100 + 40 + 10) * 2**20
    assert process_tree_rss_bytes(include_children=False) == 100 * 2**20


def test_real_child_process_cpu_time_is_counted() -> None:
    sensor = CpuTimeEstimateSensor()
    sensor.start()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    subprocess.run([sys.executable, "-c", burn], check=True)  # waited for: lands in children_user
    energy = sensor.read().energy_j
    assert energy is not None and energy >= 0.3 * 12.0 * 0.9  # ≥ 0.3 s of child CPU at 12 W (10 % slack)


def test_real_rss_includes_a_live_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 5.0
        while psutil.Process(child.pid).memory_info().rss < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        alone = process_tree_rss_bytes(include_children=False)
        with_child = process_tree_rss_bytes()
        assert alone > 0 and with_child > alone
    finally:
        child.kill()
        child.wait()


# -- RAM ------------------------------------------------------------------------------------------------------------


def test_rss_energy_is_the_trapezoid_integral(fake_clock: clock.FakeClock) -> None:
    sensor = RssEstimateSensor(rss_bytes=Values(1 * GIB, 3 * GIB, 3 * GIB, 0.5 * GIB), sample_period_s=None)
    assert (sensor.component, sensor.scope) == ("ram", "process")
    sensor.start()  # t=0: 1 GiB
    fake_clock.advance(10.0)
    first = sensor.read()  # t=10: 3 GiB
    # 10 s × (1 + 3)/2 GB × 0.3725 W/GB = 7.45 J
    assert first.method == "estimate-rss"
    assert first.energy_j == pytest.approx(10 * 2.0 * 0.3725)
    fake_clock.advance(20.0)
    # + 20 s × 3 GB × 0.3725 = 22.35 J -> 29.8 J
    assert sensor.read().energy_j == pytest.approx(7.45 + 22.35)
    fake_clock.advance(4.0)
    # + 4 s × (3 + 0.5)/2 × 0.3725 = 2.6075 J -> 32.4075 J
    assert sensor.read().energy_j == pytest.approx(32.4075)


def test_extra_samples_refine_the_integral(fake_clock: clock.FakeClock) -> None:
    # RSS 1 GiB, jumps to 5 GiB just after start and stays: ends-only trapezoid says 3 GB average.
    ends_only = RssEstimateSensor(2.0, rss_bytes=Values(1 * GIB, 5 * GIB), sample_period_s=None)
    sampled = RssEstimateSensor(2.0, rss_bytes=Values(1 * GIB, 5 * GIB), sample_period_s=None)
    ends_only.start()
    sampled.start()
    fake_clock.advance(1.0)
    sampled.sample()  # what the background sampler does
    fake_clock.advance(99.0)
    # ends only: 100 s × (1 + 5)/2 × 2 W/GB = 600 J
    assert ends_only.read().energy_j == pytest.approx(600.0)
    # sampled: 1 s × 3 × 2 + 99 s × 5 × 2 = 6 + 990 = 996 J
    assert sampled.read().energy_j == pytest.approx(996.0)


def test_background_sampler_runs_and_stops() -> None:
    calls = []

    def rss() -> float:
        calls.append(1)
        return float(GIB)

    sensor = RssEstimateSensor(rss_bytes=rss, sample_period_s=0.01)
    sensor.start()
    deadline = time.monotonic() + 5.0
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(calls) >= 4  # start() took one, the thread the rest
    sensor.close()
    sensor.close()
    settled = len(calls)
    time.sleep(0.05)
    assert len(calls) == settled
    assert sensor.info()["sample_period_s"] == 0.01


def test_rss_info_names_constant_and_source() -> None:
    info = RssEstimateSensor(sample_period_s=None).info()
    assert info["method"] == "estimate-rss"
    assert info["ram_watts_per_gb"] == 0.3725
    assert "Green Algorithms" in info["source"]


def test_estimates_in_a_real_meter_window(fake_clock: clock.FakeClock) -> None:
    cpu = CpuTimeEstimateSensor(10.0, cpu_seconds=Values(50.0, 50.0, 80.0))
    ram = RssEstimateSensor(1.0, rss_bytes=Values(2 * GIB), sample_period_s=None)
    meter = Meter([cpu, ram])
    meter.begin("epoch")
    fake_clock.advance(60.0)
    epoch = meter.end("epoch")
    assert epoch.component_j("cpu") == pytest.approx(30.0 * 10.0)  # 30 CPU-s × 10 W
    assert epoch.component_j("ram") == pytest.approx(60.0 * 2.0 * 1.0)  # 60 s × 2 GB × 1 W/GB
    assert epoch.components["cpu"].method == "estimate-cpu-time"
    assert epoch.components["ram"].method == "estimate-rss"
    meter.close()


# -- validation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf, "12", [12.0], True])
def test_bad_watts_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="cpu_watts_per_core must be a finite number of watts ≥ 0, got"):
        CpuTimeEstimateSensor(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ram_watts_per_gb must be a finite number of watts ≥ 0, got"):
        RssEstimateSensor(bad, sample_period_s=None)  # type: ignore[arg-type]


def test_zero_watts_is_allowed_and_visible() -> None:
    sensor = CpuTimeEstimateSensor(0, cpu_seconds=Values(0.0, 5.0))
    sensor.start()
    assert sensor.read().energy_j == 0.0
    assert sensor.info()["cpu_watts_per_core"] == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_bad_sample_period_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="sample_period_s must be a positive number of seconds or None"):
        RssEstimateSensor(sample_period_s=bad)


def test_one_process_tree_listing_per_meter_read(monkeypatch) -> None:
    """The CPU and RAM estimates share one listing of the process tree at an epoch boundary (it scans /proc)."""

    from green_callbacks.core.meter import Meter
    from green_callbacks.core.sensors import estimate as estimate_module
    from green_callbacks.core.sensors.estimate import CpuTimeEstimateSensor, RssEstimateSensor

    calls = []
    real_descendants = estimate_module._descendants

    def counting_descendants(process):
        calls.append(process.pid)
        return real_descendants(process)

    monkeypatch.setattr(estimate_module, "_descendants", counting_descendants)
    meter = Meter([CpuTimeEstimateSensor(), RssEstimateSensor(sample_period_s=3600.0)])
    meter.start()
    calls.clear()
    meter.read()
    assert len(calls) == 1
    meter.read()
    assert len(calls) == 2  # a new boundary lists again: children born since are seen
    meter.close()


_CHILDREN_SCRIPT = r"""
import os, subprocess, sys, time
import psutil
from green_callbacks.core.sensors import estimate

listed = []
real_listdir = os.listdir
def listdir(path):
    listed.append(path)
    return real_listdir(path)
os.listdir = listdir
me = psutil.Process()

assert estimate._has_children() is False
assert estimate._descendants(me) == [] and listed == [], listed  # no child: nothing listed
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
try:
    assert estimate._has_children() is True
    assert child.pid in estimate._descendants(me)  # a child: the tree is walked and it is found
    assert listed or not estimate._PROC_CHILDREN
finally:
    child.kill()
deadline = time.monotonic() + 10
while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
    time.sleep(0.01)
assert estimate._has_children() is True  # exited, not yet waited for: still a child
assert child.wait(timeout=10) == -9  # the check reaped nothing: the parent still gets the status
listed.clear()
assert estimate._has_children() is False and estimate._descendants(me) == [] and listed == []
print("ok")
"""


def test_a_process_without_children_skips_the_tree_listing_and_reaps_nothing() -> None:
    """In a fresh interpreter (pytest's own process may hold helper children): no child means no ``/proc`` listing;
    a running child and an exited, unwaited one are still found, and the check leaves the exit status to the
    parent."""
    done = subprocess.run([sys.executable, "-c", _CHILDREN_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"

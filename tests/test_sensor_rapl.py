"""RAPL sensors against a fake powercap tree (tests/fakes/powercap.py) and a fake clock."""

from __future__ import annotations

import math
import time
import warnings

import pytest

from green_callbacks.core import clock
from green_callbacks.core.meter import Meter
from green_callbacks.core.sensors import rapl
from green_callbacks.core.sensors.base import Sensor
from green_callbacks.core.sensors.cpu_tdp import CpuInfo
from green_callbacks.core.sensors.estimate import CpuTimeEstimateSensor, RssEstimateSensor
from green_callbacks.core.sensors.host import build_host_sensors
from green_callbacks.core.sensors.rapl import (
    RaplCpuSensor,
    RaplRamSensor,
    RaplReader,
    counter_delta_uj,
    default_guard_period_s,
)
from tests.fakes.powercap import AMD_RANGE_UJ, INTEL_PACKAGE_RANGE_UJ, FakePowercap


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> clock.FakeClock:
    fake = clock.FakeClock(1000.0)
    monkeypatch.setattr(clock, "now_s", fake)
    return fake


@pytest.fixture
def tree(tmp_path, monkeypatch: pytest.MonkeyPatch) -> FakePowercap:
    fake = FakePowercap(tmp_path / "powercap")
    fake.install(monkeypatch)
    monkeypatch.delenv(rapl.ROOT_ENV_VAR, raising=False)
    return fake


def sensors(tree: FakePowercap) -> tuple[RaplReader, RaplCpuSensor, RaplRamSensor]:
    reader = RaplReader(tree.root, guard=False)
    return reader, RaplCpuSensor(reader), RaplRamSensor(reader)


# -- pure pieces --------------------------------------------------------------------------------------------------


def test_counter_delta_without_and_with_one_wrap() -> None:
    assert counter_delta_uj(1_000, 4_500, 10_000) == 3_500
    # 9_000 -> 500 on a 10_000 µJ counter: 1_000 to the top, then 500: 1_500 µJ.
    assert counter_delta_uj(9_000, 500, 10_000) == 1_500
    assert counter_delta_uj(9_000, 500, None) is None


def test_guard_period_is_a_quarter_of_the_shortest_wrap_within_bounds() -> None:
    # AMD: 65_532.610987 J / 1000 W = 65.532610987 s to wrap; a quarter is 16.38315274675 s.
    assert default_guard_period_s([AMD_RANGE_UJ]) == pytest.approx(65.532610987 / 4)
    # Intel: 262.14332885 s / 4 = 65.5 s, capped at 60 s.
    assert default_guard_period_s([INTEL_PACKAGE_RANGE_UJ, None]) == 60.0
    # A tiny (bogus) range does not make a busy loop: at least 1 s.
    assert default_guard_period_s([1_000]) == 1.0
    assert default_guard_period_s([None]) == 60.0


# -- zones and what is summed --------------------------------------------------------------------------------------


def test_rapl_sensors_follow_the_protocol_and_are_node_scoped(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram")
    _, cpu, ram = sensors(tree)
    assert isinstance(cpu, Sensor) and isinstance(ram, Sensor)
    assert (cpu.component, cpu.scope, ram.component, ram.scope) == ("cpu", "node", "ram", "node")


def test_two_sockets_are_summed_and_core_uncore_psys_are_not(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=5_000_000)
    tree.add_zone("intel-rapl:0:0", "core", energy_uj=1_000)
    tree.add_zone("intel-rapl:0:1", "uncore", energy_uj=1_000)
    tree.add_zone("intel-rapl:1", "package-1", energy_uj=7_000_000)
    tree.add_zone("intel-rapl:2", "psys", energy_uj=9_000_000)
    _, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(10.0)
    tree.add_energy("intel-rapl:0", 30.0)
    tree.add_energy("intel-rapl:0:0", 25.0)
    tree.add_energy("intel-rapl:0:1", 2.0)
    tree.add_energy("intel-rapl:1", 12.5)
    tree.add_energy("intel-rapl:2", 80.0)
    reading = cpu.read()
    assert reading.method == "rapl"
    assert reading.energy_j == pytest.approx(30.0 + 12.5)  # packages only
    info = cpu.info()
    assert [z["zone"] for z in info["zones"]] == ["intel-rapl:0", "intel-rapl:1"]
    ignored = {z["zone"]: z["why"] for z in info["ignored"]}
    assert set(ignored) == {"intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:2"}
    assert "never summed" in ignored["intel-rapl:2"]


def test_psys_alone_is_not_cpu_energy(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "psys")
    reader, cpu, _ = sensors(tree)
    assert not reader.available("package")
    reading = cpu.read()
    assert reading.energy_j is None and reading.method == "unavailable"
    assert "no RAPL package zone" in reading.note


def test_dram_zones_are_ram_and_not_cpu(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram", max_energy_range_uj=65_712_999_613)
    tree.add_zone("intel-rapl:1", "package-1")
    tree.add_zone("intel-rapl:1:0", "dram", max_energy_range_uj=65_712_999_613)
    _, cpu, ram = sensors(tree)
    cpu.start()
    ram.start()
    fake_clock.advance(5.0)
    tree.add_energy("intel-rapl:0", 100.0)
    tree.add_energy("intel-rapl:1", 50.0)
    tree.add_energy("intel-rapl:0:0", 5.0)
    tree.add_energy("intel-rapl:1:0", 7.0)
    assert ram.read().energy_j == pytest.approx(5.0 + 7.0)  # both sockets' dram, not one twice
    assert cpu.read().energy_j == pytest.approx(100.0 + 50.0)


def test_no_dram_zone_means_ram_unavailable_from_rapl(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    reader, _, ram = sensors(tree)
    assert not reader.available("dram")
    assert ram.read().method == "unavailable"


def test_same_name_mirrors_are_counted_once(tree: FakePowercap, fake_clock) -> None:
    # Two zones both called package-0 (one socket counter seen twice), plus the MMIO copy of it.
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    tree.add_zone("intel-rapl:1", "package-0", energy_uj=1_000_000)
    tree.add_zone("intel-rapl-mmio:0", "package-0", energy_uj=3_000_000)
    reader, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(1.0)
    for zone in ("intel-rapl:0", "intel-rapl:1", "intel-rapl-mmio:0"):
        tree.add_energy(zone, 20.0)
    assert cpu.read().energy_j == pytest.approx(20.0)
    mirrors = {m["zone"]: (m["mirror_of"], m["rule"]) for m in reader.info()["mirrors_not_counted"]}
    assert mirrors == {
        "intel-rapl:1": ("intel-rapl:0", "same name"),
        "intel-rapl-mmio:0": ("intel-rapl:0", "same name"),
    }


def test_die_zones_with_identical_counters_are_one_socket(tree: FakePowercap, fake_clock) -> None:
    # AMD multi-die: each die zone reports the one socket counter.
    tree.add_zone("intel-rapl:0", "package-0-die-0", energy_uj=42_000_000, max_energy_range_uj=AMD_RANGE_UJ)
    tree.add_zone("intel-rapl:1", "package-0-die-1", energy_uj=42_000_000, max_energy_range_uj=AMD_RANGE_UJ)
    reader, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(1.0)
    tree.add_energy("intel-rapl:0", 68.0)
    tree.add_energy("intel-rapl:1", 68.0)
    assert cpu.read().energy_j == pytest.approx(68.0)
    [mirror] = reader.info()["mirrors_not_counted"]
    assert (mirror["zone"], mirror["mirror_of"]) == ("intel-rapl:1", "intel-rapl:0")


def test_die_zones_with_different_counters_are_summed(tree: FakePowercap, fake_clock) -> None:
    # Intel multi-die packages have one real counter per die.
    tree.add_zone("intel-rapl:0", "package-0-die-0", energy_uj=10_000_000)
    tree.add_zone("intel-rapl:1", "package-0-die-1", energy_uj=20_000_000)
    _, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(1.0)
    tree.add_energy("intel-rapl:0", 40.0)
    tree.add_energy("intel-rapl:1", 35.0)
    assert cpu.read().energy_j == pytest.approx(40.0 + 35.0)


def test_amd_rapl_provider_is_read(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("amd-rapl:0", "package-0", max_energy_range_uj=AMD_RANGE_UJ)
    _, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(2.0)
    tree.add_energy("amd-rapl:0", 180.0)
    assert cpu.read().energy_j == pytest.approx(180.0)


# -- wrap-around, guard, absurd jumps -------------------------------------------------------------------------------


def test_window_spanning_several_wraps_is_exact_with_guard_polls(tree: FakePowercap, fake_clock) -> None:
    # AMD range 65_532.610987 J; a 200 W socket for 1000 s = 200_000 J, starting at 60_000 J:
    # 60_000 + 200_000 = 260_000 J = 3 × 65_532.610987 + 63_402.167039 -> the counter wraps 3 times.
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=60_000_000_000, max_energy_range_uj=AMD_RANGE_UJ)
    reader, cpu, _ = sensors(tree)
    assert reader.guard_period_s == pytest.approx(65.532610987 / 4)
    cpu.start()
    for _ in range(20):  # the guard's job: a read every 50 s (< the 327 s wrap time at 200 W)
        fake_clock.advance(50.0)
        tree.add_energy("intel-rapl:0", 10_000.0)  # 200 W × 50 s
        reader.poll()
    assert tree.energy_uj("intel-rapl:0") == 260_000_000_000 - 3 * AMD_RANGE_UJ  # the fake really wrapped
    assert cpu.read().energy_j == pytest.approx(20 * 10_000.0)
    [zone] = reader.info()["counted"]["package"]
    assert zone["wraps"] == 3


def test_without_guard_polls_a_multi_wrap_window_is_wrong(tree: FakePowercap, fake_clock) -> None:
    # The reason for the guard: read only at the window's ends and the three wraps are invisible.
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=60_000_000_000, max_energy_range_uj=AMD_RANGE_UJ)
    _, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(1000.0)
    tree.add_energy("intel-rapl:0", 200_000.0)
    # The counter ends above where it started (63_402.167039 J > 60_000 J), so no wrap is even suspected:
    # 63_402.167039 − 60_000 = 3_402.167039 J instead of 200_000 J.
    assert cpu.read().energy_j == pytest.approx(3_402.167039)


def test_absurd_jump_is_discarded_with_a_note(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    reader, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(1.0)
    tree.add_energy("intel-rapl:0", 10_000.0)  # 10 kJ in 1 s = 10 kW > 5 kW
    first = cpu.read()
    assert first.energy_j == 0.0
    assert "discarded" in first.note
    fake_clock.advance(2.0)
    tree.add_energy("intel-rapl:0", 100.0)  # 50 W: counted again from the new value
    assert cpu.read().energy_j == pytest.approx(100.0)
    assert "10000.0 J" in reader.info()["notes"][0]


def test_counter_reset_looking_like_a_wrap_is_discarded(tree: FakePowercap, fake_clock) -> None:
    # 200 kJ -> 1 kJ in 1 s: read as a wrap it would be 262_143.32885 − 200_000 + 1_000 = 63_143.3 J in 1 s.
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=200_000_000_000)
    _, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(1.0)
    tree.set_energy("intel-rapl:0", 1_000_000_000)
    reading = cpu.read()
    assert reading.energy_j == 0.0 and "discarded" in reading.note


def test_counter_going_back_without_a_known_range_is_not_counted(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=5_000_000, max_energy_range_uj=None)
    reader, cpu, _ = sensors(tree)
    cpu.start()
    fake_clock.advance(1.0)
    tree.set_energy("intel-rapl:0", 1_000_000)
    assert cpu.read().energy_j == 0.0
    assert "max_energy_range_uj is unknown" in reader.info()["notes"][0]


def test_real_guard_thread_polls_and_stops_on_close(tree: FakePowercap) -> None:
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    reader = RaplReader(tree.root, guard_period_s=0.01)
    cpu, ram = RaplCpuSensor(reader), RaplRamSensor(reader)
    cpu.start()
    ram.start()  # no dram: the reader is shared, one guard thread
    assert reader.guard_running
    tree.add_energy("intel-rapl:0", 3.0)
    deadline = time.monotonic() + 5.0
    while reader.total_j("package")[0] != pytest.approx(3.0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.total_j("package")[0] == pytest.approx(3.0)  # counted by the guard, no read() called
    cpu.close()
    assert reader.guard_running  # ram still holds it
    ram.close()
    ram.close()  # twice is fine
    assert not reader.guard_running


# -- failures ------------------------------------------------------------------------------------------------------


def test_zone_vanishing_mid_run_is_unavailable_and_never_raises(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram")
    tree.add_zone("intel-rapl:1", "package-1")
    _, cpu, ram = sensors(tree)
    cpu.start()
    ram.start()
    fake_clock.advance(1.0)
    tree.add_energy("intel-rapl:0", 10.0)
    tree.add_energy("intel-rapl:0:0", 1.0)
    assert cpu.read().energy_j == pytest.approx(10.0)
    tree.remove("intel-rapl:1")
    fake_clock.advance(1.0)
    reading = cpu.read()
    assert reading.energy_j is None and reading.method == "unavailable"
    assert "intel-rapl:1 (package-1)" in reading.note
    assert cpu.read().energy_j is None  # stays unavailable: the gap cannot be recovered
    assert ram.read().energy_j == pytest.approx(1.0)  # dram of package 0 is still there


def test_a_counter_denied_with_a_readable_mirror_is_fine(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl-mmio:0", "package-0")
    tree.deny("intel-rapl:0")
    reader, cpu, _ = sensors(tree)
    assert reader.available("package") and not reader.permission_denied
    cpu.start()
    fake_clock.advance(1.0)
    tree.add_energy("intel-rapl-mmio:0", 9.0)
    assert cpu.read().energy_j == pytest.approx(9.0)


def test_one_socket_denied_makes_cpu_unavailable_not_half_counted(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:1", "package-1")
    tree.deny("intel-rapl:1")
    reader, _, _ = sensors(tree)
    assert not reader.available("package") and reader.permission_denied
    assert "intel-rapl:1 (package-1): permission denied" in reader.reason("package")


# -- the builder ---------------------------------------------------------------------------------------------------


def test_builder_uses_rapl_when_readable(tree: FakePowercap) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu, ram = build_host_sensors(tree.root)
    assert isinstance(cpu, RaplCpuSensor) and isinstance(ram, RaplRamSensor)
    assert cpu.reader is ram.reader  # one reader, one guard
    cpu.close()
    ram.close()


def test_builder_without_dram_estimates_ram_only(tree: FakePowercap) -> None:
    tree.add_zone("intel-rapl:0", "package-0", max_energy_range_uj=AMD_RANGE_UJ)
    cpu, ram = build_host_sensors(tree.root, ram_watts_per_gb=0.5)
    assert isinstance(cpu, RaplCpuSensor)
    assert isinstance(ram, RssEstimateSensor) and ram.watts_per_gb == 0.5
    assert "no RAPL dram zone" in ram.info()["rapl_not_used_because"]
    ram.close()


def test_permission_denied_warns_once_with_the_fix_and_falls_back(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram")
    tree.add_zone("intel-rapl:1", "package-1")
    tree.add_zone("intel-rapl:1:0", "dram")
    for zone in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1", "intel-rapl:1:0"):
        tree.deny(zone)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cpu, ram = build_host_sensors(tree.root, cpuinfo=CpuInfo(None, None, None, False))  # a CPU not in the table
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "CVE-2020-8694" in message
    assert 'SUBSYSTEM=="powercap"' in message and "/sys%p/energy_uj" in message  # the udev rule
    assert "chmod a+r" in message and "lost at reboot" in message
    assert "/sys/devices/virtual/powercap" in message and ":ro" in message  # containers
    assert isinstance(cpu, CpuTimeEstimateSensor) and isinstance(ram, RssEstimateSensor)
    assert cpu.info()["method"] == "estimate-cpu-time" and ram.info()["method"] == "estimate-rss"
    assert "permission denied" in cpu.info()["rapl_not_used_because"]
    reading = cpu.read()
    assert reading.method.startswith("estimate-") and "permission denied" in reading.note
    ram.close()


def test_no_powercap_gives_labelled_estimates_without_a_warning(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(rapl.ROOT_ENV_VAR, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu, ram = build_host_sensors(tmp_path / "absent", cpu_watts_per_core=8.0)
    assert isinstance(cpu, CpuTimeEstimateSensor) and cpu.watts_per_core == 8.0
    assert cpu.info()["rapl_not_used_because"] == f"no powercap directory at {tmp_path / 'absent'}"
    assert isinstance(ram, RssEstimateSensor)
    ram.close()


def test_env_var_sets_the_root(tree: FakePowercap, monkeypatch) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    monkeypatch.setenv(rapl.ROOT_ENV_VAR, str(tree.root))
    cpu, ram = build_host_sensors()
    assert isinstance(cpu, RaplCpuSensor) and cpu.reader.root == str(tree.root)
    ram.close()


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf, "12", True])
@pytest.mark.parametrize("name", ["cpu_watts_per_core", "ram_watts_per_gb"])
def test_builder_rejects_bad_watts(tmp_path, name: str, bad: object) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be a finite number of watts ≥ 0, got"):
        build_host_sensors(tmp_path / "absent", **{name: bad})  # type: ignore[arg-type]


def test_rapl_in_a_real_meter_window(tree: FakePowercap, fake_clock) -> None:
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:0:0", "dram")
    _, cpu, ram = sensors(tree)
    meter = Meter([cpu, ram])
    meter.begin("epoch")
    fake_clock.advance(60.0)
    tree.add_energy("intel-rapl:0", 60.0 * 95.0)  # 95 W for a minute
    tree.add_energy("intel-rapl:0:0", 60.0 * 4.0)  # 4 W for a minute
    epoch = meter.end("epoch")
    assert epoch.duration_s == 60.0
    assert epoch.component_j("cpu") == pytest.approx(5700.0)
    assert epoch.component_j("ram") == pytest.approx(240.0)
    assert meter.info()["cpu"]["scope"] == "node"
    meter.close()

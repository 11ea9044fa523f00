"""The AMD GPU sensor (amdsmi) against a fake amdsmi module in sys.modules: counter × resolution, 32-bit wraps,
the power fallback, the MI200 second die, the 2 kW sanity bound and ROCR/HIP/CUDA_VISIBLE_DEVICES mapping."""

from __future__ import annotations

import pytest

from green_callbacks.core.sensors.amd import (
    METHOD_COUNTER,
    METHOD_POWER,
    AmdGpuSensor,
    build_amd_sensor,
    select_amd_gpus,
)
from green_callbacks.core.sensors.base import UNAVAILABLE, NullSensor, Sensor
from tests.fakes import fake_amdsmi
from tests.fakes.fake_amdsmi import FakeAmdGpu, FakeAmdsmi

IDLE_PERIOD_S = 3600.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closing():
    sensors: list = []
    yield sensors.append
    for sensor in sensors:
        sensor.close()


def install(monkeypatch, gpus, **kwargs) -> FakeAmdsmi:
    fake = FakeAmdsmi(gpus, **kwargs)
    fake_amdsmi.install(monkeypatch, fake)
    return fake


def build(closing, **kwargs):
    kwargs.setdefault("sample_period_s", IDLE_PERIOD_S)
    kwargs.setdefault("counter_poll_s", IDLE_PERIOD_S)
    sensor = build_amd_sensor(**kwargs)
    closing(sensor)
    return sensor


def test_counter_times_resolution_in_joules(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=5_000_000, resolution_uj=15.259)])
    sensor = build(closing)
    assert isinstance(sensor, AmdGpuSensor) and isinstance(sensor, Sensor)
    assert (sensor.component, sensor.scope) == ("gpu", "device")
    sensor.start()
    fake.gpus[0].ticks += 10_000_000
    fake_clock.advance(1.0)
    reading = sensor.read()
    # 10 000 000 ticks × 15.259 µJ = 152 590 000 µJ = 152.59 J
    assert reading.energy_j == pytest.approx(152.59, rel=1e-12)
    assert reading.method == METHOD_COUNTER == "amdsmi-energy-counter"
    assert reading.gaps == 0


def test_pre_6_2_1_key_power_is_the_accumulator(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=100, resolution_uj=1.0, legacy_key=True)])
    sensor = build(closing)
    sensor.start()
    fake.gpus[0].ticks += 2_000_000  # 2 000 000 µJ = 2 J
    fake_clock.advance(1.0)
    assert sensor.read().energy_j == pytest.approx(2.0)


def test_a_32_bit_wrap_is_added_back(monkeypatch, fake_clock, closing):
    start = 2**32 - 1_000
    fake = install(monkeypatch, [FakeAmdGpu(ticks=start, resolution_uj=15.259)])
    sensor = build(closing)
    sensor.start()
    fake.gpus[0].ticks = 4_000  # wrapped: 1 000 ticks to the top, then 4 000 more = 5 000 ticks
    fake_clock.advance(5.0)
    sensor.sample_once()  # the poller sees it
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(5_000 * 15.259e-6)  # 0.076295 J
    assert sensor.info()["devices"][0]["wraps"] == 1


def test_a_64_bit_counter_going_back_is_unavailable(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=2**40)])
    sensor = build(closing)
    sensor.start()
    fake.gpus[0].ticks = 10
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == UNAVAILABLE and "went back" in reading.note


def test_an_impossible_increment_is_rejected_with_a_warning_and_a_gap(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=1_000, resolution_uj=1.0)])
    sensor = build(closing)
    sensor.start()
    fake.gpus[0].ticks += 300_000_000  # 300 J in 1 s = 300 W: fine
    fake_clock.advance(1.0)
    first = sensor.read()
    assert first.energy_j == pytest.approx(300.0) and first.gaps == 0
    fake.gpus[0].ticks += 12_500_000_000_000  # 12.5 MJ in 1 s = 12.5 MW (CodeCarbon PR #1072's MI250)
    fake_clock.advance(1.0)
    with pytest.warns(RuntimeWarning, match="impossible reading"):
        second = sensor.read()
    assert second.energy_j == pytest.approx(300.0)  # not logged as energy
    assert second.gaps == 1 and "2000 W bound" in second.note
    fake.gpus[0].ticks += 100_000_000  # back to normal: 100 J
    fake_clock.advance(1.0)
    assert sensor.read().energy_j == pytest.approx(400.0)


def test_the_bound_uses_at_least_one_second(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=1_000, resolution_uj=1.0)])
    sensor = build(closing)
    sensor.start()
    fake.gpus[0].ticks += 50_000_000  # 50 J within 10 ms: 5 kW over 10 ms, but ≤ 2 kW × 1 s: a counter update burst
    fake_clock.advance(0.01)
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(50.0) and reading.gaps == 0


def test_power_fallback_integrates_socket_power(monkeypatch, fake_clock, closing):
    t0 = fake_clock()
    # P(t) = 200 W + 20 W/s · t over 10 s: ∫ = 2000 + 10·100 = 3000 J (trapezoid is exact on a line)
    install(monkeypatch, [FakeAmdGpu(counter=False, power_w=lambda t: 200.0 + 20.0 * (t - t0))])
    sensor = build(closing)
    assert sensor.method == METHOD_POWER == "amdsmi-power"
    sensor.start()
    for _ in range(10):
        fake_clock.advance(1.0)
        sensor.sample_once()
    assert sensor.read().energy_j == pytest.approx(3000.0)


def test_an_impossible_power_sample_is_a_gap(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(counter=False, power_w=100.0)])
    sensor = build(closing)
    sensor.start()
    fake_clock.advance(2.0)
    assert sensor.read().energy_j == pytest.approx(200.0)
    fake.gpus[0].power_w = 12_500_000.0
    fake_clock.advance(1.0)
    with pytest.warns(RuntimeWarning, match="12500000 W"):
        reading = sensor.read()
    assert reading.gaps == 1 and reading.energy_j == pytest.approx(200.0)


def test_mi250_second_die_is_measured_through_its_package_once(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=0 + 1, resolution_uj=1.0), FakeAmdGpu(second_die=True),
                                 FakeAmdGpu(ticks=1, resolution_uj=1.0), FakeAmdGpu(second_die=True)])
    sensor = build(closing, device_indices=[1])  # trains on die 1 only: package 0 measured on die 0
    sensor.start()
    fake.gpus[0].ticks += 400_000_000  # package 0: 400 J
    fake.gpus[2].ticks += 900_000_000  # package 1: not ours
    fake_clock.advance(2.0)
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(400.0)
    assert "MI200 package" in reading.note and "counted once" in reading.note
    [device] = sensor.info()["devices"]
    assert device["amdsmi_index"] == 0 and device["trained_dies"] == [fake.gpus[1].bdf]


def test_both_dies_of_a_package_count_it_once(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=1, resolution_uj=1.0), FakeAmdGpu(second_die=True)])
    sensor = build(closing, device_indices=[0, 1])
    sensor.start()
    fake.gpus[0].ticks += 700_000_000
    fake_clock.advance(2.0)
    assert sensor.read().energy_j == pytest.approx(700.0)  # not 1400 J
    assert len(sensor.info()["devices"]) == 1


def test_a_die_with_nothing_and_no_partner_is_unavailable(monkeypatch):
    install(monkeypatch, [FakeAmdGpu(second_die=True)])
    sensor = build_amd_sensor()
    assert isinstance(sensor, NullSensor) and "neither an energy counter nor a power reading" in sensor.reason


def test_missing_amdsmi_says_how_to_install(monkeypatch):
    fake_amdsmi.install(monkeypatch, None)
    sensor = build_amd_sensor()
    assert isinstance(sensor, NullSensor) and sensor.read().method == UNAVAILABLE
    assert 'pip install "green-callbacks[amd]"' in sensor.reason


def test_init_failure_says_what_to_check(monkeypatch):
    fake = install(monkeypatch, [], init_error=fake_amdsmi.AmdSmiLibraryException(fake_amdsmi.AMDSMI_STATUS_INIT_ERROR))
    sensor = build_amd_sensor()
    assert isinstance(sensor, NullSensor) and "amdgpu driver" in sensor.reason
    build_amd_sensor()
    assert fake.init_calls == 1  # remembered


def test_device_lost_mid_run_is_unavailable_with_a_note(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu()])
    sensor = build(closing)
    sensor.start()
    fake_clock.advance(3.0)
    no_perm = fake_amdsmi.AmdSmiLibraryException(fake_amdsmi.AMDSMI_STATUS_NO_PERM)
    fake.gpus[0].errors["amdsmi_get_energy_count"] = no_perm
    reading = sensor.read()
    assert reading.energy_j is None and "lost 3.0 s after the start" in reading.note


# ------------------------------------------------------------------------------------------- device mapping


def four() -> list[FakeAmdGpu]:
    return [FakeAmdGpu(name="AMD Instinct MI300X", ticks=1, resolution_uj=1.0) for _ in range(4)]


def test_hip_visible_devices_picks_the_device(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, four())
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2,3")
    sensor = build(closing, device_indices=[1])  # cuda:1 in this process = machine device 3
    sensor.start()
    for n, gpu in enumerate(fake.gpus):
        gpu.ticks += (n + 1) * 1_000_000  # 1, 2, 3, 4 J
    fake_clock.advance(1.0)
    assert sensor.read().energy_j == pytest.approx(4.0)


def test_rocr_then_hip_layers(monkeypatch):
    install(monkeypatch, four())
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1,2,3")
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2")  # index 2 among ROCR's {1, 2, 3} = device 3
    assert [g.index for g in select_amd_gpus([0])] == [3]


def test_cuda_visible_devices_is_honoured_when_hip_is_unset(monkeypatch):
    install(monkeypatch, four())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.index for g in select_amd_gpus([0])] == [1]
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "3")  # HIP's own variable wins
    assert [g.index for g in select_amd_gpus([0])] == [3]


def test_rocr_uuid_form(monkeypatch):
    fake = install(monkeypatch, four())
    serial = fake.gpus[2].serial[2:].lower()  # GPU-<serial without 0x>, as torch and ROCr spell it
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", f"GPU-{serial}")
    assert [g.index for g in select_amd_gpus(None)] == [2]


def test_pci_bus_ids_are_exact_whatever_the_environment(monkeypatch):
    fake = install(monkeypatch, four())
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")
    bdf = fake.gpus[3].bdf
    assert [g.index for g in select_amd_gpus([0], device_bus_ids=[bdf[5:]])] == [3]  # without the domain
    assert [g.index for g in select_amd_gpus(device_uuids=[fake.gpus[1].uuid])] == [1]
    with pytest.raises(ValueError, match="matches no AMD GPU"):
        select_amd_gpus(device_bus_ids=["0000:ff:00.0"])


def test_invisible_index_gives_a_null_sensor_with_a_warning(monkeypatch):
    install(monkeypatch, four())
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")
    with pytest.warns(UserWarning, match="not visible"):
        sensor = build_amd_sensor(device_indices=[1])
    assert isinstance(sensor, NullSensor)


def test_sampler_thread_polls_and_stops(monkeypatch):
    import time

    fake = install(monkeypatch, [FakeAmdGpu()])
    sensor = build_amd_sensor(counter_poll_s=0.005)
    sensor.start()
    deadline = time.monotonic() + 5.0
    while fake.calls["amdsmi_get_energy_count"] < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake.calls["amdsmi_get_energy_count"] >= 6  # the thread reads by itself (wrap safety)
    sensor.close()
    assert not sensor.sampling


def test_a_stuck_counter_switches_to_power_and_the_stuck_stretch_is_a_gap(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=1_000, resolution_uj=1.0, power_w=250.0)])
    sensor = build(closing)
    sensor.start()
    fake.gpus[0].ticks += 100_000_000  # 100 J in the first 2 s
    fake_clock.advance(2.0)
    assert sensor.read().energy_j == pytest.approx(100.0)
    fake_clock.advance(10.0)  # the accumulator does not move for 10 s
    with pytest.warns(RuntimeWarning, match="stopped moving for 10 s while the device reports 250 W"):
        stuck = sensor.read()
    assert stuck.gaps == 1 and stuck.energy_j == pytest.approx(100.0)  # the stuck stretch is not counted
    assert stuck.method == METHOD_POWER
    fake_clock.advance(4.0)
    later = sensor.read()
    assert later.gaps == 1 and later.energy_j == pytest.approx(100.0 + 250.0 * 4.0)  # power from then on: 1100 J


def test_a_stuck_counter_without_power_is_unavailable(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeAmdGpu(ticks=1_000, resolution_uj=1.0)])
    not_supported = fake_amdsmi.AmdSmiLibraryException(fake_amdsmi.AMDSMI_STATUS_NOT_SUPPORTED)
    fake.gpus[0].errors["amdsmi_get_power_info"] = not_supported
    sensor = build(closing)
    sensor.start()
    fake_clock.advance(11.0)
    reading = sensor.read()
    assert reading.energy_j is None and "stopped moving for 11 s and it reports no power" in reading.note

"""The Intel GPU sensor (Level Zero Sysman via pyzes) against a fake pyzes in sys.modules."""

from __future__ import annotations

import pytest

from green_callbacks.core.sensors.base import UNAVAILABLE, NullSensor
from green_callbacks.core.sensors.intel_gpu import (
    METHOD,
    IntelGpuSensor,
    build_intel_gpu_sensor,
    parse_affinity_mask,
    select_intel_gpus,
)
from tests.fakes import fake_pyzes
from tests.fakes.fake_pyzes import FakeDomain, FakeIntelGpu, FakePyzes


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("ZE_AFFINITY_MASK", raising=False)
    monkeypatch.delenv("ZE_FLAT_DEVICE_HIERARCHY", raising=False)


def install(monkeypatch, gpus=None, **kwargs) -> FakePyzes:
    fake = FakePyzes(gpus, **kwargs)
    fake_pyzes.install(monkeypatch, fake)
    return fake


def test_card_counter_in_microjoules(monkeypatch, fake_clock):
    fake = install(monkeypatch, [FakeIntelGpu()])
    sensor = build_intel_gpu_sensor()
    assert isinstance(sensor, IntelGpuSensor) and (sensor.component, sensor.scope) == ("gpu", "device")
    sensor.start()
    fake.gpus[0].add_joules(250.0)  # card domain +250 000 000 µJ, each tile domain +125 000 000 µJ
    fake_clock.advance(2.0)
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(250.0)  # the card domain only: tiles are not added on top
    assert reading.method == METHOD == "level-zero-energy-counter"
    assert sensor.info()["devices"][0]["power_domains"] == 1


def test_only_tile_domains_are_summed(monkeypatch, fake_clock):
    gpu = FakeIntelGpu(domains=[FakeDomain(5, True, 0), FakeDomain(7, True, 1)])
    fake = install(monkeypatch, [gpu])
    sensor = build_intel_gpu_sensor()
    sensor.start()
    fake.gpus[0].domains[0].energy_uj += 3_000_000
    fake.gpus[0].domains[1].energy_uj += 4_000_000
    fake_clock.advance(1.0)
    assert sensor.read().energy_j == pytest.approx(7.0)  # 3 J + 4 J


def test_flat_hierarchy_maps_a_tile_to_its_card_with_a_note(monkeypatch, fake_clock):
    fake = install(monkeypatch, [FakeIntelGpu(), FakeIntelGpu()])
    # FLAT (the default): xpu:0,1 = card 0's tiles, xpu:2,3 = card 1's. xpu:3 -> card 1.
    sensor = build_intel_gpu_sensor(device_indices=[3])
    sensor.start()
    fake.gpus[0].add_joules(100.0)
    fake.gpus[1].add_joules(40.0)
    fake_clock.advance(1.0)
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(40.0)
    assert "measures whole cards" in reading.note
    assert sensor.info()["devices"][0]["xpu_indices"] == [3]


def test_composite_hierarchy_and_affinity_mask(monkeypatch):
    install(monkeypatch, [FakeIntelGpu(), FakeIntelGpu(), FakeIntelGpu()])
    monkeypatch.setenv("ZE_FLAT_DEVICE_HIERARCHY", "COMPOSITE")
    monkeypatch.setenv("ZE_AFFINITY_MASK", "2,0")
    [(card, tiles)] = select_intel_gpus([0])
    assert card.index == 2 and tiles == (None,)
    monkeypatch.setenv("ZE_FLAT_DEVICE_HIERARCHY", "FLAT")
    monkeypatch.setenv("ZE_AFFINITY_MASK", "5")  # flat device 5 = card 2, tile 1
    [(card, tiles)] = select_intel_gpus([0])
    assert card.index == 2 and tiles == (1,)


def test_two_tiles_of_one_card_count_it_once_without_a_note(monkeypatch, fake_clock):
    fake = install(monkeypatch, [FakeIntelGpu()])
    sensor = build_intel_gpu_sensor(device_indices=[0, 1])
    sensor.start()
    fake.gpus[0].add_joules(60.0)
    fake_clock.advance(1.0)
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(60.0) and reading.note == ""


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("0,1", [(0, None), (1, None)]),
                                                 ("1.0,1.1", [(1, 0), (1, 1)]), ("0,x,1", [(0, None)])])
def test_parse_affinity_mask(value, expected):
    assert parse_affinity_mask(value) == expected


def test_an_impossible_increment_is_a_gap_with_a_warning(monkeypatch, fake_clock):
    fake = install(monkeypatch, [FakeIntelGpu()])
    sensor = build_intel_gpu_sensor()
    sensor.start()
    fake.gpus[0].add_joules(10_000.0)  # 10 kJ in 1 s = 10 kW
    fake_clock.advance(1.0)
    with pytest.warns(RuntimeWarning, match="impossible reading"):
        reading = sensor.read()
    assert reading.gaps == 1 and reading.energy_j == 0.0


def test_counter_going_back_is_unavailable(monkeypatch, fake_clock):
    fake = install(monkeypatch, [FakeIntelGpu()])
    sensor = build_intel_gpu_sensor()
    sensor.start()
    fake.gpus[0].domains[0].energy_uj = 0
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == UNAVAILABLE and "went back" in reading.note


def test_unsupported_counter_gives_a_null_sensor(monkeypatch):
    gpu = FakeIntelGpu(domains=[FakeDomain(rc=fake_pyzes.ZE_RESULT_ERROR_UNSUPPORTED_FEATURE)])
    install(monkeypatch, [gpu])
    sensor = build_intel_gpu_sensor()
    assert isinstance(sensor, NullSensor) and "0x78000003" in sensor.reason


def test_missing_pyzes_says_how_to_install(monkeypatch):
    fake_pyzes.install(monkeypatch, None)
    sensor = build_intel_gpu_sensor()
    assert isinstance(sensor, NullSensor) and 'pip install "green-callbacks[intel]"' in sensor.reason


def test_zes_init_failure(monkeypatch):
    fake = install(monkeypatch, init_rc=fake_pyzes.ZE_RESULT_ERROR_UNINITIALIZED)
    sensor = build_intel_gpu_sensor()
    assert isinstance(sensor, NullSensor) and "zesInit returned 0x78000001" in sensor.reason
    build_intel_gpu_sensor()
    assert fake.init_calls == 1


def test_invisible_index_warns(monkeypatch):
    install(monkeypatch, [FakeIntelGpu(tiles=1, domains=[FakeDomain()])])
    with pytest.warns(UserWarning, match="not visible"):
        sensor = build_intel_gpu_sensor(device_indices=[4])
    assert isinstance(sensor, NullSensor)


def test_device_lost_mid_run(monkeypatch, fake_clock):
    fake = install(monkeypatch, [FakeIntelGpu()])
    sensor = build_intel_gpu_sensor()
    sensor.start()
    fake_clock.advance(4.0)
    fake.gpus[0].domains[0].rc = fake_pyzes.ZE_RESULT_ERROR_DEVICE_LOST
    reading = sensor.read()
    assert reading.energy_j is None and "lost 4.0 s" in reading.note and "0x70000001" in reading.note

"""The TPU duty-cycle estimate against a fake libtpu.sdk.tpumonitoring."""

from __future__ import annotations

import pytest

from green_callbacks.core.sensors.base import NullSensor
from green_callbacks.core.sensors.tpu import METHOD, TpuDutyCycleSensor, build_tpu_sensor, tpu_version
from tests.fakes import fake_libtpu
from tests.fakes.fake_libtpu import FakeTpuChips

IDLE_PERIOD_S = 3600.0


@pytest.mark.parametrize(("kind", "version"), [("TPU v4", "v4"), ("v3-8", "v3"), ("v2-32", "v2"),
                                                ("TPU v5 lite", "v5lite"), ("v5litepod-8", "v5litepod"),
                                                ("v5p-8", "v5p"), ("TPU v6e", "v6e"), ("", None)])
def test_tpu_version(kind, version, monkeypatch):
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE", raising=False)
    assert tpu_version(kind) == version


def test_duty_cycle_times_chip_power_integrated(monkeypatch, fake_clock):
    chips = fake_libtpu.install(monkeypatch, FakeTpuChips([50.0, 100.0, 0.0, 25.0]))
    sensor = build_tpu_sensor([0, 1], device_kind="TPU v4", sample_period_s=IDLE_PERIOD_S)
    assert isinstance(sensor, TpuDutyCycleSensor)
    try:
        sensor.start()
        # chips 0 and 1 at 50 % and 100 % of 170 W = 85 + 170 = 255 W for 10 s = 2550 J
        for _ in range(10):
            fake_clock.advance(1.0)
            sensor.sample_once()
        chips.duty[0] = 0.0  # from now on 0 + 170 W; trapezoid over the next 2 s: (255 + 170) / 2 · 2 = 425 J
        fake_clock.advance(2.0)
        reading = sensor.read()
        assert reading.energy_j == pytest.approx(2550.0 + 425.0)
        assert reading.method == METHOD == "estimate-tpu-duty-cycle"
        assert "estimate" in reading.note and "170 W" in reading.note and "idle draw is not counted" in reading.note
    finally:
        sensor.close()


def test_version_from_tpu_accelerator_type_and_all_chips_by_default(monkeypatch, fake_clock):
    fake_libtpu.install(monkeypatch, FakeTpuChips([100.0, 100.0]))
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v3-8")
    sensor = build_tpu_sensor(sample_period_s=IDLE_PERIOD_S)
    try:
        sensor.start()
        fake_clock.advance(1.0)
        assert sensor.read().energy_j == pytest.approx(2 * 220.0)  # two chips at 220 W for 1 s
        assert sensor.info()["chips"] == [0, 1]
    finally:
        sensor.close()


@pytest.mark.parametrize("kind", ["TPU v5 lite", "TPU v6e", "v5p-8", None])
def test_versions_without_a_published_power_are_unavailable_with_the_reason(monkeypatch, kind):
    fake_libtpu.install(monkeypatch, FakeTpuChips())
    sensor = build_tpu_sensor([0], device_kind=kind)
    assert isinstance(sensor, NullSensor)
    assert "no TPU energy or power API is known" in sensor.reason and "v4 170 W" in sensor.reason


def test_no_libtpu(monkeypatch):
    fake_libtpu.install(monkeypatch, None)
    sensor = build_tpu_sensor([0], device_kind="TPU v4")
    assert isinstance(sensor, NullSensor) and 'pip install "green-callbacks[tpu]"' in sensor.reason


def test_a_chip_not_listed_and_a_failing_read(monkeypatch, fake_clock):
    chips = fake_libtpu.install(monkeypatch, FakeTpuChips([10.0]))
    assert isinstance(build_tpu_sensor([3], device_kind="TPU v4"), NullSensor)
    sensor = build_tpu_sensor([0], device_kind="TPU v4", sample_period_s=IDLE_PERIOD_S)
    try:
        sensor.start()
        chips.error = RuntimeError("libtpu metrics server gone")
        fake_clock.advance(1.0)
        reading = sensor.read()
        assert reading.energy_j is None and "libtpu metrics server gone" in reading.note
    finally:
        sensor.close()

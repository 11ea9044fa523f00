"""Apple Silicon sensors (IOReport via zeus-apple-silicon) against a fake module in sys.modules."""

from __future__ import annotations

import pytest

from green_callbacks.core.sensors.apple import (
    METHOD_CPU,
    METHOD_DRAM,
    METHOD_GPU,
    AppleSocSensor,
    build_apple_gpu_sensor,
    build_apple_host_sensors,
)
from green_callbacks.core.sensors.base import UNAVAILABLE, NullSensor
from green_callbacks.core.sensors.estimate import CpuTimeEstimateSensor, RssEstimateSensor
from green_callbacks.core.sensors.host import build_host_sensors
from tests.fakes import fake_zeus_apple_silicon
from tests.fakes.fake_zeus_apple_silicon import FakeSoc, FakeZeusAppleSilicon


def install(monkeypatch, soc=None, **kwargs) -> FakeZeusAppleSilicon:
    fake = FakeZeusAppleSilicon(soc, **{k: v for k, v in kwargs.items() if k == "init_error"})
    fake_zeus_apple_silicon.install(monkeypatch, fake, apple_silicon=kwargs.get("apple_silicon", True))
    return fake


def test_gpu_is_gpu_plus_sram_plus_neural_engine_in_joules(monkeypatch):
    fake = install(monkeypatch, FakeSoc(gpu_mj=5_000_000, gpu_sram_mj=20_000, ane_mj=7))
    sensor = build_apple_gpu_sensor([0])
    assert isinstance(sensor, AppleSocSensor)
    assert (sensor.component, sensor.scope) == ("gpu", "node")  # one SoC GPU per machine
    sensor.start()
    fake.soc.gpu_mj += 42_000  # 42 J
    fake.soc.gpu_sram_mj += 1_500  # 1.5 J
    fake.soc.ane_mj += 500  # 0.5 J
    fake.soc.cpu_total_mj += 99_000  # not the GPU's
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(44.0)  # 42 + 1.5 + 0.5
    assert reading.method == METHOD_GPU == "apple-ioreport-gpu"
    assert sensor.info()["fields"] == ["gpu_mj", "gpu_sram_mj", "ane_mj"]
    assert "estimate" in sensor.info()["accuracy"]


def test_fields_the_chip_does_not_report_are_left_out(monkeypatch):
    fake = install(monkeypatch, FakeSoc(gpu_sram_mj=None, ane_mj=None))
    sensor = build_apple_gpu_sensor()
    sensor.start()
    fake.soc.gpu_mj += 3_000
    assert sensor.read().energy_j == pytest.approx(3.0)
    assert sensor.info()["fields"] == ["gpu_mj"]


def test_host_sensors_replace_the_estimates_on_apple_silicon(monkeypatch, tmp_path):
    fake = install(monkeypatch, FakeSoc())
    cpu, ram = build_host_sensors(tmp_path / "no-powercap")
    assert (cpu.method, ram.method) == (METHOD_CPU, METHOD_DRAM) == ("apple-ioreport-cpu", "apple-ioreport-dram")
    assert cpu.scope == ram.scope == "node"
    cpu.start()
    ram.start()
    fake.soc.cpu_total_mj += 12_345  # 12.345 J
    fake.soc.dram_mj += 600  # 0.6 J
    assert cpu.read().energy_j == pytest.approx(12.345)
    assert ram.read().energy_j == pytest.approx(0.6)
    assert fake.monitors == 1  # one IOReport subscription shared


def test_a_chip_without_dram_keeps_the_rss_estimate_for_ram(monkeypatch, tmp_path):
    install(monkeypatch, FakeSoc(dram_mj=None))
    cpu, ram = build_host_sensors(tmp_path / "no-powercap")
    assert cpu.method == METHOD_CPU
    assert isinstance(ram, RssEstimateSensor) and "dram_mj" in ram.reason


def test_not_apple_silicon_never_imports_or_uses_it(monkeypatch, tmp_path):
    fake = install(monkeypatch, FakeSoc(), apple_silicon=False)
    assert build_apple_host_sensors()[:2] == (None, None)
    cpu, _ = build_host_sensors(tmp_path / "no-powercap")
    assert isinstance(cpu, CpuTimeEstimateSensor) and fake.monitors == 0


def test_missing_package_on_a_mac_keeps_the_estimates_and_says_how_to_install(monkeypatch, tmp_path):
    fake_zeus_apple_silicon.install(monkeypatch, None)
    cpu, _ = build_host_sensors(tmp_path / "no-powercap")
    assert isinstance(cpu, CpuTimeEstimateSensor)
    assert 'pip install "green-callbacks[apple]"' in cpu.reason
    gpu = build_apple_gpu_sensor()
    assert isinstance(gpu, NullSensor) and "zeus-apple-silicon" in gpu.reason


def test_ioreport_failing_at_open_or_mid_run(monkeypatch):
    install(monkeypatch, init_error=RuntimeError("IOReport not found"))
    sensor = build_apple_gpu_sensor()
    assert isinstance(sensor, NullSensor) and "IOReport could not be opened" in sensor.reason
    fake = install(monkeypatch, FakeSoc())
    sensor = build_apple_gpu_sensor()
    sensor.start()
    fake.soc.error = RuntimeError("subscription lost")
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == UNAVAILABLE and "subscription lost" in reading.note


def test_training_on_cpu_gives_no_gpu_energy(monkeypatch):
    fake = install(monkeypatch, FakeSoc())
    sensor = build_apple_gpu_sensor([])
    assert isinstance(sensor, NullSensor) and "training on CPU" in sensor.reason and fake.monitors == 0


def test_close_freezes(monkeypatch):
    fake = install(monkeypatch, FakeSoc())
    sensor = build_apple_gpu_sensor()
    sensor.start()
    fake.soc.gpu_mj += 1_000
    sensor.close()
    fake.soc.gpu_mj += 50_000
    assert sensor.read().energy_j == pytest.approx(1.0)

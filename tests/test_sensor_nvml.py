"""The NVML GPU sensor and the CUDA-device → NVML mapping, against a fake pynvml (the hardware boundary only)."""

from __future__ import annotations

import ctypes
import math
import threading
import time
import warnings

import pytest

from green_callbacks.core.sensors import nvml
from green_callbacks.core.sensors.base import NOT_USED, UNAVAILABLE, NullSensor, Sensor
from green_callbacks.core.sensors.gpu_map import GpuId, check_gpu_indices, parse_cuda_visible_devices, select_gpus
from green_callbacks.core.sensors.nvml import (
    METHOD_COUNTER,
    METHOD_POWER,
    NvmlGpuSensor,
    NvmlUnavailableError,
    build_gpu_sensor,
    nvml_library,
    trapezoid_j,
)
from tests.fakes import fake_pynvml
from tests.fakes.fake_pynvml import FakeGpu, FakePynvml, gpu_uuid

IDLE_PERIOD_S = 3600.0  # a sampler that never wakes during a test: samples come only from sample_once()/read()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


@pytest.fixture
def closing():
    """Collects sensors and closes them after the test, so no sampler thread outlives it."""
    sensors: list = []
    yield sensors.append
    for sensor in sensors:
        sensor.close()


def install(monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu], **kwargs) -> FakePynvml:
    fake = FakePynvml(gpus, **kwargs)
    fake_pynvml.install(monkeypatch, fake)
    return fake


def four_gpus() -> list[FakeGpu]:
    return [FakeGpu(energy_mj=1_000_000 * (n + 1)) for n in range(4)]


def add_energy(fake: FakePynvml, *mj: int) -> None:
    for gpu, delta in zip(fake.gpus, mj, strict=False):
        gpu.energy_mj += delta


# ------------------------------------------------------------------------------------------- energy counter path


def test_counter_path_sums_deltas_of_all_gpus_in_joules(monkeypatch, closing):
    fake = install(monkeypatch, [FakeGpu(energy_mj=123_456), FakeGpu(energy_mj=9_000_000)])
    sensor = build_gpu_sensor()
    closing(sensor)
    assert isinstance(sensor, NvmlGpuSensor) and isinstance(sensor, Sensor)
    assert (sensor.component, sensor.scope) == ("gpu", "device")
    sensor.start()
    add_energy(fake, 7_500, 2_250)
    reading = sensor.read()
    # (7 500 + 2 250) mJ = 9 750 mJ = 9.75 J; the counters' absolute values (123 456, 9 000 000) do not count
    assert reading.energy_j == pytest.approx(9.75, abs=1e-12)
    assert reading.method == METHOD_COUNTER == "nvml-energy-counter"
    assert reading.note == ""
    add_energy(fake, 1, 0)
    assert sensor.read().energy_j == pytest.approx(9.751, abs=1e-12)  # cumulative since start: 9 751 mJ
    assert not sensor.sampling  # no thread on the counter path


def test_start_again_zeroes_the_energy(monkeypatch, closing):
    fake = install(monkeypatch, [FakeGpu(energy_mj=0)])
    sensor = build_gpu_sensor()
    closing(sensor)
    sensor.start()
    add_energy(fake, 4_000)
    assert sensor.read().energy_j == pytest.approx(4.0)
    sensor.start()
    add_energy(fake, 500)
    assert sensor.read().energy_j == pytest.approx(0.5)


def test_counter_going_backwards_is_unavailable_not_negative(monkeypatch, closing):
    fake = install(monkeypatch, [FakeGpu(energy_mj=50_000)])
    sensor = build_gpu_sensor()
    closing(sensor)
    sensor.start()
    fake.gpus[0].energy_mj = 10  # driver reloaded: counter restarted
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == UNAVAILABLE
    assert "went back" in reading.note and gpu_uuid(0) in reading.note


# ------------------------------------------------------------------------------------------- power-polling path


def test_power_path_is_exact_for_a_linear_trace(monkeypatch, fake_clock, closing):
    t0 = fake_clock()
    # P(t) = 100 W + 50 W/s · (t - t0), sampled every 0.5 s for 10 s. The trapezoid rule is exact on a line:
    # ∫0^10 (100 + 50 t) dt = 100·10 + 25·10² = 1000 + 2500 = 3500 J.
    install(monkeypatch, [FakeGpu(counter=False, power_mw=lambda t: 1000.0 * (100.0 + 50.0 * (t - t0)))])
    sensor = build_gpu_sensor(sample_period_s=IDLE_PERIOD_S)
    closing(sensor)
    assert sensor.method == METHOD_POWER == "nvml-power"
    sensor.start()
    for _ in range(20):
        fake_clock.advance(0.5)
        sensor.sample_once()
    reading = sensor.read()
    assert reading.method == "nvml-power"
    assert reading.energy_j == pytest.approx(3500.0, rel=1e-9)


def test_power_path_matches_a_sine_trace_integral_within_half_a_percent(monkeypatch, fake_clock, closing):
    t0 = fake_clock()
    # P(t) = 300 W + 100 W · sin(2π (t - t0) / 4 s) over 8 s = two full periods, so the sine integrates to 0:
    # ∫0^8 P dt = 300 W · 8 s = 2400 J.
    trace = lambda t: 1000.0 * (300.0 + 100.0 * math.sin(2 * math.pi * (t - t0) / 4.0))  # noqa: E731
    install(monkeypatch, [FakeGpu(counter=False, power_mw=trace)])
    sensor = build_gpu_sensor(sample_period_s=IDLE_PERIOD_S)
    closing(sensor)
    sensor.start()
    for _ in range(79):  # samples every 0.1 s; read() takes the last one at t0 + 8 s
        fake_clock.advance(0.1)
        sensor.sample_once()
    fake_clock.advance(0.1)
    energy_j = sensor.read().energy_j
    assert energy_j is not None
    assert abs(energy_j - 2400.0) / 2400.0 < 0.005


def test_read_integrates_up_to_the_moment_of_the_read(monkeypatch, fake_clock, closing):
    install(monkeypatch, [FakeGpu(counter=False, power_mw=250_000.0)])
    sensor = build_gpu_sensor(sample_period_s=IDLE_PERIOD_S)
    closing(sensor)
    sensor.start()
    fake_clock.advance(4.0)  # no sample in between: read() samples itself
    assert sensor.read().energy_j == pytest.approx(250.0 * 4.0)  # 1000 J


def test_trapezoid_by_hand():
    # (100 W + 300 W) / 2 · (12 s - 10 s) = 200 W · 2 s = 400 J
    assert trapezoid_j(10.0, 100.0, 12.0, 300.0) == pytest.approx(400.0)


def test_function_not_found_counter_falls_back_to_power(monkeypatch, fake_clock, closing):
    missing = {"nvmlDeviceGetTotalEnergyConsumption": fake_pynvml.NVMLError_FunctionNotFound}
    install(monkeypatch, [FakeGpu(power_mw=80_000.0, errors=missing)])
    sensor = build_gpu_sensor(sample_period_s=IDLE_PERIOD_S)
    closing(sensor)
    sensor.start()
    fake_clock.advance(2.0)
    reading = sensor.read()
    assert reading.method == METHOD_POWER
    assert reading.energy_j == pytest.approx(80.0 * 2.0)  # 160 J


def test_mixed_gpus_are_measured_per_device_and_the_method_says_both(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeGpu(energy_mj=0), FakeGpu(counter=False, power_mw=250_000.0)])
    sensor = build_gpu_sensor(sample_period_s=IDLE_PERIOD_S)
    closing(sensor)
    sensor.start()
    add_energy(fake, 10_000)
    fake_clock.advance(4.0)
    reading = sensor.read()
    # GPU 0: 10 000 mJ = 10 J; GPU 1: 250 W · 4 s = 1000 J; total 1010 J
    assert reading.energy_j == pytest.approx(1010.0)
    assert reading.method == "nvml-energy-counter+nvml-power"
    methods = [d["method"] for d in sensor.info()["devices"]]
    assert methods == ["nvml-energy-counter", "nvml-power"]


def test_gpu_with_neither_counter_nor_power_gives_a_null_sensor(monkeypatch):
    no_power = {"nvmlDeviceGetPowerUsage": fake_pynvml.NVMLError_NotSupported}
    install(monkeypatch, [FakeGpu(counter=False, errors=no_power)])
    sensor = build_gpu_sensor()
    assert isinstance(sensor, NullSensor)
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == UNAVAILABLE
    assert "neither an energy counter nor a power reading" in reading.note


# ------------------------------------------------------------------------------------------- the sampler thread


def wait_until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_sampler_thread_samples_is_a_daemon_and_stops_on_close(monkeypatch):
    fake = install(monkeypatch, [FakeGpu(counter=False, power_mw=100_000.0)])
    sensor = build_gpu_sensor(sample_period_s=0.005)
    assert isinstance(sensor, NvmlGpuSensor)
    assert not sensor.sampling  # nothing runs before start()
    sensor.start()
    threads = [t for t in threading.enumerate() if t.name == "green-callbacks-nvml-power"]
    assert len(threads) == 1 and threads[0].daemon
    assert wait_until(lambda: fake.calls["nvmlDeviceGetPowerUsage"] >= 6)  # the thread samples by itself
    sensor.close()
    assert not sensor.sampling and not threads[0].is_alive()
    frozen = sensor.read()
    calls = fake.calls["nvmlDeviceGetPowerUsage"]
    time.sleep(0.05)
    assert fake.calls["nvmlDeviceGetPowerUsage"] == calls  # no sampling after close, not even from read()
    assert sensor.read() == frozen and frozen.energy_j is not None and frozen.energy_j > 0
    sensor.close()  # idempotent
    sensor.start()  # a closed sensor stays closed
    assert not sensor.sampling


def test_close_freezes_the_counter_reading(monkeypatch):
    fake = install(monkeypatch, [FakeGpu(energy_mj=0)])
    sensor = build_gpu_sensor()
    sensor.start()
    add_energy(fake, 3_000)
    sensor.close()
    add_energy(fake, 99_000)
    assert sensor.read().energy_j == pytest.approx(3.0)


# ------------------------------------------------------------------------------------------- lost GPUs


def test_gpu_lost_mid_run_makes_the_reading_unavailable_with_a_note(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeGpu(energy_mj=0, name="NVIDIA A100-SXM4-80GB")])
    sensor = build_gpu_sensor()
    closing(sensor)
    sensor.start()
    add_energy(fake, 2_000)
    assert sensor.read().energy_j == pytest.approx(2.0)
    fake_clock.advance(30.0)
    fake.gpus[0].lost = True
    reading = sensor.read()  # must not raise
    assert reading.energy_j is None and reading.method == UNAVAILABLE
    assert "GPU 0" in reading.note and gpu_uuid(0) in reading.note and "NVIDIA A100-SXM4-80GB" in reading.note
    assert "30.0 s" in reading.note and "GpuIsLost" in reading.note
    fake.gpus[0].lost = False  # back, but its counter can no longer be trusted: stays unavailable
    assert sensor.read().energy_j is None
    assert "lost" in sensor.info()["lost"]


def test_one_of_two_gpus_failing_makes_the_sum_unavailable(monkeypatch, closing):
    fake = install(monkeypatch, [FakeGpu(energy_mj=0), FakeGpu(energy_mj=0)])
    sensor = build_gpu_sensor()
    closing(sensor)
    sensor.start()
    add_energy(fake, 1_000, 1_000)
    assert sensor.read().energy_j == pytest.approx(2.0)  # 1 J + 1 J
    fake.gpus[1].errors["nvmlDeviceGetTotalEnergyConsumption"] = fake_pynvml.NVMLError_Unknown
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == UNAVAILABLE  # not the 1 J of GPU 0 alone
    assert "GPU 1" in reading.note and gpu_uuid(1) in reading.note and "partial sum" in reading.note


def test_power_gpu_lost_in_the_sampler_thread_is_reported_at_the_next_read(monkeypatch, fake_clock, closing):
    fake = install(monkeypatch, [FakeGpu(counter=False, power_mw=100_000.0)])
    sensor = build_gpu_sensor(sample_period_s=IDLE_PERIOD_S)
    closing(sensor)
    sensor.start()
    fake.gpus[0].lost = True
    sensor.sample_once()  # what the thread would do; must not raise
    reading = sensor.read()
    assert reading.energy_j is None and "GpuIsLost" in reading.note


# ------------------------------------------------------------------------------------------- NVML lifetime


def test_nvml_init_is_called_once_across_sensors_and_threads(monkeypatch, closing):
    fake = install(monkeypatch, four_gpus())
    for _ in range(3):
        closing(build_gpu_sensor())
    select_gpus([0])
    barrier = threading.Barrier(8)

    def init() -> None:
        barrier.wait()
        nvml_library()

    threads = [threading.Thread(target=init) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.init_calls == 1
    assert fake.shutdown_calls == 0


def test_library_missing_gives_an_unavailable_null_sensor_not_zero(monkeypatch):
    fake_pynvml.install(monkeypatch, None)
    sensor = build_gpu_sensor()
    assert isinstance(sensor, NullSensor) and sensor.scope == "device" and sensor.component == "gpu"
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == UNAVAILABLE
    assert "pip install nvidia-ml-py" in reading.note


def test_no_driver_gives_a_null_sensor_that_says_what_to_do(monkeypatch):
    fake = install(monkeypatch, [], init_error=fake_pynvml.NVMLError_LibraryNotFound())
    sensor = build_gpu_sensor()
    assert isinstance(sensor, NullSensor)
    assert "libnvidia-ml.so.1" in sensor.reason and "install the driver" in sensor.reason
    build_gpu_sensor()
    assert fake.init_calls == 1  # the failure is remembered, not retried at every build


def test_driver_not_loaded_reason(monkeypatch):
    install(monkeypatch, [], init_error=fake_pynvml.NVMLError_DriverNotLoaded())
    with pytest.raises(NvmlUnavailableError, match="driver is not loaded"):
        nvml_library()


def test_the_real_pynvml_without_a_driver_gives_a_null_sensor():
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        pass
    else:
        pytest.skip("this machine has an NVIDIA driver")
    sensor = build_gpu_sensor()
    assert isinstance(sensor, NullSensor) and sensor.read().method == UNAVAILABLE
    assert "libnvidia-ml.so.1" in sensor.reason


# ------------------------------------------------------------------------------------------- device selection


def test_cuda_visible_devices_selects_one_of_four(monkeypatch, closing):
    fake = install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    sensor = build_gpu_sensor(device_indices=[0])  # cuda:0 in this process is the machine's GPU 2
    closing(sensor)
    sensor.start()
    add_energy(fake, 1_000, 2_000, 3_000, 4_000)
    assert sensor.read().energy_j == pytest.approx(3.0)  # only GPU 2's 3 000 mJ
    [device] = sensor.info()["devices"]
    assert (device["nvml_index"], device["cuda_index"], device["uuid"]) == (2, 0, gpu_uuid(2))


def test_cuda_visible_devices_order_is_cuda_ordinal_order(monkeypatch):
    install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert [g.nvml_index for g in select_gpus([1])] == [1]
    assert [(g.nvml_index, g.cuda_index) for g in select_gpus(None)] == [(3, 0), (1, 1)]


def test_uuid_form_cuda_visible_devices_with_a_prefix(monkeypatch, closing):
    fake = install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{gpu_uuid(3)[:14]},{gpu_uuid(0)}")
    chosen = select_gpus([0])
    assert [g.uuid for g in chosen] == [gpu_uuid(3)]
    sensor = build_gpu_sensor()  # both visible GPUs
    closing(sensor)
    sensor.start()
    add_energy(fake, 1_000, 2_000, 3_000, 4_000)
    assert sensor.read().energy_j == pytest.approx(1.0 + 4.0)  # GPUs 0 and 3


def test_unknown_uuid_in_cuda_visible_devices_ends_the_list_with_a_warning(monkeypatch):
    install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{gpu_uuid(1)},GPU-ffffffff,{gpu_uuid(2)}")
    with pytest.warns(UserWarning, match="matches no GPU"):
        chosen = select_gpus(None)
    assert [g.nvml_index for g in chosen] == [1]  # CUDA ignores the bad entry and all after it


def test_empty_cuda_visible_devices_means_no_gpu(monkeypatch):
    fake = install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert select_gpus(None) == []
    sensor = build_gpu_sensor()
    assert isinstance(sensor, NullSensor) and sensor.read().energy_j is None
    assert "no GPU is visible" in sensor.reason and "NVML sees 4" in sensor.reason
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 0


def test_training_on_cpu_gives_not_used_without_touching_nvml(monkeypatch):
    """No GPU energy, and nothing missing: the run does not use a GPU (a different state from 'unavailable')."""
    fake = install(monkeypatch, four_gpus())
    sensor = build_gpu_sensor(device_indices=[])
    assert isinstance(sensor, NullSensor)
    reading = sensor.read()
    assert reading.energy_j is None and reading.method == NOT_USED and "training on CPU" in reading.note
    assert sensor.info()["method"] == NOT_USED
    assert fake.init_calls == 0


def mig_machine() -> list[FakeGpu]:
    return [
        FakeGpu(name="NVIDIA A100-SXM4-40GB", energy_mj=0),
        FakeGpu(
            name="NVIDIA A100-SXM4-40GB",
            energy_mj=0,
            mig_enabled=True,
            mig_uuids=["MIG-11111111-2222-3333-4444-555555555555", "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"],
        ),
    ]


def test_mig_entry_maps_to_its_parent_gpu_and_says_so(monkeypatch, closing):
    fake = install(monkeypatch, mig_machine())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-aaaaaaaa")
    [gpu] = select_gpus([0])
    assert (gpu.nvml_index, gpu.uuid, gpu.mig_uuid) == (1, gpu_uuid(1), "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    sensor = build_gpu_sensor(device_indices=[0])
    closing(sensor)
    sensor.start()
    add_energy(fake, 500, 6_000)
    reading = sensor.read()
    assert reading.energy_j == pytest.approx(6.0)  # the whole parent GPU 1, never GPU 0
    assert reading.method == METHOD_COUNTER
    assert "MIG" in reading.note and "whole physical GPU" in reading.note
    info = sensor.info()
    assert info["mig"] is True and info["devices"][0]["mig_uuid"].startswith("MIG-aaaaaaaa")


def test_legacy_mig_form_and_two_instances_of_one_gpu_count_it_once(monkeypatch, closing):
    fake = install(monkeypatch, mig_machine())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"MIG-{gpu_uuid(1)}/1/0")
    assert [g.nvml_index for g in select_gpus(None)] == [1]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    chosen = select_gpus(device_uuids=["11111111-2222-3333-4444-555555555555", "MIG-aaaaaaaa"])
    assert [g.nvml_index for g in chosen] == [1]  # both MIG instances share GPU 1's counter: once
    sensor = NvmlGpuSensor(chosen)
    closing(sensor)
    sensor.start()
    add_energy(fake, 0, 1_000)
    assert sensor.read().energy_j == pytest.approx(1.0)


def test_device_uuids_from_torch_without_prefix(monkeypatch):
    install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # ignored: UUIDs are exact
    chosen = select_gpus(device_uuids=[gpu_uuid(2)[4:]])
    assert [(g.nvml_index, g.cuda_index) for g in chosen] == [(2, 0)]
    with pytest.raises(ValueError, match="matches no GPU"):
        select_gpus(device_uuids=["deadbeef"])


def test_gpus_override_wins_over_cuda_visible_devices(monkeypatch, closing):
    fake = install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    sensor = build_gpu_sensor(gpus=[3, 1], device_indices=[0])
    closing(sensor)
    sensor.start()
    add_energy(fake, 1_000, 2_000, 3_000, 4_000)
    assert sensor.read().energy_j == pytest.approx(2.0 + 4.0)  # GPUs 1 and 3


def test_unknown_gpus_index_is_a_value_error_naming_what_exists(monkeypatch):
    install(monkeypatch, four_gpus())
    with pytest.raises(ValueError, match=r"gpus=\[5\] but this machine has 4 GPUs \(0-3\)"):
        build_gpu_sensor(gpus=[5])
    with pytest.raises(ValueError, match=r"gpus=\[5\] but this machine has 4 GPUs \(0-3\)"):
        check_gpu_indices([5], count=4)


@pytest.mark.parametrize("bad", [[-1], ["0"], [True], "0", [0, 0], [1.0]])
def test_bad_gpus_values_are_rejected_without_nvml(monkeypatch, bad):
    fake_pynvml.install(monkeypatch, None)  # no NVML at all: the type checks still apply
    with pytest.raises(ValueError, match="gpus="):
        check_gpu_indices(bad)
    with pytest.raises(ValueError, match="gpus="):
        build_gpu_sensor(gpus=bad)


def test_check_gpu_indices_accepts_valid_input():
    check_gpu_indices(None)
    check_gpu_indices([0, 3], count=4)
    check_gpu_indices((2,))  # count unknown: type checks only


def test_device_index_not_made_visible_gives_a_null_sensor_with_a_warning(monkeypatch):
    install(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(ValueError, match=r"device index 1 is not visible: CUDA_VISIBLE_DEVICES='1' makes 1 GPU"):
        select_gpus([1])
    with pytest.warns(UserWarning, match="not visible"):
        sensor = build_gpu_sensor(device_indices=[1])
    assert isinstance(sensor, NullSensor) and "gpus=[...]" in sensor.reason


def heterogeneous() -> list[FakeGpu]:
    return [FakeGpu(name="NVIDIA GeForce RTX 3060"), FakeGpu(name="NVIDIA GeForce RTX 4090")]


def test_integer_ordinals_on_mixed_gpus_warn_unless_pci_bus_order(monkeypatch):
    install(monkeypatch, heterogeneous())
    with pytest.warns(UserWarning, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        select_gpus([0])
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [g.nvml_index for g in select_gpus([0])] == [0]


def test_no_order_warning_when_the_choice_cannot_depend_on_order(monkeypatch):
    install(monkeypatch, heterogeneous())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(select_gpus(None)) == 2  # all GPUs, whatever their order
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpu_uuid(1))
        assert [g.nvml_index for g in select_gpus([0])] == [1]  # by UUID: exact
        assert [g.nvml_index for g in select_gpus(gpus=[0])] == [0]  # the user's NVML index: exact
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.warns(UserWarning, match="may measure the wrong GPU"):
        select_gpus([0])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", []),
        ("2,0", [2, 0]),
        ("1gpu2,3", [1, 3]),
        ("0,-1,3", [0]),
        ("0,0", []),
        (" 1 , 2", [1, 2]),
        ("GPU-8a3c,GPU-1f2e", ["GPU-8a3c", "GPU-1f2e"]),
        ("GPU-8a3c,1", ["GPU-8a3c"]),
        ("MIG-4d6e", ["MIG-4d6e"]),
        ("MIG-4d6e,MIG-4d6e", []),
    ],
)
def test_parse_cuda_visible_devices_like_cuda(value, expected):
    # the expected lists are torch.cuda._parse_visible_devices' results (research/callback-apis.md §4)
    assert parse_cuda_visible_devices(value) == expected


# ------------------------------------------------------------------------------------------- info


def test_info_names_the_hardware_and_method(monkeypatch, closing):
    install(monkeypatch, [FakeGpu(name="NVIDIA H200"), FakeGpu(name="NVIDIA H200", counter=False)],
            driver_version="570.86.15", nvml_version="12.570.86.15")
    sensor = build_gpu_sensor(sample_period_s=0.25)
    closing(sensor)
    info = sensor.info()
    assert info["method"] == "nvml-energy-counter+nvml-power"
    assert (info["driver_version"], info["nvml_version"]) == ("570.86.15", "12.570.86.15")
    assert info["mig"] is False and info["sample_period_s"] == 0.25
    assert [(d["name"], d["uuid"], d["method"], d["mig_enabled"]) for d in info["devices"]] == [
        ("NVIDIA H200", gpu_uuid(0), "nvml-energy-counter", False),
        ("NVIDIA H200", gpu_uuid(1), "nvml-power", False),
    ]


def test_sensor_rejects_bad_arguments(monkeypatch):
    install(monkeypatch, four_gpus())
    with pytest.raises(ValueError, match="at least one GPU"):
        NvmlGpuSensor([])
    gpu = GpuId(0, gpu_uuid(0), "NVIDIA H100 80GB HBM3")
    with pytest.raises(ValueError, match="sample_period_s=0"):
        NvmlGpuSensor([gpu], sample_period_s=0)
    assert nvml.DEFAULT_SAMPLE_PERIOD_S == 0.1


def test_a_bug_in_the_sampler_thread_surfaces_at_read(monkeypatch):
    calls = []

    def trace(t: float) -> float:
        calls.append(t)
        if len(calls) > 2:  # 1: the probe at construction, 2: start(); then the thread
            raise TypeError("bug in a power trace")
        return 100_000.0

    install(monkeypatch, [FakeGpu(counter=False, power_mw=trace)])
    sensor = build_gpu_sensor(sample_period_s=0.005)
    sensor.start()
    assert wait_until(lambda: sensor._sampler_error is not None)
    with pytest.raises(TypeError, match="bug in a power trace"):  # strict mode (tests/conftest.py)
        sensor.read()
    monkeypatch.setenv("GREEN_CALLBACKS_STRICT", "0")
    reading = sensor.read()
    assert reading.energy_j is None and "sampler failed" in reading.note
    monkeypatch.setenv("GREEN_CALLBACKS_STRICT", "1")
    sensor.close()  # close never raises, and freezes the unavailable reading
    assert sensor.read().energy_j is None


def test_unknown_gpu_index_fails_at_callback_construction(monkeypatch):
    """gpus=[5] on a machine with 4 GPUs: a ValueError from the constructor naming the GPUs there are."""
    from green_callbacks._adapter import GreenCallbackBase
    from tests.fakes import fake_pynvml

    fake_pynvml.install(monkeypatch, fake_pynvml.FakePynvml([fake_pynvml.FakeGpu() for _ in range(4)]))
    with pytest.raises(ValueError, match=r"gpus=\[5\] but this machine has 4 GPUs \(0-3\)"):
        GreenCallbackBase(gpus=[5], carbon_intensity=100.0)
    GreenCallbackBase(gpus=[3], carbon_intensity=100.0)  # a GPU that exists is accepted

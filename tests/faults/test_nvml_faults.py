"""NVML faults in real trainings of each adapter: library missing, init failure, a GPU lost mid-epoch, no energy
counter, one of two GPUs failing.

The adapters train on CPU here, so NVML is reached the way a user forces it: ``gpus=[0]`` (explicit NVML indices
win even when the framework trains on CPU), with the fake ``pynvml`` installed at the hardware boundary. CPU and RAM
come from the machine's real sensors (CPU-time and RSS estimates: the fixture hides any RAPL). These are hardware
faults, not bugs: the tests run in strict mode (GREEN_CALLBACKS_STRICT=1) and nothing may raise.

The probe in the model adds 1000 mJ to every fake GPU's counter before each training step, so a complete epoch of
4 steps is 4 × 1 J = 4 J per GPU, by hand; validation adds nothing.
"""

from __future__ import annotations

import pytest

from tests.fakes.fake_pynvml import FakeGpu, FakePynvml, NVMLError_DriverNotLoaded, NVMLError_Unknown, install
from tests.faults.harness import EPOCHS, STEPS_PER_EPOCH, epochs_of, gpu_energy_j, only, train

J_PER_STEP = 1.0  # 1000 mJ added per training step, per GPU
EPOCH_GPU_J = STEPS_PER_EPOCH * J_PER_STEP  # 4 J


def counting(fake: FakePynvml, lose: tuple[int, int] | None = None, gpu: int = 0):
    """An action adding 1 J per step to every GPU; at ``lose = (epoch, step)`` GPU ``gpu`` is lost first."""

    def action(epoch: int, step: int) -> None:
        if (epoch, step) == lose:
            fake.gpus[gpu].lost = True
        for board in fake.gpus:
            board.energy_mj += 1000

    return action


def assert_completed_with_host_energy(run) -> dict:
    assert run.error is None, repr(run.error)
    assert run.probe.steps == EPOCHS * STEPS_PER_EPOCH  # the training went on to the end
    record = run.record
    assert record["status"] == "completed"
    assert epochs_of(record) == list(range(EPOCHS))
    for row in record["epochs"]:  # CPU and RAM are still measured every epoch
        assert row["component_energy_j"]["cpu"] is not None and row["component_energy_j"]["cpu"] >= 0
        assert row["component_energy_j"]["ram"] is not None and row["component_energy_j"]["ram"] > 0
    # totals are the sum of what the rows hold (the components that were measured), never a silent zero
    assert record["totals"]["energy_j"] == pytest.approx(sum(row["energy_j"] for row in record["epochs"]))
    return record


def test_nvml_library_missing(adapter, tmp_path, monkeypatch):
    install(monkeypatch, None)  # `import pynvml` fails
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"))
    record = assert_completed_with_host_energy(run)
    assert gpu_energy_j(record) == [None] * EPOCHS
    assert record["methods"]["gpu"] == ["unavailable"]
    assert "pip install nvidia-ml-py" in record["components"]["gpu"]["reason"]
    message = only(run.green_warnings(), "not measured")
    assert "gpu: the NVML bindings are not installed" in message and "pip install nvidia-ml-py" in message


def test_nvml_init_failure(adapter, tmp_path, monkeypatch):
    fake = install(monkeypatch, FakePynvml([FakeGpu()], init_error=NVMLError_DriverNotLoaded()))
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"))
    record = assert_completed_with_host_energy(run)
    assert fake.init_calls == 1  # tried once, not at every read
    assert gpu_energy_j(record) == [None] * EPOCHS
    assert "driver is not loaded" in record["components"]["gpu"]["reason"]
    message = only(run.green_warnings(), "not measured")
    assert "the NVIDIA driver is not loaded" in message


def test_gpu_lost_mid_epoch(adapter, tmp_path, monkeypatch):
    fake = install(monkeypatch, FakePynvml([FakeGpu(energy_mj=5_000_000)]))
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"), action=counting(fake, lose=(1, 2)))
    record = assert_completed_with_host_energy(run)
    # epoch 0 complete before the loss: 4 steps × 1 J; from epoch 1 (lost at its 3rd step) on: unavailable, never 0
    assert gpu_energy_j(record) == [pytest.approx(EPOCH_GPU_J), None, None]
    assert [row["missing_components"] for row in record["epochs"]] == [[], ["gpu"], ["gpu"]]
    assert record["methods"]["gpu"] == ["nvml-energy-counter", "unavailable"]
    assert "GPU 0" in record["components"]["gpu"]["lost"] and "GpuIsLost" in record["components"]["gpu"]["lost"]
    message = only(run.green_warnings(), "gpu energy could not be measured")
    assert "GPU 0" in message and "GPU is lost" in message and "in epoch 1" in message


def test_energy_counter_not_supported_falls_back_to_power_sampling(adapter, tmp_path, monkeypatch):
    install(monkeypatch, FakePynvml([FakeGpu(counter=False, power_mw=150_000.0)]))  # pre-Volta: power only, 150 W
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"))
    record = assert_completed_with_host_energy(run)
    assert record["methods"]["gpu"] == ["nvml-power"]
    assert record["components"]["gpu"]["sample_period_s"] == 0.1
    # constant 150 W integrated over the epoch's window: 150 W × its duration (10 ms of slack: the sensor reads its
    # clock just after the meter does, at both ends)
    for row in record["epochs"]:
        assert row["component_energy_j"]["gpu"] == pytest.approx(150.0 * row["time_s"], rel=0.05, abs=150.0 * 0.01)
    assert run.green_warnings() == []  # a supported fallback, named in the record: nothing to warn about


def test_one_of_two_gpus_lost_mid_run(adapter, tmp_path, monkeypatch):
    fake = install(monkeypatch, FakePynvml([FakeGpu(), FakeGpu(energy_mj=7_000)]))
    run = train(adapter, tmp_path, gpus=[0, 1], output_dir=str(tmp_path / "runs"),
                action=counting(fake, lose=(1, 0), gpu=1))
    record = assert_completed_with_host_energy(run)
    # epoch 0: both GPUs, 2 × 4 J = 8 J; then GPU 1 is lost and GPU 0 alone is not reported (it would be low)
    assert gpu_energy_j(record) == [pytest.approx(2 * EPOCH_GPU_J), None, None]
    assert len(record["components"]["gpu"]["devices"]) == 2
    message = only(run.green_warnings(), "gpu energy could not be measured")
    assert "GPU 1" in message and "partial sum would be silently low" in message


def test_one_of_two_gpus_failing_at_start(adapter, tmp_path, monkeypatch):
    broken = FakeGpu(errors={"nvmlDeviceGetTotalEnergyConsumption": NVMLError_Unknown})
    install(monkeypatch, FakePynvml([FakeGpu(), broken]))
    run = train(adapter, tmp_path, gpus=[0, 1], output_dir=str(tmp_path / "runs"))
    record = assert_completed_with_host_energy(run)
    assert gpu_energy_j(record) == [None] * EPOCHS  # never a sum over the healthy GPU alone
    message = only(run.green_warnings(), "not measured")
    assert "GPU 1" in message and "energy counter cannot be read" in message

"""Device type → sensor, per framework, and real Lightning fits whose trainer reports a ROCm / XPU / MPS / TPU root
device, with the vendor library faked at the hardware boundary.

This machine has no AMD, Intel, Apple or TPU device, so the Lightning fits run on CPU; only the trainer's reported
root device is changed, for the one hook in which the adapter reads it (``on_fit_start``), by a callback placed
before ``GreenCallback`` and restored by one placed after it. Nothing in green_callbacks is patched.

Clock and energy: the model advances the fake clock 1 s per training batch and 0.5 s per validation batch, so an
epoch (3 training + 2 validation batches) is 4 s; each tick also moves the fake device's energy by P × dt, so an
epoch's accelerator energy is P × 4 s.
"""

from __future__ import annotations

import types

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.accelerators import (
    build_accelerator_sensor,
    check_device_type,
    jax_device_type,
    torch_device_type,
)
from green_callbacks.core.sensors.amd import AmdGpuSensor
from green_callbacks.core.sensors.apple import AppleSocSensor
from green_callbacks.core.sensors.base import NullSensor
from green_callbacks.core.sensors.intel_gpu import IntelGpuSensor
from green_callbacks.core.sensors.tpu import TpuDutyCycleSensor
from tests.fakes import fake_amdsmi, fake_libtpu, fake_pynvml, fake_pyzes, fake_zeus_apple_silicon
from tests.fakes.fake_amdsmi import FakeAmdGpu, FakeAmdsmi
from tests.fakes.fake_libtpu import FakeTpuChips
from tests.fakes.fake_pyzes import FakeDomain, FakeIntelGpu, FakePyzes
from tests.fakes.fake_zeus_apple_silicon import FakeSoc, FakeZeusAppleSilicon

torch = pytest.importorskip("torch")

J_PER_KWH = 3.6e6
EPOCH_S = 3 * 1.0 + 2 * 0.5  # 4 s


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "ZE_AFFINITY_MASK",
                 "ZE_FLAT_DEVICE_HIERARCHY", "PJRT_DEVICE", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------- device-type mapping


def test_torch_device_types(monkeypatch):
    assert torch_device_type(torch.device("cpu")) == "cpu"
    assert torch_device_type(torch.device("cuda", 1)) == "cuda"
    monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)  # a ROCm build of torch
    assert torch_device_type(torch.device("cuda", 1)) == "rocm"
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert torch_device_type(torch.device("xpu", 0)) == "xpu"
    assert torch_device_type(torch.device("mps")) == "mps"
    assert torch_device_type(torch.device("xla", 0)) == "tpu"  # PJRT_DEVICE unset: torch_xla's default is TPU
    monkeypatch.setenv("PJRT_DEVICE", "CUDA")
    assert torch_device_type(torch.device("xla", 0)) == "cuda"
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    assert torch_device_type(torch.device("xla", 0)) == "cpu"


@pytest.mark.parametrize(("platform", "version", "expected"), [
    ("gpu", "cuda 12040", "cuda"), ("gpu", "rocm 60241", "rocm"), ("tpu", "PJRT C API", "tpu"), ("cpu", "", "cpu"),
    ("METAL", "metal_plugin", "mps"),
])
def test_jax_device_types(platform, version, expected):
    assert jax_device_type(platform, version) == expected


def test_unknown_device_type_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device_type='npu'; it must be one of 'cpu', 'cuda', 'rocm'"):
        build_accelerator_sensor("npu")
    assert check_device_type("mps") == "mps"


def test_each_device_type_gets_its_sensor(monkeypatch, tmp_path):
    fake_amdsmi.install(monkeypatch, FakeAmdsmi([FakeAmdGpu()]))
    fake_pyzes.install(monkeypatch, FakePyzes([FakeIntelGpu(tiles=1, domains=[FakeDomain()])]))
    fake_zeus_apple_silicon.install(monkeypatch, FakeZeusAppleSilicon(FakeSoc()))
    fake_libtpu.install(monkeypatch, FakeTpuChips([0.0]))
    fake_pynvml.install(monkeypatch, None)
    built = {t: build_accelerator_sensor(t, [0], device_kind="TPU v4") for t in ("rocm", "xpu", "mps", "tpu")}
    try:
        assert isinstance(built["rocm"], AmdGpuSensor)
        assert isinstance(built["xpu"], IntelGpuSensor)
        assert isinstance(built["mps"], AppleSocSensor)
        assert isinstance(built["tpu"], TpuDutyCycleSensor)
    finally:
        for sensor in built.values():
            sensor.close()
    cpu = build_accelerator_sensor("cpu", [0])
    assert isinstance(cpu, NullSensor) and "training on CPU" in cpu.reason
    cuda = build_accelerator_sensor("cuda", [0])
    assert isinstance(cuda, NullSensor) and "pip install nvidia-ml-py" in cuda.reason  # NVML path, not AMD's


def test_gpus_is_ignored_with_a_warning_off_nvidia(monkeypatch):
    fake_amdsmi.install(monkeypatch, None)
    with pytest.warns(UserWarning, match="gpus=\\[1\\] selects NVIDIA GPUs"):
        sensor = build_accelerator_sensor("rocm", [0], gpus=[1])
    assert isinstance(sensor, NullSensor) and "green-callbacks[amd]" in sensor.reason


def test_no_vendor_library_is_imported_by_the_package():
    import subprocess
    import sys

    code = ("import sys, green_callbacks.core.session, green_callbacks.core.sensors.accelerators; "
            "print(sorted(m for m in ('amdsmi', 'pyzes', 'zeus_apple_silicon', 'libtpu', 'libtpu.sdk', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_one_device_resolution_for_every_front_end():
    from green_callbacks.core.devices import UNKNOWN, Devices, torch_devices

    assert torch_devices(None) == UNKNOWN == Devices("cuda", None, None)  # unknown: every visible NVIDIA GPU
    assert torch_devices("cpu") == Devices("cpu", [], None)
    assert torch_devices(torch.device("xpu", 3)) == Devices("xpu", [3], None)
    assert torch_devices("xpu") == Devices("xpu", [0], None)  # no Intel GPU here: torch's current one is its first
    assert torch_devices("mps") == Devices("mps", [0], None)
    assert torch_devices(torch.device("xla", 1)) == Devices("tpu", [1], None)
    assert torch_devices(torch.device("cuda", 0), count=2).indices == [0, 1]  # nn.DataParallel: every visible GPU
    assert torch_devices(torch.device("mps")).start_kwargs() == {
        "device_type": "mps", "device_indices": [0], "device_uuids": None}


# ------------------------------------------------------------------------------------------- HF and Keras mapping


def test_transformers_device_mapping():
    pytest.importorskip("transformers")
    from green_callbacks import transformers as hf

    for device, indices in [(torch.device("xpu", 1), [1]), (torch.device("mps"), [0]), (torch.device("cpu"), [])]:
        args = types.SimpleNamespace(device=device, n_gpu=1 if device.type != "cpu" else 0)
        assert hf._devices(args).indices == indices
    xpu = types.SimpleNamespace(device=torch.device("xpu", 1), n_gpu=1)
    assert hf._devices(xpu).uuids is None  # torch.cuda's UUIDs only for CUDA devices


def test_keras_device_mapping_on_the_torch_backend():
    pytest.importorskip("keras")
    from green_callbacks import keras as gk

    def model_on(device):
        weight = types.SimpleNamespace(value=types.SimpleNamespace(device=device))
        return types.SimpleNamespace(trainable_weights=[weight])

    def devices(model):
        found = gk._devices(model)
        return found.type, found.indices

    assert devices(model_on(torch.device("mps"))) == ("mps", [0])
    assert devices(model_on(torch.device("xpu", 2))) == ("xpu", [2])
    assert devices(model_on(torch.device("cpu"))) == ("cpu", [])
    assert devices(types.SimpleNamespace(trainable_weights=[])) == ("cpu", [])


# ------------------------------------------------------------------------------------------- real Lightning fits


def lightning_fit(tmp_path, fake_clock, device, on_tick, hip=None, max_epochs=2):
    """A real CPU fit whose trainer reports ``device`` as its root device during ``on_fit_start`` only."""
    pl = pytest.importorskip("lightning.pytorch")
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback
    from tests.models import lightning_module

    saved: dict = {}

    class ReportDevice(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            cls = type(trainer.strategy)
            saved["cls"], saved["prop"], saved["hip"] = cls, cls.__dict__.get("root_device"), torch.version.hip
            cls.root_device = property(lambda self: device)
            torch.version.hip = hip

    class Restore(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            undo()

    def undo():
        if "cls" in saved:
            cls = saved.pop("cls")
            if saved["prop"] is None:
                del cls.root_device
            else:
                cls.root_device = saved["prop"]
            torch.version.hip = saved["hip"]

    def tick(dt):
        fake_clock.advance(dt)
        on_tick(dt)

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
    train = DataLoader(TensorDataset(x[:10], y[:10]), batch_size=4)
    val = DataLoader(TensorDataset(x[10:], y[10:]), batch_size=4)
    callback = GreenCallback(carbon_intensity=400.0, output_dir=str(tmp_path / "runs"))
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=pl.loggers.CSVLogger(
        str(tmp_path), name="csv"), callbacks=[ReportDevice(), callback, Restore()], default_root_dir=str(tmp_path),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=2)
    try:
        trainer.fit(lightning_module(nn.Linear(4, 2), pl=pl, tick=tick, ticks={"train": 1.0, "validation": 0.5}),
                    train, val)
    finally:
        undo()
    assert "root_device" not in type(trainer.strategy).__dict__ or saved.get("prop") is not None
    return read_record(callback.record_path)


hip_before = torch.version.hip


def epoch_gpu_j(record):
    return [e["component_energy_j"]["gpu"] for e in record["epochs"]]


def test_lightning_on_rocm_reports_the_amd_counter(tmp_path, fake_clock, monkeypatch):
    fake = fake_amdsmi.install(monkeypatch, FakeAmdsmi([FakeAmdGpu(name="AMD Instinct MI300X", resolution_uj=1.0)]))
    record = lightning_fit(tmp_path, fake_clock, torch.device("cuda", 0), lambda dt: fake.gpus[0].add_joules(300 * dt),
                           hip="6.2.41133")
    assert record["methods"]["gpu"] == ["amdsmi-energy-counter"]
    assert epoch_gpu_j(record) == pytest.approx([300.0 * EPOCH_S] * 2)  # 1200 J per epoch
    assert record["components"]["gpu"]["devices"][0]["name"] == "AMD Instinct MI300X"
    assert torch.version.hip == hip_before


def test_lightning_on_xpu_reports_level_zero(tmp_path, fake_clock, monkeypatch):
    fake = fake_pyzes.install(monkeypatch, FakePyzes([FakeIntelGpu(tiles=1, domains=[FakeDomain()])]))
    record = lightning_fit(tmp_path, fake_clock, torch.device("xpu", 0), lambda dt: fake.gpus[0].add_joules(150 * dt))
    assert record["methods"]["gpu"] == ["level-zero-energy-counter"]
    assert epoch_gpu_j(record) == pytest.approx([150.0 * EPOCH_S] * 2)  # 600 J per epoch


def soc_ticker(soc):
    """The fake Apple SoC's counters moving at GPU 20 W, ANE 1 W, CPU 5 W, DRAM 0.5 W."""

    def tick(dt):
        soc.gpu_mj += round(20_000 * dt)
        soc.ane_mj += round(1_000 * dt)
        soc.cpu_total_mj += round(5_000 * dt)
        soc.dram_mj += round(500 * dt)

    return tick


def test_lightning_on_mps_reports_ioreport_for_gpu_cpu_and_dram(tmp_path, fake_clock, monkeypatch):
    soc = FakeSoc()
    fake_zeus_apple_silicon.install(monkeypatch, FakeZeusAppleSilicon(soc))

    record = lightning_fit(tmp_path, fake_clock, torch.device("mps"), soc_ticker(soc))
    assert record["methods"] == {"gpu": ["apple-ioreport-gpu"], "cpu": ["apple-ioreport-cpu"],
                                 "ram": ["apple-ioreport-dram"]}
    assert epoch_gpu_j(record) == pytest.approx([21.0 * EPOCH_S] * 2)  # GPU + ANE: 84 J per epoch
    assert [e["component_energy_j"]["cpu"] for e in record["epochs"]] == pytest.approx([5.0 * EPOCH_S] * 2)
    assert [e["component_energy_j"]["ram"] for e in record["epochs"]] == pytest.approx([0.5 * EPOCH_S] * 2)


def test_lightning_on_tpu_reports_the_labelled_estimate(tmp_path, fake_clock, monkeypatch):
    fake_libtpu.install(monkeypatch, FakeTpuChips([50.0, 0.0]))
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v4-8")
    record = lightning_fit(tmp_path, fake_clock, torch.device("xla", 0), lambda dt: None)
    assert record["methods"]["gpu"] == ["estimate-tpu-duty-cycle"]
    assert epoch_gpu_j(record) == pytest.approx([0.5 * 170.0 * EPOCH_S] * 2)  # chip 0 at 50 % of 170 W: 340 J


def test_lightning_on_an_unknown_tpu_is_unavailable_not_zero(tmp_path, fake_clock, monkeypatch):
    fake_libtpu.install(monkeypatch, FakeTpuChips([50.0]))
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
    with pytest.warns(UserWarning, match="not measured"):
        record = lightning_fit(tmp_path, fake_clock, torch.device("xla", 0), lambda dt: None, max_epochs=1)
    assert record["methods"]["gpu"] == ["unavailable"]
    assert epoch_gpu_j(record) == [None]
    assert "v5litepod" in record["components"]["gpu"]["reason"]


# ------------------------------------------------------------------------------------------- the loop Tracker


def tracker_run(tmp_path, fake_clock, device, on_tick):
    """A real CPU loop (two epochs of 3 steps, 1 s each on the fake clock) whose ``Tracker(device=...)`` names
    ``device``; each step also moves the fake device's energy by P x 1 s."""
    from torch import nn

    from green_callbacks.loop import Tracker

    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 4, generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(3)]
    tracker = Tracker(carbon_intensity=400.0, output_dir=str(tmp_path / "runs"), model=model, device=device)
    with tracker:
        for _ in range(2):
            with tracker.epoch() as epoch:
                epoch.metrics["val_loss"] = 0.5
                for x, y in batches:
                    nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                    optimizer.zero_grad()
                    fake_clock.advance(1.0)
                    on_tick(1.0)
                    tracker.step((x, y))
    return read_record(tracker.record_path)


def test_tracker_on_xpu_reports_level_zero(tmp_path, fake_clock, monkeypatch):
    fake = fake_pyzes.install(monkeypatch, FakePyzes([FakeIntelGpu(tiles=1, domains=[FakeDomain()])]))
    record = tracker_run(tmp_path, fake_clock, "xpu:0", lambda dt: fake.gpus[0].add_joules(150 * dt))
    assert record["methods"]["gpu"] == ["level-zero-energy-counter"]
    assert epoch_gpu_j(record) == pytest.approx([150.0 * 3] * 2)  # 150 W for 3 s: 450 J per epoch


def test_tracker_on_mps_reports_ioreport(tmp_path, fake_clock, monkeypatch):
    soc = FakeSoc()
    fake_zeus_apple_silicon.install(monkeypatch, FakeZeusAppleSilicon(soc))

    record = tracker_run(tmp_path, fake_clock, torch.device("mps"), soc_ticker(soc))
    assert record["methods"]["gpu"] == ["apple-ioreport-gpu"]
    assert epoch_gpu_j(record) == pytest.approx([21.0 * 3] * 2)  # GPU + ANE for 3 s: 63 J per epoch

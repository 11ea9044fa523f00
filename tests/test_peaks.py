"""Peak FLOP/s table: device names as NVML reports them, dense figures, None when unknown; the MFU formula."""

from __future__ import annotations

import pytest

from green_callbacks.core.flops import mfu, peak_flops_per_s, peak_spec
from green_callbacks.core.flops.peaks import normalize_dtype


@pytest.mark.parametrize(
    ("name", "dtype", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),  # SXM5 reports its memory type
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H100 NVL", "bf16", 835.5e12),
        ("NVIDIA H200", "bf16", 989.5e12),  # the SXM board's name says nothing more
        ("NVIDIA H200 NVL", "fp16", 835.5e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100 80GB PCIe", "tf32", 156e12),
        ("NVIDIA A100-PCIE-40GB", "fp32", 19.5e12),
        ("NVIDIA A10", "bf16", 125e12),
        ("NVIDIA A10G", "fp16", 125e12),
        ("NVIDIA L4", "bf16", 121e12),
        ("NVIDIA L40", "bf16", 181e12),
        ("NVIDIA L40S", "bf16", 362e12),
        ("Tesla V100-SXM2-16GB", "fp16", 125e12),
        ("Tesla V100-PCIE-32GB", "fp16", 112e12),
        ("Tesla T4", "fp16", 65e12),
        ("NVIDIA B200", "bf16", 2250e12),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2e12),
    ],
)
def test_known_devices(name, dtype, expected):
    assert peak_flops_per_s(name, dtype) == pytest.approx(expected, rel=0, abs=1.0)


def test_look_alike_names_are_told_apart():
    values = {n: peak_flops_per_s(n, "bf16") for n in ("NVIDIA L4", "NVIDIA L40", "NVIDIA L40S")}
    assert len(set(values.values())) == 3
    assert peak_flops_per_s("NVIDIA A10", "fp32") != peak_flops_per_s("NVIDIA A100-SXM4-40GB", "fp32")
    assert peak_spec("NVIDIA H100 PCIe", "bf16").device == "H100 PCIe"
    assert peak_spec("NVIDIA H100 80GB HBM3", "bf16").device == "H100 SXM"
    assert peak_spec("NVIDIA H200 NVL", "bf16").device == "H200 NVL"


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA H100",  # no variant marker: SXM (989) or PCIe (756)? never a guess
        "NVIDIA GH200 480GB",  # not in the table; must not match H200
        "Tesla V100S-PCIE-32GB",  # V100S differs from V100 PCIe
        "NVIDIA GeForce RTX 4090 D",  # fewer SMs than the 4090
        "NVIDIA GeForce RTX 4090 Laptop GPU",
        "NVIDIA RTX 6000 Ada Generation",
        "cpu",
        "",
    ],
)
def test_unknown_or_ambiguous_devices_give_none(name):
    assert peak_flops_per_s(name, "bf16") is None


def test_dtype_without_a_figure_gives_none():
    assert peak_flops_per_s("Tesla T4", "bf16") is None  # no bf16 tensor cores on Turing
    assert peak_flops_per_s("NVIDIA H100 80GB HBM3", "tf32") is None  # not in the table


def test_every_row_has_a_source_and_dense_values():
    spec = peak_spec("NVIDIA H100 80GB HBM3", "bf16-mixed")
    assert spec.dtype == "bf16"
    assert "Lightning" in spec.source
    # dense, not the 1,979 TFLOP/s "with sparsity" headline
    assert spec.peak_flops_per_s < 1000e12


def test_dtype_aliases_and_errors():
    import_torch = pytest.importorskip("torch")
    assert normalize_dtype(import_torch.bfloat16) == "bf16"
    assert normalize_dtype("16-mixed") == "fp16"
    assert normalize_dtype("float32") == "fp32"
    with pytest.raises(ValueError, match=r"dtype='int3'.*bf16"):
        peak_flops_per_s("NVIDIA L4", "int3")
    with pytest.raises(ValueError, match="device_name"):
        peak_flops_per_s(None, "bf16")


def test_override_wins():
    assert peak_flops_per_s("unknown accelerator", "bf16", override=100e12) == 100e12
    assert peak_flops_per_s("NVIDIA L4", "bf16", override=50e12) == 50e12
    with pytest.raises(ValueError, match="override"):
        peak_flops_per_s("NVIDIA L4", "bf16", override=0.0)


def test_mfu():
    # 3.0e15 FLOPs in 10 s on 2 devices of 312e12 FLOP/s: 3e15 / (10 · 312e12 · 2) = 0.48076...
    assert mfu(3.0e15, 10.0, 312e12, num_devices=2) == pytest.approx(3.0e15 / 6.24e15)
    assert mfu(1e12, 1.0, None) is None
    with pytest.raises(ValueError, match="duration_s"):
        mfu(1e12, 0.0, 312e12)
    with pytest.raises(ValueError, match="peak_flops_per_s"):
        mfu(1e12, 1.0, -1.0)

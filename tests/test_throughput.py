"""core/throughput: samples and tokens read from batch shapes, the per-epoch rates and MFU, the devices' peak."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from green_callbacks.core.metric_keys import THROUGHPUT_KEYS, throughput_metrics
from green_callbacks.core.throughput import BatchCounter, batch_counts, local_peak, throughput


def arr(*shape: int | None) -> SimpleNamespace:
    """Anything with a ``shape`` (numpy, torch, JAX's ShapeDtypeStruct, a tf.TensorSpec with None dimensions)."""
    return SimpleNamespace(shape=shape)


def test_batch_counts_from_shapes():
    assert batch_counts((arr(32, 4), arr(32))) == (32, None)  # (x, y)
    assert batch_counts({"input_ids": arr(8, 128), "attention_mask": arr(8, 128)}) == (8, 8 * 128)
    assert batch_counts({"pixel_values": arr(16, 3, 8, 8), "labels": arr(16)}) == (16, None)
    assert batch_counts([{"x": arr(5, 2)}, arr(5)]) == (5, None)
    assert batch_counts(arr(7, 3)) == (7, None)
    assert batch_counts({"input_ids": arr(None, 128)}) == (None, None)  # an unknown dimension: unknown, not 0
    assert batch_counts(("text", 3)) == (None, None)
    assert batch_counts(arr()) == (None, None)  # a scalar has no samples


def test_batch_counter_unknown_until_told():
    counter = BatchCounter()
    assert (counter.samples, counter.tokens) == (None, None)
    counter.add_batch({"input_ids": arr(4, 6)})
    counter.add(samples=2)
    assert (counter.samples, counter.tokens) == (6, 24)
    counter.reset()
    assert (counter.samples, counter.tokens) == (None, None)


def test_rates_and_mfu_by_hand():
    # 3 s of training: 30 samples, 300 tokens, 6e12 FLOPs; two devices of 1e12 FLOP/s each
    t = throughput(train_time_s=3.0, samples=30, tokens=300, train_flops=6e12, peak_flops_per_s=2e12)
    assert throughput_metrics(t) == {"green/samples_per_s": 10.0, "green/tokens_per_s": 100.0,
                           "green/train_flops_per_s": 2e12, "green/mfu": 1.0, "green/hfu": 1.0}
    assert list(throughput_metrics(t)) == list(THROUGHPUT_KEYS)
    unknown = throughput(train_time_s=0.0, samples=30, tokens=None, train_flops=None, peak_flops_per_s=None)
    assert all(math.isnan(v) for v in throughput_metrics(unknown).values())  # never 0, never a division by zero
    no_peak = throughput(train_time_s=2.0, samples=None, tokens=None, train_flops=4.0, peak_flops_per_s=None)
    assert no_peak.train_flops_per_s == 2.0 and no_peak.mfu is None


def gpu_info(*names: str) -> dict:
    return {"gpu": {"method": "nvml-energy-counter", "devices": [{"name": n} for n in names]},
            "cpu": {"method": "rapl"}}


def test_local_peak_from_sensor_names_and_dtype():
    h100 = "NVIDIA H100 80GB HBM3"
    assert local_peak(gpu_info(h100), "bf16").peak_flops_per_s == pytest.approx(989.4e12)
    assert local_peak(gpu_info(h100, h100), "bf16-mixed").peak_flops_per_s == pytest.approx(2 * 989.4e12)
    assert local_peak(gpu_info(h100), None).peak_flops_per_s == pytest.approx(67e12)  # default fp32
    cpu = local_peak({"gpu": {"method": "unavailable"}, "cpu": {"method": "rapl"}}, "bf16")
    assert cpu.peak_flops_per_s is None and "no accelerator" in cpu.reason and cpu.devices == ()
    unknown = local_peak(gpu_info("NVIDIA Future X1"), "bf16")
    assert unknown.peak_flops_per_s is None and unknown.devices == ("NVIDIA Future X1",)
    bad_dtype = local_peak(gpu_info(h100), "int8")
    assert bad_dtype.peak_flops_per_s is None and "int8" in bad_dtype.reason and bad_dtype.devices == (h100,)
    t4 = local_peak(gpu_info("Tesla T4"), "bf16")  # no bf16 tensor cores: no figure, never a guess
    assert t4.peak_flops_per_s is None and "bf16" in t4.reason

"""Throughput of an epoch: samples, tokens and training FLOPs per second, and model FLOPs utilisation (MFU).

All the arithmetic of the ``green/samples_per_s``, ``green/tokens_per_s``, ``green/train_flops_per_s`` and
``green/mfu`` / ``green/hfu`` keys lives here; adapters only hand the session what they read from each batch
(:func:`batch_counts`). The rates are over the epoch's **training time**: the epoch's wall time less its
evaluation windows, on global rank zero's clock (so every rank logs the same rates). Counts are sums over all
ranks.

MFU is the training FLOPs of the epoch over (training time x the summed dense peak FLOP/s of every device that
trained), the devices' peaks coming from :mod:`green_callbacks.core.flops.peaks` by the names the energy sensors
report and the run's compute dtype. No peak is ever guessed: a CPU, a device missing from the table or an
unknown dtype gives NaN, with the reason (:attr:`PeakInfo.reason`) said once per run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BatchCounter",
    "PeakInfo",
    "Throughput",
    "batch_counts",
    "local_peak",
    "mfu_of",
    "run_mfu",
    "throughput",
]

TOKEN_KEYS: tuple[str, ...] = ("input_ids",)
"""Batch entries whose element count is the number of input tokens (padding included, no device sync)."""


@dataclass(frozen=True)
class Throughput:
    """One epoch's throughput over its training time; ``None`` = unknown (logged as NaN, never 0)."""

    train_time_s: float
    samples: float | None
    tokens: float | None
    train_flops: float | None
    peak_flops_per_s: float | None
    """The summed dense peak of all devices that trained (all ranks), at the run's compute dtype."""
    train_hardware_flops: float | None = None
    """Training FLOPs the devices ran (with activation checkpointing's recompute); ``None``: ``train_flops``."""

    @property
    def samples_per_s(self) -> float | None:
        return _rate(self.samples, self.train_time_s)

    @property
    def tokens_per_s(self) -> float | None:
        return _rate(self.tokens, self.train_time_s)

    @property
    def train_flops_per_s(self) -> float | None:
        return _rate(self.train_flops, self.train_time_s)

    @property
    def mfu(self) -> float | None:
        """The epoch's MFU (:func:`mfu_of`): the share of the devices' dense peak the model used."""
        return mfu_of(self.train_flops, self.train_time_s, self.peak_flops_per_s)

    @property
    def hfu(self) -> float | None:
        """The epoch's hardware FLOPs utilisation: :func:`mfu_of` with the FLOPs the devices ran (model FLOPs plus
        activation checkpointing's recompute, PaLM's HFU) instead of the model FLOPs; without a hardware count apart
        (no recompute seen) the devices ran the model FLOPs and HFU equals MFU."""
        hardware = self.train_flops if self.train_hardware_flops is None else self.train_hardware_flops
        return mfu_of(hardware, self.train_time_s, self.peak_flops_per_s)


def mfu_of(train_flops: float | None, train_time_s: float | None, peak_flops_per_s: float | None) -> float | None:
    """The one definition of MFU: ``train_flops / (train_time_s · peak_flops_per_s)``.

    Training (forward + backward) FLOPs over the training time (the wall time less evaluation) and the summed dense
    peak of the devices that trained, at the run's compute dtype. ``None`` where any part is unknown.
    """
    if train_flops is None or train_time_s is None or peak_flops_per_s is None:
        return None
    if not (math.isfinite(train_time_s) and train_time_s > 0 and peak_flops_per_s > 0):
        return None
    return float(train_flops) / (float(train_time_s) * float(peak_flops_per_s))


def run_mfu(rows: Iterable[Any]) -> float | None:
    """The run's MFU over its epochs (objects with ``train_flops``, ``train_time_s``, ``peak_flops_per_s``, such as
    :class:`~green_callbacks.core.rows.EpochRow`): :func:`mfu_of` with every epoch's FLOPs over every epoch's
    training time × peak, i.e. the training-time-weighted mean of the logged ``green/mfu``; ``None`` if any epoch
    lacks a part (FLOPs not counted, no known peak, a record written before these were kept)."""
    flops = capacity = 0.0
    for row in rows:
        if row.train_flops is None or row.train_time_s is None or row.peak_flops_per_s is None:
            return None
        flops += row.train_flops
        capacity += row.train_time_s * row.peak_flops_per_s
    return mfu_of(flops, 1.0, capacity) if capacity > 0 else None



def _rate(count: float | None, seconds: float) -> float | None:
    if count is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return float(count) / seconds


def throughput(
    *,
    train_time_s: float | None,
    samples: float | None,
    tokens: float | None,
    train_flops: float | None,
    peak_flops_per_s: float | None,
    train_hardware_flops: float | None = None,
) -> Throughput:
    """The epoch's throughput over ``train_time_s`` (its wall time less its evaluation; ``None``: unknown)."""
    return Throughput(
        train_time_s=math.nan if train_time_s is None else float(train_time_s),
        samples=samples,
        tokens=tokens,
        train_flops=train_flops,
        peak_flops_per_s=peak_flops_per_s,
        train_hardware_flops=train_hardware_flops,
    )


# ---------------------------------------------------------------------------------------------- batches
def _shape(value: Any) -> tuple[int, ...] | None:
    """The static shape of an array-like (torch, numpy, JAX, ``tf.TensorSpec``), or ``None`` (unknown dims too)."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return None
    try:
        dims = tuple(shape)
        out = tuple(int(d) for d in dims)
    except (TypeError, ValueError):  # a symbolic / unknown dimension
        return None
    return out


def _first_shape(batch: Any) -> tuple[int, ...] | None:
    """The shape of the first array leaf with at least one dimension (mappings in insertion order)."""
    shape = _shape(batch)
    if shape is not None:
        return shape if shape else None
    if isinstance(batch, Mapping):
        children: Any = batch.values()
    elif isinstance(batch, (list, tuple)):
        children = batch
    else:
        return None
    for child in children:
        found = _first_shape(child)
        if found is not None:
            return found
    return None


def batch_counts(batch: Any) -> tuple[int | None, int | None]:
    """``(samples, tokens)`` of one batch, read from shapes only (no device synchronisation).

    Samples: the leading dimension of ``input_ids`` when the batch is a mapping with one, else of the first array
    in the batch (``(x, y)`` → ``len(x)``). Tokens: the element count of ``input_ids`` (batch x sequence, padding
    included) when the batch is a mapping with that entry, else ``None`` (unknown). A batch with no array gives
    ``(None, None)``.
    """
    if isinstance(batch, Mapping):
        for key in TOKEN_KEYS:
            shape = _shape(batch.get(key))
            if shape:
                return shape[0], math.prod(shape)
    shape = _first_shape(batch)
    return (shape[0] if shape else None), None


class BatchCounter:
    """Samples and tokens of the current epoch on this process; ``None`` until a batch said how many."""

    def __init__(self) -> None:
        self.samples: int | None = None
        self.tokens: int | None = None

    def reset(self) -> None:
        self.samples = None
        self.tokens = None

    def add(self, samples: int | None = None, tokens: int | None = None) -> None:
        if samples is not None:
            self.samples = (self.samples or 0) + int(samples)
        if tokens is not None:
            self.tokens = (self.tokens or 0) + int(tokens)

    def add_batch(self, batch: Any) -> None:
        self.add(*batch_counts(batch))


# ---------------------------------------------------------------------------------------------- peaks
@dataclass(frozen=True)
class PeakInfo:
    """This process's summed device peak (FLOP/s) at ``dtype``; ``None`` with ``reason`` when not known."""

    peak_flops_per_s: float | None
    dtype: str | None
    devices: tuple[str, ...] = ()
    reason: str = ""


def _device_names(components: Mapping[str, Any]) -> list[str] | None:
    """Names of the accelerators the energy sensors measure (``None``: the sensor lists none)."""
    gpu = components.get("gpu") or {}
    devices = gpu.get("devices") if isinstance(gpu, Mapping) else None
    if not isinstance(devices, Sequence) or not devices:
        return None
    names = [d.get("name") for d in devices if isinstance(d, Mapping)]
    if len(names) != len(devices) or not all(isinstance(n, str) and n for n in names):
        return None
    return [str(n) for n in names]


def local_peak(components: Mapping[str, Any], dtype: object | None) -> PeakInfo:
    """The dense peak of this process's accelerators, from the sensors' device names and the compute dtype.

    ``components`` is :meth:`Meter.info` (the GPU sensor lists ``devices`` with their ``name``). A CPU-only run,
    an unknown device or dtype gives ``PeakInfo(None, …, reason=…)``.
    """
    from green_callbacks.core.flops.peaks import normalize_dtype, peak_spec

    names = _device_names(components)
    try:
        canonical = normalize_dtype("fp32" if dtype is None else dtype)
    except ValueError:
        return PeakInfo(None, None, tuple(names or ()), f"the compute dtype {dtype!r} has no peak FLOP/s figures")
    if names is None:
        return PeakInfo(None, canonical, (), "no accelerator with a known peak FLOP/s trains in this process "
                                             "(CPU peaks are not tabulated)")
    total = 0.0
    for name in names:
        spec = peak_spec(name, canonical)
        if spec is None:
            return PeakInfo(None, canonical, tuple(names),
                            f"{name!r} has no dense {canonical} peak in green_callbacks.core.flops.peaks")
        total += spec.peak_flops_per_s
    return PeakInfo(total, canonical, tuple(names))

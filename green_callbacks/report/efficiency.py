"""Model FLOPs utilisation of a run, where the accelerator's dense peak is known.

``MFU = counted FLOPs (training + evaluation) / (wall time x sum of the GPUs' dense peak FLOP/s)``. It is a run
average over wall-clock time, so data loading, evaluation and logging count against it. The peak comes from the
user (``--peak-tflops``) or from :mod:`green_callbacks.core.flops.peaks` for the recorded GPU names at the compute
dtype: the record's precision when it names one (Lightning records ``lightning.precision``), else the dtype the user
gives, else bf16 — and the report says which was assumed. No peak, no MFU: ``unknown``, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.flops.peaks import mfu, normalize_dtype, peak_spec
from green_callbacks.report.runs import RunSummary

__all__ = ["DEFAULT_DTYPE", "Mfu", "record_dtype", "run_mfu"]

DEFAULT_DTYPE = "bf16"
"""Compute dtype assumed for the peak when neither the record nor the user names one (16-bit mixed precision)."""


@dataclass(frozen=True)
class Mfu:
    value: float | None
    peak_flops_per_s: float | None
    """Sum over the run's GPUs."""
    peak_source: str
    """Where the peak came from (``user``, or the table's device, dtype and source), or why MFU is unknown."""


def record_dtype(record: Mapping[str, Any]) -> str | None:
    """The compute dtype a record names (``lightning.precision`` and the like), normalised; ``None`` if none."""
    for section in ("lightning", "transformers", "keras", "training"):
        info = record.get(section)
        if not isinstance(info, Mapping):
            continue
        for key in ("precision", "dtype", "compute_dtype"):
            if info.get(key) is not None:
                try:
                    return normalize_dtype(info[key])
                except ValueError:
                    continue
    return None


def run_mfu(run: RunSummary, peak_flops_per_s: float | None = None, dtype: str | None = None) -> Mfu:
    """MFU of ``run``: with the user's per-GPU peak, else the peak table's at the run's dtype, else ``unknown``.

    ``dtype`` (e.g. ``"bf16"``, ``"fp32"``) is used when the record names none; without either, bf16 is assumed.
    """
    flops = run.train_flops
    if flops is None:
        return Mfu(None, None, "unknown: FLOPs not counted")
    total = flops + (run.eval_flops or 0.0)
    devices = run.gpu_names
    if not devices:
        return Mfu(None, None, "unknown: no GPU recorded")
    if run.time_s <= 0:
        return Mfu(None, None, "unknown: no time recorded")
    if peak_flops_per_s is not None:
        if not peak_flops_per_s > 0:
            raise ValueError(f"the peak must be a positive FLOP/s per GPU, got {peak_flops_per_s!r}")
        peak = peak_flops_per_s * len(devices)
        return Mfu(mfu(total, run.time_s, peak), peak, f"user, {peak_flops_per_s:.4g} FLOP/s per GPU")
    named = record_dtype(run.record)
    chosen = named or normalize_dtype(dtype or DEFAULT_DTYPE)
    how = "from the record" if named else ("given" if dtype else "assumed")
    specs = [peak_spec(name, chosen) for name in devices]
    if any(s is None for s in specs):
        unknown = sorted({n for n, s in zip(devices, specs, strict=True) if s is None})
        return Mfu(None, None, f"unknown: no {chosen} peak known for {', '.join(unknown)}")
    peak = sum(s.peak_flops_per_s for s in specs if s is not None)
    first = specs[0]
    assert first is not None
    source = f"peak table: {first.device} {chosen} ({how}), {first.source}"
    return Mfu(mfu(total, run.time_s, peak), peak, source)

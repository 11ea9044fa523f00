"""Model FLOPs utilisation of a run, with the one definition the run logged as ``green/mfu``.

``MFU = training FLOPs / (training time x the devices' dense peak at the run's compute dtype)``
(:func:`green_callbacks.core.throughput.run_mfu`, the training-time-weighted mean of the epochs' ``green/mfu``). A
record of schema 1.1 keeps each epoch's training time and peak, so the report reads them; ``--peak-tflops`` replaces
the peak (per GPU). Records written before these were kept (schema 1.0, or an epoch without them) get the older
wall-clock estimate instead — counted FLOPs (training + evaluation) / (wall time x the peak table's figure for the
recorded GPU names at the record's precision, else the dtype given, else bf16) — labelled as that estimate. No peak,
no MFU: ``unknown``, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from green_callbacks.core.flops.peaks import mfu, normalize_dtype, peak_spec
from green_callbacks.core.record import RunRecord, as_record
from green_callbacks.core.record_sections import ThroughputInfo
from green_callbacks.core.throughput import run_mfu as logged_mfu
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
    hfu: float | None = None
    """Hardware FLOPs utilisation: the same definition with the FLOPs the devices ran (model FLOPs plus activation
    checkpointing's recompute, ``green/hfu``); ``None`` where the record keeps no hardware FLOPs or MFU is unknown."""


def record_dtype(record: RunRecord | Mapping[str, Any] | None) -> str | None:
    """The compute dtype a record names (``lightning.precision`` and the like), normalised; ``None`` if none."""
    return None if record is None else as_record(record).compute_dtype


def run_mfu(run: RunSummary, peak_flops_per_s: float | None = None, dtype: str | None = None) -> Mfu:
    """MFU of ``run``: with the user's per-GPU peak, else the peak table's at the run's dtype, else ``unknown``.

    ``dtype`` (e.g. ``"bf16"``, ``"fp32"``) is used when the record names none; without either, bf16 is assumed.
    """
    flops = run.train_flops
    if flops is None:
        return Mfu(None, None, "unknown: FLOPs not counted")
    if peak_flops_per_s is not None and not peak_flops_per_s > 0:
        raise ValueError(f"the peak must be a positive FLOP/s per GPU, got {peak_flops_per_s!r}")
    rows = getattr(run.record, "epochs", None) or ()  # a RunRecord; a bare dict takes the wall-time estimate
    if rows and all(r.train_time_s is not None for r in rows):
        return _logged(run, rows, peak_flops_per_s)
    total = flops + (run.eval_flops or 0.0)
    devices = run.gpu_names
    if not devices:
        return Mfu(None, None, "unknown: no GPU recorded")
    if run.time_s <= 0:
        return Mfu(None, None, "unknown: no time recorded")
    wall = "wall-time estimate: this record keeps no training time"
    if peak_flops_per_s is not None:
        peak = peak_flops_per_s * len(devices)
        return Mfu(mfu(total, run.time_s, peak), peak, f"user, {peak_flops_per_s:.4g} FLOP/s per GPU ({wall})")
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
    source = f"peak table: {first.device} {chosen} ({how}), {first.source} ({wall})"
    return Mfu(mfu(total, run.time_s, peak), peak, source)


def _logged(run: RunSummary, rows: Any, user_peak_per_gpu: float | None) -> Mfu:
    """The run's own MFU from its epochs' training time and peak (what ``green/mfu`` logged), or the user's peak."""
    info = (run.record.throughput if run.record is not None else None) or ThroughputInfo()
    if user_peak_per_gpu is not None:
        devices = len(run.gpu_names) or len(info.devices)
        if not devices:
            return Mfu(None, None, "unknown: no GPU recorded")
        peak = user_peak_per_gpu * devices
        rows = [_with_peak(r, peak) for r in rows]
        value = logged_mfu(rows)
        return Mfu(value, peak, f"user, {user_peak_per_gpu:.4g} FLOP/s per GPU, over the training time",
                   _hfu(rows))
    value = logged_mfu(rows)
    if value is None:
        return Mfu(None, None, f"unknown: {info.mfu_unavailable or 'no peak known for the devices that trained'}")
    peak = rows[-1].peak_flops_per_s
    dtype = info.compute_dtype or "the run's dtype"
    return Mfu(value, peak, f"as logged (green/mfu): {dtype} peak, the peak table; training FLOPs over the training "
                            "time", _hfu(rows))


def _hfu(rows: Any) -> float | None:
    """The run's HFU: :func:`~green_callbacks.core.throughput.run_mfu` over the FLOPs the devices ran."""
    if any(r.train_hardware_flops is None for r in rows):
        return None
    return logged_mfu([replace(r, train_flops=r.train_hardware_flops) for r in rows])


def _with_peak(row: Any, peak: float) -> Any:
    return replace(row, peak_flops_per_s=peak)

"""FLOP counting (training fwd+bwd, evaluation fwd) and the peak FLOP/s table for MFU.

Importing this package imports no ML framework: the torch engine is loaded on first use of its names.

    >>> from green_callbacks.core.flops import TorchFlopCounter, peak_flops_per_s, mfu
    >>> counter = TorchFlopCounter()
    >>> step = counter.count_train_step(model, lambda m, b: m(**b).loss, batch)   # doctest: +SKIP
    >>> mfu(step.flops * steps, duration_s, peak_flops_per_s("NVIDIA H100 80GB HBM3", "bf16"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from green_callbacks.core.flops.peaks import PeakFlops, mfu, peak_flops_per_s, peak_spec
from green_callbacks.core.flops.result import CONVENTION, FlopCountingError, FlopCountWarning, StepFlops

__all__ = [
    "CONVENTION",
    "CounterStats",
    "EpochFlops",
    "FlopCountWarning",
    "FlopCountingError",
    "FlopTracker",
    "PeakFlops",
    "StepFlops",
    "TorchFlopCounter",
    "count_eval_step",
    "count_train_step",
    "mfu",
    "peak_flops_per_s",
    "peak_spec",
]

_TORCH_NAMES = frozenset({"CounterStats", "TorchFlopCounter", "count_eval_step", "count_train_step"})
_TRACKER_NAMES = frozenset({"EpochFlops", "FlopTracker"})


def __getattr__(name: str) -> Any:
    if name in _TRACKER_NAMES:
        from green_callbacks.core.flops import tracker

        return getattr(tracker, name)
    if name in _TORCH_NAMES:
        from green_callbacks.core.flops import torch_engine

        return getattr(torch_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

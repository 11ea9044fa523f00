"""What the live exporters (Prometheus, OpenTelemetry) serve: the run's totals as the session already holds them,
read when a scraper or a metric reader asks — nothing is measured, summed or synchronised for them on the training
thread, and nothing at all happens between two reads.

Values are those of the last complete epoch (the engine's unit of measurement): energy per component and
emissions summed over the complete epochs, FLOPs, and the last epoch's mean power and throughput. Under
distributed training the session's rows are already summed over the ranks, so every process holds the job's
totals. A component that was never measured has no value (no series), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from green_callbacks.core.throughput import throughput

__all__ = ["LiveTotals", "live_totals", "session_source"]


@dataclass(frozen=True)
class LiveTotals:
    rank: int
    epochs: int
    energy_j: Mapping[str, float] = field(default_factory=dict)
    """IT energy (before PUE) per component over the complete epochs where it was measured."""
    emissions_gco2e: float | None = None
    train_flops: float | None = None
    eval_flops: float | None = None
    power_w: Mapping[str, float] = field(default_factory=dict)
    """Each component's mean power over the last complete epoch (its energy over the epoch's wall time)."""
    samples_per_s: float | None = None
    """Training samples per second of the last complete epoch (its wall time less its evaluation)."""
    running: bool = False


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def live_totals(session: Any) -> LiveTotals:
    """A snapshot of ``session`` (a :class:`~green_callbacks.core.session.Session`); safe from another thread: it
    only reads the tuple of rows the session has appended."""
    rows = session.rows
    energy: dict[str, float] = {}
    for row in rows:
        for name, value in row.component_energy_j.items():
            if _finite(value) is not None:
                energy[name] = energy.get(name, 0.0) + float(value)
    power: dict[str, float] = {}
    samples_per_s = None
    if rows:
        last = rows[-1]
        if last.time_s > 0:
            power = {name: float(v) / last.time_s for name, v in last.component_energy_j.items()
                     if _finite(v) is not None}
        samples_per_s = throughput(train_time_s=last.train_time_s, samples=last.samples, tokens=last.tokens,
                                   train_flops=last.train_flops, peak_flops_per_s=last.peak_flops_per_s).samples_per_s
    totals = rows[-1].totals if rows and rows[-1].totals is not None else None
    return LiveTotals(
        rank=int(session.dist.rank),
        epochs=len(rows),
        energy_j=energy,
        emissions_gco2e=None if totals is None else _finite(totals.emissions_gco2e),
        train_flops=None if totals is None else _finite(totals.train_flops),
        eval_flops=None if totals is None else _finite(totals.eval_flops),
        power_w=power,
        samples_per_s=_finite(samples_per_s),
        running=bool(session.running),
    )


def session_source(source: Any) -> Callable[[], Any]:
    """A callable giving the current session of a GreenCallback or Tracker (a new fit gets a new session), or of a
    Session itself."""
    if hasattr(source, "session"):
        return lambda: source.session
    if hasattr(source, "rows") and hasattr(source, "dist"):
        return lambda: source
    raise TypeError(f"expected a GreenCallback, a Tracker or a Session, got {type(source).__name__}")

"""One epoch of a run as the engine computed it: the row the record, the metrics and the report are built from.

The writer serialises it (:meth:`EpochRow.to_record`) and the reader parses the record's epochs back into it
(:func:`green_callbacks.core.record.parse_record`, validated): one type on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from green_callbacks.core.convergence import Totals

__all__ = ["EpochRow", "row_from_record"]


@dataclass(frozen=True)
class EpochRow:
    """One epoch of the run, summed over ranks. Energy in joules before PUE; ``None`` = unavailable.

    ``energy_j`` sums the components that were measured; ``missing_components`` names the others (on a CPU-only
    machine the GPU is always missing; a GPU lost mid-run is missing from that epoch on).
    """

    epoch: int
    time_s: float
    energy_j: float | None
    component_energy_j: Mapping[str, float | None]
    component_method: Mapping[str, str]
    eval_energy_j: float | None
    train_flops: float | None
    eval_flops: float | None
    emissions_gco2e: float | None
    totals: Totals | None
    """The run's totals at the end of this epoch (``None`` only in an old record's epoch that lacks them)."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    missing_components: tuple[str, ...] = ()
    """Components unavailable in this epoch: ``energy_j`` and emissions are the sum of the others."""
    train_time_s: float | None = None
    """The epoch's wall time less its evaluation windows (global rank zero's clock)."""
    samples: float | None = None
    tokens: float | None = None
    """Training samples and input tokens of the epoch, summed over ranks; ``None`` = not known."""
    peak_flops_per_s: float | None = None
    """The dense peak FLOP/s of every device that trained (summed over ranks) at the run's compute dtype."""
    energy_low_j: float | None = None
    energy_high_j: float | None = None
    emissions_low_gco2e: float | None = None
    emissions_high_gco2e: float | None = None
    """The range the epoch's true energy and emissions lie in (95 %, docs/uncertainty.md); ``None``: no basis."""
    train_hardware_flops: float | None = None
    """Training FLOPs the devices ran: ``train_flops`` plus activation checkpointing's recompute (``green/hfu``)."""

    def to_record(self) -> dict[str, Any]:
        out = dict(vars(self))  # the fields, shallow (asdict's deep copy cost ~0.1 ms per epoch)
        out["totals"] = None if self.totals is None else dict(vars(self.totals))
        out["component_energy_j"] = dict(self.component_energy_j)
        out["component_method"] = dict(self.component_method)
        out["metrics"] = dict(self.metrics)
        out["missing_components"] = list(self.missing_components)
        return out


def row_from_record(data: Mapping[str, Any]) -> EpochRow:
    values = dict(data)
    values["totals"] = Totals(**values["totals"])
    values["missing_components"] = tuple(values.get("missing_components", ()))
    return EpochRow(**values)



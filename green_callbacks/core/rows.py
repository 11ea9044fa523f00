"""One epoch of a run as the engine computed it: the row the record, the metrics and the report are built from.

The writer serialises it (:meth:`EpochRow.to_record`) and the reader parses the record's epochs back into it
(:func:`green_callbacks.core.record.parse_record`, validated): one type on both sides.

A value each rank measures and the ranks combine is declared on its field with :func:`per_epoch` (its cross-rank
reduction, and whether it is logged): the epoch window declares every such field's state and hands its reduced
value to the row (:mod:`~green_callbacks.core.epoch_window`), and :func:`~green_callbacks.core.metric_keys.
epoch_metrics` logs a ``logged`` field under ``green/epoch_<field>`` (the field's name carries its unit). The other
fields are derived from those and from the measurement (energy, emissions, their ranges, the totals).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal

from green_callbacks.core.convergence import Totals

__all__ = ["EpochRow", "per_epoch", "per_epoch_fields", "row_from_record"]

Reduction = Literal["sum", "rank_zero"]


def per_epoch(reduce: Reduction, *, logged: bool = False, required: bool = False) -> Any:
    """A field whose value each rank gives and the ranks combine by ``reduce`` (``"sum"``: unavailable when any
    rank lacked it; ``"rank_zero"``: global rank zero's, for all); ``logged``: logged under ``green/epoch_<name>``;
    ``required``: no default (else ``None``: an older record's epoch lacks it)."""
    metadata = {"reduce": reduce, "logged": logged}
    return field(metadata=metadata) if required else field(default=None, metadata=metadata)


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
    train_flops: float | None = per_epoch("sum", logged=True, required=True)
    eval_flops: float | None = per_epoch("sum", logged=True, required=True)
    emissions_gco2e: float | None
    totals: Totals | None
    """The run's totals at the end of this epoch (``None`` only in an old record's epoch that lacks them)."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    missing_components: tuple[str, ...] = ()
    """Components unavailable in this epoch: ``energy_j`` and emissions are the sum of the others."""
    train_time_s: float | None = per_epoch("rank_zero")
    """The epoch's wall time less its evaluation windows (global rank zero's clock, so all ranks log the same)."""
    samples: float | None = per_epoch("sum")
    tokens: float | None = per_epoch("sum")
    """Training samples and input tokens of the epoch, summed over ranks; ``None`` = not known."""
    peak_flops_per_s: float | None = per_epoch("sum")
    """The dense peak FLOP/s of every device that trained (summed over ranks) at the run's compute dtype."""
    energy_low_j: float | None = None
    energy_high_j: float | None = None
    emissions_low_gco2e: float | None = None
    emissions_high_gco2e: float | None = None
    """The range the epoch's true energy and emissions lie in (95 %, docs/uncertainty.md); ``None``: no basis."""
    train_hardware_flops: float | None = per_epoch("sum")
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




def per_epoch_fields(*, logged: bool | None = None) -> tuple[Field[Any], ...]:
    """The fields declared with :func:`per_epoch`, in the row's order (``logged``: only those that are, or not)."""
    return tuple(f for f in fields(EpochRow) if "reduce" in f.metadata
                 and (logged is None or f.metadata["logged"] is logged))

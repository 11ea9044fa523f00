"""One epoch of a fit on this process: its accumulators, and how they become the epoch's row summed over ranks.

Each per-epoch value is declared once with its cross-rank reduction (:class:`~green_callbacks.core.epoch_state.
EpochState`): the row's own values where the row declares them (:func:`~green_callbacks.core.rows.per_epoch`: the
FLOPs, samples, tokens and peak are summed, the training time is global rank zero's), and the window's: every
component's energy (epoch and evaluation) and the embodied rate are summed, the carbon intensity is global rank
zero's, so that every rank logs the same figures and takes the same budget decision. :meth:`EpochWindow.close`
gives this rank's value of each, makes the one collective call and builds the :class:`~green_callbacks.core.rows.
EpochRow`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from green_callbacks.core.epoch_state import EpochState
from green_callbacks.core.meter import Measurement, Meter, sum_measurements
from green_callbacks.core.record_sections import PartialEpoch
from green_callbacks.core.rows import EpochRow, per_epoch_fields
from green_callbacks.core.sensors.base import COMPONENTS, NOT_USED, UNAVAILABLE
from green_callbacks.core.throughput import BatchCounter
from green_callbacks.core.uncertainty import Factor, energy_interval, scaled_interval, window_parts
from green_callbacks.core.units import emissions_gco2e, joules_to_kwh

if TYPE_CHECKING:  # pragma: no cover - types only
    from green_callbacks.core.footprint import FootprintTracker
    from green_callbacks.core.ledger import RunLedger
    from green_callbacks.core.run_context import RunContext

__all__ = ["EpochWindow", "partial_record"]

_ROW_STATE = tuple((f.name, f.metadata["reduce"]) for f in per_epoch_fields())
"""The row's values the ranks combine, with their reductions (declared on :class:`EpochRow`)."""


class EpochWindow:
    """The open epoch's FLOPs, samples, tokens and evaluation windows on this process."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.evals: list[Measurement] = []
        self.flops = {"train": 0.0, "eval": 0.0, "hardware": 0.0}
        self.flops_seen = False  # FLOPs were added at some point of the run (else they were never counted)
        self.batches = BatchCounter()
        self.components: list[str] = []
        self._state = EpochState()

    def declare(self, meter: Meter) -> None:
        """Declare every per-epoch value with its reduction, for the components the meter measures."""
        self.components = [c for c in COMPONENTS if c in meter.sensors]
        self._state = EpochState()
        for window in ("energy_j", "eval_energy_j"):
            for name in self.components:
                self._state.add_state(f"{window}/{name}", "sum")
        for name, reduce in _ROW_STATE:
            self._state.add_state(name, reduce)  # a rank without a count makes a sum unknown, never low
        self._state.add_state("embodied_gco2e_per_h", "sum")
        self._state.add_state("intensity", "rank_zero")  # with a live provider ranks may differ: all decide alike

    @property
    def declared(self) -> Mapping[str, str]:
        """Every per-epoch value the ranks combine, with its reduction (see :meth:`declare`)."""
        return self._state.reductions

    def reset(self, epoch: int) -> None:
        self.epoch = epoch
        self.evals = []
        self.flops = {"train": 0.0, "eval": 0.0, "hardware": 0.0}
        self.batches.reset()

    def add_flops(self, train: float, eval: float, train_hardware: float | None = None) -> None:
        self.flops["train"] += train
        self.flops["hardware"] += train if train_hardware is None else train_hardware
        self.flops["eval"] += eval
        self.flops_seen = True

    def close(self, epoch_m: Measurement, metrics: dict[str, float], *, run: RunContext, ledger: RunLedger,
              flops_ok: bool, intensity: float, peak_flops_per_s: float | None, footprint: FootprintTracker,
              factors: Sequence[Factor | None] = (None,)) -> EpochRow:
        """Sum the epoch over ``run``'s ranks (one collective), advance the ledger's totals, and return the epoch's
        row. ``flops_ok``: FLOP counting was not switched off after a failure. ``factors``: the
        ranges of the factors emissions multiply energy by (PUE, grid intensity; ``None``: no basis)."""
        assert self.epoch is not None
        eval_m = sum_measurements("eval", self.evals, epoch_m.components)
        names = [c for c in self.components if c in epoch_m.components]
        counted = flops_ok and self.flops_seen
        dist, pue = run.dist, run.config.pue

        local: dict[str, float | None] = {
            "train_flops": self.flops["train"] if counted else None,
            "train_hardware_flops": self.flops["hardware"] if counted else None,
            "eval_flops": self.flops["eval"] if counted else None,
            "intensity": intensity,
            "embodied_gco2e_per_h": footprint.local_rate_gco2e_per_h,
            "samples": self.batches.samples,
            "tokens": self.batches.tokens,
            "peak_flops_per_s": peak_flops_per_s,
            "train_time_s": max(epoch_m.duration_s - eval_m.duration_s, 0.0),
        }
        for n in names:
            local[f"energy_j/{n}"] = run.local_j(n, epoch_m.component_j(n))
            local[f"eval_energy_j/{n}"] = run.local_j(n, eval_m.component_j(n))
        reduced = self._state.reduce(local, dist, run.reducer)
        sums, lacking = reduced.values, reduced.lacking
        comp_j = {n: sums[f"energy_j/{n}"] for n in names}
        methods = {n: epoch_m.components[n].method
                   if lacking[f"energy_j/{n}"] == 0 or epoch_m.components[n].method == NOT_USED else UNAVAILABLE
                   for n in names}
        energy_j = _sum_known(comp_j.values())
        eval_j = _sum_known(sums[f"eval_energy_j/{n}"] for n in names) if self.evals else 0.0
        rank_zero_intensity = sums["intensity"]
        assert rank_zero_intensity is not None
        emissions = None if energy_j is None else emissions_gco2e(joules_to_kwh(energy_j), rank_zero_intensity, pue)
        footprint.add_epoch(self.epoch, epoch_m.duration_s, energy_j, sums["embodied_gco2e_per_h"])
        parts = window_parts(comp_j, methods, epoch_m.duration_s)
        energy_range = energy_interval(parts) if energy_j is not None else None
        emissions_range = scaled_interval(energy_range, emissions, factors)
        totals = ledger.advance(time_s=epoch_m.duration_s, train_flops=sums["train_flops"],
                                eval_flops=sums["eval_flops"], energy_j=energy_j, emissions_gco2e=emissions,
                                parts=parts, factors=factors)
        row = EpochRow(
            epoch=self.epoch, time_s=epoch_m.duration_s, energy_j=energy_j, component_energy_j=comp_j,
            component_method=methods, eval_energy_j=eval_j,
            emissions_gco2e=emissions, totals=totals, metrics=metrics,
            missing_components=tuple(n for n in names if comp_j[n] is None and methods[n] != NOT_USED),
            energy_low_j=None if energy_range is None else energy_range.low,
            energy_high_j=None if energy_range is None else energy_range.high,
            emissions_low_gco2e=None if emissions_range is None else emissions_range.low,
            emissions_high_gco2e=None if emissions_range is None else emissions_range.high,
            **{name: sums[name] for name, _ in _ROW_STATE},
        )
        self.epoch = None
        return row


def _sum_known(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return float(sum(known)) if known else None


def partial_record(window: EpochWindow, m: Measurement) -> PartialEpoch:
    """An epoch cut short by a failure or interrupt, as this rank measured it (not summed over ranks)."""
    return PartialEpoch(
        epoch=window.epoch,
        time_s=m.duration_s,
        energy_j=m.energy_j,
        component_energy_j={k: v.energy_j for k, v in m.components.items()},
        component_method={k: v.method for k, v in m.components.items()},
        train_flops=window.flops.get("train"),
        eval_flops=window.flops.get("eval"),
        note="incomplete epoch, this process only",
    )

"""One epoch of a fit on this process: its accumulators, and how they become the epoch's row summed over ranks.

Each per-epoch value is declared once with its cross-rank reduction (:class:`~green_callbacks.core.epoch_state.
EpochState`): every component's energy (epoch and evaluation), the FLOPs, samples, tokens and peak are summed; the
carbon intensity and the training time are global rank zero's, so that every rank logs the same figures and takes
the same budget decision. :meth:`EpochWindow.close` makes the one collective call and builds the
:class:`~green_callbacks.core.rows.EpochRow`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from green_callbacks.core.distributed import DistInfo, Reducer
from green_callbacks.core.epoch_state import EpochState
from green_callbacks.core.meter import ComponentEnergy, Measurement, Meter
from green_callbacks.core.rows import EpochRow
from green_callbacks.core.sensors.base import COMPONENTS, NOT_USED, UNAVAILABLE
from green_callbacks.core.throughput import BatchCounter
from green_callbacks.core.uncertainty import Factor, energy_interval, scaled_interval, window_parts
from green_callbacks.core.units import emissions_gco2e, joules_to_kwh

if TYPE_CHECKING:  # pragma: no cover - types only
    from green_callbacks.core.footprint import FootprintTracker
    from green_callbacks.core.ledger import RunLedger

__all__ = ["EpochWindow", "partial_record"]


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
        for name in ("train_flops", "train_hardware_flops", "eval_flops", "embodied_gco2e_per_h", "samples", "tokens",
                     "peak_flops_per_s"):
            self._state.add_state(name, "sum")  # a rank without a count makes the sum unknown, never low
        self._state.add_state("intensity", "rank_zero")  # with a live provider ranks may differ: all decide alike
        self._state.add_state("train_time_s", "rank_zero")  # one clock for the rates, so all ranks log the same

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

    def close(self, epoch_m: Measurement, meter: Meter, metrics: dict[str, float], *, ledger: RunLedger,
              dist: DistInfo, reducer: Reducer, flops_ok: bool, intensity: float, pue: float,
              peak_flops_per_s: float | None, footprint: FootprintTracker,
              factors: Sequence[Factor | None] = (None,)) -> EpochRow:
        """Sum the epoch over ranks (one collective), advance the ledger's totals and convergence, and return the
        epoch's row. ``flops_ok``: FLOP counting was not switched off after a failure. ``factors``: the ranges of
        the factors emissions multiply energy by (PUE, grid intensity; ``None``: no basis), for the intervals."""
        assert self.epoch is not None
        eval_m = _sum_measurements("eval", self.evals, epoch_m.components)
        names = [c for c in self.components if c in epoch_m.components]
        counted = flops_ok and self.flops_seen

        def local_j(m: Measurement, name: str) -> float | None:  # node-level sensors count on the node leader only
            sensor = meter.sensors.get(name)
            return 0.0 if sensor is not None and sensor.scope == "node" and not dist.is_node_leader \
                else m.component_j(name)

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
            local[f"energy_j/{n}"] = local_j(epoch_m, n)
            local[f"eval_energy_j/{n}"] = local_j(eval_m, n)
        reduced = self._state.reduce(local, dist, reducer)
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
        ledger.observe(self.epoch, metrics, speak=dist.is_global_zero)
        row = EpochRow(
            epoch=self.epoch, time_s=epoch_m.duration_s, energy_j=energy_j, component_energy_j=comp_j,
            component_method=methods, eval_energy_j=eval_j, train_flops=sums["train_flops"],
            eval_flops=sums["eval_flops"], emissions_gco2e=emissions, totals=totals, metrics=metrics,
            missing_components=tuple(n for n in names if comp_j[n] is None and methods[n] != NOT_USED),
            train_time_s=sums["train_time_s"], samples=sums["samples"], tokens=sums["tokens"],
            peak_flops_per_s=sums["peak_flops_per_s"],
            energy_low_j=None if energy_range is None else energy_range.low,
            energy_high_j=None if energy_range is None else energy_range.high,
            emissions_low_gco2e=None if emissions_range is None else emissions_range.low,
            emissions_high_gco2e=None if emissions_range is None else emissions_range.high,
            train_hardware_flops=sums["train_hardware_flops"],
        )
        self.epoch = None
        return row


def _sum_known(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return float(sum(known)) if known else None


def _sum_measurements(name: str, parts: Sequence[Measurement], like: Mapping[str, ComponentEnergy]) -> Measurement:
    if not parts:
        return Measurement(name, 0.0, {k: ComponentEnergy(0.0, v.method) for k, v in like.items()})
    comps: dict[str, ComponentEnergy] = {}
    for key in like:
        values = [p.components[key] for p in parts if key in p.components]
        if any(v.energy_j is None for v in values):
            comps[key] = ComponentEnergy(None, UNAVAILABLE, next((v.note for v in values if v.note), ""))
        else:
            comps[key] = ComponentEnergy(sum(v.energy_j or 0.0 for v in values), values[-1].method)
    return Measurement(name, sum(p.duration_s for p in parts), comps)


def partial_record(window: EpochWindow, m: Measurement) -> dict[str, Any]:
    """An epoch cut short by a failure or interrupt, as this rank measured it (not summed over ranks)."""
    return {
        "epoch": window.epoch,
        "time_s": m.duration_s,
        "energy_j": m.energy_j,
        "component_energy_j": {k: v.energy_j for k, v in m.components.items()},
        "component_method": {k: v.method for k, v in m.components.items()},
        "train_flops": window.flops.get("train"),
        "eval_flops": window.flops.get("eval"),
        "note": "incomplete epoch, this process only",
    }

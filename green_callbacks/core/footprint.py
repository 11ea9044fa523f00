"""The run's footprint beyond operational emissions: embodied emissions and water, epoch by epoch.

:class:`FootprintTracker` is what the session holds: it learns the hardware at ``start`` (:meth:`configure`), gives
this rank's embodied rate to the sum over ranks, and turns each epoch's wall time and energy into
``green/epoch_embodied_gco2e``, ``green/total_embodied_gco2e`` and ``green/total_water_l`` plus the record's
``footprint`` block. All arithmetic is in :mod:`.embodied` and :mod:`.water`; embodied emissions are kept beside the
operational ones and never added to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from green_callbacks.core.embodied import (
    DEFAULT_LIFETIME_YEARS,
    DEFAULT_UTILISATION,
    EmbodiedRate,
    accelerator_names,
    embodied_rate,
)
from green_callbacks.core.metric_keys import FOOTPRINT_KEYS, footprint_metrics
from green_callbacks.core.record_sections import (
    WATER_FORMULA,
    EmbodiedInfo,
    EpochFootprint,
    FootprintInfo,
    WaterInfo,
    to_json,
)
from green_callbacks.core.sensors.base import NOT_USED, UNAVAILABLE
from green_callbacks.core.uncertainty import embodied_interval
from green_callbacks.core.units import joules_to_kwh
from green_callbacks.core.water import DEFAULT_WUE_L_PER_KWH, WUE_SOURCE, water_for_location, water_l

__all__ = ["FOOTPRINT_KEYS", "EpochFootprint", "FootprintTracker"]


class FootprintTracker:
    """Embodied emissions and water of one run.

    Args:
        location: the grid's location from the carbon intensity (``CarbonIntensity.location``), for water.
        pue: the run's PUE.
        lifetime_years, utilisation, host_share, wue_l_per_kwh: the settings (``None`` = documented default).
    """

    def __init__(self, *, location: str | None, pue: float, lifetime_years: float | None = None,
                 utilisation: float | None = None, host_share: float | None = None,
                 wue_l_per_kwh: float | None = None) -> None:
        self.pue = float(pue)
        self.lifetime_years = DEFAULT_LIFETIME_YEARS if lifetime_years is None else float(lifetime_years)
        self.utilisation = DEFAULT_UTILISATION if utilisation is None else float(utilisation)
        self.host_share = host_share
        self.wue_l_per_kwh = DEFAULT_WUE_L_PER_KWH if wue_l_per_kwh is None else float(wue_l_per_kwh)
        self.wue_default = wue_l_per_kwh is None
        self.water = water_for_location(location)
        self.rate: EmbodiedRate | None = None
        self.accelerators: list[str] = []
        self.rate_all_ranks_gco2e_per_h: float | None = None
        self.epochs: list[EpochFootprint] = []
        self.total_embodied_gco2e: float | None = 0.0
        self.total_water_l: float | None = 0.0

    # ---------------------------------------------------------------- set-up
    def configure(self, components: Mapping[str, Any], *, device_indices: Sequence[int] | None,
                  is_node_leader: bool = True, virtual_machine: bool = False) -> None:
        """Learn this process's hardware from the meter's ``info()``: the GPUs it measures (by name), or, if it
        trains on accelerators it cannot name, that many unidentified ones; the node leader also holds the host."""
        gpu = components.get("gpu") if isinstance(components, Mapping) else None
        gpu = gpu if isinstance(gpu, Mapping) else {}
        names = accelerator_names(gpu)
        unidentified, why = 0, ""
        measured = gpu.get("method") not in (None, UNAVAILABLE, NOT_USED)
        if not names and device_indices:
            unidentified = len(device_indices)
            why = f"the model of the accelerator(s) could not be read ({gpu.get('reason') or gpu.get('method')})"
        elif not names and measured:
            unidentified = 1
            why = "the GPU sensor names no device model"
        self.accelerators = [*names, *(["unidentified"] * unidentified)]
        self.rate = embodied_rate(names, host=is_node_leader, lifetime_years=self.lifetime_years,
                                  utilisation=self.utilisation, host_share=self.host_share,
                                  unidentified=unidentified, unidentified_reason=why,
                                  virtual_machine=virtual_machine)

    @property
    def local_rate_gco2e_per_h(self) -> float | None:
        """This process's embodied g/h for the sum over ranks; ``None`` when none of its parts has a figure and it
        holds some hardware (0.0 for a rank that holds nothing: a second CPU rank of a node)."""
        if self.rate is None:
            return None
        if not self.rate.parts:
            return 0.0
        return self.rate.rate_gco2e_per_h if self.rate.available else None

    # ---------------------------------------------------------------- epochs
    def add_epoch(self, epoch: int, time_s: float, energy_j: float | None,
                  rate_all_ranks_gco2e_per_h: float | None) -> EpochFootprint:
        """Embodied = rate (summed over ranks) × epoch hours; water = epoch energy × (WUE + PUE × off-site)."""
        self.rate_all_ranks_gco2e_per_h = rate_all_ranks_gco2e_per_h
        embodied = None
        if rate_all_ranks_gco2e_per_h is not None and math.isfinite(rate_all_ranks_gco2e_per_h):
            embodied = rate_all_ranks_gco2e_per_h * float(time_s) / 3600.0
        water = None
        if energy_j is not None:
            water = water_l(joules_to_kwh(energy_j), self.wue_l_per_kwh, self.pue, self.water.offsite_l_per_kwh)
        row = EpochFootprint(int(epoch), float(time_s), embodied, water)
        self.epochs.append(row)
        self.total_embodied_gco2e = (None if self.total_embodied_gco2e is None or embodied is None
                                     else self.total_embodied_gco2e + embodied)
        self.total_water_l = None if self.total_water_l is None or water is None else self.total_water_l + water
        return row

    def metrics(self) -> dict[str, float]:
        """The three ``green/`` keys of the last epoch (NaN where unavailable)."""
        if not self.epochs:
            return footprint_metrics(None, None, None)
        return footprint_metrics(self.epochs[-1].embodied_gco2e, self.total_embodied_gco2e, self.total_water_l)

    # ---------------------------------------------------------------- record
    def to_record(self, *, with_epochs: bool = True) -> dict[str, Any]:
        """The record's ``footprint`` block (:meth:`info` as JSON)."""
        return to_json(self.info(with_epochs=with_epochs))

    def info(self, *, with_epochs: bool = True) -> FootprintInfo:
        """The record's ``footprint`` section; ``with_epochs=False`` (the header of a running record, which must not
        grow with the epochs) leaves the per-epoch list out: each epoch's figures follow from the epoch rows
        (embodied = ``rate_all_ranks_gco2e_per_h`` × ``time_s`` / 3600, water = energy × the water factors)."""
        rate = {} if self.rate is None else self.rate.section_fields()
        return FootprintInfo(
            embodied=EmbodiedInfo(
                **rate,
                accelerators=tuple(self.accelerators),
                scope="this process's hardware (rank zero); rate_all_ranks sums every rank's",
                rate_all_ranks_gco2e_per_h=self.rate_all_ranks_gco2e_per_h,
                total_gco2e=self.total_embodied_gco2e if self.epochs else None,
                **self._embodied_range(),
                partial=bool(rate.get("missing")),
                note="manufacturing emissions amortised over the epochs' wall time; reported beside the "
                     "operational emissions, not included in them",
            ),
            water=WaterInfo(
                formula=WATER_FORMULA,
                wue_l_per_kwh=self.wue_l_per_kwh,
                wue_source=WUE_SOURCE if self.wue_default else "user-set wue_l_per_kwh",
                pue=self.pue,
                offsite=self.water,
                total_l=self.total_water_l if self.epochs else None,
            ),
            epochs=tuple(self.epochs) if with_epochs else (),
        )

    def _embodied_range(self) -> dict[str, float | None]:
        """The total's interval from the sources' min/max (docs/uncertainty.md); ``None``: no basis."""
        total = self.total_embodied_gco2e if self.epochs else None
        span = None if self.rate is None else embodied_interval(self.rate.parts, total)
        return {"total_low_gco2e": None if span is None else span.low,
                "total_high_gco2e": None if span is None else span.high}

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [vars(e).copy() for e in self.epochs], "total_embodied_gco2e": self.total_embodied_gco2e,
                "total_water_l": self.total_water_l}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epochs = [EpochFootprint(**e) for e in state.get("epochs", [])]
        self.total_embodied_gco2e = state.get("total_embodied_gco2e", 0.0)
        self.total_water_l = state.get("total_water_l", 0.0)

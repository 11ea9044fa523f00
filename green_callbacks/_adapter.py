"""What the three adapters share: the one constructor, and the session it builds.

Each adapter subclasses its framework's callback class and :class:`GreenCallbackBase`; the base validates the
user's arguments at construction time (a clear ``ValueError``) and owns the :class:`~green_callbacks.core.session.
Session` that all arithmetic happens in. Adapters only read framework state, call the session, and log what it
returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.session import METRIC_KEYS, Session

__all__ = ["METRIC_KEYS", "GreenCallbackBase", "progress_bar_metrics"]


class GreenCallbackBase:
    """The shared constructor of ``GreenCallback`` for Lightning, Keras and transformers.

    Args:
        country: ISO 3166 alpha-2/alpha-3 code of the grid (``"FR"``, ``"usa"``); or set ``GREEN_CALLBACKS_COUNTRY``.
        region: a cloud region with a published intensity (``"gcp:europe-west1"``).
        carbon_intensity: explicit grid intensity in gCO2e/kWh (wins over ``country`` and ``region``).
        pue: data-centre PUE multiplying the measured IT energy (default 1.0; the 2023 industry average is 1.58).
        monitor: the metric that defines convergence (default: the framework's early-stopping/best-model metric).
        mode: ``"min"`` or ``"max"`` (default: inferred from the metric's name).
        target: a value of ``monitor`` whose first reaching is reported as "to target".
        budget_kwh, budget_gco2e: energy and emissions budgets of the run.
        gpus: NVML indices of the GPUs to measure (default: the ones the framework trains on).
        output_dir: folder for the run record (default: the framework's log/output folder).
        cpu_watts_per_core, ram_watts_per_gb: constants of the CPU/RAM estimates used where RAPL is unreadable.
        live_intensity: an opt-in live intensity provider, e.g.
            ``green_callbacks.core.live.ElectricityMapsProvider(zone="DE")``.
        budget_action: ``"stop"`` the training when a budget would be exceeded, or only ``"warn"``.
        sensors: advanced — energy sensors to use instead of the machine's (one per component).
    """

    framework = "unknown"

    def __init__(
        self,
        *,
        country: str | None = None,
        region: str | None = None,
        carbon_intensity: float | None = None,
        pue: float = 1.0,
        monitor: str | None = None,
        mode: str | None = None,
        target: float | None = None,
        budget_kwh: float | None = None,
        budget_gco2e: float | None = None,
        gpus: Sequence[int] | None = None,
        output_dir: str | None = None,
        cpu_watts_per_core: float | None = None,
        ram_watts_per_gb: float | None = None,
        live_intensity: Any = None,
        budget_action: str = "stop",
        sensors: Sequence[Any] | None = None,
        embodied_lifetime_years: float | None = None,
        embodied_utilisation: float | None = None,
        embodied_host_share: float | None = None,
        wue_l_per_kwh: float | None = None,
    ) -> None:
        self.config = GreenConfig(
            country=country,
            region=region,
            carbon_intensity=carbon_intensity,
            pue=pue,
            monitor=monitor,
            mode=mode,
            target=target,
            budget_kwh=budget_kwh,
            budget_gco2e=budget_gco2e,
            gpus=None if gpus is None else tuple(gpus),
            output_dir=output_dir,
            cpu_watts_per_core=cpu_watts_per_core,
            ram_watts_per_gb=ram_watts_per_gb,
            live_intensity=live_intensity,
            budget_action=budget_action,
            embodied_lifetime_years=embodied_lifetime_years,
            embodied_utilisation=embodied_utilisation,
            embodied_host_share=embodied_host_share,
            wue_l_per_kwh=wue_l_per_kwh,
        )
        if sensors is None:  # an unknown GPU index is the user's mistake: say so now, not at the first epoch
            from green_callbacks.core.sensors.nvml import check_gpus_on_this_machine

            check_gpus_on_this_machine(self.config.gpus)
        self._sensors = None if sensors is None else list(sensors)
        self.session = self._new_session()
        self.last_metrics: dict[str, float] = {}

    def _new_session(self, dist: DistInfo | None = None) -> Session:
        """A fresh session (one per fit); ``dist`` when the framework knows the ranks better than the environment."""
        return Session(self.config, framework=self.framework, sensors=self._sensors, dist=dist)

    @property
    def record_path(self) -> Any:
        """Where the run record is (or will be) written."""
        return self.session.record_path


def progress_bar_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The compact running totals a progress bar shows: energy in Wh (small runs would show 0.000 kWh) and grams
    CO2e so far."""
    return {
        "Wh": metrics["green/total_energy_kwh"] * 1000.0,
        "gCO2e": metrics["green/total_emissions_gco2e"],
    }

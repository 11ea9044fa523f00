"""How one run is set up, for every kind of run: a fit (:class:`~green_callbacks.core.session.Session`) and a test /
predict / evaluate phase (:class:`~green_callbacks.core.phase_session.PhaseSession`) build the same
:class:`RunContext`, so that a change to how a run is set up is one edit here.

A context holds the validated settings, the grid intensity (:class:`~green_callbacks.core.carbon.CarbonChoice`: a
live value is fetched in the background), this process's ranks and the sum over ranks, the sensors' meter, the
record's path and sink (:class:`~green_callbacks.core.record_sink.RecordSink`), and the exit handlers that write
the record when the process is stopped mid-run. The drivers keep only their own state on top of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from green_callbacks.core import clock
from green_callbacks.core.carbon import CarbonChoice, choose_carbon
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo, Ranks, Reducer
from green_callbacks.core.meter import Meter
from green_callbacks.core.record_sink import RecordSink
from green_callbacks.core.record_writer import new_record_path
from green_callbacks.core.sensors.base import Sensor
from green_callbacks.core.sensors.factory import build_sensors
from green_callbacks.core.signals import ExitHandlers
from green_callbacks.core.wording import FrontEnd

__all__ = ["RunContext"]


class RunContext(Ranks):
    """The set-up one run shares with every other kind of run.

    Args:
        config: the validated user settings.
        on_exit: ``on_exit(status, reason)`` writes the record on SIGTERM/SIGHUP or at interpreter exit.
        record: how messages name the record (``"run record"``, ``"test record"``); ``retried``: a failed write is
            retried with the next one (a fit's epochs), else it is the only write.
        sensors: sensors to use instead of the machine's (custom meters, tests).
        dist, reducer: this process's ranks and the sum over ranks (default: from ``torch.distributed``, found
            when first needed).
        carbon: a grid intensity chosen already (a fit's, handed on or shared); ``None``: chosen from ``config``.
        owns_carbon: :meth:`close_carbon` stops ``carbon``'s request (False where another run shares it).
        front_end: how messages tell the user to set an option.
    """

    def __init__(self, config: GreenConfig, *, on_exit: Callable[[str, BaseException | str], Any],
                 record: str = "run record", retried: bool = True, sensors: Sequence[Sensor] | None = None,
                 dist: DistInfo | None = None, reducer: Reducer | None = None, carbon: CarbonChoice | None = None,
                 owns_carbon: bool = True, front_end: FrontEnd | None = None) -> None:
        self.config = config
        self.carbon_choice = carbon if carbon is not None else choose_carbon(
            country=config.country, region=config.region, carbon_intensity=config.carbon_intensity,
            live=config.live_intensity, front_end=front_end)
        self.owns_carbon = owns_carbon or carbon is None
        self.sensors = None if sensors is None else list(sensors)
        """The sensors given instead of the machine's (``None``: built for the devices at :meth:`open_meter`)."""
        self._dist, self._reducer = dist, reducer
        self.meter: Meter | None = None
        self.started_at: float | None = None
        self.record_path: Path | None = None
        self.sink = RecordSink(record, retried=retried)
        self.exit = ExitHandlers(on_exit)

    def open_meter(self, *, device_type: str = "cuda", device_indices: Sequence[int] | None = None,
                   device_uuids: Sequence[str] | None = None) -> Meter:
        """Build the sensors (for the devices this process runs on, unless given) and start them; the run's clock
        starts now."""
        sensors = self.sensors if self.sensors is not None else build_sensors(
            self.config, device_type=device_type, device_indices=device_indices, device_uuids=device_uuids)
        self.meter = Meter(sensors)
        self.meter.start()
        self.started_at = clock.wall_time_s()
        return self.meter

    def open_record(self, folder: str | os.PathLike[str] | None, *, fresh_log: bool = False) -> Path:
        """The record's path (kept where one is set already: a resumed run's) in ``output_dir=``, else ``folder``,
        else ``green_runs``; the sink writes there on global rank zero only."""
        if self.record_path is None:
            self.record_path = new_record_path(self.config.output_dir or folder or "green_runs")
        self.sink.open(self.record_path, writes=self.dist.is_global_zero, fresh_log=fresh_log)
        return self.record_path

    def local_j(self, name: str, value: float | None) -> float | None:
        """This rank's share of a component's energy: a node-level sensor counts on the node leader only."""
        sensor = None if self.meter is None else self.meter.sensors.get(name)
        if sensor is not None and sensor.scope == "node" and not self.dist.is_node_leader:
            return 0.0
        return value

    def close_carbon(self) -> None:
        """Stop the live intensity's request where this run owns it (it never outlives the run)."""
        if self.owns_carbon:
            self.carbon_choice.close()

"""The engine's lifecycle: ``start`` → (``epoch_start`` → ``eval_start``/``eval_end`` → ``epoch_end``)* → ``finish``.

A :class:`Session` is one measured run. It keeps the lifecycle and the totals; it delegates the rest to one module
each: the sensors to :class:`~green_callbacks.core.meter.Meter`, the cross-rank sums to the declared
:class:`~green_callbacks.core.epoch_state.EpochState`, the metric names to :mod:`~green_callbacks.core.metric_keys`,
the record file to :class:`~green_callbacks.core.record_writer.RecordWriter` (off the training thread), signals and
exit to :class:`~green_callbacks.core.signals.ExitHandlers`, budgets to :mod:`~green_callbacks.core.budget`,
convergence to :class:`~green_callbacks.core.convergence.ConvergenceTracker`. ``epoch_end`` returns the ``green/...``
metrics as plain floats, already summed over all ranks. Callers use its methods; its state is read-only to them.
Adapters drive it through :class:`~green_callbacks.core.engine.Engine`, which adds the guard, the status of an
exception, the stale-run reset and the FLOP tap.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from green_callbacks.core import clock, record_writer
from green_callbacks.core.budget import Projection, RunningProjection, decide
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.convergence import ConvergenceTracker, MonitorWatch, Totals
from green_callbacks.core.distributed import DistInfo, Ranks, Reducer
from green_callbacks.core.environment import hardware_info, software_info
from green_callbacks.core.epoch_state import EpochState
from green_callbacks.core.footprint import FootprintTracker
from green_callbacks.core.guard import Guard, strict_mode
from green_callbacks.core.meter import ComponentEnergy, Measurement, Meter
from green_callbacks.core.metric_keys import METRIC_KEYS, epoch_metrics, user_metrics
from green_callbacks.core.record import SCHEMA
from green_callbacks.core.record_writer import RecordWriter, clean_stale_temp_files, epochs_log_name, new_record_path
from green_callbacks.core.rows import EpochRow, row_from_record
from green_callbacks.core.sensors.base import COMPONENTS, NOT_USED, UNAVAILABLE, Sensor
from green_callbacks.core.sensors.factory import build_sensors
from green_callbacks.core.signals import ExitHandlers, signals_held
from green_callbacks.core.throughput import BatchCounter, PeakInfo, local_peak
from green_callbacks.core.units import emissions_gco2e, joules_to_kwh

__all__ = ["METRIC_KEYS", "STATUSES", "EpochRow", "Session"]

STATUSES = ("created", "running", "completed", "interrupted", "failed")
_INTERRUPTS = ("KeyboardInterrupt", "SIGTERMException", "SystemExit")


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def status_for(error: BaseException | str | None) -> str:
    """``"interrupted"`` for a user's or scheduler's stop (Ctrl-C, SIGTERM, exit), ``"failed"`` for anything else."""
    if error is None:
        return "completed"
    if isinstance(error, str):
        return "interrupted" if error.startswith("SIG") else "failed"
    return "interrupted" if any(t.__name__ in _INTERRUPTS for t in type(error).__mro__) else "failed"


class Session(Ranks):
    """One measured run. Nothing here knows a framework.

    Args:
        config: the validated user settings.
        framework: ``"lightning"``, ``"keras"``, ``"transformers"`` or ``"measure"``, for the record.
        sensors: sensors to use instead of the machine's (custom meters, tests); one per component.
        reducer: sums a vector over ranks (default: ``torch.distributed`` when initialised, else identity).
        dist: this process's ranks (default: read from ``torch.distributed`` / the environment at ``start``).
    """

    def __init__(
        self,
        config: GreenConfig,
        *,
        framework: str,
        sensors: Sequence[Sensor] | None = None,
        reducer: Reducer | None = None,
        dist: DistInfo | None = None,
    ) -> None:
        from green_callbacks.core.carbon import resolve_carbon

        self.config = config
        self.framework = framework
        self.carbon = resolve_carbon(
            country=config.country,
            region=config.region,
            carbon_intensity=config.carbon_intensity,
            live=config.live_intensity,
        )
        self.footprint = FootprintTracker(
            location=self.carbon.location, pue=config.pue, lifetime_years=config.embodied_lifetime_years,
            utilisation=config.embodied_utilisation, host_share=config.embodied_host_share,
            wue_l_per_kwh=config.wue_l_per_kwh,
        )
        self._convergence: ConvergenceTracker | None = (
            ConvergenceTracker(config.monitor, config.mode, config.target) if config.monitor else None
        )
        self._custom_sensors = list(sensors) if sensors is not None else None
        self._reducer = reducer
        self._dist = dist
        self.guard = Guard("green_callbacks")
        self.meter: Meter | None = None
        self.run_id = uuid.uuid4().hex
        self._status = "created"
        self._rows: list[EpochRow] = []
        self._totals = Totals()
        self._record_path: Path | None = None
        self._writer: RecordWriter | None = None
        self._logged_epochs = 0  # rows already appended to the record's epoch log
        self._header_at = -math.inf  # time.monotonic() when the running header was last handed to the writer
        self._header_stale = False  # the state changed since then (a replacement was skipped: HEADER_INTERVAL_S)
        self._hyperparameters: dict[str, Any] = {}
        self._info: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._should_stop = False
        self._planned_epochs: float | None = None
        self._projection: tuple[Projection, Projection] | None = None
        self._resumed_from: dict[str, Any] | None = None
        self._epoch: int | None = None
        self._epoch_index = 0
        self._eval: list[Measurement] = []
        self._flops = {"train": 0.0, "eval": 0.0}
        self._flops_seen = False
        self._started_at: float | None = None
        self._lock = threading.RLock()
        self._error: str | None = None
        self._partial_epoch: dict[str, Any] | None = None
        self._pid = os.getpid()  # a forked child (a DataLoader worker) holds a stale copy: it never writes
        self._measured: set[str] = set()  # components that gave a number at some point of this run
        self._warned_lost: set[str] = set()
        self._exit = ExitHandlers(self._close_on_exit)
        self._state = EpochState()
        self._last_metrics: dict[str, float] = {}
        self._write_warned = False
        self._monitor_watch = MonitorWatch()
        self._energy_projection = RunningProjection()
        self._emissions_projection = RunningProjection()
        self._methods: dict[str, list[str]] = {}  # every method each component used so far
        self._environment: threading.Thread | None = None
        self._phases: list[dict[str, Any]] = []  # test/predict/evaluate run with this fit's model, newest last
        self._batches = BatchCounter()
        self._peak = PeakInfo(None, None, (), "the run has not started")

    # ------------------------------------------------------------------ read-only state
    @property
    def status(self) -> str:
        """``created`` → ``running`` → ``completed`` | ``interrupted`` | ``failed``."""
        return self._status

    @property
    def running(self) -> bool:
        return self._status == "running"

    @property
    def rows(self) -> tuple[EpochRow, ...]:
        return tuple(self._rows)

    @property
    def epochs_done(self) -> int:
        return len(self._rows)

    @property
    def totals(self) -> Totals:
        return self._totals

    @property
    def record_path(self) -> Path | None:
        return self._record_path

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def should_stop(self) -> bool:
        """A budget would be exceeded and ``budget_action="stop"``: the adapter stops the training."""
        return self._should_stop

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def planned_epochs(self) -> float | None:
        return self._planned_epochs

    @property
    def projection(self) -> tuple[Projection, Projection] | None:
        return self._projection

    @property
    def last_metrics(self) -> dict[str, float]:
        """The ``green/...`` metrics of the last completed epoch (empty before the first)."""
        return dict(self._last_metrics)

    @property
    def convergence(self) -> ConvergenceTracker | None:
        return self._convergence

    @property
    def partial_epoch(self) -> dict[str, Any] | None:
        return self._partial_epoch

    @property
    def monitor(self) -> str | None:
        return None if self._convergence is None else self._convergence.monitor

    @property
    def in_epoch(self) -> bool:
        return self.meter is not None and self.meter.is_open("epoch")

    @property
    def in_eval(self) -> bool:
        return self.meter is not None and self.meter.is_open("eval")

    @property
    def peak(self) -> PeakInfo:
        """This process's devices' dense peak FLOP/s at the run's compute dtype (for ``green/mfu``), or why not."""
        return self._peak

    @property
    def flops_available(self) -> bool:
        return self.guard.enabled("flops")

    # ------------------------------------------------------------------ set-up
    def _build_sensors(
        self, device_indices: Sequence[int] | None, device_uuids: Sequence[str] | None, device_type: str = "cuda"
    ) -> list[Sensor]:
        if self._custom_sensors is not None:
            return self._custom_sensors
        return build_sensors(self.config, device_type=device_type, device_indices=device_indices,
                             device_uuids=device_uuids)

    def start(
        self,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        device_indices: Sequence[int] | None = None,
        device_uuids: Sequence[str] | None = None,
        device_type: str = "cuda",
        monitor: str | None = None,
        mode: str | None = None,
        planned_epochs: float | None = None,
        extra: Mapping[str, Any] | None = None,
        handle_signals: bool = True,
        compute_dtype: Any = None,
    ) -> None:
        """Begin the run: build and start the sensors, open the ``run`` window, write the first record.

        ``monitor``/``mode`` are the framework's own early-stopping or best-model metric, used when the user gave
        no ``monitor=``. ``device_indices`` are the CUDA devices this process trains on (``[]`` for CPU);
        ``device_uuids`` their UUIDs where the framework knows them (exact whatever the environment says);
        ``device_type`` what they are (``"cuda"``, ``"rocm"``, ``"xpu"``, ``"mps"``, ``"tpu"``, ``"cpu"``; see
        :mod:`green_callbacks.core.sensors.accelerators`), which picks the sensor.
        ``planned_epochs`` (may be fractional) lets the session project the run's total and apply budgets.
        ``handle_signals=False``: the framework turns SIGTERM into its own exception (the exit hook stays).
        ``compute_dtype`` (``"bf16"``, ``"16-mixed"``, ``torch.float32`` …; default fp32) picks the devices' peak
        FLOP/s for ``green/mfu``.
        """
        with self._lock:
            if self._status == "running":
                return
            if self._convergence is None and monitor:
                self._convergence = ConvergenceTracker(monitor, mode, None)
            self._hyperparameters = dict(hyperparameters or {})
            self.set_planned_epochs(planned_epochs)
            self.meter = Meter(self._build_sensors(device_indices, device_uuids, device_type))
            self.meter.start()
            self.meter.begin("run")
            self._declare_state()
            self._configure_footprint(device_indices)
            self._started_at = clock.wall_time_s()
            self._pid = os.getpid()
            self._status = "running"
            components = self.meter.info()
            self._peak = local_peak(components, compute_dtype)
            self._info = {"throughput": {"compute_dtype": self._peak.dtype, "devices": list(self._peak.devices),
                                         "peak_flops_per_s": self._peak.peak_flops_per_s,
                                         "mfu_unavailable": self._peak.reason or None},
                          **dict(extra or {})}
            folder = self.config.output_dir or output_dir or "green_runs"
            if self._record_path is None:
                self._record_path = new_record_path(folder)
            if self.dist.is_global_zero:
                clean_stale_temp_files(self._record_path.parent)
                self._writer = RecordWriter(self._record_path)
                if self._rows:  # resumed: the log is written afresh from the restored rows
                    self._reset_epoch_log()
            self._warn_unavailable()
            self.write_record()
            self._exit.install(signals=handle_signals)
            self._environment = threading.Thread(  # versions and machine facts can wait: not on the training thread
                target=self._capture_environment, args=(components,), name="green-callbacks-env", daemon=True
            )
            self._environment.start()

    def _capture_environment(self, sensors_info: dict[str, Any]) -> None:
        try:
            found = {"hardware": hardware_info(sensors_info), "software": software_info()}
        except Exception as err:  # a machine fact that cannot be read is not worth a run
            found = {"hardware": None, "software": None, "environment_error": f"{type(err).__name__}: {err}"}
        self._info = {**found, **self._info}  # one assignment: the next header (every epoch, the end) has it
        if not self._lock.acquire(timeout=0.5):  # the training thread is busy with the session: its next write
            return
        try:
            if self._status == "running" and self._writes_here():
                self._replace_header()
        finally:
            self._lock.release()

    def _await_environment(self) -> None:
        if self._environment is not None and self._environment is not threading.current_thread():
            self._environment.join(timeout=10.0)

    def _declare_state(self) -> None:
        """What each epoch sums over ranks: every component's energy (epoch and evaluation), the FLOPs; rank
        zero's intensity for everyone (with a live provider ranks may differ, and all must decide budgets alike)."""
        assert self.meter is not None
        self._state = EpochState()
        for window in ("energy_j", "eval_energy_j"):
            for name in self._components():
                self._state.add_state(f"{window}/{name}", "sum")
        self._state.add_state("train_flops", "sum")
        self._state.add_state("eval_flops", "sum")
        self._state.add_state("intensity", "rank_zero")
        self._state.add_state("embodied_gco2e_per_h", "sum")
        for name in ("samples", "tokens", "peak_flops_per_s"):  # throughput: a rank without a count makes it unknown
            self._state.add_state(name, "sum")
        self._state.add_state("train_time_s", "rank_zero")  # one clock for the rates, so all ranks log the same

    def _components(self) -> list[str]:
        assert self.meter is not None
        return [c for c in COMPONENTS if c in self.meter.sensors]

    def _configure_footprint(self, device_indices: Sequence[int] | None) -> None:
        """Footprint (#17): tell the tracker this process's hardware (GPU names, whether it holds the host)."""
        from green_callbacks.core.sensors.cpu_tdp import machine_cpuinfo

        assert self.meter is not None
        self.footprint.configure(self.meter.info(), device_indices=device_indices,
                                 is_node_leader=self.dist.is_node_leader,
                                 virtual_machine=machine_cpuinfo().virtual_machine)

    def _warn_unavailable(self) -> None:
        assert self.meter is not None
        reasons = []
        for name, reading in self.meter.read().items():
            if reading.method == NOT_USED:  # not part of this run: nothing to warn about (the record says so)
                continue
            if reading.energy_j is None:
                reasons.append(f"{name}: {reading.note or 'no sensor'}")
            else:
                self._measured.add(name)
        if reasons and self.dist.is_global_zero:
            warnings.warn(
                "green_callbacks: some energy is not measured on this machine and is reported 'unavailable' "
                "(never 0): " + "; ".join(reasons),
                UserWarning,
                stacklevel=3,
            )
        self._say_why_no_mfu()

    def _say_why_no_mfu(self) -> None:
        """Once per run: why ``green/mfu`` is NaN. A warning when an accelerator trains whose peak is not known
        (the table or the dtype lacks it: something to fix); an INFO log on a CPU run, where NaN is expected."""
        if self._peak.peak_flops_per_s is not None or not self.dist.is_global_zero:
            return
        message = f"green_callbacks: green/mfu is NaN in this run: {self._peak.reason}."
        if self._peak.devices:
            warnings.warn(message + " Add the device's dense peak to green_callbacks/core/flops/peaks.py.",
                          UserWarning, stacklevel=4)
        else:
            logging.getLogger("green_callbacks").info(message)

    # ------------------------------------------------------------------ epochs
    def epoch_start(self, epoch: int | None = None) -> None:
        """Open the epoch window (``epoch`` is the framework's epoch number; default: the count so far)."""
        with self._lock:
            if self.meter is None:
                raise RuntimeError("Session.epoch_start() before start()")
            self._epoch = self._epoch_index if epoch is None else int(epoch)
            self._eval = []
            self._flops = {"train": 0.0, "eval": 0.0}
            self._batches.reset()
            self.meter.begin("epoch")

    def eval_start(self) -> None:
        """Open an evaluation window inside the epoch (several per epoch are summed)."""
        if self.meter is not None and not self.meter.is_open("eval"):
            self.meter.begin("eval")

    def eval_end(self) -> None:
        if self.meter is not None and self.meter.is_open("eval"):
            self._eval.append(self.meter.end("eval"))

    def update_info(self, key: str, value: Any) -> None:
        """Record-level information that changes during the run (how FLOPs were counted), under ``key`` of the
        record; written with the record's next header and with the final record."""
        self._info[key] = value

    def add_flops(self, *, train: float = 0.0, eval: float = 0.0) -> None:
        """Add counted FLOPs of training steps (forward + backward) and evaluation steps (forward) to this epoch."""
        self._flops["train"] += train
        self._flops["eval"] += eval
        self._flops_seen = True

    def add_samples(self, *, samples: int | None = None, tokens: int | None = None) -> None:
        """Add the training samples and input tokens of steps of this epoch (``None``: not known)."""
        self._batches.add(samples, tokens)

    @property
    def batches(self) -> BatchCounter:
        """This epoch's samples and tokens on this process (the engine adds each training step's)."""
        return self._batches

    def add_batch(self, batch: Any) -> None:
        """Add a training batch's samples and tokens, read from its shapes
        (:func:`~green_callbacks.core.throughput.batch_counts`; no device synchronisation)."""
        self._batches.add_batch(batch)

    def epoch_end(self, metrics: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Close the epoch: sum over ranks, update totals and convergence, log the epoch, return the metrics.

        ``metrics`` are the framework's metrics of this epoch (the monitored one is read from them); only the
        user's numbers are kept (:func:`~green_callbacks.core.metric_keys.user_metrics`).
        """
        with self._lock:
            if self.meter is None or not self.meter.is_open("epoch"):
                raise RuntimeError("Session.epoch_end() without epoch_start()")
            if self.meter.is_open("eval"):
                self.eval_end()
            epoch_m = self.meter.end("epoch")
            eval_m = _sum_measurements("eval", self._eval, epoch_m.components)
            row = self._close_epoch(epoch_m, eval_m, user_metrics(metrics or {}))
            self._rows.append(row)
            self._follow(row)
            self._warn_lost(row, epoch_m)
            self._check_budget()
            self._epoch_index += 1
            self._epoch = None
            self.write_record()
            self._last_metrics = self.metrics(row)
            return dict(self._last_metrics)

    def _warn_lost(self, row: EpochRow, epoch_m: Measurement) -> None:
        """One warning per component that was measured and is not any more (a GPU lost, a RAPL zone gone)."""
        assert self.meter is not None
        for name, value in row.component_energy_j.items():
            if value is not None:
                self._measured.add(name)
        lost = [n for n in row.missing_components if n in self._measured and n not in self._warned_lost]
        for name in lost:
            self._warned_lost.add(name)
            if name in self.meter.broken or not self.dist.is_global_zero:  # the meter has warned already
                continue
            part = epoch_m.components.get(name)
            why = ((part.note if part is not None else "") or "it could not be measured on another rank").rstrip(".")
            warnings.warn(
                f"green_callbacks: {name} energy could not be measured in epoch {row.epoch} ({why}). Training goes "
                f"on; the run record marks {name} 'unavailable' in every epoch it is missing from (never 0) and "
                "keeps what was measured; those epochs' energy and emissions are the other components' only.",
                RuntimeWarning,
                stacklevel=4,
            )

    def set_planned_epochs(self, epochs: float | None) -> None:
        """The number of epochs the whole run is planned to last (resumed epochs included); ``None``: unknown."""
        self._planned_epochs = None if epochs is None or not math.isfinite(epochs) or epochs <= 0 else float(epochs)

    def _follow(self, row: EpochRow) -> None:
        """Running summaries of the rows (projections, methods used), kept in O(1) per epoch."""
        self._energy_projection.add(row.energy_j)
        self._emissions_projection.add(row.emissions_gco2e)
        for name, method in row.component_method.items():
            used = self._methods.setdefault(name, [])
            if method not in used:
                used.append(method)

    def _check_budget(self) -> None:
        energy = self._energy_projection.projection(self._planned_epochs)
        emissions = self._emissions_projection.projection(self._planned_epochs)
        self._projection = (energy, emissions)
        if self._stop_reason is not None:
            return
        decision = decide(energy, emissions, budget_kwh=self.config.budget_kwh, budget_gco2e=self.config.budget_gco2e,
                          use_projection=len(self._rows) >= 2)
        if not decision.exceeded:
            return
        stop = self.config.budget_action == "stop"
        self._stop_reason = f"budget: {decision.reason}" + ("" if stop else " (budget_action='warn': not stopped)")
        self._should_stop = stop
        if self.dist.is_global_zero:
            then = "the training stops at the end of this epoch" if stop else "training goes on (budget_action='warn')"
            warnings.warn(f"green_callbacks: {decision.reason}; {then}", UserWarning, stacklevel=4)

    def _local_component_j(self, m: Measurement, name: str) -> float | None:
        """This rank's share: node-level sensors count on the node leader only."""
        assert self.meter is not None
        sensor = self.meter.sensors.get(name)
        if sensor is not None and sensor.scope == "node" and not self.dist.is_node_leader:
            return 0.0
        return m.component_j(name)

    def _close_epoch(self, epoch_m: Measurement, eval_m: Measurement, metrics: dict[str, float]) -> EpochRow:
        names = [c for c in self._components() if c in epoch_m.components]
        flops_ok = self.flops_available and self._flops_seen
        local: dict[str, float | None] = {
            "train_flops": self._flops["train"] if flops_ok else None,
            "eval_flops": self._flops["eval"] if flops_ok else None,
            "intensity": self.carbon.intensity_gco2e_per_kwh,
            "embodied_gco2e_per_h": self.footprint.local_rate_gco2e_per_h,
            "samples": self._batches.samples,
            "tokens": self._batches.tokens,
            "peak_flops_per_s": self._peak.peak_flops_per_s,
            "train_time_s": max(epoch_m.duration_s - eval_m.duration_s, 0.0),
        }
        for n in names:
            local[f"energy_j/{n}"] = self._local_component_j(epoch_m, n)
            local[f"eval_energy_j/{n}"] = self._local_component_j(eval_m, n)
        reduced = self._state.reduce(local, self.dist, self.reducer)
        sums, lacking = reduced.values, reduced.lacking
        comp_j = {n: sums[f"energy_j/{n}"] for n in names}
        methods = {n: epoch_m.components[n].method
                   if lacking[f"energy_j/{n}"] == 0 or epoch_m.components[n].method == NOT_USED else UNAVAILABLE
                   for n in names}
        energy_j = _sum_known(comp_j.values())
        eval_j = _sum_known(sums[f"eval_energy_j/{n}"] for n in names) if self._eval else 0.0
        intensity = sums["intensity"]
        assert intensity is not None
        emissions = None if energy_j is None else emissions_gco2e(joules_to_kwh(energy_j), intensity, self.config.pue)
        train_flops, eval_flops = sums["train_flops"], sums["eval_flops"]
        assert self._epoch is not None
        self.footprint.add_epoch(self._epoch, epoch_m.duration_s, energy_j, sums["embodied_gco2e_per_h"])
        previous = self._totals
        self._totals = Totals(
            epochs=previous.epochs + 1,
            time_s=previous.time_s + epoch_m.duration_s,
            train_flops=_add(previous.train_flops, train_flops),
            eval_flops=_add(previous.eval_flops, eval_flops),
            energy_j=_add(previous.energy_j, energy_j),
            emissions_gco2e=_add(previous.emissions_gco2e, emissions),
        )
        assert self._epoch is not None
        self._convergence = self._monitor_watch.observe(
            self._convergence, metrics, self._epoch, speak=self.dist.is_global_zero)
        if self._convergence is not None:
            self._convergence.update(self._epoch, metrics.get(self._convergence.monitor), self._totals)
        return EpochRow(
            epoch=self._epoch,
            time_s=epoch_m.duration_s,
            energy_j=energy_j,
            component_energy_j=comp_j,
            component_method=methods,
            eval_energy_j=eval_j,
            train_flops=train_flops,
            eval_flops=eval_flops,
            emissions_gco2e=emissions,
            totals=self._totals,
            metrics=metrics,
            missing_components=tuple(n for n in names if comp_j[n] is None and methods[n] != NOT_USED),
            train_time_s=sums["train_time_s"],
            samples=sums["samples"],
            tokens=sums["tokens"],
            peak_flops_per_s=sums["peak_flops_per_s"],
        )

    def metrics(self, row: EpochRow) -> dict[str, float]:
        """The ``green/...`` metrics of one epoch row (see :func:`~green_callbacks.core.metric_keys.epoch_metrics`)."""
        best = None if self._convergence is None else self._convergence.best
        return {**epoch_metrics(row, best, self._projection), **self.footprint.metrics()}

    # ------------------------------------------------------------------ end
    def request_stop(self, reason: str) -> None:
        """Why the training was told to stop (early stopping, a budget); the first reason given is kept."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def finish(
        self,
        status: str = "completed",
        error: BaseException | str | None = None,
        *,
        stop_reason: str | None = None,
    ) -> Path | None:
        """Stop the sensors and write the final record with ``status``. Safe to call more than once."""
        if status not in STATUSES[2:]:
            raise ValueError(f"status must be one of {', '.join(STATUSES[2:])}, got {status!r}")
        if self._status == "running":
            self._await_environment()  # the final record holds the machine and versions
        with self._lock:
            if self._status != "running":
                return self._record_path
            if stop_reason is not None:
                self.request_stop(stop_reason)
            if error is not None:
                self._error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            if self.meter is not None:
                if self.meter.is_open("epoch"):  # this rank's part only: no collective call on a failure path
                    self._partial_epoch = _partial_record(self._epoch, self.meter.end("epoch"), self._flops)
                self.meter.close()
            self._status = status
            self._exit.uninstall()
            self._write_final()
            return self._record_path

    def _close_on_exit(self, status: str, reason: BaseException | str) -> None:
        self.finish(status, reason)

    def _write_final(self) -> None:
        """The last write of the run, safe from other code's signal handlers.

        A handler that raises can cut a write short anywhere (PyTorch raises from SIGCHLD when a DataLoader worker
        is killed, e.g. by a scheduler's SIGTERM to the whole job). Signals are held back during the write, and a
        write cut short by one already pending is done again; that exception then goes on to the training loop.
        """
        if not self._writes_here():
            return
        error: BaseException | None = None
        with signals_held():
            for _ in range(3):
                try:
                    self._final_write()
                    break
                except BaseException as err:
                    error = error or err
        if error is not None and not isinstance(error, OSError):
            raise error

    def _final_write(self) -> None:
        assert self._writer is not None
        self._await_environment()
        try:
            self._writer.final(self.to_record())
        except OSError as err:
            self._report_write_error(err)

    # ------------------------------------------------------------------ record
    def to_record(self, *, with_epochs: bool = True) -> dict[str, Any]:
        """The run record as a dict (the one place it is built). ``with_epochs=False``: the header of a running
        record, whose epochs are in the epoch log."""
        conv = self._convergence
        best = None if conv is None else conv.best
        at_target = None if conv is None else conv.at_target
        components = self.meter.info() if self.meter is not None else {}
        log = None
        if not with_epochs and self._record_path is not None:
            log = epochs_log_name(self._record_path)
        return {
            "schema": SCHEMA,
            "kind": "fit",
            "run_id": self.run_id,
            "framework": self.framework,
            "status": self._status,
            "error": self._error,
            "stop_reason": self._stop_reason,
            "started_at": self._started_at,
            "updated_at": clock.wall_time_s(),
            "world_size": self.dist.world_size,
            "carbon": {**self.carbon.to_record(), "pue": self.config.pue},
            "components": components,
            "methods": _methods_so_far(self._methods, components),
            "convergence": {
                "monitor": self.monitor,
                "mode": None if conv is None else conv.mode,
                "target": None if conv is None else conv.target,
                "best": None if best is None else best.to_record(),
                "at_target": None if at_target is None else at_target.to_record(),
            },
            "hyperparameters": self._hyperparameters,
            "search": self.config.search,
            "lost": dict(self.guard.lost),
            "resumed_from": self._resumed_from,
            "budget": {
                "budget_kwh": self.config.budget_kwh,
                "budget_gco2e": self.config.budget_gco2e,
                "action": self.config.budget_action,
                "planned_epochs": self._planned_epochs,
                "projection": None if self._projection is None else {
                    name: dict(vars(p))
                    for name, p in zip(("energy_j", "emissions_gco2e"), self._projection, strict=True)
                },
            },
            "totals": dict(vars(self._totals)),
            "epochs": [row.to_record() for row in self._rows] if with_epochs else [],
            "epochs_log": log,
            "partial_epoch": self._partial_epoch,
            "footprint": self.footprint.to_record(with_epochs=with_epochs),
            "phases": list(self._phases),
            **self._info,
        }

    def add_phase(self, entry: Mapping[str, Any]) -> None:
        """List a test / predict / evaluate run with this fit's model (its summary and record file name); a
        finished record is rewritten in full with it."""
        with self._lock:
            self._phases.append(dict(entry))
            if self._status == "running":
                self.write_record(header=True)
            elif self._status != "created":
                self._write_final()

    def _writes_here(self) -> bool:
        return self._writer is not None and self.dist.is_global_zero and os.getpid() == self._pid

    def write_record(self, *, header: bool = False) -> Path | None:
        """Hand the record to the writer (global rank zero only): new epochs are appended to the epoch log at once,
        the header replaced off the training thread — at most every ``HEADER_INTERVAL_S`` seconds unless ``header``
        (it is rebuilt from the whole state, and what it adds to the epoch lines changes slowly; :meth:`flush` and
        the end write the newest). A failed write warns once and is retried with the next."""
        if not self._writes_here():
            return None
        assert self._writer is not None
        while self._logged_epochs < len(self._rows):
            self._writer.epoch(self._rows[self._logged_epochs].to_record())
            self._logged_epochs += 1
        self._replace_header(force=header)
        err = self._writer.take_error()
        if err is not None:
            self._report_write_error(err)
        return self._record_path

    def _replace_header(self, force: bool = False) -> None:
        """Hand a fresh header to the writer when ``force``, or when the last one is ``HEADER_INTERVAL_S`` old;
        else note that the one on disk is stale (called with the session's lock held, or from its owner)."""
        now = time.monotonic()
        if not force and now - self._header_at < record_writer.HEADER_INTERVAL_S:
            self._header_stale = True
            return
        assert self._writer is not None
        self._header_at, self._header_stale = now, False
        self._writer.header(self.to_record(with_epochs=False))

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Wait until the record on disk holds everything handed to the writer, the machine and versions captured
        in the background and a header skipped for its interval included (tests, benchmarks)."""
        self._await_environment()
        if self._writer is None:
            return True
        if self._header_stale and self._status == "running" and self._writes_here():
            with self._lock:
                self._replace_header(force=True)
        done = self._writer.flush(timeout_s)
        err = self._writer.take_error()
        if err is not None:
            self._report_write_error(err)
        return done

    def _report_write_error(self, err: OSError) -> None:
        if strict_mode():
            raise err
        if self._write_warned:  # one warning per run, not one per epoch of a full disk
            return
        self._write_warned = True
        warnings.warn(
            f"green_callbacks: could not write the run record {self._record_path} ({err}); "
            "it is retried after every epoch and at the end (not warned again). Set output_dir= to a "
            "writable folder with free space.",
            RuntimeWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run continues its totals and convergence."""
        return {
            "run_id": self.run_id,
            "record_path": None if self._record_path is None else str(self._record_path),
            "totals": dict(vars(self._totals)),
            "epoch_index": self._epoch_index,
            "convergence": None if self._convergence is None else self._convergence.state_dict(),
            "rows": [row.to_record() for row in self._rows],
            "footprint": self.footprint.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a run from a checkpoint: totals, convergence and rows go on; the record file is reused."""
        self._totals = Totals(**state["totals"])
        self._epoch_index = int(state.get("epoch_index", self._totals.epochs))
        self._rows = [row_from_record(r) for r in state.get("rows", [])]
        self._energy_projection, self._emissions_projection = RunningProjection(), RunningProjection()
        self._methods = {}
        for row in self._rows:
            self._follow(row)
        conv = state.get("convergence")
        if conv is not None:
            if self._convergence is None:
                self._convergence = ConvergenceTracker(conv["monitor"], conv["mode"], conv.get("target"))
            self._convergence.load_state_dict(conv)
        if state.get("footprint") is not None:
            self.footprint.load_state_dict(state["footprint"])
        self._resumed_from = {"run_id": state.get("run_id"), "epochs": self._totals.epochs}
        if state.get("record_path"):
            self._record_path = Path(state["record_path"])
            if self._writer is not None:
                self._writer = RecordWriter(self._record_path)
        self._logged_epochs = 0  # the resumed record's log is written afresh from the restored rows
        if self._status == "running":
            if self._writer is not None:
                self._reset_epoch_log()
            self.write_record(header=True)

    def _reset_epoch_log(self) -> None:
        assert self._writer is not None
        self._writer.flush()
        try:
            os.unlink(self._writer.log_path)
        except OSError:
            pass


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


def _methods_so_far(used: Mapping[str, list[str]], components: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every method each component used in the run (a lost GPU shows both its method and ``unavailable``)."""
    out: dict[str, list[str]] = {name: list(used.get(name, ())) for name in components}
    for name, methods in used.items():
        out.setdefault(name, list(methods))
    for name, info in components.items():
        if not out[name]:
            out[name].append(str(info.get("method", UNAVAILABLE)))
    return out


def _partial_record(epoch: int | None, m: Measurement, flops: Mapping[str, float]) -> dict[str, Any]:
    """An epoch cut short by a failure or interrupt, as this rank measured it (not summed over ranks)."""
    return {
        "epoch": epoch,
        "time_s": m.duration_s,
        "energy_j": m.energy_j,
        "component_energy_j": {k: v.energy_j for k, v in m.components.items()},
        "component_method": {k: v.method for k, v in m.components.items()},
        "train_flops": flops.get("train"),
        "eval_flops": flops.get("eval"),
        "note": "incomplete epoch, this process only",
    }

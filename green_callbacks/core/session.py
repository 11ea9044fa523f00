"""The engine every adapter drives: ``start`` → (``epoch_start`` → ``eval_start``/``eval_end`` → ``epoch_end``)* →
``finish``.

The session owns the meter and its sensors, the carbon intensity, the FLOP and energy totals, convergence and the
run record. ``epoch_end`` returns the ``green/...`` metrics of DESIGN.md as plain floats, already summed over all
ranks of a distributed run; the adapter only hands them to its framework's logger.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from green_callbacks.core import clock
from green_callbacks.core.budget import Projection, decide, project
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.convergence import ConvergenceTracker, Totals
from green_callbacks.core.distributed import DistInfo, Reducer, default_reducer, dist_info, sum_with_missing
from green_callbacks.core.environment import hardware_info, software_info
from green_callbacks.core.guard import Guard, strict_mode
from green_callbacks.core.meter import ComponentEnergy, Measurement, Meter
from green_callbacks.core.record import SCHEMA, new_record_path, write_record_atomic
from green_callbacks.core.sensors.base import COMPONENTS, UNAVAILABLE, Sensor
from green_callbacks.core.throughput import THROUGHPUT_KEYS, BatchCounter, PeakInfo, local_peak, throughput
from green_callbacks.core.units import emissions_gco2e, joules_to_kwh

__all__ = ["METRIC_KEYS", "EpochRow", "Session"]

PREFIX = "green/"
METRIC_KEYS: tuple[str, ...] = (
    "green/epoch_energy_kwh",
    "green/epoch_gpu_energy_kwh",
    "green/epoch_cpu_energy_kwh",
    "green/epoch_ram_energy_kwh",
    "green/epoch_eval_energy_kwh",
    "green/epoch_emissions_gco2e",
    "green/epoch_time_s",
    "green/epoch_train_flops",
    "green/epoch_eval_flops",
    "green/total_energy_kwh",
    "green/total_emissions_gco2e",
    "green/total_train_flops",
    "green/flops_to_convergence",
    "green/energy_to_convergence_kwh",
    "green/emissions_to_convergence_gco2e",
    "green/epochs_to_convergence",
    "green/train_flops_per_joule",
    "green/projected_total_energy_kwh",
    "green/projected_total_emissions_gco2e",
    *THROUGHPUT_KEYS,
)
"""Every key :meth:`Session.epoch_end` returns, from the first epoch on (NaN where a value is unavailable)."""

NAN = float("nan")


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
    totals: Totals
    metrics: Mapping[str, float] = field(default_factory=dict)
    missing_components: tuple[str, ...] = ()
    """Components unavailable in this epoch: ``energy_j`` and emissions are the sum of the others."""
    train_time_s: float | None = None
    """The epoch's wall time less its evaluation windows (this process's clock)."""
    samples: float | None = None
    tokens: float | None = None
    """Training samples and input tokens of the epoch, summed over ranks; ``None`` = not known."""
    peak_flops_per_s: float | None = None
    """The dense peak of every device that trained (summed over ranks) at the run's compute dtype."""

    def to_record(self) -> dict[str, Any]:
        out = asdict(self)
        out["component_energy_j"] = dict(self.component_energy_j)
        out["component_method"] = dict(self.component_method)
        out["metrics"] = dict(self.metrics)
        out["missing_components"] = list(self.missing_components)
        return out


def _nan(value: float | None) -> float:
    return NAN if value is None else float(value)


def _kwh(value_j: float | None) -> float:
    return NAN if value_j is None else joules_to_kwh(value_j)


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


class Session:
    """One measured run. Adapters call its methods from their hooks; nothing here knows a framework.

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
        self.convergence: ConvergenceTracker | None = (
            ConvergenceTracker(config.monitor, config.mode, config.target) if config.monitor else None
        )
        self._custom_sensors = list(sensors) if sensors is not None else None
        self._reducer = reducer
        self._dist = dist
        self.guard = Guard("green_callbacks")
        self.meter: Meter | None = None
        self.run_id = uuid.uuid4().hex
        self.status = "created"
        self.rows: list[EpochRow] = []
        self.totals = Totals()
        self.record_path: Path | None = None
        self.hyperparameters: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.should_stop = False
        self.planned_epochs: float | None = None
        self.projection: tuple[Projection, Projection] | None = None
        self.resumed_from: dict[str, Any] | None = None
        self._epoch: int | None = None
        self._epoch_index = 0
        self._eval: list[Measurement] = []
        self._flops = {"train": 0.0, "eval": 0.0}
        self._flops_seen = False
        self._started_at: float | None = None
        self._previous_sigterm: Any = None
        self._lock = threading.RLock()
        self.error: str | None = None
        self.partial_epoch: dict[str, Any] | None = None
        self._write_failures = 0
        self._pid = os.getpid()  # a forked child (a DataLoader worker) holds a stale copy: it never writes
        self._measured: set[str] = set()  # components that gave a number at some point of this run
        self._warned_lost: set[str] = set()
        self._batches = BatchCounter()
        self.peak = PeakInfo(None, None, (), "the run has not started")

    # ------------------------------------------------------------------ set-up
    @property
    def dist(self) -> DistInfo:
        if self._dist is None:
            self._dist = dist_info()
        return self._dist

    @property
    def reducer(self) -> Reducer:
        if self._reducer is None:
            self._reducer = default_reducer()
        return self._reducer

    @property
    def monitor(self) -> str | None:
        return None if self.convergence is None else self.convergence.monitor

    def _build_sensors(self, device_indices: Sequence[int] | None, device_uuids: Sequence[str] | None) -> list[Sensor]:
        if self._custom_sensors is not None:
            return self._custom_sensors
        from green_callbacks.core.sensors.host import build_host_sensors
        from green_callbacks.core.sensors.nvml import build_gpu_sensor

        gpu = build_gpu_sensor(gpus=self.config.gpus, device_indices=device_indices, device_uuids=device_uuids)
        cpu, ram = build_host_sensors(
            cpu_watts_per_core=self.config.cpu_watts_per_core, ram_watts_per_gb=self.config.ram_watts_per_gb
        )
        return [gpu, cpu, ram]

    def start(
        self,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        device_indices: Sequence[int] | None = None,
        device_uuids: Sequence[str] | None = None,
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
        ``device_uuids`` their UUIDs where the framework knows them (exact whatever the environment says).
        ``planned_epochs`` (may be fractional) lets the session project the run's total and apply budgets.
        ``compute_dtype`` (``"bf16"``, ``"16-mixed"``, ``torch.float32`` …; default fp32) picks the devices' peak
        FLOP/s for ``green/mfu``.
        """
        with self._lock:
            if self.status == "running":
                return
            if self.convergence is None and monitor:
                self.convergence = ConvergenceTracker(monitor, mode, None)
            self.hyperparameters = dict(hyperparameters or {})
            self.set_planned_epochs(planned_epochs)
            self.meter = Meter(self._build_sensors(device_indices, device_uuids))
            self.meter.start()
            self.meter.begin("run")
            self._started_at = clock.wall_time_s()
            self._pid = os.getpid()
            self.status = "running"
            components = self.meter.info()
            self.peak = local_peak(components, compute_dtype)
            self.info = {
                "hardware": hardware_info(components),
                "software": software_info(),
                "throughput": {
                    "compute_dtype": self.peak.dtype,
                    "devices": list(self.peak.devices),
                    "peak_flops_per_s": self.peak.peak_flops_per_s,
                    "mfu_unavailable": self.peak.reason or None,
                },
                **dict(extra or {}),
            }
            folder = self.config.output_dir or output_dir or "green_runs"
            if self.record_path is None:
                self.record_path = new_record_path(folder)
            self._warn_unavailable()
            self.write_record()
            if handle_signals:
                self._install_handlers()

    def _warn_unavailable(self) -> None:
        assert self.meter is not None
        reasons = []
        for name, reading in self.meter.read().items():
            if reading.energy_j is None:
                reasons.append(f"{name}: {reading.note or 'no sensor'}")
            else:
                self._measured.add(name)
        if self.peak.peak_flops_per_s is None:
            reasons.append(f"green/mfu: {self.peak.reason}")
        if reasons and self.dist.is_global_zero:
            warnings.warn(
                "green_callbacks: some values are not measured on this machine and are reported 'unavailable' "
                "or NaN (never 0): " + "; ".join(reasons),
                UserWarning,
                stacklevel=3,
            )

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

    @property
    def in_epoch(self) -> bool:
        return self.meter is not None and self.meter.is_open("epoch")

    def eval_start(self) -> None:
        """Open an evaluation window inside the epoch (several per epoch are summed)."""
        if self.meter is not None:
            self.meter.begin("eval")

    def eval_end(self) -> None:
        if self.meter is not None and self.meter.is_open("eval"):
            self._eval.append(self.meter.end("eval"))

    def add_flops(self, *, train: float = 0.0, eval: float = 0.0) -> None:
        """Add counted FLOPs of training steps (forward + backward) and evaluation steps (forward) to this epoch."""
        self._flops["train"] += float(train)
        self._flops["eval"] += float(eval)
        self._flops_seen = True

    def add_samples(self, *, samples: int | None = None, tokens: int | None = None) -> None:
        """Add the training samples and input tokens of steps of this epoch (as read from their batches)."""
        self._batches.add(samples, tokens)

    def add_batch(self, batch: Any) -> None:
        """Add a training batch's samples and tokens, read from its shapes
        (:func:`~green_callbacks.core.throughput.batch_counts`)."""
        self._batches.add_batch(batch)

    @property
    def flops_available(self) -> bool:
        return self.guard.enabled("flops")

    def epoch_end(self, metrics: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Close the epoch: sum over ranks, update totals and convergence, write the record, return the metrics.

        ``metrics`` are the framework's metrics of this epoch (the monitored one is read from them).
        """
        with self._lock:
            if self.meter is None or not self.meter.is_open("epoch"):
                raise RuntimeError("Session.epoch_end() without epoch_start()")
            if self.meter.is_open("eval"):
                self.eval_end()
            epoch_m = self.meter.end("epoch")
            eval_m = _sum_measurements("eval", self._eval, epoch_m.components)
            row = self._close_epoch(epoch_m, eval_m, dict(metrics or {}))
            self.rows.append(row)
            self._warn_lost(row, epoch_m)
            self._check_budget()
            self._epoch_index += 1
            self._epoch = None
            self.write_record()
            return self.metrics(row)

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
        self.planned_epochs = None if epochs is None or not math.isfinite(epochs) or epochs <= 0 else float(epochs)

    def _check_budget(self) -> None:
        energy = project([r.energy_j for r in self.rows], self.planned_epochs)
        emissions = project([r.emissions_gco2e for r in self.rows], self.planned_epochs)
        self.projection = (energy, emissions)
        if self.stop_reason is not None:
            return
        decision = decide(energy, emissions, budget_kwh=self.config.budget_kwh, budget_gco2e=self.config.budget_gco2e,
                          use_projection=len(self.rows) >= 2)
        if not decision.exceeded:
            return
        stop = self.config.budget_action == "stop"
        self.stop_reason = f"budget: {decision.reason}" + ("" if stop else " (budget_action='warn': not stopped)")
        self.should_stop = stop
        if self.dist.is_global_zero:
            then = "the training stops at the end of this epoch" if stop else "training goes on (budget_action='warn')"
            warnings.warn(
                f"green_callbacks: {decision.reason}; {then}",
                UserWarning,
                stacklevel=4,
            )

    def _local_component_j(self, m: Measurement, name: str) -> float | None:
        """This rank's share: node-level sensors count on the node leader only."""
        assert self.meter is not None
        sensor = self.meter.sensors.get(name)
        if sensor is not None and sensor.scope == "node" and not self.dist.is_node_leader:
            return 0.0
        return m.component_j(name)

    def _close_epoch(self, epoch_m: Measurement, eval_m: Measurement, metrics: dict[str, Any]) -> EpochRow:
        assert self.meter is not None
        names = [c for c in COMPONENTS if c in epoch_m.components]
        flops_ok = self.flops_available and self._flops_seen
        local: list[float | None] = [self._local_component_j(epoch_m, n) for n in names]
        local += [self._local_component_j(eval_m, n) for n in names]
        local += [self._flops["train"] if flops_ok else None, self._flops["eval"] if flops_ok else None]
        # rank zero's intensity for everyone: with a live provider ranks may differ, and every rank must take the
        # same budget decision
        local.append(self.carbon.intensity_gco2e_per_kwh if self.dist.is_global_zero else 0.0)
        local += [self._batches.samples, self._batches.tokens, self.peak.peak_flops_per_s]
        sums, lacks = sum_with_missing(local, self.reducer)
        k = len(names)
        comp_j = dict(zip(names, sums[:k], strict=True))
        eval_comp_j = dict(zip(names, sums[k:2 * k], strict=True))
        train_flops, eval_flops, intensity = sums[2 * k], sums[2 * k + 1], sums[2 * k + 2]
        samples, tokens, peak = sums[2 * k + 3:2 * k + 6]
        methods = {}
        for i, n in enumerate(names):
            part = epoch_m.components[n]
            methods[n] = part.method if lacks[i] == 0 else UNAVAILABLE
        energy_j = _sum_known(comp_j.values())
        eval_j = _sum_known(eval_comp_j.values()) if self._eval else 0.0
        assert intensity is not None
        emissions = None if energy_j is None else emissions_gco2e(joules_to_kwh(energy_j), intensity, self.config.pue)
        previous = self.totals
        self.totals = Totals(
            epochs=previous.epochs + 1,
            time_s=previous.time_s + epoch_m.duration_s,
            train_flops=_add(previous.train_flops, train_flops),
            eval_flops=_add(previous.eval_flops, eval_flops),
            energy_j=_add(previous.energy_j, energy_j),
            emissions_gco2e=_add(previous.emissions_gco2e, emissions),
        )
        numeric = {str(k): float(v) for k, v in metrics.items() if _is_number(v) and not str(k).startswith(PREFIX)}
        assert self._epoch is not None
        if self.convergence is not None:
            self.convergence.update(self._epoch, numeric.get(self.convergence.monitor), self.totals)
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
            totals=self.totals,
            metrics=numeric,
            missing_components=tuple(n for n in names if comp_j[n] is None),
            train_time_s=max(epoch_m.duration_s - eval_m.duration_s, 0.0),
            samples=samples,
            tokens=tokens,
            peak_flops_per_s=peak,
        )

    def metrics(self, row: EpochRow) -> dict[str, float]:
        """The ``green/...`` metrics of one epoch row, every key of :data:`METRIC_KEYS`, as plain floats."""
        best = None if self.convergence is None else self.convergence.best
        train_j = None
        if row.energy_j is not None and row.eval_energy_j is not None:
            train_j = row.energy_j - row.eval_energy_j
        per_joule = NAN
        if row.train_flops is not None and train_j:
            per_joule = row.train_flops / train_j
        return {
            "green/epoch_energy_kwh": _kwh(row.energy_j),
            "green/epoch_gpu_energy_kwh": _kwh(row.component_energy_j.get("gpu")),
            "green/epoch_cpu_energy_kwh": _kwh(row.component_energy_j.get("cpu")),
            "green/epoch_ram_energy_kwh": _kwh(row.component_energy_j.get("ram")),
            "green/epoch_eval_energy_kwh": _kwh(row.eval_energy_j),
            "green/epoch_emissions_gco2e": _nan(row.emissions_gco2e),
            "green/epoch_time_s": float(row.time_s),
            "green/epoch_train_flops": _nan(row.train_flops),
            "green/epoch_eval_flops": _nan(row.eval_flops),
            "green/total_energy_kwh": _kwh(row.totals.energy_j),
            "green/total_emissions_gco2e": _nan(row.totals.emissions_gco2e),
            "green/total_train_flops": _nan(row.totals.train_flops),
            "green/flops_to_convergence": NAN if best is None else _nan(best.totals.train_flops),
            "green/energy_to_convergence_kwh": NAN if best is None else _kwh(best.totals.energy_j),
            "green/emissions_to_convergence_gco2e": NAN if best is None else _nan(best.totals.emissions_gco2e),
            "green/epochs_to_convergence": NAN if best is None else float(best.totals.epochs),
            "green/train_flops_per_joule": per_joule,
            "green/projected_total_energy_kwh": _kwh(self._projected(0)),
            "green/projected_total_emissions_gco2e": _nan(self._projected(1)),
            **throughput(
                train_time_s=row.train_time_s, samples=row.samples, tokens=row.tokens, train_flops=row.train_flops,
                peak_flops_per_s=row.peak_flops_per_s,
            ).metrics(),
        }

    def _projected(self, which: int) -> float | None:
        return None if self.projection is None else self.projection[which].projected

    # ------------------------------------------------------------------ end
    def finish(self, status: str = "completed", error: BaseException | str | None = None) -> Path | None:
        """Stop the sensors and write the final record with ``status``. Safe to call more than once."""
        with self._lock:
            if self.status not in ("running",):
                return self.record_path
            if error is not None:
                self.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            if self.meter is not None:
                if self.meter.is_open("epoch"):  # this rank's part only: no collective call on a failure path
                    self.partial_epoch = _partial_record(self._epoch, self.meter.end("epoch"), self._flops)
                self.meter.close()
            self.status = status
            self._uninstall_handlers()
            self._write_final()
            return self.record_path

    def _write_final(self) -> None:
        """The last write of the run, safe from other code's signal handlers.

        A handler that raises can cut a write short anywhere (PyTorch raises from SIGCHLD when a DataLoader worker
        is killed, e.g. by a scheduler's SIGTERM to the whole job). Signals are held back during the write, and a
        write cut short by one already pending is done again; that exception then goes on to the training loop.
        """
        error: BaseException | None = None
        with _signals_held():
            for _ in range(3):
                try:
                    self.write_record()
                    break
                except BaseException as err:
                    error = error or err
        if error is not None:
            raise error

    # ------------------------------------------------------------------ record
    def to_record(self) -> dict[str, Any]:
        best = None if self.convergence is None else self.convergence.best
        at_target = None if self.convergence is None else self.convergence.at_target
        assert self.meter is not None or self.status == "created"
        components = self.meter.info() if self.meter is not None else {}
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "framework": self.framework,
            "status": self.status,
            "error": self.error,
            "stop_reason": self.stop_reason,
            "started_at": self._started_at,
            "updated_at": clock.wall_time_s(),
            "world_size": self.dist.world_size,
            "carbon": {**self.carbon.to_record(), "pue": self.config.pue},
            "components": components,
            "methods": _methods_so_far(self.rows, components),
            "convergence": {
                "monitor": self.monitor,
                "mode": None if self.convergence is None else self.convergence.mode,
                "target": None if self.convergence is None else self.convergence.target,
                "best": None if best is None else best.to_record(),
                "at_target": None if at_target is None else at_target.to_record(),
            },
            "hyperparameters": self.hyperparameters,
            "lost": dict(self.guard.lost),
            "resumed_from": self.resumed_from,
            "budget": {
                "budget_kwh": self.config.budget_kwh,
                "budget_gco2e": self.config.budget_gco2e,
                "action": self.config.budget_action,
                "planned_epochs": self.planned_epochs,
                "projection": None if self.projection is None else {
                    name: asdict(p) for name, p in zip(("energy_j", "emissions_gco2e"), self.projection, strict=True)
                },
            },
            "totals": asdict(self.totals),
            "epochs": [row.to_record() for row in self.rows],
            "partial_epoch": self.partial_epoch,
            **self.info,
        }

    def write_record(self) -> Path | None:
        """Write the record now (atomically; global rank zero only). A failed write warns and is retried later."""
        if self.record_path is None or not self.dist.is_global_zero or os.getpid() != self._pid:
            return None
        try:
            written = write_record_atomic(self.record_path, self.to_record())
        except OSError as err:
            if strict_mode():
                raise
            self._write_failures += 1
            if self._write_failures == 1:  # one warning per run, not one per epoch of a full disk
                warnings.warn(
                    f"green_callbacks: could not write the run record {self.record_path} ({err}); "
                    "it is retried after every epoch and at the end (not warned again). Set output_dir= to a "
                    "writable folder with free space.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return None
        return written

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run continues its totals and convergence."""
        return {
            "run_id": self.run_id,
            "record_path": None if self.record_path is None else str(self.record_path),
            "totals": asdict(self.totals),
            "epoch_index": self._epoch_index,
            "convergence": None if self.convergence is None else self.convergence.state_dict(),
            "rows": [row.to_record() for row in self.rows],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a run from a checkpoint: totals, convergence and rows go on; the record file is reused."""
        self.totals = Totals(**state["totals"])
        self._epoch_index = int(state.get("epoch_index", self.totals.epochs))
        self.rows = [_row_from_record(r) for r in state.get("rows", [])]
        conv = state.get("convergence")
        if conv is not None:
            if self.convergence is None:
                self.convergence = ConvergenceTracker(conv["monitor"], conv["mode"], conv.get("target"))
            self.convergence.load_state_dict(conv)
        self.resumed_from = {"run_id": state.get("run_id"), "epochs": self.totals.epochs}
        if state.get("record_path"):
            self.record_path = Path(state["record_path"])
        if self.status == "running":
            self.write_record()

    # ------------------------------------------------------------------ signals
    def _install_handlers(self) -> None:
        atexit.register(self._atexit)
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError):  # not the main interpreter / not allowed here
            self._previous_sigterm = None

    def _uninstall_handlers(self) -> None:
        atexit.unregister(self._atexit)
        if self._previous_sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
        except (ValueError, OSError):
            pass
        self._previous_sigterm = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        previous = self._previous_sigterm
        if os.getpid() == self._pid:  # not in a forked child (a DataLoader worker), whose session is a stale copy
            self.finish("interrupted", "SIGTERM")
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # the default action: die of SIGTERM, as the process would have without us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def _atexit(self) -> None:
        if os.getpid() != self._pid:
            return
        last = getattr(sys, "last_value", None)
        if isinstance(last, KeyboardInterrupt):
            self.finish("interrupted", last)
        elif last is not None:
            self.finish("failed", last)
        else:
            self.finish("interrupted", "the process exited before the run finished")


_HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGCHLD", "SIGHUP")
                      if hasattr(signal, name))


@contextlib.contextmanager
def _signals_held() -> Any:
    """Hold back SIGINT, SIGTERM, SIGCHLD and SIGHUP in this thread (where the OS allows it); delivered after."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value)) or math.isnan(float(value))
    except (TypeError, ValueError):
        return False


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


def _methods_so_far(rows: Sequence[EpochRow], components: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every method each component used in the run (a lost GPU shows both its method and ``unavailable``)."""
    out: dict[str, list[str]] = {name: [] for name in components}
    for row in rows:
        for name, method in row.component_method.items():
            if method not in out.setdefault(name, []):
                out[name].append(method)
    for name, info in components.items():
        if not out[name]:
            out[name].append(str(info.get("method", UNAVAILABLE)))
    return out


def _row_from_record(data: Mapping[str, Any]) -> EpochRow:
    values = dict(data)
    values["totals"] = Totals(**values["totals"])
    values["missing_components"] = tuple(values.get("missing_components", ()))
    return EpochRow(**values)


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

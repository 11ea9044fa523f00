"""The fit driver: ``start`` → (``epoch_start`` → ``eval_start``/``eval_end`` → ``epoch_end``)* → ``finish``.

A :class:`Session` is one measured fit: the state machine, and nothing else. What it drives lives in one module
each — see docs/architecture.md for the data flow:

* :class:`~green_callbacks.core.meter.Meter`: the sensors and the measurement windows;
* :class:`~green_callbacks.core.epoch_window.EpochWindow`: the epoch's accumulators and its one cross-rank sum;
* :class:`~green_callbacks.core.ledger.RunLedger`: rows, totals, convergence, projections, budgets (no I/O);
* :mod:`~green_callbacks.core.run_record` and :class:`~green_callbacks.core.record_sink.RecordSink`: the record's
  content and its way to the disk (shared with the phase driver);
* :class:`~green_callbacks.core.notices.RunNotices`: the once-per-run messages.

``epoch_end`` returns the ``green/...`` metrics as plain floats, summed over all ranks. Adapters drive a session
through :class:`~green_callbacks.core.engine.Engine`, which adds the guard, the status of an exception, the
stale-run reset and the FLOP tap.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from green_callbacks.core.carbon import CarbonChoice
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.convergence import ConvergenceTracker
from green_callbacks.core.distributed import DistInfo, Reducer
from green_callbacks.core.epoch_window import EpochWindow, partial_record
from green_callbacks.core.footprint import FootprintTracker
from green_callbacks.core.guard import Guard
from green_callbacks.core.ledger import RunLedger
from green_callbacks.core.metric_keys import METRIC_KEYS, epoch_metrics, user_metrics
from green_callbacks.core.notices import RunNotices
from green_callbacks.core.record_sections import PartialEpoch, ThroughputInfo
from green_callbacks.core.rows import EpochRow
from green_callbacks.core.run_context import RunContext
from green_callbacks.core.run_record import fit_record
from green_callbacks.core.sensors.base import Sensor
from green_callbacks.core.throughput import PeakInfo, local_peak
from green_callbacks.core.trial import TrialLink
from green_callbacks.core.uncertainty import emission_factors
from green_callbacks.core.wording import CALLBACK, FrontEnd

__all__ = ["METRIC_KEYS", "STATUSES", "EpochRow", "Session", "status_for"]

STATUSES = ("created", "running", "completed", "interrupted", "failed")
_INTERRUPTS = ("KeyboardInterrupt", "SIGTERMException", "SystemExit")


def status_for(error: BaseException | str | None) -> str:
    """``"interrupted"`` for a user's or scheduler's stop (Ctrl-C, SIGTERM, exit), ``"failed"`` for anything else."""
    if error is None:
        return "completed"
    if isinstance(error, str):
        return "interrupted" if error.startswith("SIG") else "failed"
    return "interrupted" if any(t.__name__ in _INTERRUPTS for t in type(error).__mro__) else "failed"


def _virtual_machine() -> bool:
    from green_callbacks.core.sensors.cpu_tdp import machine_cpuinfo

    return machine_cpuinfo().virtual_machine


class Session:
    """One measured fit. Nothing here knows a framework; its set-up (carbon, meter, ranks, record path and sink,
    exit handlers) is the :class:`~green_callbacks.core.run_context.RunContext` every kind of run shares.

    Args:
        config: the validated user settings.
        framework: ``"lightning"``, ``"keras"``, ``"transformers"``, ``"loop"`` or ``"measure"``, for the record.
        sensors: sensors to use instead of the machine's (custom meters, tests); one per component.
        reducer: sums a vector over ranks (default: ``torch.distributed`` when initialised, else identity).
        dist: this process's ranks (default: read from ``torch.distributed`` / the environment at ``start``).
        front_end: how messages tell the user to set an option (``GreenCallback(monitor=...)``, ``--country FR``).
        carbon: the grid intensity chosen for this run (default: chosen from ``config``, see :class:`CarbonChoice`).
    """

    def __init__(self, config: GreenConfig, *, framework: str, sensors: Sequence[Sensor] | None = None,
                 reducer: Reducer | None = None, dist: DistInfo | None = None, front_end: FrontEnd = CALLBACK,
                 carbon: CarbonChoice | None = None) -> None:
        self.config = config
        self.framework = framework
        self.front_end = front_end
        # with a live provider, fetched in the background and settled at the first epoch's end (never waited for);
        # ``carbon``: the choice of a session this one replaces before it started (its request goes on, owned here)
        self.context = RunContext(config, on_exit=self._close_on_exit, sensors=sensors, dist=dist, reducer=reducer,
                                  carbon=carbon, front_end=front_end)
        self.footprint = FootprintTracker(
            location=self.carbon.location, pue=config.pue, lifetime_years=config.embodied_lifetime_years,
            utilisation=config.embodied_utilisation, host_share=config.embodied_host_share,
            wue_l_per_kwh=config.wue_l_per_kwh)
        convergence = (ConvergenceTracker(config.monitor, config.mode, config.target, front_end=front_end)
                       if config.monitor else None)
        self.ledger = RunLedger(convergence, front_end)
        self.window = EpochWindow()
        self.notices = RunNotices()
        self.guard = Guard("green_callbacks")
        self.trial = TrialLink(config.search, self.guard)  # the search engine's trial, if the run is part of one
        self.run_id = uuid.uuid4().hex
        self.hyperparameters: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        """Record-level sections (``throughput``, a :class:`~green_callbacks.core.record_sections.ThroughputInfo`;
        the framework's; how FLOPs were counted): see :meth:`update_info`."""
        self.phases: list[dict[str, Any]] = []  # test/predict/evaluate run with this fit's model, newest last
        self.error: str | None = None
        self.partial_epoch: PartialEpoch | None = None
        self.last_metrics: dict[str, float] = {}
        """The ``green/...`` metrics of the last completed epoch (empty before the first)."""
        self.peak = PeakInfo(None, None, (), "the run has not started")
        """This process's devices' dense peak FLOP/s at the run's compute dtype (for ``green/mfu``), or why not."""
        self._status = "created"
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ read-only state
    carbon_choice = property(lambda self: self.context.carbon_choice)
    carbon = property(lambda self: self.carbon_choice.value, doc="The grid intensity (live: the fallback until "
                      "it is settled).")
    meter = property(lambda self: self.context.meter)
    sink = property(lambda self: self.context.sink)
    dist = property(lambda self: self.context.dist)
    reducer = property(lambda self: self.context.reducer)
    started_at = property(lambda self: self.context.started_at)
    search = property(lambda self: self.trial.search, doc="The record's search section (:mod:`~.trial`).")
    status = property(lambda self: self._status, doc="``created`` → ``running`` → ``completed`` | ``interrupted``"
                      " | ``failed``.")
    running = property(lambda self: self._status == "running")
    rows = property(lambda self: tuple(self.ledger.rows))
    epochs_done = property(lambda self: len(self.ledger.rows))
    totals = property(lambda self: self.ledger.totals)
    record_path = property(lambda self: self.context.record_path)
    stop_reason = property(lambda self: self.ledger.stop_reason)
    should_stop = property(lambda self: self.ledger.should_stop,
                           doc="A budget would be exceeded and ``budget_action='stop'``: the adapter stops training.")
    planned_epochs = property(lambda self: self.ledger.planned_epochs)
    projection = property(lambda self: self.ledger.projection)
    convergence = property(lambda self: self.ledger.convergence)
    monitor = property(lambda self: self.ledger.monitor)
    in_epoch = property(lambda self: self.meter is not None and self.meter.is_open("epoch"))
    in_eval = property(lambda self: self.meter is not None and self.meter.is_open("eval"))
    flops_available = property(lambda self: self.guard.enabled("flops"))
    batches = property(lambda self: self.window.batches, doc="This epoch's samples and tokens on this process.")

    # ------------------------------------------------------------------ set-up
    def start(self, *, output_dir: str | os.PathLike[str] | None = None,
              hyperparameters: Mapping[str, Any] | None = None, device_indices: Sequence[int] | None = None,
              device_uuids: Sequence[str] | None = None, device_type: str = "cuda", monitor: str | None = None,
              mode: str | None = None, planned_epochs: float | None = None, extra: Mapping[str, Any] | None = None,
              handle_signals: bool = True, compute_dtype: Any = None, trial: Any = None) -> None:
        """Begin the run: build and start the sensors, open the ``run`` window, write the first record.

        ``monitor``/``mode`` are the framework's own early-stopping or best-model metric, used when the user gave
        no ``monitor=``. ``device_indices`` are the devices this process trains on (``[]`` for CPU);
        ``device_uuids`` their UUIDs where the framework knows them (exact whatever the environment says);
        ``device_type`` what they are (``"cuda"``, ``"rocm"``, ``"xpu"``, ``"mps"``, ``"tpu"``, ``"cpu"``; see
        :mod:`green_callbacks.core.sensors.accelerators`), which picks the sensor.
        ``planned_epochs`` (may be fractional) lets the session project the run's total and apply budgets.
        ``handle_signals=False``: the framework turns SIGTERM into its own exception (the exit hook stays).
        ``compute_dtype`` (``"bf16"``, ``"16-mixed"``, ``torch.float32`` …; default fp32) picks the devices' peak
        FLOP/s for ``green/mfu``. ``trial``: the search engine's trial object the framework holds (the HF Trainer's
        Optuna trial); else the bound or detected one (:func:`~green_callbacks.core.trial.current`).
        """
        with self._lock:
            if self._status == "running":
                return
            self.trial.bind(trial)
            self.ledger.adopt_monitor(monitor, mode)
            self.hyperparameters = dict(hyperparameters or {})
            self.set_planned_epochs(planned_epochs)
            meter = self.context.open_meter(device_type=device_type, device_indices=device_indices,
                                            device_uuids=device_uuids)
            meter.begin("run")
            self.window.declare(meter)
            components = meter.info()
            self.footprint.configure(components, device_indices=device_indices,  # this process's GPUs
                                     is_node_leader=self.dist.is_node_leader, virtual_machine=_virtual_machine())
            self._status = "running"
            self.peak = local_peak(components, compute_dtype)
            self.info = {"throughput": ThroughputInfo(self.peak.dtype, tuple(self.peak.devices),
                                                      self.peak.peak_flops_per_s, self.peak.reason or None),
                         **dict(extra or {})}
            self.context.open_record(output_dir, fresh_log=bool(self.ledger.rows))
            self.notices.at_start(meter.read(), self.peak, speak=self.dist.is_global_zero)
            self.write_record()
            self.context.exit.install(signals=handle_signals)
            self.sink.capture_environment(components, then=self._environment_captured)

    def _environment_captured(self) -> None:
        """On the environment thread: the next header has the machine and versions; write it now if the training
        thread is not busy with the session (else its next write does)."""
        if not self._lock.acquire(timeout=0.5):
            return
        try:
            if self._status == "running" and self.sink.writes_here:
                self.sink.replace_header(self._header)
        finally:
            self._lock.release()

    def set_planned_epochs(self, epochs: float | None) -> None:
        """The number of epochs the whole run is planned to last (resumed epochs included); ``None``: unknown."""
        self.ledger.set_planned_epochs(epochs)

    def update_info(self, key: str, value: Any) -> None:
        """Record-level information that changes during the run (how FLOPs were counted), under ``key`` of the
        record; written with the record's next header and with the final record."""
        self.info[key] = value

    # ------------------------------------------------------------------ epochs
    def epoch_start(self, epoch: int | None = None) -> None:
        """Open the epoch window (``epoch`` is the framework's epoch number; default: the count so far)."""
        with self._lock:
            if self.meter is None:
                raise RuntimeError("Session.epoch_start() before start()")
            self.window.reset(self.ledger.epoch_index if epoch is None else int(epoch))
            self.meter.begin("epoch")

    def eval_start(self) -> None:
        """Open an evaluation window inside the epoch (several per epoch are summed)."""
        if self.meter is not None and not self.meter.is_open("eval"):
            self.meter.begin("eval")

    def eval_end(self) -> None:
        if self.meter is not None and self.meter.is_open("eval"):
            self.window.evals.append(self.meter.end("eval"))

    def add_flops(self, *, train: float = 0.0, eval: float = 0.0, train_hardware: float | None = None) -> None:
        """Add counted FLOPs of training steps (forward + backward) and evaluation steps (forward) to this epoch;
        ``train_hardware``: the training FLOPs the device ran (with activation checkpointing's recompute; ``None``:
        the same as ``train``)."""
        self.window.add_flops(train, eval, train_hardware)

    def add_samples(self, *, samples: int | None = None, tokens: int | None = None) -> None:
        """Add the training samples and input tokens of steps of this epoch (``None``: not known)."""
        self.window.batches.add(samples, tokens)

    def add_batch(self, batch: Any) -> None:
        """Add a training batch's samples and tokens, read from its shapes (no device synchronisation)."""
        self.window.batches.add_batch(batch)

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
            grid = self.carbon_choice.settle()
            row = self.window.close(
                epoch_m, user_metrics(metrics or {}), run=self.context, ledger=self.ledger,
                flops_ok=self.flops_available, intensity=grid.intensity_gco2e_per_kwh,
                peak_flops_per_s=self.peak.peak_flops_per_s, footprint=self.footprint,
                factors=emission_factors(grid, self.config.pue))
            speak = self.dist.is_global_zero
            self.notices.monitor(self.ledger.observe(row.epoch, row.metrics), speak=speak)
            self.ledger.add(row)
            self.notices.lost(row, epoch_m, self.meter.broken, speak=speak)
            decision = self.ledger.budget(budget_kwh=self.config.budget_kwh, budget_gco2e=self.config.budget_gco2e,
                                          stop=self.config.budget_action == "stop")
            if decision is not None:
                self.notices.budget(decision, stop=self.ledger.should_stop, speak=speak)
            self.write_record()
            self.last_metrics = self.metrics(row)
            return dict(self.last_metrics)

    def metrics(self, row: EpochRow) -> dict[str, float]:
        """The ``green/...`` metrics of one epoch row (see :func:`~green_callbacks.core.metric_keys.epoch_metrics`)."""
        best = None if self.ledger.convergence is None else self.ledger.convergence.best
        return {**epoch_metrics(row, best, self.ledger.projection), **self.footprint.metrics()}

    # ------------------------------------------------------------------ end
    def request_stop(self, reason: str) -> None:
        """Why the training was told to stop (early stopping, a budget); the first reason given is kept."""
        self.ledger.request_stop(reason)

    def finish(self, status: str = "completed", error: BaseException | str | None = None, *,
               stop_reason: str | None = None) -> Path | None:
        """Stop the sensors and write the final record with ``status``. Safe to call more than once."""
        if status not in STATUSES[2:]:
            raise ValueError(f"status must be one of {', '.join(STATUSES[2:])}, got {status!r}")
        if self._status == "running":
            self.sink.await_environment()  # the final record holds the machine and versions
        with self._lock:
            if self._status != "running":
                return self.record_path
            if stop_reason is not None:
                self.request_stop(stop_reason)
            if error is not None:
                self.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            if self.meter is not None:
                if self.meter.is_open("epoch"):  # this rank's part only: no collective call on a failure path
                    self.partial_epoch = partial_record(self.window, self.meter.end("epoch"))
                self.meter.close()
            self._status = status
            self.trial.ended(status, self.error)  # an engine's trial: the record says how it ended
            self.context.exit.uninstall()
            self.carbon_choice.settle()  # a run with no complete epoch says which intensity it would have used
            self.sink.final(self.to_record)
        self.context.close_carbon()
        self.trial.hand_back(self, speak=self.dist.is_global_zero)  # the engine's trial gets the totals
        return self.record_path

    def _close_on_exit(self, status: str, reason: BaseException | str) -> None:
        self.finish(status, reason)

    # ------------------------------------------------------------------ record
    def to_record(self, *, with_epochs: bool = True) -> dict[str, Any]:
        """The run record as a dict (:func:`~green_callbacks.core.run_record.fit_record`)."""
        return fit_record(self, with_epochs=with_epochs)

    def _header(self) -> dict[str, Any]:
        return fit_record(self, with_epochs=False)

    def add_phase(self, entry: Mapping[str, Any]) -> None:
        """List a test / predict / evaluate run with this fit's model (its summary and record file name); a
        finished record is rewritten in full with it."""
        with self._lock:
            self.phases.append(dict(entry))
            if self._status == "running":
                self.write_record(header=True)
            elif self._status != "created":
                self.sink.final(self.to_record)

    def write_record(self, *, header: bool = False) -> Path | None:
        """Hand the record to the sink (global rank zero only): new epochs to the epoch log at once, the header at
        most every ``HEADER_INTERVAL_S`` unless ``header`` (:meth:`flush` and the end write the newest)."""
        if not self.sink.writes_here:
            return None
        self.sink.write(self.ledger.rows, self._header, force=header)
        return self.record_path

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Wait until the record on disk holds everything handed to the writer, the machine and versions captured
        in the background and a header skipped for its interval included (tests, benchmarks)."""
        self.sink.await_environment()
        with self._lock:
            if self._status == "running":
                self.sink.replace_stale(self._header)
        return self.sink.flush(timeout_s)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run continues its totals and convergence."""
        return {"run_id": self.run_id, "record_path": None if self.record_path is None else str(self.record_path),
                **self.ledger.state_dict(), "footprint": self.footprint.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a run from a checkpoint: totals, convergence and rows go on; the record file is reused."""
        self.ledger.load_state_dict(state, run_id=state.get("run_id"))
        if state.get("footprint") is not None:
            self.footprint.load_state_dict(state["footprint"])
        if state.get("record_path"):
            self.context.record_path = Path(state["record_path"])
        if self._status == "running" and self.record_path is not None:
            self.sink.reopen(self.record_path, new_file=bool(state.get("record_path")))
            self.write_record(header=True)

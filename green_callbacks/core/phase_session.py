"""The driver of one test / validate / predict / evaluate phase run outside ``fit``.

An adapter reaches it through its engine's :class:`PhaseTap` (``engine.phases``): ``begin`` when the framework's
phase begins, ``batch_start``/``batch_end`` around each batch, ``end`` when the phase is over (``fail`` when it
raised); all figures come from :func:`green_callbacks.core.phase.summarize_phase`. The per-batch path is a clock
read at each end, the batch's shapes (a tuple), and, for language-model inputs, the lazy ``attention_mask.sum()``
(a device scalar, made a number once at the end), and, where the adapter hands over the batch's model, the FLOP
tracker's signature look-up (:mod:`green_callbacks.core.phase_flops`: the first batch of each input signature is
observed while it runs, nothing is re-run). Sensors are read only at the phase's boundaries and around the first
batch of each input shape (its warm-up window).

Each phase writes its own run record (``"kind": "predict"`` …) beside the record of the fit that trained the model,
when there was one, and that fit's record lists the phase (see docs/records.md).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from green_callbacks.core import clock
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo, Reducer
from green_callbacks.core.epoch_state import EpochState
from green_callbacks.core.guard import Guard, strict_mode
from green_callbacks.core.meter import Measurement, sum_measurements
from green_callbacks.core.phase import (
    PHASE_KINDS,
    BreakEven,
    PhaseInputs,
    PhaseResult,
    batch_signature,
    break_even,
    samples_of,
    summarize_phase,
    tokens_in_of,
)
from green_callbacks.core.phase_flops import PhaseFlops
from green_callbacks.core.record_sections import TrainingLink, to_json
from green_callbacks.core.record_sink import environment_of
from green_callbacks.core.run_context import RunContext
from green_callbacks.core.run_record import record_head
from green_callbacks.core.sensors.base import COMPONENTS, Sensor
from green_callbacks.core.wording import warn_user

__all__ = ["PhaseSession", "PhaseTap", "training_link"]

_PHASE = "phase"
_WARMUP = "phase-warmup"


def training_link(session: Any) -> TrainingLink | None:
    """What a phase record keeps of the fit that trained the model (``None`` when no fit ran with the callback)."""
    if session is None or getattr(session, "status", "created") in ("created", "running"):
        return None
    totals = session.totals
    path = session.record_path
    return TrainingLink(run_id=session.run_id, record=None if path is None else Path(path).name,
                        framework=session.framework, status=session.status, epochs=totals.epochs,
                        energy_j=totals.energy_j, emissions_gco2e=totals.emissions_gco2e,
                        train_flops=totals.train_flops)


class PhaseSession:
    """One measured phase. Nothing here knows a framework; its set-up (carbon, meter, ranks, record path and sink,
    exit handlers) is the :class:`~green_callbacks.core.run_context.RunContext` every kind of run shares.

    Args:
        config: the callback's validated settings (carbon, PUE, output folder).
        framework: for the record (``"lightning"``, ``"keras"``, ``"transformers"``).
        kind: one of :data:`~green_callbacks.core.phase.PHASE_KINDS`.
        sensors: the sensors to use instead of the machine's (as for the fit session).
        training: the callback's fit :class:`~green_callbacks.core.session.Session`, if a fit ran: its carbon
            intensity is reused, the phase record links to it and its record lists the phase.
        dist, reducer: this process's ranks and the sum over ranks (default: from ``torch.distributed``).
        flops: the phase kind's :class:`~green_callbacks.core.phase_flops.PhaseFlops` (``None``: FLOPs unavailable);
            ``flops_error(err)`` is told when counting fails (FLOPs are then unavailable, the phase goes on).
        sees_batches: whether the adapter sees each batch (False: batches, samples and every per-sample figure are
            unavailable, never 0: e.g. Keras on TensorFlow, whose steps run inside a graph).
        times_batches: whether a batch's start and end are its real start and end (False where the framework
            dispatches steps asynchronously, Keras on JAX: latencies are unavailable).
    """

    def __init__(
        self,
        config: GreenConfig,
        *,
        framework: str,
        kind: str,
        sensors: Sequence[Sensor] | None = None,
        training: Any = None,
        dist: DistInfo | None = None,
        reducer: Reducer | None = None,
        flops: PhaseFlops | None = None,
        flops_error: Callable[[Exception], None] | None = None,
        sees_batches: bool = True,
        times_batches: bool = True,
    ) -> None:
        if kind not in PHASE_KINDS:
            raise ValueError(f"phase kind {kind!r} is not one of {', '.join(PHASE_KINDS)}")
        self.config = config
        self.framework = framework
        self.kind = kind
        self.training = training
        # the fit's intensity (settled by whichever needs it first); else this phase's own, fetched in the background
        fit_carbon = getattr(training, "carbon_choice", None)
        self.context = RunContext(config, on_exit=self.abort, record=f"{kind} record", retried=False, sensors=sensors,
                                  dist=dist, reducer=reducer, carbon=fit_carbon, owns_carbon=False)
        self._flops = flops
        self._flops_error = flops_error
        self._sees_batches = sees_batches
        self._times_batches = times_batches
        self.run_id = uuid.uuid4().hex
        self.status = "created"
        self.error: str | None = None
        self.carbon: Any = None  # the settled intensity (at the phase's end)
        self.result: PhaseResult | None = None
        self.break_even: BreakEven | None = None
        self.info: dict[str, Any] = {}
        self.lost: Mapping[str, str] = {}
        """Parts switched off after a failure (the :class:`PhaseTap`'s guard), for the record."""
        # per-batch state (kept small: this is the hot path)
        self._shapes: dict[tuple[Any, ...], list[Any]] = {}  # signature -> [example batch, count, samples]
        self._t0: float | None = None
        self._warm = False
        self._n = 0
        self._tok: Any = None
        self._batches = 0
        self._samples = 0
        self._warm_batches = 0
        self._warm_samples = 0
        self._lat: list[float] = []
        self._warm_lat: list[float] = []
        self._warm_parts: list[Measurement] = []
        self._tokens: Any = None
        self._warm_tokens: Any = None
        self._tokens_missing = False
        self._tok_out: Any = None  # output tokens of the batch running now (where the framework exposes them)
        self._tokens_out: Any = None
        self._warm_tokens_out: Any = None
        self._tokens_out_missing = False

    meter = property(lambda self: self.context.meter)
    dist = property(lambda self: self.context.dist)
    reducer = property(lambda self: self.context.reducer)
    record_path = property(lambda self: self.context.record_path)

    # ------------------------------------------------------------------ set-up
    def start(
        self,
        *,
        output_dir: str | os.PathLike[str] | None = None,
        device_type: str = "cuda",
        device_indices: Sequence[int] | None = None,
        device_uuids: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        handle_signals: bool = True,
    ) -> None:
        """Open the phase window (and the first warm-up window, which ends with the first batch).

        ``handle_signals=False`` where the framework turns SIGTERM into its own exception (Lightning): the adapter
        then calls :meth:`abort` from its exception hook; the ``atexit`` hook is installed either way."""
        if self.status != "created":
            return
        self.carbon = self.context.carbon_choice.value
        meter = self.context.open_meter(device_type=device_type, device_indices=device_indices,
                                        device_uuids=device_uuids)
        self.info = dict(extra or {})
        training_path = getattr(self.training, "record_path", None) if training_link(self.training) else None
        self.context.open_record((Path(training_path).parent if training_path else None) or output_dir)
        self.status = "running"
        meter.begin(_PHASE, _WARMUP)  # one read opens both
        self.context.exit.install(signals=handle_signals)

    # ------------------------------------------------------------------ batches (hot path)
    def batch_start(self, batch: Any, model: Any = None) -> None:
        """A batch begins: note its shapes; the first batch of each shape is warm-up. ``model``: the torch module
        the batch runs on, whose FLOPs are observed while the batch runs (``None``: FLOPs unavailable)."""
        if self._t0 is not None or self.meter is None:  # a second forward of the same batch (e.g. generation)
            return
        signature = batch_signature(batch)
        entry = self._shapes.get(signature)
        if entry is None:
            entry = self._shapes[signature] = [batch, 0, samples_of(signature) or 0]
            self._warm = True
            if self._batches:  # the first warm-up window is open since the phase began
                self.meter.begin(_WARMUP)
        else:
            self._warm = False
        entry[1] += 1
        self._n = entry[2]
        self._tok = tokens_in_of(batch)
        self._tok_out = None
        if self._flops is not None:
            try:
                self._flops.begin(model, batch)
            except Exception as err:
                self._flops_failed(err)
        self._t0 = clock.now_s()

    def add_tokens_out(self, tokens: Any) -> None:
        """Output tokens of the batch running now (a number, or a device scalar summed lazily), where the framework
        exposes them (HF ``Seq2SeqTrainer`` with ``predict_with_generate``)."""
        if self._t0 is not None:
            self._tok_out = tokens if self._tok_out is None else self._tok_out + tokens

    def batch_end(self) -> None:
        """The batch started last is done."""
        t0 = self._t0
        if t0 is None:
            return
        latency = clock.now_s() - t0
        self._t0 = None
        if self._flops is not None:
            try:
                self._flops.end()
            except Exception as err:
                self._flops_failed(err)
        n, tok = self._n, self._tok
        if tok is None:
            self._tokens_missing = True
        else:
            self._tokens = tok if self._tokens is None else self._tokens + tok
        out = self._tok_out
        if out is None:
            self._tokens_out_missing = True
        else:
            self._tokens_out = out if self._tokens_out is None else self._tokens_out + out
        if self._warm:
            assert self.meter is not None
            if out is not None:
                self._warm_tokens_out = out if self._warm_tokens_out is None else self._warm_tokens_out + out
            self._warm_parts.append(self.meter.end(_WARMUP))
            self._warm_lat.append(latency)
            self._warm_batches += 1
            self._warm_samples += n
            if tok is not None:
                self._warm_tokens = tok if self._warm_tokens is None else self._warm_tokens + tok
        else:
            self._lat.append(latency)
        self._batches += 1
        self._samples += n

    # ------------------------------------------------------------------ end
    def _flops_failed(self, err: Exception) -> None:
        """Counting failed: FLOPs are unavailable for this phase (the counter is closed); the phase goes on."""
        flops, self._flops = self._flops, None
        if flops is not None:
            try:
                flops.discard()
            except Exception:  # closing after a failure: the count is dropped anyway
                pass
        if self._flops_error is not None:
            self._flops_error(err)

    def _flops_total(self) -> float | None:
        if self._flops is None:
            return None
        try:
            return self._flops.total(self._batches)
        except Exception as err:
            self._flops_failed(err)
            return None

    def end(self) -> PhaseResult | None:
        """Close the window, sum over ranks, write the record and list it in the fit's record."""
        if self.status != "running" or self.meter is None:
            return self.result
        self._t0 = None
        window = self.meter.end(_PHASE)
        if self.meter.is_open(_WARMUP):
            self.meter.end(_WARMUP)
        self.meter.close()
        self.context.exit.uninstall()
        flops = self._flops_total()
        self.result = self._summarize(window, flops)
        self.status = "completed"
        self._link_and_write()
        return self.result

    def abort(self, status: str, error: BaseException | str | None = None) -> None:
        """The phase was cut short (an exception, an interrupt): write what was measured, with ``status``."""
        if self.status != "running" or self.meter is None:
            return
        self.error = None if error is None else error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._t0 = None
        if self._flops is not None:  # a step that raised: its counter is closed, its count dropped
            try:
                self._flops.discard()
            except Exception:
                pass
            self._flops = None
        self.context.exit.uninstall()
        window = self.meter.end(_PHASE)
        self.meter.close()
        # this rank's part only: no collective call on a failure path
        self.result = self._summarize(window, None, reduce=False)
        self.status = status
        self._link_and_write()

    def _summarize(self, window: Measurement, flops: float | None, *, reduce: bool = True) -> PhaseResult:
        self.carbon = self.context.carbon_choice.settle()
        self.context.close_carbon()
        names = [c for c in COMPONENTS if c in window.components] + [
            c for c in window.components if c not in COMPONENTS
        ]
        warm = sum_measurements(_WARMUP, self._warm_parts, window.components)
        tokens = None if self._tokens_missing or self._tokens is None else float(self._tokens)
        warm_tokens = None if tokens is None or self._warm_tokens is None else float(self._warm_tokens)
        if tokens is not None and warm_tokens is None:
            warm_tokens = 0.0
        tokens_out = None if self._tokens_out_missing or self._tokens_out is None else float(self._tokens_out)
        warm_out = None if tokens_out is None else float(self._warm_tokens_out or 0.0)
        seen = self._sees_batches
        local: dict[str, float | None] = {
            "batches": float(self._batches) if seen else None, "samples": float(self._samples) if seen else None,
            "warmup_batches": float(self._warm_batches) if seen else None,
            "warmup_samples": float(self._warm_samples) if seen else None,
            "flops": flops, "tokens_in": tokens, "warmup_tokens_in": warm_tokens, "tokens_out": tokens_out,
            "warmup_tokens_out": warm_out, "intensity": self.carbon.intensity_gco2e_per_kwh,
        }
        for n in names:
            local[f"energy_j/{n}"] = self.context.local_j(n, window.component_j(n))
            local[f"warmup_energy_j/{n}"] = self.context.local_j(n, warm.component_j(n))
        if reduce and self.dist.world_size > 1:  # one collective; a failure path (reduce=False) makes none
            state = EpochState()
            for name in local:
                state.add_state(name, "rank_zero" if name == "intensity" else "sum")
            sums = state.reduce(local, self.dist, self.reducer).values
        else:
            sums = {k: None if v is None else float(v) for k, v in local.items()}
        intensity = sums["intensity"]
        assert intensity is not None
        inputs = PhaseInputs(
            kind=self.kind,
            duration_s=window.duration_s,
            component_energy_j={n: sums[f"energy_j/{n}"] for n in names},
            component_method={n: window.components[n].method for n in names},
            warmup_component_energy_j={n: sums[f"warmup_energy_j/{n}"] for n in names},
            warmup_time_s=warm.duration_s,
            batches=_count(sums["batches"]),
            samples=_count(sums["samples"]),
            warmup_batches=_count(sums["warmup_batches"]),
            warmup_samples=_count(sums["warmup_samples"]),
            intensity_gco2e_per_kwh=intensity,
            pue=self.config.pue,
            flops=sums["flops"],
            tokens_in=sums["tokens_in"],
            warmup_tokens_in=sums["warmup_tokens_in"],
            tokens_out=sums["tokens_out"],
            warmup_tokens_out=sums["warmup_tokens_out"],
            latencies_s=tuple(self._lat) if self._times_batches else (),
            warmup_latencies_s=tuple(self._warm_lat) if self._times_batches else (),
        )
        result = summarize_phase(inputs)
        training = training_link(self.training)
        if training is not None:
            self.break_even = break_even(
                training.energy_j, result.energy_per_sample_j,
                training.emissions_gco2e, result.emissions_per_sample_gco2e,
            )
        if result.short_window_components and self.dist.is_global_zero:
            warn_user(
                f"green_callbacks: {self.kind}: " + "; ".join(result.notes), UserWarning)
        return result

    # ------------------------------------------------------------------ records
    def to_record(self) -> dict[str, Any]:
        result = self.result
        return {
            **record_head(kind=self.kind, run_id=self.run_id, framework=self.framework, status=self.status,
                          error=self.error, started_at=self.context.started_at, world_size=self.dist.world_size,
                          carbon=None if self.carbon is None else self.context.carbon_choice.to_record(),
                          pue=self.config.pue,
                          components={} if self.meter is None else self.meter.info(), lost=self.lost),
            "methods": {n: [m] for n, m in ({} if result is None else result.component_method).items()},
            "training": to_json(training_link(self.training)),
            "phase": to_json(result),
            "break_even": None if self.break_even is None else self.break_even.to_record(),
            "totals": {
                "epochs": 0,
                "time_s": None if result is None else result.duration_s,
                "train_flops": None,
                "eval_flops": None if result is None else result.flops,
                "energy_j": None if result is None else result.energy_j,
                "emissions_gco2e": None if result is None else result.emissions_gco2e,
            },
            "epochs": [],
            "epochs_log": None,
            **self.context.sink.environment,
            **self.info,
        }

    def _link_and_write(self) -> None:
        sink = self.context.sink
        if not sink.writes_here:
            return
        # the machine and versions, read after the phase's window (not part of its cost)
        sink.environment = environment_of(self.meter.info() if self.meter else {})
        sink.final(self.to_record)
        add_phase = getattr(self.training, "add_phase", None)
        if self.result is not None and training_link(self.training) is not None and callable(add_phase):
            add_phase({
                **self.result.summary(),
                "status": self.status,
                "run_id": self.run_id,
                "record": None if self.record_path is None else self.record_path.name,
            })


def _count(value: float | None) -> int | None:
    return None if value is None else round(value)


class PhaseTap:
    """The phases of one ``GreenCallback`` (``engine.phases``): test / validate / predict / evaluate run outside
    ``fit``. The adapter calls :meth:`begin`, :meth:`batch_start`/:meth:`batch_end` per batch, and :meth:`end`
    (or :meth:`fail`), and logs what :meth:`end` returns where its framework logs that phase.

    A phase begun while the callback's fit is running (an evaluation inside training) is part of the fit's epochs
    and not measured twice. Failures are warned about once and switch phases off; they never reach the user's loop
    (strict mode re-raises).

    FLOPs: an adapter that hands :meth:`batch_start` the batch's ``model`` gets the phase's forward FLOPs, observed on
    the real batches (:mod:`green_callbacks.core.phase_flops`; one tracker per phase kind, kept across phases). A
    counting failure switches the ``phase flops`` part off (FLOPs: NaN) and leaves the phase measured.

    Args:
        config, framework, sensors: as for the fit's session.
        training: returns the callback's current fit session (the phase links to it when it has run).
    """

    def __init__(
        self,
        config: GreenConfig,
        *,
        framework: str,
        sensors: Sequence[Sensor] | None,
        training: Callable[[], Any],
    ) -> None:
        self._config = config
        self._framework = framework
        self._sensors = sensors
        self._training = training
        self.guard = Guard("green_callbacks")
        self._flops: dict[str, PhaseFlops] = {}  # one per phase kind: its caches serve every later phase of the kind
        self.current: PhaseSession | None = None
        self.last: PhaseResult | None = None
        """The figures of the last phase measured (``None`` before the first)."""
        self.last_metrics: dict[str, float] = {}
        """Its ``green/<kind>_...`` metrics, as logged (also where the framework does not log the phase)."""

    @property
    def running(self) -> bool:
        return self.current is not None and self.current.status == "running"

    @property
    def record_path(self) -> Path | None:
        """The record of the last phase begun (``None`` before the first, and on ranks other than zero)."""
        return None if self.current is None else self.current.record_path

    def begin(
        self,
        kind: str,
        *,
        output_dir: Any = None,
        device_type: str = "cuda",
        device_indices: Sequence[int] | None = None,
        device_uuids: Sequence[str] | None = None,
        dist: DistInfo | None = None,
        extra: Mapping[str, Any] | None = None,
        handle_signals: bool = True,
        sees_batches: bool = True,
        times_batches: bool = True,
    ) -> bool:
        """Open a phase; ``False`` when it is not measured (inside a running fit, or phases switched off).

        ``sees_batches`` / ``times_batches``: see :class:`PhaseSession`."""
        training = self._training()
        if getattr(training, "running", False) or not self.guard.enabled("phase"):
            return False
        if self.running:  # the previous phase never ended (its framework stopped without a closing hook)
            self.fail("the phase stopped without reaching its end hook")
        flops = None
        if self.guard.enabled("phase flops") and sees_batches:
            flops = self._flops.get(kind)
            if flops is None:
                flops = self._flops[kind] = PhaseFlops()
            flops.open()
        phase = self.guard.call(
            "phase", PhaseSession, self._config, framework=self._framework, kind=kind, sensors=self._sensors,
            training=training, dist=dist, flops=flops, flops_error=self._flops_failed, sees_batches=sees_batches,
            times_batches=times_batches,
        )
        if phase is None:  # its set-up failed (warned once; phases are off)
            return False
        phase.lost = self.guard.lost
        self.current = phase
        self.guard.call(
            "phase", phase.start, output_dir=output_dir, device_type=device_type, device_indices=device_indices,
            device_uuids=device_uuids,
            extra=extra, handle_signals=handle_signals,
        )
        return phase.status == "running"

    def _flops_failed(self, err: Exception) -> None:
        self._flops.clear()  # a tracker that failed keeps no state for later phases
        self.guard.absorb("phase flops", err)

    # the per-batch calls: no Guard.call indirection, a plain try (free in Python 3.11 when nothing raises)
    def batch_start(self, batch: Any, model: Any = None) -> None:
        """A batch begins; ``model``: the torch module it runs on, for its FLOPs (``None``: FLOPs unavailable)."""
        phase = self.current
        if phase is not None and phase.status == "running":
            try:
                phase.batch_start(batch, model)
            except Exception as err:
                self._broken(err)

    def batch_end(self) -> None:
        phase = self.current
        if phase is not None and phase.status == "running":
            try:
                phase.batch_end()
            except Exception as err:
                self._broken(err)

    def add_tokens_out(self, tokens: Any) -> None:
        """Output tokens of the batch running now (see :meth:`PhaseSession.add_tokens_out`)."""
        phase = self.current
        if phase is not None and phase.status == "running":
            try:
                phase.add_tokens_out(tokens)
            except Exception as err:
                self._broken(err)

    def _broken(self, err: Exception) -> None:
        if strict_mode():
            raise err
        self.guard.fail("phase", err)
        phase = self.current
        if phase is not None:
            try:
                phase.abort("failed", err)
            except Exception:  # the record is best effort once the phase broke
                pass

    def end(self) -> dict[str, float] | None:
        """Close the phase; its ``green/<kind>_...`` metrics (``None`` when no phase is running)."""
        phase = self.current
        if phase is None or phase.status != "running":
            return None
        result = self.guard.call("phase", phase.end)
        if result is None:
            return None
        self.last = result
        self.last_metrics = result.metrics()
        return dict(self.last_metrics)

    def fail(self, error: BaseException | str) -> None:
        """The phase raised ``error``: its record is written with status ``interrupted`` or ``failed``."""
        phase = self.current
        if phase is not None and phase.status == "running":
            from green_callbacks.core.session import status_for

            self.guard.call("phase", phase.abort, status_for(error), error)
            self.last = phase.result

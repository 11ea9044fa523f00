"""What the three adapters share for phases run outside ``fit`` (test / validate / predict / evaluate).

The adapter calls ``_phase_begin(kind, …)`` when its framework starts such a phase, ``_phase_batch_start(batch)``
and ``_phase_batch_end()`` around each batch, and ``_phase_finish(flops_of)`` at the end; it logs the returned
``green/<kind>_...`` metrics where the framework logs that phase. All figures come from
:mod:`green_callbacks.core.phase`; this mixin only owns the current :class:`~green_callbacks.core.phase_session.
PhaseSession` and keeps every failure away from the user's loop (warned once, then phases are switched off).

A phase run while the callback's ``fit`` is running (e.g. an evaluation inside training) is part of the fit's
epochs and is not measured twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.guard import Guard, strict_mode
from green_callbacks.core.phase import PhaseResult
from green_callbacks.core.phase_session import PhaseSession

__all__ = ["PhaseMixin"]


class PhaseMixin:
    """Mixed into each ``GreenCallback``: ``last_phase`` holds the figures of the last phase measured."""

    session: Any
    config: Any
    framework: str
    _sensors: Any

    def _phase_init(self) -> None:
        self.last_phase: PhaseResult | None = None
        """The last test / validate / predict / evaluate measured outside ``fit`` (``None`` before the first)."""
        self.last_phase_metrics: dict[str, float] = {}
        """Its ``green/<kind>_...`` metrics, as logged (also where the framework does not log the phase)."""
        self._phase: PhaseSession | None = None
        self._phase_guard = Guard("green_callbacks")

    @property
    def phase_running(self) -> bool:
        phase = getattr(self, "_phase", None)
        return phase is not None and phase.status == "running"

    @property
    def last_phase_record_path(self) -> Any:
        """The run record of the last phase (``None`` before the first, and on ranks other than zero)."""
        phase = getattr(self, "_phase", None)
        return None if phase is None else phase.record_path

    def _phase_begin(
        self,
        kind: str,
        *,
        output_dir: Any = None,
        device_indices: Sequence[int] | None = None,
        device_uuids: Sequence[str] | None = None,
        dist: DistInfo | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Open a phase; ``False`` when it is not measured (inside a running fit, or phases switched off)."""
        if getattr(self.session, "status", None) == "running" or not self._phase_guard.enabled("phase"):
            return False
        if self.phase_running:  # the previous phase never ended (its framework stopped without a closing hook)
            self._phase_abort("failed", "the phase stopped without reaching its end hook")
        self._phase = None
        phase = PhaseSession(
            self.config, framework=self.framework, kind=kind, sensors=self._sensors, training=self.session, dist=dist
        )
        started = self._phase_guard.call(
            "phase", phase.start, output_dir=output_dir, device_indices=device_indices, device_uuids=device_uuids,
            extra=extra,
        )
        if started is None and phase.status != "running":
            return False
        self._phase = phase
        return True

    # the per-batch calls: no Guard.call indirection, a plain try (free in Python 3.11 when nothing raises)
    def _phase_batch_start(self, batch: Any) -> None:
        phase = self._phase
        if phase is not None and phase.status == "running":
            try:
                phase.batch_start(batch)
            except Exception as err:
                self._phase_failed(err)

    def _phase_batch_end(self) -> None:
        phase = self._phase
        if phase is not None and phase.status == "running":
            try:
                phase.batch_end()
            except Exception as err:
                self._phase_failed(err)

    def _phase_failed(self, err: Exception) -> None:
        if strict_mode():
            raise err
        self._phase_guard.fail("phase", err)
        phase, self._phase = self._phase, None
        if phase is not None:
            try:
                phase.abort("failed", err)
            except Exception:  # the record is best effort once the phase broke
                pass

    def _phase_finish(self, flops_of: Callable[[Any], float | None] | None = None) -> dict[str, float] | None:
        """Close the phase; its ``green/<kind>_...`` metrics (``None`` when no phase was measured)."""
        phase = self._phase
        if phase is None or phase.status != "running":
            return None
        counter = None if flops_of is None else self._guarded_flops(flops_of)
        result = self._phase_guard.call("phase", phase.end, counter)
        if result is None:
            return None
        self.last_phase = result
        self.last_phase_metrics = result.metrics()
        return dict(self.last_phase_metrics)

    def _guarded_flops(self, flops_of: Callable[[Any], float | None]) -> Callable[[Any], float | None]:
        def count(example: Any) -> float | None:
            return self._phase_guard.call("phase flops", flops_of, example)

        return count

    def _phase_abort(self, status: str, error: BaseException | str | None) -> None:
        phase = self._phase
        if phase is not None and phase.status == "running":
            self._phase_guard.call("phase", phase.abort, status, error)
            self.last_phase = phase.result

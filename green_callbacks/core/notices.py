"""The once-per-run messages of a fit: energy not measured here, why ``green/mfu`` is NaN, a component lost, a
budget reached, the monitored metric missing or chosen. Each is said once, by global rank zero, at the user's line
(:func:`~green_callbacks.core.wording.warn_user`); the objects that decide them (the ledger, convergence, budgets)
only return them.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping

from green_callbacks.core.budget import BudgetDecision
from green_callbacks.core.meter import Measurement
from green_callbacks.core.rows import EpochRow
from green_callbacks.core.sensors.base import NOT_USED, Reading
from green_callbacks.core.throughput import PeakInfo
from green_callbacks.core.wording import warn_user

__all__ = ["RunNotices"]


class RunNotices:
    """What a fit has said so far, and the components that gave a number at some point of it."""

    def __init__(self) -> None:
        self.measured: set[str] = set()
        self._warned_lost: set[str] = set()

    def at_start(self, readings: Mapping[str, Reading], peak: PeakInfo, *, speak: bool) -> None:
        """The components this machine cannot measure, and why MFU will be NaN (``speak``: global rank zero)."""
        reasons = []
        for name, reading in readings.items():
            if reading.method == NOT_USED:  # not part of this run: nothing to warn about (the record says so)
                continue
            if reading.energy_j is None:
                reasons.append(f"{name}: {reading.note or 'no sensor'}")
            else:
                self.measured.add(name)
        if not speak:
            return
        if reasons:
            warn_user("green_callbacks: some energy is not measured on this machine and is reported 'unavailable' "
                      "(never 0): " + "; ".join(reasons), UserWarning)
        if peak.peak_flops_per_s is None:
            # a warning when an accelerator trains whose peak is not known (the table or the dtype lacks it:
            # something to fix); an INFO log on a CPU run, where NaN is expected
            message = f"green_callbacks: green/mfu is NaN in this run: {peak.reason}."
            if peak.devices:
                warn_user(message + " Add the device's dense peak to green_callbacks/core/flops/peaks.py.",
                          UserWarning)
            else:
                logging.getLogger("green_callbacks").info(message)

    def lost(self, row: EpochRow, epoch_m: Measurement, broken: Container[str], *, speak: bool) -> None:
        """One warning per component that was measured and is not any more (a GPU lost, a RAPL zone gone);
        ``broken``: the components the meter has warned about already."""
        for name, value in row.component_energy_j.items():
            if value is not None:
                self.measured.add(name)
        for name in row.missing_components:
            if name not in self.measured or name in self._warned_lost:
                continue
            self._warned_lost.add(name)
            if name in broken or not speak:
                continue
            part = epoch_m.components.get(name)
            why = ((part.note if part is not None else "") or "it could not be measured on another rank").rstrip(".")
            warn_user(
                f"green_callbacks: {name} energy could not be measured in epoch {row.epoch} ({why}). Training goes "
                f"on; the run record marks {name} 'unavailable' in every epoch it is missing from (never 0) and "
                "keeps what was measured; those epochs' energy and emissions are the other components' only.",
                RuntimeWarning)

    @staticmethod
    def monitor(message: str | None, *, speak: bool) -> None:
        """What the user needs to know about the monitored metric (:meth:`~green_callbacks.core.convergence.
        MonitorWatch.observe`): its name not logged, the validation loss adopted, no validation metric."""
        if message is not None and speak:
            warn_user(message)

    @staticmethod
    def budget(decision: BudgetDecision, *, stop: bool, speak: bool) -> None:
        if speak:
            then = "the training stops at the end of this epoch" if stop else "training goes on (budget_action='warn')"
            warn_user(f"green_callbacks: {decision.reason}; {then}", UserWarning)

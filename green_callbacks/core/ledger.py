"""A fit's ledger: its epoch rows, running totals, convergence, projections and budget decision. No I/O.

The fit driver (:class:`~green_callbacks.core.session.Session`) measures an epoch and builds its row; the ledger
keeps what the rows add up to and what follows from them, and is what a checkpoint saves (:meth:`state_dict`).
Nothing here reads a sensor, writes a file or warns: the decisions it returns are said by the driver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from green_callbacks.core.budget import BudgetDecision, Projection, RunningProjection, decide
from green_callbacks.core.convergence import ConvergenceTracker, MonitorWatch, Totals
from green_callbacks.core.rows import EpochRow, row_from_record
from green_callbacks.core.uncertainty import Factor, Part, RunSpread, scaled_interval, window_parts
from green_callbacks.core.wording import FrontEnd

__all__ = ["RunLedger"]


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


class RunLedger:
    """The rows of one fit and everything derived from them, kept in O(1) per epoch.

    Args:
        convergence: the tracker of the monitored metric, or ``None`` until one is known.
        front_end: how messages name options (the monitored metric's hints).
    """

    def __init__(self, convergence: ConvergenceTracker | None, front_end: FrontEnd) -> None:
        self.rows: list[EpochRow] = []
        self.totals = Totals()
        self.convergence = convergence
        self.front_end = front_end
        self.watch = MonitorWatch(front_end)
        self.epoch_index = 0
        """The number the next epoch gets when the framework gives none (continues after a resume)."""
        self.planned_epochs: float | None = None
        self.projection: tuple[Projection, Projection] | None = None
        self.stop_reason: str | None = None
        self.should_stop = False
        self.methods: dict[str, list[str]] = {}
        """Every method each component used so far (a lost GPU shows both its method and ``unavailable``)."""
        self.resumed_from: dict[str, Any] | None = None
        self._energy = RunningProjection()
        self._emissions = RunningProjection()
        self._spread = RunSpread()

    @property
    def monitor(self) -> str | None:
        return None if self.convergence is None else self.convergence.monitor

    def adopt_monitor(self, monitor: str | None, mode: str | None) -> None:
        """The framework's own early-stopping or best-model metric, where the user named none."""
        if self.convergence is None and monitor:
            self.convergence = ConvergenceTracker(monitor, mode, None, front_end=self.front_end)

    def set_planned_epochs(self, epochs: float | None) -> None:
        """The number of epochs the whole run is planned to last (resumed epochs included); ``None``: unknown."""
        self.planned_epochs = None if epochs is None or not math.isfinite(epochs) or epochs <= 0 else float(epochs)

    def request_stop(self, reason: str) -> None:
        """Why the training was told to stop (early stopping, a budget); the first reason given is kept."""
        if self.stop_reason is None:
            self.stop_reason = reason

    # ------------------------------------------------------------------ one epoch
    def advance(self, *, time_s: float, train_flops: float | None, eval_flops: float | None,
                energy_j: float | None, emissions_gco2e: float | None, parts: Sequence[Part] = (),
                factors: Sequence[Factor | None] = (None,)) -> Totals:
        """The run's totals with one more epoch (a part unknown in any epoch stays unknown: ``None``).

        ``parts``: the epoch's measured components, for the totals' interval; ``factors``: the ranges of the
        factors emissions multiply energy by (see :mod:`~green_callbacks.core.uncertainty`)."""
        previous = self.totals
        self._spread.add(parts)
        energy_total = _add(previous.energy_j, energy_j)
        emissions_total = _add(previous.emissions_gco2e, emissions_gco2e)
        energy_range = None if energy_total is None else self._spread.interval()
        emissions_range = scaled_interval(energy_range, emissions_total, factors)
        self.totals = Totals(
            epochs=(previous.epochs or 0) + 1,
            time_s=(previous.time_s or 0.0) + time_s,
            train_flops=_add(previous.train_flops, train_flops),
            eval_flops=_add(previous.eval_flops, eval_flops),
            energy_j=energy_total,
            emissions_gco2e=emissions_total,
            energy_low_j=None if energy_range is None else energy_range.low,
            energy_high_j=None if energy_range is None else energy_range.high,
            emissions_low_gco2e=None if emissions_range is None else emissions_range.low,
            emissions_high_gco2e=None if emissions_range is None else emissions_range.high,
        )
        return self.totals

    def observe(self, epoch: int, metrics: Mapping[str, float]) -> str | None:
        """Follow the monitored metric of this epoch (after :meth:`advance`: convergence keeps the totals now);
        the message the user needs about the monitored metric now, if any (the driver says it)."""
        self.convergence, message = self.watch.observe(self.convergence, metrics, epoch)
        if self.convergence is not None:
            self.convergence.update(epoch, metrics.get(self.convergence.monitor), self.totals)
        return message

    def add(self, row: EpochRow) -> None:
        """Keep a closed epoch's row: projections and methods follow it."""
        self.rows.append(row)
        self._follow(row)
        self.epoch_index += 1

    def _follow(self, row: EpochRow) -> None:
        self._energy.add(row.energy_j)
        self._emissions.add(row.emissions_gco2e)
        for name, method in row.component_method.items():
            used = self.methods.setdefault(name, [])
            if method not in used:
                used.append(method)

    def budget(self, *, budget_kwh: float | None, budget_gco2e: float | None, stop: bool) -> BudgetDecision | None:
        """Project the run's total and decide: the decision the first time a budget would be exceeded (the stop
        reason and, with ``stop``, :attr:`should_stop` are set), else ``None``."""
        energy = self._energy.projection(self.planned_epochs)
        emissions = self._emissions.projection(self.planned_epochs)
        self.projection = (energy, emissions)
        if self.stop_reason is not None:
            return None
        decision = decide(energy, emissions, budget_kwh=budget_kwh, budget_gco2e=budget_gco2e,
                          use_projection=len(self.rows) >= 2)
        if not decision.exceeded:
            return None
        self.stop_reason = f"budget: {decision.reason}" + ("" if stop else " (budget_action='warn': not stopped)")
        self.should_stop = stop
        return decision

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps so that a resumed run continues its totals and convergence."""
        return {
            "totals": dict(vars(self.totals)),
            "epoch_index": self.epoch_index,
            "convergence": None if self.convergence is None else self.convergence.state_dict(),
            "rows": [row.to_record() for row in self.rows],
        }

    def load_state_dict(self, state: Mapping[str, Any], run_id: Any = None) -> None:
        """Continue from a checkpoint: totals, rows, projections, methods and convergence go on."""
        self.totals = Totals(**state["totals"])
        self.epoch_index = int(state.get("epoch_index", self.totals.epochs))
        self.rows = [row_from_record(r) for r in state.get("rows", [])]
        self._energy, self._emissions, self.methods = RunningProjection(), RunningProjection(), {}
        self._spread = RunSpread()
        for row in self.rows:
            self._follow(row)
            self._spread.add(window_parts(row.component_energy_j, row.component_method, row.time_s))
        conv = state.get("convergence")
        if conv is not None:
            if self.convergence is None:
                self.convergence = ConvergenceTracker(conv["monitor"], conv["mode"], conv.get("target"),
                                                      front_end=self.front_end)
            self.convergence.load_state_dict(conv)
        self.resumed_from = {"run_id": run_id, "epochs": self.totals.epochs}

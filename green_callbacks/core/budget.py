"""Projection of a run's total energy and emissions, and the decision to stop at a budget.

After each epoch the total of the whole run is projected from the epochs so far and the planned number of epochs:

    projected = total so far + rate × epochs remaining

where *rate* is the mean energy (or emissions) per epoch, leaving out the first epoch once there are two or more
(it carries warm-up: compilation, caches, data loader start). The uncertainty band is
``projected ± std × epochs remaining`` with *std* the epoch-to-epoch standard deviation of the same epochs — a
deliberately wide band, since successive epochs are not independent draws.

The budget is exceeded when the projection, or the actual total, is above it. After the first epoch only the actual
total counts: a projection from one warm-up epoch alone can be far off (see docs/budgets.md). The decision is taken
on numbers already summed over ranks (and rank zero's carbon intensity), so every rank of a distributed run takes
the same one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from green_callbacks.core.units import joules_to_kwh, kwh_to_joules

__all__ = ["BudgetDecision", "Projection", "decide", "plan_epochs", "project"]


@dataclass(frozen=True)
class Projection:
    """The projected total of one quantity (J or gCO2e) with its band; ``None`` fields when it cannot be projected."""

    total: float
    projected: float | None
    low: float | None
    high: float | None


def project(per_epoch: Sequence[float | None], planned_epochs: float | None, *, warmup_epochs: int = 1) -> Projection:
    """Project the run's total from the per-epoch values so far (``None`` = unavailable)."""
    if any(v is None for v in per_epoch) or not per_epoch:
        return Projection(math.nan, None, None, None)
    values = [float(v) for v in per_epoch]  # type: ignore[arg-type]
    total = math.fsum(values)
    if planned_epochs is None or not math.isfinite(planned_epochs):
        return Projection(total, None, None, None)
    remaining = max(float(planned_epochs) - len(values), 0.0)
    steady = values[warmup_epochs:] if len(values) > warmup_epochs else values
    rate = statistics.fmean(steady)
    spread = statistics.stdev(steady) if len(steady) >= 2 else 0.0
    projected = total + rate * remaining
    return Projection(total, projected, max(projected - spread * remaining, total), projected + spread * remaining)


@dataclass(frozen=True)
class BudgetDecision:
    """Whether to stop at the end of this epoch, and why (a sentence for the user and the record)."""

    exceeded: bool
    reason: str | None = None


def decide(
    energy: Projection,
    emissions: Projection,
    *,
    budget_kwh: float | None,
    budget_gco2e: float | None,
    use_projection: bool = True,
) -> BudgetDecision:
    """Compare the actual and (when ``use_projection``) projected totals with the budgets (energy in J)."""
    checks = []
    if budget_kwh is not None:
        checks.append(("energy", energy, kwh_to_joules(budget_kwh), joules_to_kwh(1.0), "kWh", budget_kwh))
    if budget_gco2e is not None:
        checks.append(("emissions", emissions, budget_gco2e, 1.0, "gCO2e", budget_gco2e))
    for name, proj, limit, scale, unit, given in checks:
        if math.isfinite(proj.total) and proj.total > limit:
            return BudgetDecision(True, f"{name} so far, {proj.total * scale:.4g} {unit}, exceeds the budget of "
                                        f"{given:g} {unit}")
        if use_projection and proj.projected is not None and proj.projected > limit:
            return BudgetDecision(True, f"{name} projected for the whole run, {proj.projected * scale:.4g} {unit}, "
                                        f"exceeds the budget of {given:g} {unit}")
    return BudgetDecision(False)


def plan_epochs(max_epochs: float | None, max_steps: int | None, steps_per_epoch: float | None) -> float | None:
    """Epochs a run will last: ``max_epochs``, or fewer when ``max_steps`` optimizer steps end it first.

    ``steps_per_epoch`` counts optimizer steps (batches / gradient accumulation, rounded up); ``None``, 0 or
    infinite values mean unknown. Returns ``None`` when neither limit is known.
    """
    epochs = float(max_epochs) if max_epochs is not None and max_epochs > 0 else math.inf
    if max_steps is not None and max_steps > 0 and steps_per_epoch and math.isfinite(steps_per_epoch):
        epochs = min(epochs, max_steps / steps_per_epoch)
    return epochs if math.isfinite(epochs) else None


def plan_epochs_from_batches(
    max_epochs: float | None, max_steps: int | None, batches_per_epoch: float | None, accumulate: int = 1
) -> float | None:
    """:func:`plan_epochs` from the batches of an epoch and the gradient-accumulation factor (Lightning's view):
    an epoch makes ``ceil(batches / accumulate)`` optimizer steps."""
    steps = None
    if batches_per_epoch is not None and math.isfinite(batches_per_epoch) and accumulate >= 1:
        steps = math.ceil(batches_per_epoch / accumulate)
    return plan_epochs(max_epochs, max_steps, steps)

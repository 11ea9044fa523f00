"""Optuna studies as searches (``pip install "green-callbacks[optuna]"``).

::

    import optuna
    from green_callbacks.lightning import GreenCallback
    from green_callbacks.optuna import GreenStudyCallback, green_objective

    @green_objective                        # each trial's runs know their trial
    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trainer = Trainer(callbacks=[GreenCallback()], ...)   # nothing else to pass
        trainer.fit(Model(lr))
        return trainer.callback_metrics["val_loss"].item()

    study = optuna.create_study(storage="sqlite:///study.db", study_name="lr", load_if_exists=True)
    study.optimize(objective, n_trials=20, callbacks=[GreenStudyCallback(budget_kwh=0.5)])

What each piece does:

* :func:`green_objective` binds every run started inside the objective to its trial
  (:mod:`green_callbacks.core.trial`): the record's ``search`` section says the study, the trial number, the
  params' distributions (from ``trial.distributions``: those suggested before the callback's fit began), the
  sampler (``type(study.sampler).__name__``: Optuna does not store it) and how the trial ended (``complete``,
  ``pruned`` for a ``TrialPruned`` raised inside the fit, ``failed``); and when the run ends — still inside the
  objective, as Optuna refuses updates to a finished trial — its totals are set as the trial's user attributes
  (``green_energy_j``, ``green_energy_kwh``, ``green_emissions_gco2e``, ``green_train_flops``, ... see
  :meth:`~green_callbacks.core.trial.TrialOutcome.attributes`), so they show in Optuna's dashboard and
  ``study.trials_dataframe()``. Several runs in one trial: the last one's totals win.
* :func:`green_search` is the same identity as a value, for ``GreenCallback(search=green_search(trial))`` without
  the wrapper (no user attributes then).
* :class:`GreenStudyCallback` (``study.optimize(callbacks=[...])``) keeps the search's running totals, read from the
  study's storage (so several worker processes on one SQLite / RDB / journal storage make one search, each trial
  counted once, by its trial id), and stops the study when an energy or emissions budget for the whole search
  would be exceeded by the next trial (projected at the mean of the measured trials so far, the trials other
  workers are running counted at that mean too), saying so once.
* HF ``Trainer.hyperparameter_search(backend="optuna")``: the Trainer's own trial (``trainer._trial``) is read at
  each ``train()``, so the records and user attributes come without the wrapper. (HF ends a pruned trial with
  ``on_train_end`` before it raises ``TrialPruned``: the adapter ends such a run when ``train()`` raises, so its
  record says ``pruned`` too.)
* A search's cost (:func:`trial_cost_j`, :func:`search_totals`) is each trial's totals (complete epochs) plus its
  epoch cut short (``green_partial_epoch_energy_j``: a Lightning trial pruned in its validation), as the report
  counts it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.trial import TrialOutcome, bound
from green_callbacks.core.wording import warn_user

__all__ = ["GreenStudyCallback", "OptunaTrial", "SearchTotals", "green_objective", "green_search", "search_totals",
           "trial_cost_j"]

_HINT = 'pip install "green-callbacks[optuna]"'
J_PER_KWH = 3.6e6


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ImportError(f"green_callbacks.optuna needs optuna: {_HINT}") from err
    return optuna


def _space(distribution: Any) -> dict[str, Any] | None:
    """One Optuna distribution as a ``search=`` space entry (``None`` for one this version does not know)."""
    name = type(distribution).__name__
    if name == "CategoricalDistribution":
        choices = [c if c is None or isinstance(c, (str, bool, int, float)) else str(c) for c in distribution.choices]
        return {"distribution": "categorical", "choices": choices}
    if name in ("FloatDistribution", "IntDistribution"):
        entry: dict[str, Any] = {"distribution": "log" if distribution.log else "linear",
                                 "low": distribution.low, "high": distribution.high}
        step = getattr(distribution, "step", None)
        if step is not None and not (name == "IntDistribution" and step == 1):
            entry["step"] = step
        return entry
    return None


def green_search(trial: Any, *, name: str | None = None) -> dict[str, Any]:
    """The ``search=`` value of an Optuna ``trial``: study name (or ``name``), ``engine="optuna"``, the sampler,
    the trial number and the distributions of the params suggested so far."""
    study = trial.study
    space = {param: entry for param, d in trial.distributions.items() if (entry := _space(d)) is not None}
    out: dict[str, Any] = {"name": name or study.study_name, "engine": "optuna",
                           "method": type(study.sampler).__name__, "trial": int(trial.number)}
    if space:
        out["space"] = space
    return out


class OptunaTrial:
    """The :class:`~green_callbacks.core.trial.TrialBinding` of a live Optuna ``Trial``."""

    def __init__(self, trial: Any, name: str | None = None) -> None:
        self.trial = trial
        self.name = name

    def identity(self) -> dict[str, Any] | None:
        if getattr(self.trial, "study", None) is None:  # a FixedTrial (HF's other DDP ranks): no study
            return None
        return green_search(self.trial, name=self.name)

    def finished(self, outcome: TrialOutcome) -> None:
        for key, value in outcome.attributes().items():
            self.trial.set_user_attr(key, value)


def binding_for(trial: Any) -> OptunaTrial | None:
    """The binding of a live Optuna ``Trial`` a framework holds (HF's ``trainer._trial``), else ``None``."""
    optuna = _optuna()
    return OptunaTrial(trial) if isinstance(trial, optuna.trial.Trial) else None


def green_objective(func: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Wrap an objective so that the runs inside each trial are bound to it (``@green_objective`` or
    ``green_objective(objective, name="lr-study")``; ``name`` overrides the study's name in the records)."""
    if func is None:
        return functools.partial(green_objective, name=name)

    @functools.wraps(func)
    def objective(trial: Any, *args: Any, **kwargs: Any) -> Any:
        with bound(OptunaTrial(trial, name)):
            return func(trial, *args, **kwargs)

    return objective


# ---------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class SearchTotals:
    """A study's finished trials and what their runs measured (user attributes set by :class:`OptunaTrial`)."""

    trials: int
    """Finished trials (complete, pruned, failed)."""
    measured: int
    """Of those, trials with a measured energy."""
    pruned: int
    failed: int
    running: int
    """Trials still running (in any worker)."""
    energy_j: float | None
    """The search's cost: each trial's totals plus its epoch cut short, if any (:func:`trial_cost_j`)."""
    emissions_gco2e: float | None
    """The trials' totals (complete epochs: an epoch cut short has no emissions figure of its own)."""
    train_flops: float | None

    @property
    def mean_energy_j(self) -> float | None:
        return None if self.energy_j is None or not self.measured else self.energy_j / self.measured


def _sum(values: list[Any]) -> float | None:
    known = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
             and math.isfinite(float(v))]
    return math.fsum(known) if known else None


def trial_cost_j(attrs: dict[str, Any]) -> float | None:
    """A trial's energy in the search's cost, from its user attributes: ``green_energy_j`` (the record's totals,
    complete epochs) plus ``green_partial_epoch_energy_j`` (an epoch cut short, e.g. pruned in its validation), as
    the report counts it; ``None`` when neither was measured."""
    return _sum([attrs.get("green_energy_j"), attrs.get("green_partial_epoch_energy_j")])


def search_totals(study: Any) -> SearchTotals:
    """The totals of ``study`` as its storage holds them (every worker's trials, each once); the energy is the
    search's cost (:func:`trial_cost_j`: epochs cut short by pruning included)."""
    state = _optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (state.COMPLETE, state.PRUNED, state.FAIL)]
    attrs = [t.user_attrs for t in done]
    energy = [trial_cost_j(a) for a in attrs]
    return SearchTotals(
        trials=len(done),
        measured=sum(1 for e in energy if e is not None),
        pruned=sum(1 for t in done if t.state == state.PRUNED),
        failed=sum(1 for t in done if t.state == state.FAIL),
        running=sum(1 for t in trials if t.state == state.RUNNING),
        energy_j=_sum(energy),
        emissions_gco2e=_sum([a.get("green_emissions_gco2e") for a in attrs]),
        train_flops=_sum([a.get("green_train_flops") for a in attrs]),
    )


def _budget(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (the whole search's budget), got {value!r}")
    return float(value)


class GreenStudyCallback:
    """``study.optimize(..., callbacks=[GreenStudyCallback(budget_kwh=..., budget_gco2e=...)])``.

    After each finished trial: :attr:`totals` (:class:`SearchTotals`) from the study's storage; with a budget, the
    study stops (``study.stop()``, this worker's loop; other workers reach the same decision after their trial)
    when the energy (kWh, before PUE) or emissions (gCO2e) spent, plus the next trial and the trials running
    elsewhere each at the mean of the measured trials so far, would exceed it. One warning says so.
    """

    def __init__(self, *, budget_kwh: float | None = None, budget_gco2e: float | None = None) -> None:
        self.budget_kwh = _budget(budget_kwh, "budget_kwh")
        self.budget_gco2e = _budget(budget_gco2e, "budget_gco2e")
        self.totals: SearchTotals | None = None
        self.stop_reason: str | None = None

    def __call__(self, study: Any, trial: Any) -> None:
        totals = self.totals = search_totals(study)
        reason = self._exceeds(totals)
        if reason is None:
            return
        if self.stop_reason is None:
            self.stop_reason = reason
            warn_user(f"green_callbacks: stopping study {study.study_name!r}: {reason}")
        study.stop()

    def _exceeds(self, totals: SearchTotals) -> str | None:
        if not totals.measured:
            return None
        ahead = 1 + totals.running  # the next trial, and those running in other workers
        checks = (("energy", self.budget_kwh, totals.energy_j, J_PER_KWH, "kWh"),
                  ("emissions", self.budget_gco2e, totals.emissions_gco2e, 1.0, "gCO2e"))
        for what, budget, spent, unit, label in checks:
            if budget is None or spent is None:
                continue
            mean = spent / totals.measured
            projected = (spent + ahead * mean) / unit
            if projected > budget:
                return (f"the search's {what} would exceed its budget of {budget:g} {label} "
                        f"({spent / unit:.4g} {label} spent in {totals.trials} trial(s), "
                        f"{ahead} more at the mean {mean / unit:.4g} {label} each would make {projected:.4g} {label})")
        return None


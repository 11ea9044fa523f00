"""The search trial a run is part of, as the search engine that runs it knows it.

A run started inside a search engine's trial (an Optuna objective wrapped by
:func:`green_callbacks.optuna.green_objective`, a Ray Tune trainable, a W&B sweep agent's run, HF
``Trainer.hyperparameter_search``) is *bound* to that trial: a :class:`TrialBinding` gives the record's search
identity (the ``search=`` mapping of :mod:`green_callbacks.core.search`: study, trial number, params' distributions,
sampler) and, when the run ends, receives its totals (:class:`TrialOutcome`) to hand to the engine through the
engine's own channels (Optuna user attributes, a Ray trial's folder). Nothing here imports a search engine.

Where the binding comes from, in order: the one the adapter passes (the HF Trainer's trial), the one set around
the user's code (:func:`bound`, a context variable: each thread or task sees its own), then the detectors
registered from outside the core (:func:`register_detector`, :func:`register_adapter`; ``green_callbacks._engines``
registers those of Optuna, Ray Tune and W&B sweeps, each importing its engine only when the process already uses
it). What the user passed as ``search=`` wins key by key over what the engine says.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from green_callbacks.core.guard import Guard
from green_callbacks.core.search import normalize_search

__all__ = [
    "TrialBinding",
    "TrialLink",
    "TrialOutcome",
    "binding_for",
    "bound",
    "current",
    "final_state",
    "merged_search",
    "outcome_of",
    "register_adapter",
    "register_detector",
    "with_state",
]

PRUNED_ERRORS = ("TrialPruned",)
"""Exception class names that end a trial as *pruned* (Optuna's ``TrialPruned``; Ray's schedulers stop a trial
without an exception in it)."""


@dataclass(frozen=True)
class TrialOutcome:
    """A bound run's end, as its record says it (global rank zero's totals: energy before PUE, emissions after).

    The totals are those of the record's completed epochs (what the report sums); ``partial_epoch_energy_j`` is the
    measured energy of an epoch cut short (a pruned trial stopped in its validation), on this process only."""

    state: str
    """``complete``, ``pruned`` or ``failed``."""
    status: str
    error: str | None
    epochs: int
    energy_j: float | None
    emissions_gco2e: float | None
    train_flops: float | None
    eval_flops: float | None
    time_s: float | None
    partial_epoch_energy_j: float | None
    record_path: str | None

    def attributes(self) -> dict[str, Any]:
        """The outcome as flat, JSON-safe attributes named ``green_<what>_<unit>`` (Optuna user attributes, Ray
        results): numbers are floats or ``None`` (not measured), never a silent 0."""
        return {
            "green_state": self.state,
            "green_epochs": self.epochs,
            "green_energy_j": self.energy_j,
            "green_energy_kwh": None if self.energy_j is None else self.energy_j / 3.6e6,
            "green_emissions_gco2e": self.emissions_gco2e,
            "green_train_flops": self.train_flops,
            "green_eval_flops": self.eval_flops,
            "green_time_s": self.time_s,
            "green_partial_epoch_energy_j": self.partial_epoch_energy_j,
            "green_record": self.record_path,
        }


class TrialBinding(Protocol):
    """What a search engine's module gives for the trial a run belongs to."""

    def identity(self) -> Mapping[str, Any] | None:
        """The search identity (``name``, ``engine``, ``method``, ``trial``, ``space``), or ``None``."""

    def finished(self, outcome: TrialOutcome) -> None:
        """The run ended: hand its totals to the engine (called once, by global rank zero, in the run's thread)."""


_CURRENT: contextvars.ContextVar[TrialBinding | None] = contextvars.ContextVar("green_callbacks_trial", default=None)
_DETECTORS: list[Callable[[], TrialBinding | None]] = []
_ADAPTERS: list[Callable[[Any], TrialBinding | None]] = []


@contextmanager
def bound(binding: TrialBinding | None) -> Iterator[TrialBinding | None]:
    """Runs started inside the ``with`` block (in this thread or task) belong to ``binding``'s trial."""
    token = _CURRENT.set(binding)
    try:
        yield binding
    finally:
        _CURRENT.reset(token)


def register_detector(detector: Callable[[], TrialBinding | None]) -> None:
    """An engine module's look-up of the trial running here (no binding set): called at each run's start."""
    if detector not in _DETECTORS:
        _DETECTORS.append(detector)


def register_adapter(adapter: Callable[[Any], TrialBinding | None]) -> None:
    """An engine module's reading of a framework's trial object (the HF Trainer's ``_trial``)."""
    if adapter not in _ADAPTERS:
        _ADAPTERS.append(adapter)


def binding_for(trial: Any) -> TrialBinding | None:
    """A binding for a trial object a framework holds (an Optuna ``Trial``), or ``None`` when none reads it."""
    if trial is None:
        return None
    for adapter in _ADAPTERS:
        found = adapter(trial)
        if found is not None:
            return found
    return None


def current(trial: Any = None) -> TrialBinding | None:
    """The trial a run starting now belongs to: ``trial`` (a framework's trial object), the bound one, or one a
    registered detector finds (``None``: not part of a search engine's trial)."""
    binding = binding_for(trial) or _CURRENT.get()
    if binding is not None:
        return binding
    for detect in _DETECTORS:
        found = detect()
        if found is not None:
            return found
    return None


def final_state(status: str, error: str | None) -> str:
    """``complete``, ``pruned`` (an engine's pruning exception ended the run) or ``failed``."""
    if error and error.split(":", 1)[0].strip().rsplit(".", 1)[-1] in PRUNED_ERRORS:
        return "pruned"
    return "complete" if status == "completed" else "failed"


def merged_search(declared: Mapping[str, Any] | None, binding: TrialBinding | None) -> dict[str, Any] | None:
    """The record's search section: the engine's identity, with what the user declared (``search=``) on top."""
    found = None if binding is None else binding.identity()
    if not found:
        return None if declared is None else dict(declared)
    merged = {**normalize_search(found), **(declared or {})}
    if "method" in merged:
        merged.pop("sampler", None)
    return normalize_search(merged)


def outcome_of(session: Any) -> TrialOutcome:
    """The :class:`TrialOutcome` of a finished :class:`~green_callbacks.core.session.Session`."""
    totals = session.totals
    partial = session.partial_epoch
    path = session.record_path
    return TrialOutcome(
        state=final_state(session.status, session.error), status=session.status, error=session.error,
        epochs=session.epochs_done, energy_j=totals.energy_j, emissions_gco2e=totals.emissions_gco2e,
        train_flops=totals.train_flops, eval_flops=totals.eval_flops, time_s=totals.time_s,
        partial_epoch_energy_j=None if partial is None else partial.energy_j,
        record_path=None if path is None else str(path))


def with_state(search: Mapping[str, Any] | None, status: str, error: str | None) -> dict[str, Any] | None:
    """The search section at the run's end: its ``state`` from how the run ended, unless one was declared."""
    if search is None or search.get("state"):
        return None if search is None else dict(search)
    return {**search, "state": final_state(status, error)}


class TrialLink:
    """A fit's tie to its search engine's trial: the record's search section from the start, how the trial ended
    in it at the end, and the run's totals handed back to the engine. Every call runs under ``guard``'s
    ``"search"`` part: a failing engine loses the link, never the run.

    Args:
        declared: what the user passed as ``search=`` (wins key by key over the engine's identity).
    """

    def __init__(self, declared: Mapping[str, Any] | None, guard: Guard) -> None:
        self.declared = declared
        self.guard = guard
        self.binding: TrialBinding | None = None
        self.search: dict[str, Any] | None = None if declared is None else dict(declared)
        """The record's search section: ``search=`` merged with the engine's trial."""

    def bind(self, trial: Any = None) -> None:
        """The run starts: find its trial (``trial``: the framework's trial object; else :func:`current`)."""
        self.binding = self.guard.call("search", current, trial)
        self.search = self.guard.call("search", merged_search, self.declared, self.binding) or self.declared

    def ended(self, status: str, error: str | None) -> None:
        """The run ended with ``status``: a bound run's search section says how (pruned included)."""
        if self.binding is not None:
            self.search = with_state(self.search, status, error)

    def hand_back(self, session: Any, *, speak: bool) -> None:
        """Give the engine the finished run's totals (:func:`outcome_of`; ``speak``: global rank zero only)."""
        binding = self.binding
        if binding is not None and speak:
            self.guard.call("search", lambda: binding.finished(outcome_of(session)))

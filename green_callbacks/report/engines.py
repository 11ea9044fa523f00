"""A search as its engine keeps it, joined with the records: ``green-callbacks report --optuna-storage URL --study
NAME`` or ``--ray-experiment DIR``.

The records say what each measured trial spent; only the engine knows every trial it ran. Reading the engine's own
data (an Optuna study from its storage: an RDB URL such as ``sqlite:///study.db``, or a journal file; a Ray Tune
experiment folder, through ``ExperimentAnalysis``, without starting Ray) gives the trials that have no record — a
trial that failed before its run began (the record is written when the fit starts), or ran without the callback —
so the report counts them as such instead of not seeing them, and the end state of each recorded trial is the
engine's (a trial whose process died is ``failed`` there, whatever its last record says).

A record belongs to a trial by the identity it carries (:mod:`green_callbacks.core.trial`): Optuna, the study name
and trial number (``search.name``, ``search.trial``, ``engine: optuna``); Ray, the trial id (``engine: ray``).
Nothing here writes to the storage or the folder. Optuna and Ray are imported only when asked for; without them, or
when the study or folder is not there, :class:`EngineError` says so in one line (the command exits 2).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from green_callbacks.report.runs import LoadResult, RunSummary

__all__ = ["EngineError", "EngineJoin", "EngineSearch", "EngineTrial", "engine_notes", "join_engine", "join_engines",
           "read_engines", "read_optuna", "read_ray"]

_OPTUNA_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
                  "WAITING": "waiting"}
_RAY_STATES = {"TERMINATED": "complete", "ERROR": "failed", "RUNNING": "running", "PENDING": "waiting",
               "PAUSED": "waiting"}
_ENDS = ("complete", "pruned", "failed")


class EngineError(Exception):
    """The engine's data cannot be read: one line saying what and how to fix it."""


@dataclass(frozen=True)
class EngineTrial:
    """One trial as the engine lists it."""

    key: int | str
    """Optuna's trial number, or Ray's trial id."""
    state: str
    """``complete``, ``pruned``, ``failed``, ``running`` or ``waiting`` (Ray's ``TERMINATED`` is ``complete``: a
    trial a scheduler stopped early ends that way too)."""


@dataclass(frozen=True)
class EngineSearch:
    """A study or experiment as its engine keeps it."""

    engine: str
    """``optuna`` or ``ray``."""
    name: str
    """The study's name, or the experiment's (its folder's name)."""
    source: str
    """What was read (the storage, or the folder)."""
    trials: tuple[EngineTrial, ...]

    @property
    def noun(self) -> str:
        return "study" if self.engine == "optuna" else "experiment"


def read_optuna(storage: str, study: str) -> EngineSearch:
    """The trials of ``study`` in ``storage``: an RDB URL (``sqlite:///study.db``, ``postgresql://...``) or the path
    of a journal file (``JournalFileBackend``), read as Optuna's own command line reads them. Nothing is created:
    a SQLite file that is not there is an error, not a new database."""
    try:
        import optuna
    except ImportError:
        raise EngineError('--optuna-storage needs optuna: pip install "green-callbacks[optuna]"') from None
    where = str(storage)
    try:
        if os.path.isfile(where):
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            backend: Any = JournalStorage(JournalFileBackend(where))
        else:
            if "://" not in where:
                raise EngineError(f"no Optuna storage at {where}: neither a journal file nor a database URL (give "
                                  "--optuna-storage a journal file's path, or a URL such as sqlite:///study.db)")
            if where.startswith("sqlite:///") and not os.path.isfile(where[len("sqlite:///"):]):
                raise EngineError(f"no Optuna storage at {where}: the SQLite file {where[len('sqlite:///'):]} does "
                                  "not exist (give the URL the study was created with, or a journal file's path)")
            backend = optuna.storages.RDBStorage(where, skip_table_creation=True)
        names = optuna.get_all_study_names(backend)
        if study not in names:
            known = ", ".join(repr(n) for n in names[:10]) or "none"
            raise EngineError(f"no study {study!r} in the Optuna storage {where} (its studies: {known}); give "
                              "--study one of them")
        loaded = optuna.load_study(study_name=study, storage=backend)
        trials = loaded.get_trials(deepcopy=False)
    except EngineError:
        raise
    except Exception as err:  # sqlalchemy, a corrupt journal, a URL no driver reads
        text = " ".join(str(err).split())[:200]
        raise EngineError(f"cannot read the Optuna storage {where}: {type(err).__name__}: {text}") from None
    out = tuple(EngineTrial(int(t.number), _OPTUNA_STATES.get(t.state.name, t.state.name.lower())) for t in trials)
    return EngineSearch(engine="optuna", name=study, source=where, trials=out)


def read_ray(folder: str | os.PathLike[str]) -> EngineSearch:
    """The trials of the Ray Tune experiment in ``folder`` (``storage_path/name``: the one holding
    ``experiment_state-*.json``), read with Tune's ``ExperimentAnalysis`` (Ray is not started)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise EngineError(f"no Ray experiment folder at {folder}: give --ray-experiment the folder "
                          "storage_path/name of the experiment (the one holding experiment_state-*.json)")
    if not any(path.glob("experiment_state-*.json")):
        raise EngineError(f"{folder} is not a Ray Tune experiment folder (no experiment_state-*.json in it): give "
                          "--ray-experiment the folder storage_path/name of the experiment")
    try:
        from ray.tune import ExperimentAnalysis
    except ImportError:
        raise EngineError('--ray-experiment needs Ray Tune: pip install "green-callbacks[ray]"') from None
    try:
        analysis = ExperimentAnalysis(str(path.resolve()))
        trials = [(str(t.trial_id), str(t.status)) for t in analysis.trials]
    except Exception as err:  # a snapshot of another Ray version, a torn file
        text = " ".join(str(err).split())[:200]
        raise EngineError(f"cannot read the Ray experiment in {folder}: {type(err).__name__}: {text}") from None
    out = tuple(EngineTrial(key, _RAY_STATES.get(status, status.lower())) for key, status in sorted(trials))
    return EngineSearch(engine="ray", name=path.resolve().name, source=str(folder), trials=out)


@dataclass(frozen=True)
class EngineJoin:
    """The engine's trials against the records read."""

    search: EngineSearch
    recorded: int
    """Trials of the engine with at least one record."""
    missing: tuple[EngineTrial, ...]
    """Trials of the engine without a record: their energy was not measured."""
    runs: tuple[RunSummary, ...]
    """The records matched to a trial (with the engine's end state)."""

    def sentence(self) -> str:
        """What the report says: the trials, those with a record, and those without one by state."""
        search = self.search
        text = (f"{len(search.trials)} trial(s) in the {search.engine} {search.noun} {search.name!r}, "
                f"{self.recorded} with a record")
        if not self.missing:
            return text + "."
        states = Counter(t.state for t in self.missing)
        order = [s for s in ("failed", "pruned", "complete", "running", "waiting") if s in states]
        order += sorted(s for s in states if s not in order)
        parts = ", ".join(f"{states[s]} {s}" for s in order)
        why = []
        if states.get("failed"):
            why.append("a failed trial without a record failed before its run began")
        if any(states.get(s) for s in ("complete", "pruned")):
            why.append("a finished one ran without the callback, or its record is elsewhere")
        if any(states.get(s) for s in ("running", "waiting")):
            why.append("a running or waiting one has not started its run yet")
        return (f"{text}; without one: {parts} — their energy was not measured and is not in the search's cost "
                f"({'; '.join(why)}).")


def _key_of(run: RunSummary, search: EngineSearch) -> int | str | None:
    """The engine trial a run's record names, or ``None`` when it names another search."""
    info = None if run.record is None else run.record.search
    if info is None or info.engine != search.engine or info.trial is None:
        return None
    if search.engine == "optuna":
        return info.trial if info.name == search.name and isinstance(info.trial, int) else None
    return str(info.trial)


def _with_state(run: RunSummary, state: str) -> RunSummary:
    """``run`` with its record's search ``state`` set to ``state`` (the engine's)."""
    record = run.record
    return dataclasses.replace(run, record=dataclasses.replace(
        record, search=dataclasses.replace(record.search, state=state)))


def join_engine(loaded: LoadResult, search: EngineSearch) -> tuple[LoadResult, EngineJoin]:
    """The records read, each trial's end state taken from the engine (Optuna's state; Ray's ``ERROR`` — Ray's
    ``TERMINATED`` does not tell a trial a scheduler stopped from a complete one, so the record's state stays),
    and the join: how many of the engine's trials have a record, and which have none."""
    by_key = {t.key: t for t in search.trials}
    runs: list[RunSummary] = []
    matched: list[RunSummary] = []
    seen: set[int | str] = set()
    for run in loaded.runs:
        key = _key_of(run, search)
        trial = None if key is None else by_key.get(key)
        if trial is not None:
            seen.add(trial.key)
            engine_decides = trial.state in _ENDS and (search.engine == "optuna" or trial.state == "failed")
            if engine_decides and run.record.search.state != trial.state:
                run = _with_state(run, trial.state)
            matched.append(run)
        runs.append(run)
    missing = tuple(t for t in search.trials if t.key not in seen)
    joined = EngineJoin(search=search, recorded=len(seen), missing=missing, runs=tuple(matched))
    return dataclasses.replace(loaded, runs=tuple(runs)), joined


def engine_notes(joins: Sequence[EngineJoin], members: Sequence[Sequence[RunSummary]]) -> tuple[
        dict[int, str], list[str]]:
    """Which search (by index in ``members``) each join's sentence goes to — the search holding its records —
    and the sentences of joins whose records form no search analysed (said beside the searches)."""
    placed: dict[int, str] = {}
    alone: list[str] = []
    for joined in joins:
        ids = {id(r) for r in joined.runs}
        index = next((i for i, group in enumerate(members) if any(id(r) in ids for r in group)), None)
        if index is None:
            alone.append(joined.sentence())
        else:
            placed[index] = " ".join(x for x in (placed.get(index), joined.sentence()) if x)
    return placed, alone


def read_engines(optuna_storage: str | None, study: str | None, ray_experiment: str | None) -> list[EngineSearch]:
    """The searches the command line names (``--optuna-storage`` with ``--study``, ``--ray-experiment``)."""
    out = []
    if (optuna_storage is None) != (study is None):
        raise EngineError("--optuna-storage and --study go together: the storage's URL (or journal file) and the "
                          "name of the study in it")
    if optuna_storage is not None and study is not None:
        out.append(read_optuna(optuna_storage, study))
    if ray_experiment is not None:
        out.append(read_ray(ray_experiment))
    return out


def join_engines(loaded: LoadResult, searches: Sequence[EngineSearch]) -> tuple[LoadResult, tuple[EngineJoin, ...]]:
    """:func:`join_engine` for each search in turn."""
    joins = []
    for search in searches:
        loaded, joined = join_engine(loaded, search)
        joins.append(joined)
    return loaded, tuple(joins)

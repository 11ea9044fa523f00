"""Ray Tune experiments as searches (``pip install "green-callbacks[ray]"``).

::

    from ray import tune
    from green_callbacks.loop import Tracker          # or a GreenCallback inside the trainable's fit
    from green_callbacks.ray import GreenTuneCallback

    def trainable(config):
        tracker = Tracker(hyperparameters=config,    # bound to its Tune trial by itself; search= adds what
                          search={"name": "lr", "method": "random",   # Tune does not tell a trial
                                  "space": {"lr": "log"}})
        with tracker:
            for epoch in range(3):
                with tracker.epoch() as ep:
                    ...
                    ep.metrics["loss"] = loss
                tune.report({"loss": loss, **tracker.last_metrics})   # optional: green/ keys in the results

    green = GreenTuneCallback()
    tuner = tune.Tuner(trainable, param_space={"lr": tune.loguniform(1e-4, 1e-1)},
                       tune_config=tune.TuneConfig(num_samples=4),
                       run_config=tune.RunConfig(name="lr", storage_path="/shared/ray", callbacks=[green]))
    results = tuner.fit()        # each result has green_energy_j, green_emissions_gco2e; green.totals the sums

What happens where (Ray is the distributed engine; nothing of ours schedules or moves files across machines):

* **In the trainable** (a Ray worker, any node): a run started inside a Tune trial (a ``GreenCallback`` fit or a
  ``Tracker``) finds the trial by itself (:func:`detect`, through Ray's session): its record's search is
  ``{"name": <experiment>, "engine": "ray", "trial": <trial id>}``, with what ``search=`` says on top (the method
  and space: Tune does not tell a trial its search space; a ``name`` there replaces the experiment's). When the
  run ends, its final record is copied into the trial's folder of the experiment's storage through Ray's own
  storage filesystem (local, NFS or cloud), since Ray does not sync a trial's working-directory artifacts by
  default; the experiment folder then holds one record per run.
* **In the driver**, :class:`GreenTuneCallback` adds ``green_energy_j`` and ``green_emissions_gco2e`` to each
  trial's results (from the ``green/total_*`` keys the trainable reported, else from the record in the trial's
  folder; ``ResultGrid`` and the loggers after it see them — schedulers see results before callbacks do, so
  they see only what the trainable reported), and keeps the experiment's totals (:attr:`GreenTuneCallback.totals`,
  each trial once, by its id, failed trials included).
* **Ray Train** (``TorchTrainer``, the Lightning trainer; :class:`RayTrainRun`): the workers' parts are summed over
  ``torch.distributed``, which Ray Train sets up, so rank 0's metrics (the only ones Ray keeps) are the run's; rank
  0's record is copied into the run's folder.
* Not measured: a Ray worker's idle time between trials, and Ray's own processes (raylet, GCS, the driver).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from green_callbacks.core.record import RECORD_GLOB
from green_callbacks.core.trial import TrialOutcome

_HINT = 'pip install "green-callbacks[ray]"'

try:
    from ray.tune import Callback
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(f"green_callbacks.ray needs Ray Tune: {_HINT}") from err

__all__ = ["ExperimentTotals", "GreenTuneCallback", "RayTrainRun", "RayTrial", "detect"]

J_PER_KWH = 3.6e6


def _session() -> Any:
    """Ray's session of the trainable running in this worker, or ``None`` outside one (no warning)."""
    try:
        from ray.train._internal.session import get_session
    except ImportError:
        return None
    return get_session()


class RayTrial:
    """The :class:`~green_callbacks.core.trial.TrialBinding` of the Tune trial this worker runs."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def identity(self) -> dict[str, Any] | None:
        info = getattr(self.session, "trial_info", None)
        name = getattr(info, "experiment_name", None)
        trial = getattr(info, "id", None)
        if not name:
            return None
        out: dict[str, Any] = {"name": str(name), "engine": "ray"}
        if trial:
            out["trial"] = str(trial)
        return out

    def finished(self, outcome: TrialOutcome) -> None:
        """Copy the final record into the trial's folder of the experiment's storage (Ray's filesystem)."""
        storage = self.session.storage
        _copy_record(outcome, storage.storage_filesystem, storage.trial_fs_path)


def _train_context() -> Any:
    """Ray Train's (V2) context of the training function running in this worker, or ``None`` outside one."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return None
    return getattr(context, "_train_context", None)


class RayTrainRun:
    """The :class:`~green_callbacks.core.trial.TrialBinding` of a Ray Train run (``TorchTrainer``, the Lightning
    trainer): every worker's callback measures its own part and the adapters sum them over the ranks with the
    framework's collective (only global rank zero writes, and only rank 0's metrics reach Tune); the run's record
    is copied into the run's folder of its storage."""

    def __init__(self, context: Any) -> None:
        self.context = context

    def identity(self) -> dict[str, Any] | None:
        name = self.context.get_experiment_name()
        return {"name": str(name), "engine": "ray"} if name else None

    def finished(self, outcome: TrialOutcome) -> None:
        storage = self.context.get_storage()
        _copy_record(outcome, storage.storage_filesystem, storage.experiment_fs_path)


def _copy_record(outcome: TrialOutcome, fs: Any, folder: str) -> None:
    """Copy the final record into ``folder`` of the storage filesystem ``fs`` (unless it is written there)."""
    if outcome.record_path is None or not Path(outcome.record_path).is_file():
        return
    source = Path(outcome.record_path)
    local = Path(folder)
    if local.is_dir() and source.resolve().is_relative_to(local.resolve()):
        return  # written there already
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(f"{folder}/{source.name}") as out:
        out.write(source.read_bytes())


def detect() -> RayTrial | RayTrainRun | None:
    """The Tune trial (or the Ray Train run) running in this worker; ``None`` in the driver or outside Ray."""
    session = _session()
    if session is not None and getattr(session, "trial_info", None) is not None:
        return RayTrial(session)
    context = _train_context()
    return None if context is None else RayTrainRun(context)


# ---------------------------------------------------------------------------------------------- the driver
@dataclass(frozen=True)
class ExperimentTotals:
    """The trials seen so far and what their runs measured (each trial once)."""

    trials: int
    measured: int
    energy_j: float | None
    emissions_gco2e: float | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def _cost_j(record: dict[str, Any]) -> float | None:
    """A record's energy in the search's cost: its totals plus an epoch cut short (as the report counts it)."""
    known = [v for v in (_number((record.get("totals") or {}).get("energy_j")),
                         _number((record.get("partial_epoch") or {}).get("energy_j"))) if v is not None]
    return math.fsum(known) if known else None


def _records_of(trial: Any) -> list[dict[str, Any]]:
    """The records in the trial's folder of the experiment's storage."""
    storage = getattr(trial, "storage", None)
    if storage is None:
        return []
    from pyarrow.fs import FileSelector, FileType

    fs = storage.storage_filesystem
    try:
        infos = fs.get_file_info(FileSelector(storage.trial_fs_path, recursive=False))
    except (FileNotFoundError, OSError):
        return []
    out = []
    for info in infos:
        if info.type == FileType.File and Path(info.path).match(RECORD_GLOB):
            with fs.open_input_stream(info.path) as handle:
                try:
                    out.append(json.loads(handle.read().decode("utf-8")))
                except ValueError:
                    continue
    return out


class GreenTuneCallback(Callback):
    """The driver side of a Tune experiment (``RunConfig(callbacks=[GreenTuneCallback()])``): adds
    ``green_energy_j`` and ``green_emissions_gco2e`` to each trial's results and keeps the experiment's
    :attr:`totals`; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: dict[str, dict[str, float | None]] = {}
        """Per trial id: its ``green_energy_j`` and ``green_emissions_gco2e`` as last known."""

    @property
    def totals(self) -> ExperimentTotals:
        energy = [t["green_energy_j"] for t in self.trials.values() if t.get("green_energy_j") is not None]
        grams = [t["green_emissions_gco2e"] for t in self.trials.values() if t.get("green_emissions_gco2e") is not None]
        return ExperimentTotals(trials=len(self.trials), measured=len(energy),
                                energy_j=math.fsum(energy) if energy else None,
                                emissions_gco2e=math.fsum(grams) if grams else None)

    def _from_records(self, trial: Any) -> dict[str, float | None]:
        records = _records_of(trial)
        energy = [_cost_j(r) for r in records]
        grams = [_number((r.get("totals") or {}).get("emissions_gco2e")) for r in records]
        known = [e for e in energy if e is not None]
        known_g = [g for g in grams if g is not None]
        return {"green_energy_j": math.fsum(known) if known else None,
                "green_emissions_gco2e": math.fsum(known_g) if known_g else None}

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        kwh = _number(result.get("green/total_energy_kwh"))
        figures = {"green_energy_j": None if kwh is None else kwh * J_PER_KWH,
                   "green_emissions_gco2e": _number(result.get("green/total_emissions_gco2e"))}
        if figures["green_energy_j"] is None:
            figures = self._from_records(trial)
        self.trials[trial.trial_id] = figures
        result.update(figures)  # Tune lets callbacks add to the result in place (ResultGrid, loggers)

    def _ended(self, trial: Any) -> None:
        figures = self._from_records(trial)  # the final records: the whole trial, an epoch cut short included
        if figures["green_energy_j"] is None and trial.trial_id in self.trials:
            return
        self.trials[trial.trial_id] = figures
        if isinstance(getattr(trial, "last_result", None), dict):
            trial.last_result.update(figures)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial)


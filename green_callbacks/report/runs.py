"""One run record -> :class:`RunSummary`: the numbers a report shows, with what is unavailable or partial said so.

Conventions kept from the record: energy in joules before PUE, emissions in grams CO2e after PUE, ``None`` for a
value that was not measured (never shown as 0). Two silent-zero traps of the record are handled here:

* an epoch's ``energy_j`` is the sum of the components that *were* measured, so a run whose GPU was unavailable
  has a CPU-only total; :attr:`RunSummary.energy_partial` says so;
* ``totals.train_flops`` is 0.0 when FLOPs were not counted; the epoch rows' ``None`` decide instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from green_callbacks.core.record import RecordError, find_records, read_record
from green_callbacks.report.inference import is_phase_record

__all__ = [
    "ComponentSummary",
    "ConvergenceSummary",
    "LoadResult",
    "RunSummary",
    "load_runs",
    "summarize_run",
]


@dataclass(frozen=True)
class ComponentSummary:
    """Energy of one component over the run's complete epochs, and every method that produced it."""

    name: str
    energy_j: float | None
    """Sum over the epochs where it was measured; ``None`` when it was measured in none."""
    epochs_unavailable: int
    methods: tuple[str, ...]
    note: str = ""

    @property
    def status(self) -> str:
        """``"measured"``, ``"partial"`` (some epochs unavailable) or ``"unavailable"``."""
        if self.energy_j is None:
            return "unavailable"
        return "partial" if self.epochs_unavailable else "measured"


@dataclass(frozen=True)
class ConvergenceSummary:
    """The run's totals at the end of the best epoch of the monitored metric (and at the target, if set)."""

    monitor: str
    mode: str
    best_value: float | None
    best_epoch: int | None
    epochs: int | None
    time_s: float | None
    train_flops: float | None
    energy_j: float | None
    emissions_gco2e: float | None
    target: float | None = None
    target_epoch: int | None = None
    target_energy_j: float | None = None


@dataclass(frozen=True)
class RunSummary:
    """Everything a report prints about one run. ``record`` is the raw record (kept for the terminal summary)."""

    path: str
    run_id: str
    framework: str
    status: str
    error: str | None
    epochs: int
    time_s: float
    components: tuple[ComponentSummary, ...]
    energy_j: float | None
    energy_partial: bool
    emissions_gco2e: float | None
    intensity_gco2e_per_kwh: float | None
    intensity_source: str
    intensity_year: int | None
    location: str | None
    pue: float | None
    train_flops: float | None
    eval_flops: float | None
    train_flops_per_j: float | None
    convergence: ConvergenceSummary | None
    hyperparameters: Mapping[str, Any]
    gpu_names: tuple[str, ...]
    partial_epoch: Mapping[str, Any] | None
    lost: Mapping[str, Any]
    record: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def label(self) -> str:
        return self.run_id[:8] or Path(self.path).stem

    @property
    def complete(self) -> bool:
        return self.status == "completed"


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _components(record: Mapping[str, Any]) -> tuple[ComponentSummary, ...]:
    rows = record.get("epochs") or []
    info = record.get("components") or {}
    methods = record.get("methods") or {}
    names = list(info)
    for row in rows:
        names += [n for n in (row.get("component_energy_j") or {}) if n not in names]
    out = []
    for name in names:
        values = [_num((row.get("component_energy_j") or {}).get(name)) for row in rows]
        known = [v for v in values if v is not None]
        details = info.get(name) or {}
        note = str(details.get("reason") or details.get("note") or details.get("lost") or "")
        out.append(ComponentSummary(
            name=name,
            energy_j=sum(known) if known else None,
            epochs_unavailable=len(values) - len(known) if rows else 0,
            methods=tuple(str(m) for m in (methods.get(name) or [details.get("method", "unavailable")])),
            note=note,
        ))
    return tuple(out)


def _flops(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [_num(row.get(key)) for row in rows]
    if not values or any(v is None for v in values):
        return None
    return float(sum(v for v in values if v is not None))


def _train_flops_per_j(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Training FLOPs per joule of training energy (epoch energy minus its evaluation energy), whole run."""
    flops = _flops(rows, "train_flops")
    if flops is None:
        return None
    energy = 0.0
    for row in rows:
        total, evaluation = _num(row.get("energy_j")), _num(row.get("eval_energy_j"))
        if total is None or evaluation is None:
            return None
        energy += total - evaluation
    return flops / energy if energy > 0 else None


def _convergence(record: Mapping[str, Any], flops_counted: bool) -> ConvergenceSummary | None:
    conv = record.get("convergence") or {}
    if not conv.get("monitor"):
        return None
    best = conv.get("best") or {}
    target = conv.get("at_target") or {}
    return ConvergenceSummary(
        monitor=str(conv["monitor"]),
        mode=str(conv.get("mode") or "min"),
        best_value=_num(best.get("value")),
        best_epoch=best.get("epoch"),
        epochs=best.get("epochs"),
        time_s=_num(best.get("time_s")),
        train_flops=_num(best.get("train_flops")) if flops_counted and best else None,
        energy_j=_num(best.get("energy_j")),
        emissions_gco2e=_num(best.get("emissions_gco2e")),
        target=_num(conv.get("target")),
        target_epoch=target.get("epoch"),
        target_energy_j=_num(target.get("energy_j")),
    )


def _gpu_names(record: Mapping[str, Any]) -> tuple[str, ...]:
    gpu = (record.get("components") or {}).get("gpu") or {}
    return tuple(str(d.get("name")) for d in gpu.get("devices") or [] if d.get("name"))


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def summarize_run(record: Mapping[str, Any]) -> RunSummary:
    """The report's view of one record read by :func:`~green_callbacks.core.record.read_record`."""
    rows = list(record.get("epochs") or [])
    totals = record.get("totals") or {}
    carbon = record.get("carbon") or {}
    components = _components(record)
    flops = _flops(rows, "train_flops")
    energy = _num(totals.get("energy_j")) if rows else None
    return RunSummary(
        path=str(record.get("_path", "")),
        run_id=str(record.get("run_id") or ""),
        framework=str(record.get("framework") or "?"),
        status=str(record.get("status")),
        error=record.get("error"),
        epochs=len(rows),
        time_s=float(_num(totals.get("time_s")) or 0.0),
        components=components,
        energy_j=energy,
        energy_partial=energy is not None and any(c.status != "measured" for c in components),
        emissions_gco2e=_num(totals.get("emissions_gco2e")) if rows else None,
        intensity_gco2e_per_kwh=_num(carbon.get("intensity_gco2e_per_kwh")),
        intensity_source=str(carbon.get("source") or "unknown"),
        intensity_year=carbon.get("year"),
        location=carbon.get("location"),
        pue=_num(carbon.get("pue")),
        train_flops=flops,
        eval_flops=_flops(rows, "eval_flops"),
        train_flops_per_j=_train_flops_per_j(rows),
        convergence=_convergence(record, flops is not None),
        hyperparameters=_flatten(record.get("hyperparameters") or {}),
        gpu_names=_gpu_names(record),
        partial_epoch=record.get("partial_epoch"),
        lost=dict(record.get("lost") or {}),
        record=record,
    )


@dataclass(frozen=True)
class LoadResult:
    """The runs read, and the files skipped with the reason (corrupt, not a record, a newer schema)."""

    runs: tuple[RunSummary, ...]
    skipped: tuple[tuple[str, str], ...]


def load_runs(paths: Iterable[str | os.PathLike[str]]) -> LoadResult:
    """Read every record among ``paths`` (files, or folders searched for ``green-run-*.json``).

    A file that is not a readable record is skipped and named with the reason; a missing path raises
    ``FileNotFoundError``.
    """
    runs: list[RunSummary] = []
    skipped: list[tuple[str, str]] = []
    for path in find_records(paths):
        try:
            record = read_record(path)
            if is_phase_record(record):  # a test/predict/evaluate: the "Using the model" section shows it
                continue
            runs.append(summarize_run(record))
        except RecordError as err:
            reason = str(err)
            skipped.append((str(path), reason.removeprefix(f"{path}: ")))
    return LoadResult(tuple(runs), tuple(skipped))

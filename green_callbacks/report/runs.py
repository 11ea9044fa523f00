"""One run record -> :class:`RunSummary`: the numbers a report shows, with what is unavailable or partial said so.

Conventions kept from the record: energy in joules before PUE, emissions in grams CO2e after PUE, ``None`` for a
value that was not measured (never shown as 0). A component the run does not use (a GPU on a CPU-only run) is
``not used``, which is neither missing nor partial. Two silent-zero traps of the record are handled here:

* an epoch's ``energy_j`` is the sum of the components that *were* measured, so a run whose GPU was unavailable
  has a CPU-only total; :attr:`RunSummary.energy_partial` says so (not when the GPU is one the run does not use);
* ``totals.train_flops`` is 0.0 when FLOPs were not counted; the epoch rows' ``None`` decide instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from green_callbacks.core.record import (
    METHOD_NOT_USED,
    METHOD_UNAVAILABLE,
    RecordError,
    RunRecord,
    as_record,
    find_records,
    load_record,
    max_record_bytes,
)
from green_callbacks.core.record_sections import EpochFlopsLabel, PartialEpoch
from green_callbacks.core.rows import EpochRow
from green_callbacks.report import format as fmt
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
    not_used: bool = False
    """The run does not use this component (a GPU on a CPU-only run): nothing to measure, nothing missing."""

    @property
    def status(self) -> str:
        """``"measured"``, ``"partial"`` (some epochs unavailable), ``"unavailable"`` or ``"not used"``."""
        if self.energy_j is None:
            return "not used" if self.not_used else "unavailable"
        return "partial" if self.epochs_unavailable else "measured"

    @property
    def missing(self) -> bool:
        """Energy that the run used but that was not measured (in some or all epochs)."""
        return self.status in ("partial", "unavailable")


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
    """Everything a report prints about one run, computed from its :class:`~green_callbacks.core.record.RunRecord`."""

    path: str
    run_id: str
    framework: str
    status: str
    """The record's status (``completed``, ``failed``, ``interrupted``, ``running``), or ``pruned`` for a search
    trial its engine pruned (the record says ``failed`` with ``TrialPruned`` and ``search.state: pruned``)."""
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
    partial_epoch: PartialEpoch | None
    lost: Mapping[str, Any]
    model: str | None = None
    """The model's name where the record gives one (see :attr:`RunRecord.model`)."""
    epoch_flops: tuple[EpochFlopsLabel | None, ...] = ()
    """How each epoch's training FLOPs were obtained (``None``: the record does not say), one per epoch."""
    train_flops_method: str | None = None
    """``estimated`` or ``sampled`` when an epoch's figure is an estimate, else ``counted`` (``None``: not said)."""
    train_flops_low: float | None = None
    train_flops_high: float | None = None
    """The range the run's training FLOPs lie in when some epochs are ``sampled`` (their ranges, the other epochs'
    exact counts); ``None`` when every epoch was counted or no range is known."""
    flops_notes: tuple[str, ...] = ()
    """Why epochs are sampled or estimated, each reason once."""
    data_dependent: tuple[str, ...] = ()
    """The batch signatures whose work varied with the data for one shape."""
    train_hardware_flops: float | None = None
    """Training FLOPs the devices ran (model FLOPs plus activation checkpointing's recompute); ``None`` when an
    epoch lacks it (a record before hardware FLOPs were kept, or FLOPs not counted)."""
    record: RunRecord = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    """The validated record (also a read-only mapping of its JSON)."""

    @property
    def label(self) -> str:
        return self.run_id[:8] or Path(self.path).stem

    @property
    def complete(self) -> bool:
        return self.status == "completed"

    @property
    def recompute(self) -> bool:
        """The devices ran more than the model FLOPs (activation checkpointing): hardware FLOPs are shown apart."""
        return (self.train_hardware_flops is not None and self.train_flops is not None
                and self.train_hardware_flops != self.train_flops)

    @property
    def flops_text(self) -> str:
        """The run's training FLOPs as the report writes them, with their label and range when estimated."""
        return fmt.labelled_flops(self.train_flops, self.train_flops_method, self.train_flops_low,
                                  self.train_flops_high)


def _components(record: RunRecord) -> tuple[ComponentSummary, ...]:
    rows = record.epochs
    names = list(record.components)
    for row in rows:
        names += [n for n in row.component_energy_j if n not in names]
    out = []
    for name in names:
        values = [row.component_energy_j.get(name) for row in rows]
        known = [v for v in values if v is not None]
        info = record.components.get(name)
        methods = record.methods.get(name) or ((info.method,) if info else (METHOD_UNAVAILABLE,))
        row_methods = {row.component_method.get(name) for row in rows} - {None}
        not_used = not known and (
            (info is not None and info.not_used) or (bool(row_methods) and row_methods == {METHOD_NOT_USED}))
        out.append(ComponentSummary(
            name=name,
            energy_j=math.fsum(known) if known else None,
            epochs_unavailable=len(values) - len(known) if rows else 0,
            methods=tuple(methods),
            note=info.note if info else "",
            not_used=not_used,
        ))
    return tuple(out)


def _flops(rows: Sequence[EpochRow], key: str) -> float | None:
    values = [getattr(row, key) for row in rows]
    if not values or any(v is None for v in values):
        return None
    return math.fsum(v for v in values if v is not None)


def _train_flops_per_j(rows: Sequence[EpochRow]) -> float | None:
    """Training FLOPs per joule of training energy (epoch energy minus its evaluation energy), whole run."""
    flops = _flops(rows, "train_flops")
    if flops is None:
        return None
    energy = 0.0
    for row in rows:
        if row.energy_j is None or row.eval_energy_j is None:
            return None
        energy += row.energy_j - row.eval_energy_j
    return flops / energy if energy > 0 else None


def _convergence(record: RunRecord, flops_counted: bool) -> ConvergenceSummary | None:
    conv = record.convergence
    if not conv.monitor:
        return None
    best, target = conv.best, conv.at_target
    return ConvergenceSummary(
        monitor=conv.monitor,
        mode=conv.mode or "min",
        best_value=None if best is None else best.value,
        best_epoch=None if best is None else best.epoch,
        epochs=None if best is None else best.epochs,
        time_s=None if best is None else best.time_s,
        train_flops=best.train_flops if flops_counted and best else None,
        energy_j=None if best is None else best.energy_j,
        emissions_gco2e=None if best is None else best.emissions_gco2e,
        target=conv.target,
        target_epoch=None if target is None else target.epoch,
        target_energy_j=None if target is None else target.energy_j,
    )


def _gpu_names(record: RunRecord) -> tuple[str, ...]:
    gpu = record.components.get("gpu")
    return gpu.device_names if gpu is not None else ()


def _flop_labels(record: RunRecord) -> tuple[EpochFlopsLabel | None, ...]:
    info, count = record.flops, len(record.epochs)
    return tuple(None if info is None else info.epoch_label(i, count) for i in range(count))


def _flop_range(rows: Sequence[EpochRow], labels: Sequence[EpochFlopsLabel | None],
                flops: float | None) -> tuple[float | None, float | None]:
    """The run's training FLOPs range: the sampled epochs' ranges plus the other epochs' counts."""
    if flops is None or not any(label is not None and label.low is not None for label in labels):
        return None, None
    low = high = 0.0
    for row, label in zip(rows, labels, strict=True):
        if label is not None and label.low is not None and label.high is not None:
            low, high = low + label.low, high + label.high
        else:
            low, high = low + (row.train_flops or 0.0), high + (row.train_flops or 0.0)
    return low, high


def _flop_method(labels: Sequence[EpochFlopsLabel | None]) -> str | None:
    methods = {label.method for label in labels if label is not None}
    for method in ("estimated", "sampled", "counted-once"):
        if method in methods:
            return method
    return "counted" if methods else None


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _status(record: RunRecord) -> str:
    """A pruned trial reads as pruned, not failed: pruning is the search's decision, not a fault of the run."""
    pruned = record.search is not None and record.search.state == "pruned"
    return "pruned" if pruned and record.status != "completed" else record.status


def summarize_run(record: RunRecord | Mapping[str, Any]) -> RunSummary:
    """The report's view of one record: a :class:`~green_callbacks.core.record.RunRecord`, or a record's dict
    (validated here; :class:`~green_callbacks.core.record.RecordError` if it is not a valid record)."""
    record = as_record(record)
    rows = record.epochs
    components = _components(record)
    flops = _flops(rows, "train_flops")
    energy = record.totals.energy_j if rows else None
    carbon = record.carbon
    labels = _flop_labels(record)
    low, high = _flop_range(rows, labels, flops)
    hardware = _flops(rows, "train_hardware_flops") if flops is not None else None
    return RunSummary(
        path=record.path,
        run_id=record.run_id,
        framework=record.framework,
        status=_status(record),
        error=record.error,
        epochs=len(rows),
        time_s=record.totals.time_s or 0.0,
        components=components,
        energy_j=energy,
        energy_partial=energy is not None and any(c.missing for c in components),
        emissions_gco2e=record.totals.emissions_gco2e if rows else None,
        intensity_gco2e_per_kwh=carbon.intensity_gco2e_per_kwh,
        intensity_source=carbon.source or "unknown",
        intensity_year=carbon.year,
        location=carbon.location,
        pue=carbon.pue,
        train_flops=flops,
        eval_flops=_flops(rows, "eval_flops"),
        train_flops_per_j=_train_flops_per_j(rows),
        convergence=_convergence(record, flops is not None),
        hyperparameters=_flatten(record.hyperparameters),
        gpu_names=_gpu_names(record),
        partial_epoch=record.partial_epoch,
        lost=dict(record.lost),
        model=record.model,
        epoch_flops=labels,
        train_flops_method=_flop_method(labels),
        train_flops_low=low,
        train_flops_high=high,
        flops_notes=tuple(dict.fromkeys(label.note for label in labels if label is not None and label.note)),
        data_dependent=() if record.flops is None else tuple(d.signature for d in record.flops.data_dependent or ()),
        train_hardware_flops=hardware,
        record=record,
    )


@dataclass(frozen=True)
class LoadResult:
    """The runs read, and the files skipped with the reason (corrupt, not a record, a newer schema, a bad field)."""

    runs: tuple[RunSummary, ...]
    skipped: tuple[tuple[str, str], ...]
    phases: tuple[RunRecord, ...] = ()
    """Test / validate / predict / evaluate records (their own section, "Using the model")."""
    fits: tuple[RunRecord, ...] = ()
    """The records of ``runs`` (a phase's break-even needs its fit's)."""


def load_runs(paths: Iterable[str | os.PathLike[str]], max_bytes: int | None = None) -> LoadResult:
    """Read every record among ``paths`` (files, or folders searched for ``green-run-*.json``).

    A file that is not a valid record (unreadable, not a regular file, over ``max_bytes`` — default
    :func:`~green_callbacks.core.record.max_record_bytes` —, corrupt, of another schema, or with a field of the
    wrong type or range) is skipped and named with the reason; every good record is kept. A missing path raises
    ``FileNotFoundError``.
    """
    limit = max_record_bytes() if max_bytes is None else max_bytes
    runs: list[RunSummary] = []
    skipped: list[tuple[str, str]] = []
    phases: list[RunRecord] = []
    fits: list[RunRecord] = []
    for path in find_records(paths):
        try:
            record = load_record(path, limit)
            if is_phase_record(record):  # a test/predict/evaluate: the "Using the model" section shows it
                phases.append(record)
                continue
            fits.append(record)
            runs.append(summarize_run(record))
        except RecordError as err:
            skipped.append((str(path), err.reason))
    return LoadResult(tuple(runs), tuple(skipped), tuple(phases), tuple(fits))

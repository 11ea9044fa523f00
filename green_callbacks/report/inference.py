"""The report's "Using the model" section: what each test / validate / predict / evaluate cost, and the break-even.

Pure functions from parsed records (:class:`~green_callbacks.core.record.RunRecord`, or a record's dict) to rows and
the section's table; the report's emitters (:mod:`green_callbacks.report.render`) lay it out and escape it in every
format, as they do the fits' sections. A phase record (``"kind"`` other than ``"fit"``; records without ``kind``
are fits) is one row; its break-even with training uses the fit's record when it is among the records read (matched by
``run_id``), else the training totals the phase record carries. The arithmetic is
:func:`green_callbacks.core.phase.break_even`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from green_callbacks.core.phase import BreakEven, break_even
from green_callbacks.core.record import RunRecord, as_record, record_kind
from green_callbacks.core.record_sections import PhaseInfo
from green_callbacks.report import format as fmt

__all__ = [
    "PhaseRow",
    "is_phase_record",
    "load_phase_rows",
    "phase_rows",
    "phase_table",
]

NA = fmt.UNAVAILABLE
TITLE = "Using the model"


def is_phase_record(record: RunRecord | Mapping[str, Any]) -> bool:
    """A test / validate / predict / evaluate record (``"kind"`` set and not ``"fit"``); older records are fits."""
    return record_kind(record) != "fit"


@dataclass(frozen=True)
class PhaseRow:
    """One phase, as the report shows it (``None`` = unavailable)."""

    label: str
    kind: str
    framework: str
    status: str
    quality: str
    samples: int | None
    duration_s: float | None
    energy_j: float | None
    emissions_gco2e: float | None
    energy_per_sample_j: float | None
    wh_per_1000_samples: float | None
    samples_per_joule: float | None
    mean_power_w: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    training_run_id: str | None
    break_even: BreakEven | None
    run_id: str | None = None
    path: str | None = None
    flops: float | None = None
    """Forward FLOPs of the whole phase."""


def phase_rows(records: Iterable[RunRecord | Mapping[str, Any]]) -> list[PhaseRow]:
    """One row per phase record among ``records``, in the order given; fits are used only for the break-even."""
    records = [as_record(r) for r in records]
    fits = {r.run_id: r for r in records if not r.is_phase and r.run_id}
    rows = []
    for record in records:
        if not record.is_phase:
            continue
        phase = record.phase or PhaseInfo()
        training = record.training
        be = None
        if training is not None:
            fit = fits.get(training.run_id or "")
            energy_j, grams = ((fit.totals.energy_j, fit.totals.emissions_gco2e) if fit is not None
                               else (training.energy_j, training.emissions_gco2e))
            be = break_even(energy_j, phase.energy_per_sample_j, grams, phase.emissions_per_sample_gco2e)
        path = record.path
        rows.append(PhaseRow(
            label=Path(path).name if path else (record.run_id or "?"),
            kind=record.kind,
            framework=record.framework,
            status=record.status,
            quality=NA if phase.quality is None else phase.quality,
            samples=phase.samples,
            duration_s=phase.duration_s,
            energy_j=phase.energy_j,
            emissions_gco2e=phase.emissions_gco2e,
            energy_per_sample_j=phase.energy_per_sample_j,
            wh_per_1000_samples=phase.wh_per_1000_samples,
            samples_per_joule=phase.samples_per_joule,
            mean_power_w=phase.mean_power_w,
            latency_p50_s=phase.latency_p50_s,
            latency_p95_s=phase.latency_p95_s,
            training_run_id=None if training is None else training.run_id,
            break_even=be,
            run_id=record.run_id or None,
            path=path or None,
            flops=phase.flops,
        ))
    return rows


def load_phase_rows(paths: Iterable[str | os.PathLike[str]]) -> list[PhaseRow]:
    """:func:`phase_rows` of every readable record among ``paths`` (unreadable ones are the run loader's to name)."""
    from green_callbacks.core.record import RecordError, find_records, load_record

    records = []
    for path in find_records(paths):
        try:
            records.append(load_record(path))
        except RecordError:
            continue
    return phase_rows(records)


HEADER = ("phase", "framework", "samples", "energy", "J/sample", "Wh/1000", "samples/J", "mean W",
          "latency p50/p95", "break-even (predictions)", "quality")


def _f(value: float | None, spec: str = ".4g", unit: str = "") -> str:
    return NA if value is None else fmt.number(value, spec) + unit


def _count(value: float | None) -> str:
    return fmt.number(value, ",.0f")


def _break_even_text(row: PhaseRow) -> str:
    if row.break_even is None:
        return "no training record"
    energy, grams = row.break_even.samples_for_energy, row.break_even.samples_for_emissions
    if energy is None and grams is None:
        return NA
    if grams is None or energy is None or abs(grams - energy) <= 1e-9 * max(abs(energy), 1.0):
        return _count(energy if energy is not None else grams)
    return f"{_count(energy)} (energy), {_count(grams)} (emissions)"


def _cells(row: PhaseRow) -> list[str]:
    status = "" if row.status == "completed" else f" [{row.status}]"
    return [
        f"{row.kind}{status}",
        row.framework,
        NA if row.samples is None else str(row.samples),
        _f(row.energy_j, ".4g", " J"),
        _f(row.energy_per_sample_j),
        _f(row.wh_per_1000_samples),
        _f(row.samples_per_joule),
        _f(row.mean_power_w, ".4g"),
        f"{_f(row.latency_p50_s, '.3g')}/{_f(row.latency_p95_s, '.3g')} s",
        _break_even_text(row),
        row.quality,
    ]


FOOTNOTE = ("Rates are over the steady part of each phase (warm-up batches, the first of each input shape, are left "
         "out); break-even = training energy (emissions) / energy (emissions) per prediction.")


def phase_table(rows: Sequence[PhaseRow]) -> tuple[tuple[str, ...], list[list[str]]]:
    """The section's table: the header and one row of cells per phase (for the report's section model)."""
    return HEADER, [_cells(r) for r in rows]

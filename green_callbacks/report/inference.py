"""The report's "Using the model" section: what each test / validate / predict / evaluate cost, and the break-even.

Pure functions from parsed records (:func:`green_callbacks.core.record.read_record` dicts) to rows and the section's
table; the report's emitters (:mod:`green_callbacks.report.render`) lay it out and escape it in every format, as
they do the fits' sections. A phase record (``"kind"`` other than ``"fit"``; records without ``kind`` are fits) is
one row; its break-even with training uses the fit's record when it is among the records read (matched by
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

__all__ = [
    "PhaseRow",
    "is_phase_record",
    "load_phase_rows",
    "phase_rows",
    "phase_table",
]

NA = "unavailable"
TITLE = "Using the model"


def is_phase_record(record: Mapping[str, Any]) -> bool:
    """A test / validate / predict / evaluate record (``"kind"`` set and not ``"fit"``); older records are fits."""
    kind = record.get("kind")
    return isinstance(kind, str) and kind != "fit"


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


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def phase_rows(records: Iterable[Mapping[str, Any]]) -> list[PhaseRow]:
    """One row per phase record among ``records``, in the order given; fits are used only for the break-even."""
    records = list(records)
    fits = {r.get("run_id"): r for r in records if not is_phase_record(r) and r.get("run_id")}
    rows = []
    for record in records:
        if not is_phase_record(record):
            continue
        phase = record.get("phase") or {}
        training = record.get("training") or None
        be = None
        if training is not None:
            fit = fits.get(training.get("run_id"))
            totals = (fit or {}).get("totals") or training
            be = break_even(
                _num(totals.get("energy_j")), _num(phase.get("energy_per_sample_j")),
                _num(totals.get("emissions_gco2e")), _num(phase.get("emissions_per_sample_gco2e")),
            )
        path = record.get("_path")
        samples = phase.get("samples")
        rows.append(PhaseRow(
            label=Path(path).name if path else str(record.get("run_id", "?")),
            kind=str(record.get("kind")),
            framework=str(record.get("framework", "?")),
            status=str(record.get("status", "?")),
            quality=str(phase.get("quality", NA)),
            samples=int(samples) if isinstance(samples, int) else None,
            duration_s=_num(phase.get("duration_s")),
            energy_j=_num(phase.get("energy_j")),
            emissions_gco2e=_num(phase.get("emissions_gco2e")),
            energy_per_sample_j=_num(phase.get("energy_per_sample_j")),
            wh_per_1000_samples=_num(phase.get("wh_per_1000_samples")),
            samples_per_joule=_num(phase.get("samples_per_joule")),
            mean_power_w=_num(phase.get("mean_power_w")),
            latency_p50_s=_num(phase.get("latency_p50_s")),
            latency_p95_s=_num(phase.get("latency_p95_s")),
            training_run_id=None if training is None else training.get("run_id"),
            break_even=be,
            run_id=None if record.get("run_id") is None else str(record.get("run_id")),
            path=None if path is None else str(path),
            flops=_num(phase.get("flops")),
        ))
    return rows


def load_phase_rows(paths: Iterable[str | os.PathLike[str]]) -> list[PhaseRow]:
    """:func:`phase_rows` of every readable record among ``paths`` (unreadable ones are the run loader's to name)."""
    from green_callbacks.core.record import RecordError, find_records, read_record

    records = []
    for path in find_records(paths):
        try:
            records.append(read_record(path))
        except RecordError:
            continue
    return phase_rows(records)


HEADER = ("phase", "framework", "samples", "energy", "J/sample", "Wh/1000", "samples/J", "mean W",
          "latency p50/p95", "break-even (predictions)", "quality")


def _f(value: float | None, spec: str = ".4g", unit: str = "") -> str:
    return NA if value is None else f"{format(value, spec)}{unit}"


def _count(value: float | None) -> str:
    return NA if value is None else f"{value:,.0f}"


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

"""A :class:`~green_callbacks.report.build.Report` as terminal text, Markdown, self-contained HTML, CSV or JSON.

The report is laid out once by :func:`build_document` as a list of blocks (the section model); the text, Markdown
and HTML emitters only walk those blocks. Every value that was not measured is printed as ``unavailable`` (or
``partial`` with what is missing), never 0; a component the run does not use is ``not used by this run``. Text from
records is made inert in each format: escaped in Markdown and HTML, formula-neutralised in CSV, escaped by JSON,
and control characters removed from every format but JSON (whose encoder escapes them), so any output is safe on a
terminal. Test / predict / evaluate records go through the same model and emitters as fits, with or without fits
beside them: the "Using the model" section, rows of their own in CSV (``kind``), ``phases`` in JSON.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import functools
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

from green_callbacks.report import format as fmt
from green_callbacks.report._text import strip_control
from green_callbacks.report.badges import format_grams
from green_callbacks.report.blocks import Badges, Block, Figure, Heading, Items, Lines, Paragraph, Table, emit_text
from green_callbacks.report.build import Report, run_figure_prefix, sweep_figure_prefix
from green_callbacks.report.efficiency import Mfu
from green_callbacks.report.equivalents import COMPARISONS_TITLE, comparison_table
from green_callbacks.report.footprint import (
    GRIDS_NOTE,
    GRIDS_TITLE,
    INFRASTRUCTURE_TITLE,
    FootprintOptions,
    footprint_section,
    footprint_summary_lines,
    grid_table,
    infrastructure_table,
)
from green_callbacks.report.inference import FOOTNOTE as INFERENCE_FOOTNOTE
from green_callbacks.report.inference import TITLE as INFERENCE_TITLE
from green_callbacks.report.inference import PhaseRow, phase_table
from green_callbacks.report.runs import RunSummary
from green_callbacks.report.sensitivity import MIN_RUNS, short_number
from green_callbacks.report.summary import epoch_table, flops_notes, run_summary_lines
from green_callbacks.report.sweep import SweepAnalysis, trial_state

__all__ = [
    "CSV_COLUMNS",
    "Block",
    "build_document",
    "csv_cell",
    "md_escape",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "render_text",
    "run_rows",
    "strip_control",
    "sweep_sentences",
]

NA = fmt.UNAVAILABLE
FOOTPRINT_TITLE = "Footprint: operational, embodied, water"


# ---------------------------------------------------------------- value formatting (the policy: format.py)
_j = functools.partial(fmt.energy, grouped=True)
_g = fmt.grams
_flops = fmt.flops
_pct = fmt.percent


def _num(value: float | None, spec: str = ".4g") -> str:
    return fmt.number(value, spec, missing="")


def _mfu(mfu: Mfu) -> str:
    if mfu.value is None:
        return mfu.peak_source
    return f"{fmt.percent(mfu.value, 2)} of {mfu.peak_flops_per_s:.4g} FLOP/s ({mfu.peak_source})"


def _hfu(mfu: Mfu) -> str:
    if mfu.hfu is None:
        return fmt.UNAVAILABLE if mfu.value is None else "unavailable: an epoch keeps no hardware FLOPs"
    return f"{fmt.percent(mfu.hfu, 2)} of {mfu.peak_flops_per_s:.4g} FLOP/s (hardware FLOPs, green/hfu)"


def _intensity(run: RunSummary) -> str:
    year = f", {run.intensity_year}" if run.intensity_year else ""
    return (f"{_num(run.intensity_gco2e_per_kwh, 'g') or NA} gCO2e/kWh ({run.location or '?'}; "
            f"{run.intensity_source}{year}), PUE {_num(run.pue, 'g') or NA}")


def _status(run: RunSummary) -> str:
    text = run.status
    if run.error:
        text += f" ({run.error})"
    if not run.complete:
        text += f": totals cover the {run.epochs} complete epoch(s) only"
    return text


def _energy_total(run: RunSummary) -> str:
    if run.energy_j is None:
        return NA
    text = _j(run.energy_j)
    if run.energy_partial:
        missing = [f"{c.name} unavailable in {c.epochs_unavailable} of {run.epochs} epoch(s)"
                   for c in run.components if c.missing]
        text += f" — partial: {', '.join(missing)}"
    return text


def _component(run: RunSummary, name: str) -> str:
    part = next(c for c in run.components if c.name == name)
    if part.status == "not used":
        return fmt.NOT_USED + (f" ({part.note})" if part.note else "")
    text = _j(part.energy_j) if part.energy_j is not None else NA
    if part.status == "partial":
        text += f" (partial: unavailable in {part.epochs_unavailable} epoch(s))"
    text += f" [method: {', '.join(part.methods)}]"
    if part.status != "measured" and part.note:
        text += f" ({part.note})"
    return text


def _convergence(run: RunSummary) -> tuple[str, str] | None:
    conv = run.convergence
    if conv is None:
        return None
    if conv.best_value is None:
        return (f"Best {conv.monitor}", "never logged")
    flops = "training FLOPs not counted" if conv.train_flops is None else f"{conv.train_flops:.4g} training FLOPs"
    cost = (f"{conv.epochs} epoch(s), {_num(conv.time_s, '.2f')} s, {flops}, {_j(conv.energy_j)}, "
            f"{_g(conv.emissions_gco2e)}")
    value = f"{conv.best_value:.4g} at epoch {conv.best_epoch}; to reach it: {cost}"
    return (f"Best {conv.monitor} ({conv.mode})", value)


def run_rows(run: RunSummary, mfu: Mfu) -> list[tuple[str, str]]:
    """The per-run quantities as (name, value) rows, shared by Markdown and HTML."""
    rows = [
        ("Run", f"{run.label} ({run.framework}) — {run.path}"),
        ("Status", _status(run)),
        ("Epochs, wall time", f"{run.epochs}, {run.time_s:.2f} s"),
    ]
    rows += [(f"Energy, {c.name}", _component(run, c.name)) for c in run.components]
    rows += [
        ("Energy, total (IT, before PUE)", _energy_total(run)),
        ("Emissions", f"{_g(run.emissions_gco2e)}{' (partial)' if run.energy_partial else ''} at {_intensity(run)}"),
        ("FLOPs, training / evaluation", f"{run.flops_text} / {_flops(run.eval_flops)}"),
    ]
    for note in flops_notes(run):
        name, _, text = note.partition(": ")
        rows.append((name[0].upper() + name[1:], text))
    conv = _convergence(run)
    if conv:
        rows.append(conv)
        if run.convergence and run.convergence.target is not None:
            target = run.convergence
            reached = (f"epoch {target.target_epoch}, {_j(target.target_energy_j)}" if target.target_epoch is not None
                       else "not reached")
            rows.append((f"Target {target.monitor} = {target.target:g}", reached))
    rows += [
        ("Training FLOPs per joule", _num(run.train_flops_per_j, ".4g") or NA),
        ("MFU (run average)", _mfu(mfu)),
    ]
    if run.recompute:
        rows.append(("HFU (run average)", _hfu(mfu)))
    if run.gpu_names:
        rows.append(("GPUs", ", ".join(run.gpu_names)))
    if run.partial_epoch:
        part = run.partial_epoch
        rows.append(("Incomplete epoch", f"epoch {part.epoch}: {_num(part.time_s, '.2f')} s, "
                                         f"{_j(part.energy_j)} (this process only; not in the totals)"))
    if run.lost:
        rows.append(("Switched off after a failure", "; ".join(f"{k} ({v})" for k, v in run.lost.items())))
    if run.hyperparameters:
        rows.append(("Hyperparameters", ", ".join(f"{k}={short_number(v)}" for k, v in run.hyperparameters.items())))
    search = run.record.search if run.record is not None else None
    if search is not None:
        trial = "" if search.trial is None else f", trial {search.trial}"
        rows.append(("Search", f"{search.name} ({search.method or 'method not recorded'}{trial}, "
                               f"{trial_state(run)})"))
    model = run.record.model_info if run.record is not None else None
    if model is not None and model.fingerprint:
        size = "" if model.parameters is None else f", {model.parameters:,} parameters"
        data = f"; first batch {model.data_signature}" if model.data_signature else ""
        rows.append(("Model", f"{model.name or '?'} ({model.fingerprint}{size}){data}"))
    return rows


# ---------------------------------------------------------------- sweep prose
def _reach(sweep: SweepAnalysis) -> str:
    eff = sweep.efficiency
    assert eff is not None and eff.trials_needed is not None
    bound = ">=" if sweep.mode == "max" else "<="
    return (f"{eff.trials_needed} random trial(s) would on average reach within {eff.tolerance} of the best "
            f"({sweep.monitor} {bound} {eff.threshold:.4g})")


def _j_range(eff: Any, runs: int) -> str:
    """``'(1.2e+03–2.5e+03 J)'``: ``runs`` times the mean run's energy interval, or ``'(no basis for an
    interval)'`` (docs/uncertainty.md)."""
    if eff.mean_energy_low_j is None or eff.mean_energy_high_j is None:
        return "(no basis for an interval)"
    return f"({runs * eff.mean_energy_low_j:,.4g}–{runs * eff.mean_energy_high_j:,.4g} J)"


def _grid_saving(sweep: SweepAnalysis) -> list[str]:
    eff = sweep.efficiency
    if eff is None:
        return []
    if eff.trials_needed is None:
        bound = ">=" if sweep.mode == "max" else "<="
        return [f"Random trials drawn from these results would not reach within {eff.tolerance} of the best "
                f"({sweep.monitor} {bound} {eff.threshold:.4g}) in any practical number of trials."]
    reach = _reach(sweep)
    if eff.trials_needed > eff.runs:
        return [f"{reach}, more than the {eff.runs} run(s) of this search: these runs do not suffice to say whether "
                "random search would have reached it sooner (it would have saved nothing at this tolerance)."]
    if sweep.grid is None:
        return [f"{reach}; the search's method is not recorded, so no saving is claimed (a saving is said only "
                "for a grid)."]
    if not eff.trials_saved:
        return [f"{reach}, as many as the {eff.runs} run(s) of this search: random search would have saved "
                "nothing at this tolerance."]
    saving = (f"about {_j(eff.energy_saved_j)} {_j_range(eff, eff.trials_saved)} and "
              f"{_g(eff.emissions_saved_gco2e)} (mean {_j(eff.mean_energy_per_run_j)} per run x {eff.trials_saved} runs"
              + (f", mean over the {eff.energy_runs_measured} measured runs"
                 if eff.energy_runs_measured < eff.runs else "") + ")"
              if eff.energy_saved_j is not None else "energy unavailable")
    return [f"{reach}; the grid ran {eff.runs}, so random search would have saved {eff.trials_saved} run(s): "
            f"{saving}."]


def _bayesian_estimate(sweep: SweepAnalysis) -> list[str]:
    eff = sweep.efficiency
    if eff is None:
        return []
    assumption = (f"it assumes random trials would see the distribution of results this {sweep.method} search "
                  f"observed; a {sweep.method} search concentrates its trials where results are good, so random "
                  "search would likely need more: read it as a lower bound")
    if eff.trials_needed is None:
        return [f"Estimate: random trials drawn from these results would not reach within {eff.tolerance} of this "
                f"search's best in any practical number of trials ({assumption})."]
    energy = ("" if eff.mean_energy_per_run_j is None
              else f", about {_j(eff.trials_needed * eff.mean_energy_per_run_j)} {_j_range(eff, eff.trials_needed)}")
    return [f"Estimate, not a measurement: about {eff.trials_needed} random trial(s){energy} would reach within "
            f"{eff.tolerance} of this search's best, against the {eff.runs} trial(s) it ran ({assumption})."]


def sweep_sentences(sweep: SweepAnalysis) -> list[str]:
    """The search's cost, how it was grouped and drawn, and what random search would have done, said plainly."""
    out = []
    energy = _j(sweep.total_energy_j)
    if sweep.energy_runs_unavailable:
        energy += f" (partial: {sweep.energy_runs_unavailable} run(s) unmeasured)"
    setting = ", ".join(f"{k}={v}" for k, v in sweep.best_hyperparameters.items())
    out.append(
        f"The search ran {sweep.runs} run(s) with a value of {sweep.monitor}"
        + (f" ({sweep.incomplete_runs} did not complete)" if sweep.incomplete_runs else "")
        + f" and used {energy} of IT energy, emitting {_g(sweep.total_emissions_gco2e)}"
        + (f" (partial: {sweep.emissions_runs_unavailable} run(s) unmeasured)" if sweep.emissions_runs_unavailable
           else "")
        + f". The best model came from run {sweep.best_run} ({sweep.monitor} = {sweep.best_value:.4g}"
        + (f"; {setting}" if setting else "") + "); "
        + (f"{_pct(sweep.share_not_best)} of the measured energy went to runs that did not produce it."
           if sweep.share_not_best is not None else "the share spent on other runs is unavailable.")
    )
    if sweep.pruned_runs or sweep.failed_runs:
        out.append(f"{sweep.pruned_runs} pruned and {sweep.failed_runs} failed trial(s) used "
                   f"{_j(sweep.energy_stopped_j)}, counted in the search's total.")
    if sweep.engine_note:
        out.append(sweep.engine_note)
    if sweep.energy_cut_epochs_j is not None:
        out.append(f"The search's total includes {_j(sweep.energy_cut_epochs_j)} of epochs cut short (a trial stopped "
                   "in its validation), measured but not in those runs' totals, which cover complete epochs.")
    if sweep.rule:
        out.append(f"Grouped as one search because {sweep.rule}.")
    if sweep.grid is not None:
        out.append(f"These runs form {sweep.grid_note}.")
    elif sweep.method is None:
        out.append(f"Grid search: {sweep.grid_note}.")
    else:
        out.append(f"Method: {sweep.grid_note}, as the records declare it.")
    if sweep.method in ("tpe", "gp", "bayes", "cmaes"):
        out += _bayesian_estimate(sweep)
    elif sweep.method is None or sweep.method == "grid":
        out += _grid_saving(sweep)
        if sweep.efficiency is not None:
            out.append("Estimate: the expected maximum of Dodge et al. (2019) over the observed results, drawing "
                       "with replacement — it assumes random trials see the same distribution of results as this "
                       "search.")
    out += [f"Left out: {note}." for note in sweep.excluded]
    return out


def _interval(low: float | None, high: float | None) -> str:
    return fmt.NA if low is None or high is None else f"{low:.2f} – {high:.2f}"


def _importance_rows(sweep: SweepAnalysis) -> list[list[str]]:
    rows = []
    ranked = sorted(sweep.sensitivity, key=lambda s: -1.0 if s.importance is None or s.importance.importance is None
                    else s.importance.importance, reverse=True)
    for sens in ranked:
        imp = sens.importance
        if imp is None:
            continue
        scale = imp.scale + (" (declared)" if imp.scale_source == "declared" else "")
        runs = f"{imp.runs}" + (" (conditional)" if imp.conditional else "")
        value = fmt.number(imp.importance, ".2f", fmt.NA)
        p_value = fmt.number(imp.p_value, ".2g", fmt.NA)
        rows.append([sens.name, scale, runs, value, _interval(imp.low, imp.high), p_value, imp.verdict,
                     imp.direction, imp.best_region])
    return rows


def _sensitivity_rows(sweep: SweepAnalysis) -> list[list[str]]:
    """The by-value detail (a grid's axes, categorical parameters): one row per value."""
    rows = []
    for sens in sweep.sensitivity:
        if sens.importance is not None and sens.importance.grouping != "by value":
            continue
        for group in sens.groups:
            rows.append([sens.name, group.value, str(group.runs), f"{group.mean:.4g}",
                         fmt.number(group.std, ".3g", fmt.NA), f"{group.min:.4g}", f"{group.max:.4g}",
                         _pct(sens.variance_explained) if group is sens.groups[0] else ""])
    return rows


_FIGURES_NOTE = "Per-run figures are drawn for the best run of the search only (--all-run-plots draws every run's)."
_SENS_HEADER = ["hyperparameter", "value", "runs", "mean", "std", "min", "max", "variance explained"]
_IMPORTANCE_HEADER = ["hyperparameter", "scale", "runs", "importance (ε²)", "95 % interval", "p", "verdict",
                      "direction", "best region"]
_CURVE_HEADER = ["trials n", "expected best", "std", "expected energy"]


def _curve_rows(sweep: SweepAnalysis) -> list[list[str]]:
    """A 1-2-5 series of n and the last (a table that fits a screen; the figure has every point)."""
    mean_j = sweep.efficiency.mean_energy_per_run_j if sweep.efficiency else None
    if mean_j is None and sweep.total_energy_j is not None:
        measured = len(sweep.progress) - sweep.energy_runs_unavailable
        mean_j = sweep.total_energy_j / measured if measured > 0 else None
    last = sweep.curve[-1].n if sweep.curve else 0
    shown = {n for n in (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if n <= last} | {last}
    return [[str(c.n), f"{c.mean:.4g}", f"{c.std:.3g}", _j(None if mean_j is None else c.n * mean_j)]
            for c in sweep.curve if c.n in shown]


def _offset_text(report: Report) -> str | None:
    if report.offset is None:
        return None
    price = report.offset.price
    partial = " (partial: the total misses unmeasured parts)" if report.emissions_partial else ""
    return (f"Cost to offset {format_grams(report.offset.emissions_gco2e)} CO2e{partial}: "
            f"{report.offset.cost:.4g} {price.currency} at {price.per_tonne:g} {price.currency}/t "
            f"(price: {price.source}; as of {price.as_of}). Offsetting does not reduce emissions.")


# ---------------------------------------------------------------- the section model
def _t(rows: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(c) for c in row) for row in rows)


def _sweep_blocks(sweep: SweepAnalysis, prefix: str, terminal: bool) -> list[Block]:
    if sweep.name:
        title = f"{sweep.name!r} ({sweep.method or 'method not recorded'}), {sweep.runs} runs, {sweep.monitor} " \
                f"({sweep.mode})"
    else:
        title = f"{sweep.runs} runs, {sweep.monitor} ({sweep.mode})" + (f" — {sweep.group}" if sweep.group else "")
    out: list[Block] = [Heading(2, ("Sweep: " if terminal else "Hyperparameter search: ") + title, "search")]
    out += [Paragraph(s) for s in sweep_sentences(sweep)]
    if sweep.sensitivity:
        out += [Heading(3, f"Sensitivity of the best {sweep.monitor} to each hyperparameter", "search-part"),
                Paragraph(f"One row per hyperparameter. Importance = epsilon squared, the share of the variance of "
                          f"the runs' best {sweep.monitor} a parameter explains beyond what chance gives, all "
                          "parameters fitted together (a quadratic on the parameter's own scale, log10 for a "
                          "log-scaled one; one effect per value for few-valued and categorical ones); 95 % interval "
                          "by bootstrap over runs; p by permutation. "
                          f"Below {MIN_RUNS} runs: too few to tell. Matters: the interval excludes 0 and p is below "
                          "0.05. Negligible: no effect detected (the estimate is under 0.25)."),
                Table(tuple(_IMPORTANCE_HEADER), _t(_importance_rows(sweep)))]
        detail = _sensitivity_rows(sweep)
        if detail:
            out += [Paragraph("By value (variance explained = between-value sum of squares / total sum of squares "
                              f"of the runs' best {sweep.monitor}, eta squared; std is the sample standard "
                              "deviation, n − 1):"),
                    Table(tuple(_SENS_HEADER), _t(detail))]
        out.append(Figure(prefix + "sensitivity.png"))
    out += [Heading(3, "Search cost and efficiency", "search-part"), Figure(prefix + "best-vs-energy.png")]
    if sweep.curve:
        out += [Paragraph(f"Expected best of n trials (Dodge et al. 2019): {sweep.curve_note}."),
                Table(tuple(_CURVE_HEADER), _t(_curve_rows(sweep))), Figure(prefix + "expected-best.png")]
    else:
        out.append(Paragraph(f"Expected best of n trials (Dodge et al. 2019): {sweep.curve_note}."))
    return out


EPOCH_ROWS_SHOWN = 10
"""Markdown and HTML show a run's first and last 5 epochs when it has more than 10 (the terminal shows all)."""


def _run_blocks(run: RunSummary, mfu: Mfu, terminal: bool, footprint: FootprintOptions) -> list[Block]:
    header, rows = epoch_table(run)
    out: list[Block] = [Heading(3, f"Run {run.label} ({run.status})", "run")]
    if terminal:
        extra = [f"  training FLOPs per joule: {_num(run.train_flops_per_j) or NA}; MFU: {_mfu(mfu)}"
                 + (f"; HFU: {_hfu(mfu)}" if run.recompute else "")]
        if run.energy_partial:
            missing = [f"{c.name} unavailable in {c.epochs_unavailable} of {run.epochs} epoch(s)"
                       for c in run.components if c.missing]
            extra.append(f"  total energy is partial: {'; '.join(missing)}")
        if not run.complete:
            extra.append(f"  run {run.status}: totals cover the {run.epochs} complete epoch(s) only")
        return [*out, Table(tuple(header), _t(rows), right=True), Lines((*run_summary_lines(run), *extra)),
                *_footprint_blocks(run, footprint, terminal=True)]
    out.append(Table(("Quantity", "Value"), _t(run_rows(run, mfu))))
    if len(rows) > EPOCH_ROWS_SHOWN:  # a section that fits a screen: the first and last epochs (CSV/JSON have all)
        half = EPOCH_ROWS_SHOWN // 2
        gap = ["…"] + [""] * (len(header) - 1)
        gap[0] = f"… {len(rows) - 2 * half} more"
        rows = [*rows[:half], gap, *rows[-half:]]
    if rows:
        out.append(Table(tuple(header), _t(rows), right=True))
    out += [Figure(run_figure_prefix(run) + "energy.png"), Figure(run_figure_prefix(run) + "metric.png")]
    return [*out, *_footprint_blocks(run, footprint, terminal=False)]


def _footprint_blocks(run: RunSummary, options: FootprintOptions, terminal: bool = True) -> list[Block]:
    """Operational beside embodied emissions and water of one run (records with a footprint); the counterfactual
    grids are shown once per report (:func:`_counterfactual_blocks`)."""
    section = None if run.record is None else footprint_section(run.record, options)
    if section is None:
        return []
    lines = footprint_summary_lines(section)
    if terminal:
        return [Heading(4, FOOTPRINT_TITLE, "footprint"), Lines(tuple(lines))]
    return [Heading(4, FOOTPRINT_TITLE, "footprint"), Items(tuple(line.strip() for line in lines))]


def _counterfactual_blocks(report: Report) -> list[Block]:
    """The counterfactual grids and the infrastructure comparison, once per report: for the run that used the most
    energy (every run's emissions scale with its energy by the same ratios)."""
    sections = []
    for run in report.runs:
        section = None if run.record is None else footprint_section(run.record, report.options.footprint)
        if section is not None and (section.grids or section.infrastructure):
            sections.append((run, section))
    if not sections:
        return []
    run, section = max(sections, key=lambda item: item[0].energy_j or 0.0)
    out: list[Block] = [Heading(2, "Where could these runs have been greener?", "greener")]
    if len(report.runs) > 1:
        out.append(Paragraph(f"For run {run.label}, the one that used the most energy; the other runs' emissions "
                             "change by the same ratios."))
    for title, (header, rows) in ((GRIDS_TITLE, grid_table(section)),
                                  (INFRASTRUCTURE_TITLE, infrastructure_table(section))):
        if rows:
            out += [Paragraph(title), Table(tuple(header), _t(rows))]
            if title == GRIDS_TITLE:
                out.append(Paragraph(GRIDS_NOTE))
    return out


def build_document(report: Report, badge_snippets: Sequence[str] = (), *, terminal: bool = False,
                   note: str = "", figures_drawn: Sequence[str] | None = None,
                   inline_badges: bool = False) -> list[Block]:
    """The report as one list of blocks, walked by every emitter (text, Markdown, HTML).

    ``terminal``: the terminal's layout (each run's epoch table and summary first, then the searches);
    ``figures_drawn``: the figure names that exist, to say when per-run figures cover the best runs only.
    """
    out: list[Block] = [Heading(1, "Energy and emissions report (green_callbacks)", "title")]
    if note:
        out.append(Paragraph(note))
    searches: list[Block] = []
    for index, sweep in enumerate(report.sweeps):
        searches += _sweep_blocks(sweep, sweep_figure_prefix(report, index), terminal)
    if report.search_note:
        searches.append(Paragraph(report.search_note + "."))
    runs: list[Block] = [Heading(2, "Runs", "runs")] if report.runs else []
    drawn = set(figures_drawn or ())
    if drawn and not all(any(n.startswith(run_figure_prefix(r)) for n in drawn) for r in report.runs):
        runs.append(Paragraph(_FIGURES_NOTE))
    for run, mfu in zip(report.runs, report.mfu, strict=True):
        runs += _run_blocks(run, mfu, terminal, report.options.footprint)
    phases: list[Block] = []
    if report.phases:  # what using the trained models cost, and after how many predictions it matches training
        header, rows = phase_table(report.phases)
        phases = [Heading(2, INFERENCE_TITLE, "phases"), Table(tuple(header), _t(rows)), Paragraph(INFERENCE_FOOTNOTE)]
    comparisons: list[Block] = []
    header, rows, cites = comparison_table(report)
    if rows:  # figures a reader can picture, each factor with its source; never an offset
        comparisons = [Heading(2, COMPARISONS_TITLE, "comparisons"),
                       Paragraph("The emissions expressed as everyday equivalents, for comparison only: they are not "
                                 "offsets and cancel nothing. A household's electricity is compared as energy (IT "
                                 "energy x PUE)."),
                       Table(header, _t(rows)), *(Paragraph(c) for c in cites)]
    grids = _counterfactual_blocks(report)
    # the terminal shows each run first (as training ended); a paper needs the searches, the use of the models and
    # where it could have been greener first, then the per-run detail
    out += ([*runs, *searches, *phases, *comparisons, *grids] if terminal
            else [*searches, *phases, *comparisons, *grids, *runs])
    offset = _offset_text(report)
    if offset:
        out += [Heading(2, "Offsetting", "offsetting"), Paragraph(offset)]
    if (report.badges and inline_badges) or badge_snippets:
        out.append(Heading(2, "Badges", "badges"))
        if report.badges and inline_badges:
            out.append(Badges())
        if badge_snippets:
            out += [Paragraph("Badges (Markdown to paste):"), Lines(tuple(badge_snippets), "markdown")]
    if report.skipped:
        out += [Heading(2, "Skipped files", "skipped"),
                Items(tuple(f"{path}: {reason}" for path, reason in report.skipped))]
    return out


# ---------------------------------------------------------------- text
def render_text(report: Report, badge_snippets: Sequence[str] = ()) -> str:
    """The terminal report: each run's epoch table and summary, then the searches, offsets, badges, skipped files.

    Control characters from the records (ESC and OSC sequences) are removed.
    """
    return emit_text(build_document(report, badge_snippets, terminal=True))


# ---------------------------------------------------------------- Markdown
_MD_SPECIAL = re.compile(r"([\\`*\[\]!|])")


def md_escape(text: str) -> str:
    """Text from a record, safe in Markdown: HTML escaped (no ``<script>``, ``<img onerror>``), and the characters
    that make links, images, code or table cells backslash-escaped (no ``[x](javascript:...)``, no remote image)."""
    escaped = str(text).replace("&", "&amp;").replace("<", "&lt;")  # no tag can open; ">" alone is text
    return _MD_SPECIAL.sub(r"\\\1", escaped).replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_link(path: str) -> str:
    return quote(path, safe="/._-~:")


def render_markdown(report: Report, images: Mapping[str, str] | None = None,
                    badge_snippets: Sequence[str] = ()) -> str:
    """Markdown fit for a paper's appendix; ``images`` maps figure file names to the paths to link.

    Every text from a record is escaped (HTML, links, images); control characters are removed.
    """
    images = images or {}
    out: list[str] = []
    for block in build_document(report, badge_snippets, figures_drawn=list(images)):
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + md_escape(block.text), ""]
        elif isinstance(block, Paragraph):
            out += [md_escape(block.text), ""]
        elif isinstance(block, Table):
            out += [_md_table(block.header, block.rows), ""]
        elif isinstance(block, Lines):
            longest = max((len(m) for line in block.lines for m in re.findall("`+", line)), default=0)
            fence = "`" * max(3, longest + 1)
            out += [fence + block.language, *block.lines, fence, ""]
        elif isinstance(block, Items):
            out += [*(f"- {md_escape(item)}" for item in block.items), ""]
        elif isinstance(block, Figure) and block.name in images:
            out += [f"![{md_escape(block.name)}]({_md_link(images[block.name])})", ""]
    return strip_control("\n".join(out).rstrip() + "\n")


# ---------------------------------------------------------------- HTML
def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>'


_CSS = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}.badges svg{margin-right:.5em}")


def render_html(report: Report, figures: Mapping[str, bytes] | None = None, note: str = "",
                badge_snippets: Sequence[str] = ()) -> str:
    """One self-contained HTML page: tables, prose, the PNG figures embedded as base64, the badges inline."""
    figures = figures or {}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>green_callbacks report</title>", f"<style>{_CSS}</style></head><body>"]
    for block in build_document(report, badge_snippets, note=note, figures_drawn=list(figures),
                                inline_badges=True):
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            out.append(_html_table(block.header, block.rows))
        elif isinstance(block, Lines):
            out.append("<pre>" + html.escape("\n".join(block.lines)) + "</pre>")
        elif isinstance(block, Items):
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Figure) and block.name in figures:
            out.append(_img(block.name, figures[block.name]))
        elif isinstance(block, Badges):
            out.append('<p class="badges">' + "".join(b.svg for b in report.badges) + "</p>")
    out.append("</body></html>")
    return strip_control("\n".join(out) + "\n")


# ---------------------------------------------------------------- CSV / JSON
CSV_COLUMNS = (
    "run_id", "path", "framework", "status", "epochs", "time_s", "energy_j", "energy_partial", "gpu_energy_j",
    "cpu_energy_j", "ram_energy_j", "emissions_gco2e", "intensity_gco2e_per_kwh", "intensity_source",
    "intensity_year", "pue", "train_flops", "eval_flops", "train_flops_per_j", "mfu", "monitor", "mode",
    "best_value", "best_epoch", "epochs_to_convergence", "time_to_convergence_s", "train_flops_to_convergence",
    "energy_to_convergence_j", "emissions_to_convergence_gco2e", "hyperparameters",
    # what a test / predict / evaluate record adds (empty in a fit's row; a phase's time_s, energy_j,
    # emissions_gco2e and eval_flops are the whole phase's)
    "kind", "samples", "energy_per_sample_j", "wh_per_1000_samples", "samples_per_joule", "mean_power_w",
    "latency_p50_s", "latency_p95_s", "quality", "training_run_id", "break_even_samples_energy",
    "break_even_samples_emissions",
    # how the training FLOPs were obtained (counted / sampled / estimated), their range, the hardware FLOPs and HFU
    "train_flops_method", "train_flops_low", "train_flops_high", "train_hardware_flops", "hfu",
)


def _csv_row(run: RunSummary, mfu: Mfu) -> dict[str, Any]:
    conv = run.convergence
    parts = {c.name: c.energy_j for c in run.components}
    return {
        "run_id": run.run_id, "path": run.path, "framework": run.framework, "status": run.status,
        "epochs": run.epochs, "time_s": run.time_s, "energy_j": run.energy_j, "energy_partial": run.energy_partial,
        "gpu_energy_j": parts.get("gpu"), "cpu_energy_j": parts.get("cpu"), "ram_energy_j": parts.get("ram"),
        "emissions_gco2e": run.emissions_gco2e, "intensity_gco2e_per_kwh": run.intensity_gco2e_per_kwh,
        "intensity_source": run.intensity_source, "intensity_year": run.intensity_year, "pue": run.pue,
        "train_flops": run.train_flops, "eval_flops": run.eval_flops, "train_flops_per_j": run.train_flops_per_j,
        "mfu": mfu.value,
        "monitor": conv.monitor if conv else None, "mode": conv.mode if conv else None,
        "best_value": conv.best_value if conv else None, "best_epoch": conv.best_epoch if conv else None,
        "epochs_to_convergence": conv.epochs if conv else None,
        "time_to_convergence_s": conv.time_s if conv else None,
        "train_flops_to_convergence": conv.train_flops if conv else None,
        "energy_to_convergence_j": conv.energy_j if conv else None,
        "emissions_to_convergence_gco2e": conv.emissions_gco2e if conv else None,
        "hyperparameters": json.dumps(dict(run.hyperparameters), sort_keys=True, default=str),
        "kind": "fit",
        "train_flops_method": run.train_flops_method, "train_flops_low": run.train_flops_low,
        "train_flops_high": run.train_flops_high, "train_hardware_flops": run.train_hardware_flops,
        "hfu": mfu.hfu,
    }


def _phase_csv_row(row: PhaseRow) -> dict[str, Any]:
    be = row.break_even
    return {
        "run_id": row.run_id, "path": row.path, "framework": row.framework, "status": row.status,
        "time_s": row.duration_s, "energy_j": row.energy_j, "emissions_gco2e": row.emissions_gco2e,
        "eval_flops": row.flops, "kind": row.kind, "samples": row.samples,
        "energy_per_sample_j": row.energy_per_sample_j, "wh_per_1000_samples": row.wh_per_1000_samples,
        "samples_per_joule": row.samples_per_joule, "mean_power_w": row.mean_power_w,
        "latency_p50_s": row.latency_p50_s, "latency_p95_s": row.latency_p95_s, "quality": row.quality,
        "training_run_id": row.training_run_id,
        "break_even_samples_energy": None if be is None else be.samples_for_energy,
        "break_even_samples_emissions": None if be is None else be.samples_for_emissions,
    }


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP CSV injection): text starting with ``=``,
    ``+``, ``-``, ``@``, tab or carriage return gets a leading ``'``. Numbers stay numbers (``-1.5`` too);
    ``None`` (unavailable) is an empty cell, never 0; control characters are removed."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return "" if isinstance(value, float) and not math.isfinite(value) else value
    text = strip_control(str(value))
    if text.startswith(_FORMULA_START):
        try:
            float(text)
            return text  # a plain number such as -1.5
        except ValueError:
            return "'" + text
    return text


def render_csv(report: Report) -> str:
    """One row per record: the runs (``kind`` ``fit``), then the test / predict / evaluate phases; an unmeasured
    value is an empty cell (never 0); no cell can start a formula."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run, mfu in zip(report.runs, report.mfu, strict=True):
        writer.writerow({k: csv_cell(v) for k, v in _csv_row(run, mfu).items()})
    for row in report.phases:
        writer.writerow({k: csv_cell(v) for k, v in _phase_csv_row(row).items()})
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def render_json(report: Report, badge_snippets: Sequence[str] = ()) -> str:
    """The whole report as JSON (``null`` = unavailable), the phases under ``phases``; the raw records are not
    repeated. The encoder escapes every control and non-ASCII character."""
    runs = []
    for run, mfu in zip(report.runs, report.mfu, strict=True):
        data = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name != "record"}
        data["partial_epoch"] = None if run.partial_epoch is None else asdict(run.partial_epoch)
        data["epoch_flops"] = [None if label is None else asdict(label) for label in run.epoch_flops]
        data["convergence"] = None if run.convergence is None else asdict(run.convergence)
        data["components"] = [{**asdict(c), "status": c.status} for c in run.components]
        data["mfu"] = asdict(mfu)
        runs.append(data)
    body = {
        "runs": runs,
        "sweep": None if report.sweep is None else asdict(report.sweep),
        "sweep_summary": [] if report.sweep is None else sweep_sentences(report.sweep),
        "sweeps": [asdict(s) for s in report.sweeps],
        "phases": [asdict(p) for p in report.phases],
        "search_note": report.search_note,
        "emissions_gco2e": report.emissions_gco2e,
        "emissions_partial": report.emissions_partial,
        "offset": None if report.offset is None else asdict(report.offset),
        "badges": list(badge_snippets),
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
    }
    return json.dumps(_plain(body), indent=2, default=str) + "\n"

"""A :class:`~green_callbacks.report.build.Report` as a LaTeX appendix for a paper: one standalone document
(``pdflatex``/``lualatex`` compile it as is) with booktabs tables — the runs, energy by component, convergence,
and, when the runs form a search, its cost, the sensitivity of the best value to each hyperparameter and the expected
best of n random trials — units in the column heads, and the sources and methods as footnotes.

Every number is formatted by the report's one policy (:mod:`green_callbacks.report.format`), as in the text
report: ``.4g`` joules, grams and FLOPs, ``.3g`` kWh; a value that was not measured is ``unavailable`` (never 0).
Text from a record is hostile input as in HTML: :func:`tex_escape` makes it inert (every LaTeX special character
escaped, control characters removed, characters a default pdfLaTeX cannot typeset written as their code point), so
no record can run a command, open a file or break the document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from green_callbacks.core.units import JOULES_PER_KWH
from green_callbacks.report import format as fmt
from green_callbacks.report._text import strip_control
from green_callbacks.report.build import Report
from green_callbacks.report.equivalents import LABEL, equivalents
from green_callbacks.report.inference import FOOTNOTE as INFERENCE_FOOTNOTE
from green_callbacks.report.inference import TITLE as INFERENCE_TITLE
from green_callbacks.report.inference import phase_table
from green_callbacks.report.render import (
    _CURVE_HEADER,
    _SENS_HEADER,
    _curve_rows,
    _sensitivity_rows,
    sweep_sentences,
)
from green_callbacks.report.runs import RunSummary
from green_callbacks.report.summary import flops_notes

__all__ = ["render_latex", "tex_escape", "tex_number"]

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}", '"': "''",
}
_UNICODE = {
    "—": "---", "–": "--", "−": "$-$", "×": r"$\times$", "≈": r"$\approx$", "≥": r"$\geq$", "≤": r"$\leq$",
    "·": r"$\cdot$", "…": r"\ldots{}", "‘": "`", "’": "'", "“": "``", "”": "''", "₂": r"\textsubscript{2}",
    "²": r"\textsuperscript{2}", "°": r"\textdegree{}", "µ": r"$\mu$", "\u00a0": "~", "\t": " ", "\n": " ",
}
_LATIN1_LETTERS = set("ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿ")


def tex_escape(text: object) -> str:
    """``text`` (from a record: hostile) as inert LaTeX text: specials escaped, control characters removed, accented
    Latin letters kept (pdfLaTeX's UTF-8 input typesets them), the byte of a non-UTF-8 file name written ``\\xNN``
    (as the other formats write it), any other character written as ``[U+XXXX]``."""
    out = []
    for char in strip_control(str(text)):
        if char in _SPECIAL:
            out.append(_SPECIAL[char])
        elif char in _UNICODE:
            out.append(_UNICODE[char])
        elif " " <= char <= "~" or char in _LATIN1_LETTERS:
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # a byte of a non-UTF-8 file name (os.fsdecode): written as \xNN
            out.append(rf"\textbackslash{{}}x{ord(char) - 0xDC00:02x}")
        else:
            out.append(f"[U+{ord(char):04X}]")
    return "".join(out)


_EXPONENT = re.compile(r"^(-?[\d.]+)e([+-])(\d+)$")


def tex_number(value: float | None, spec: str = ".4g", missing: str = fmt.UNAVAILABLE) -> str:
    """``value`` formatted with ``spec`` exactly as the text report does, an exponent written ``$1.2\\times10^{15}$``;
    ``None`` (not measured) is ``missing``, never 0."""
    text = fmt.number(value, spec, missing)
    if text == missing:
        return missing
    match = _EXPONENT.match(text)
    if match:
        mantissa, sign, exponent = match.groups()
        return f"${mantissa}\\times10^{{{'-' if sign == '-' else ''}{int(exponent)}}}$"
    return text


def _kwh(joules: float | None) -> str:
    return tex_number(None if joules is None else joules / JOULES_PER_KWH, ".3g")  # fmt.kwh, its exponent typeset


LONG_TABLE_ROWS = 30
"""Above this many rows a table is a ``longtable`` that breaks across pages (a float taller than a page would be
cut off), in a smaller type instead of scaled to the line width."""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, align: str | None = None,
           escape: bool = True, note: str = "") -> list[str]:
    """A booktabs table; ``escape``: the cells are plain text (escaped here) rather than prepared LaTeX."""
    def cell(value: str) -> str:
        return tex_escape(value) if escape else value

    align = align or "l" * len(header)
    head = " & ".join(cell(h) for h in header) + r" \\"
    body = [" & ".join(cell(c) for c in row) + r" \\" for row in rows]
    if len(rows) > LONG_TABLE_ROWS:
        return [r"\begingroup\footnotesize", rf"\begin{{longtable}}{{@{{}}{align}@{{}}}}",
                rf"\caption{{{caption}{note}}}\\", r"\toprule", head, r"\midrule", r"\endfirsthead", r"\toprule",
                head, r"\midrule", r"\endhead", r"\bottomrule", r"\endlastfoot", *body, r"\end{longtable}",
                r"\endgroup"]
    out = [r"\begin{table}[htbp]", r"\centering", r"\small",
           r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{"
           rf"\begin{{tabular}}{{@{{}}{align}@{{}}}}", r"\toprule", head, r"\midrule", *body,
           r"\bottomrule", r"\end{tabular}}", rf"\caption{{{caption}{note}}}", r"\end{table}"]
    return out


def _run_rows(report: Report) -> list[list[str]]:
    rows = []
    for run in report.runs:
        energy = tex_number(run.energy_j) + (r"\textsuperscript{*}" if run.energy_partial else "")
        rows.append([
            tex_escape(run.label), tex_escape(run.framework), tex_escape(run.status), str(run.epochs),
            tex_number(run.time_s, ".2f"), energy, _kwh(run.energy_j), tex_number(run.emissions_gco2e),
            _train_flops(run), tex_number(run.eval_flops, missing=fmt.NOT_COUNTED),
            tex_number(run.train_flops_per_j),
        ])
    return rows


def _train_flops(run: RunSummary) -> str:
    """The run's training FLOPs, labelled ``sampled`` (with its range) or ``estimated`` as the text report does."""
    text = tex_number(run.train_flops, missing=fmt.NOT_COUNTED)
    if run.train_flops is None or run.train_flops_method not in ("sampled", "estimated"):
        return text
    span = ("" if run.train_flops_low is None or run.train_flops_high is None
            else f", {tex_number(run.train_flops_low)}--{tex_number(run.train_flops_high)}")
    return f"{text} ({run.train_flops_method}{span})"


def _flops_notes(runs: Sequence[RunSummary]) -> list[str]:
    """Why a run's FLOPs are sampled or estimated, and its hardware FLOPs beside the model FLOPs."""
    out = [tex_escape(f"Run {run.label}: {note}.") for run in runs for note in flops_notes(run)]
    return [*out, ""] if out else []


def _component_rows(report: Report) -> list[list[str]]:
    rows = []
    for run in report.runs:
        for part in run.components:
            if part.status == "not used":
                value, kwh = "not used", ""
            else:
                value, kwh = tex_number(part.energy_j), _kwh(part.energy_j)
                if part.status == "partial":
                    value += f" (partial: unavailable in {part.epochs_unavailable} epoch(s))"
            rows.append([tex_escape(run.label), tex_escape(part.name), value, kwh,
                         tex_escape(", ".join(part.methods) or fmt.UNAVAILABLE)])
    return rows


def _convergence_rows(report: Report) -> list[list[str]]:
    rows = []
    for run in report.runs:
        conv = run.convergence
        if conv is None or conv.best_value is None:
            continue
        rows.append([tex_escape(run.label), tex_escape(f"{conv.monitor} ({conv.mode})"),
                     tex_number(conv.best_value), str(conv.epochs), tex_number(conv.time_s, ".2f", "?"),
                     tex_number(conv.train_flops, missing=fmt.NOT_COUNTED), tex_number(conv.energy_j),
                     tex_number(conv.emissions_gco2e)])
    return rows


def _grid_note(runs: Sequence[RunSummary]) -> str:
    """Each grid once, with the runs that used it."""
    grids: dict[str, list[str]] = {}
    for run in runs:
        year = f", {run.intensity_year}" if run.intensity_year else ""
        grid = (f"{run.intensity_gco2e_per_kwh if run.intensity_gco2e_per_kwh is not None else '?'} gCO2e/kWh "
                f"({run.location or '?'}; {run.intensity_source}{year}), PUE "
                f"{run.pue if run.pue is not None else 'unknown'}")
        grids.setdefault(grid, []).append(run.label)
    if len(grids) == 1:
        return next(iter(grids))
    return "; ".join(f"{', '.join(labels)}: {grid}" for grid, labels in grids.items())


def _equivalents_lines(emissions_g: float | None, facility_kwh: float | None, what: str) -> list[str]:
    items = equivalents(emissions_g, facility_kwh)
    if not items:
        return []
    parts = [f"{tex_number(e.amount, '.3g')} {tex_escape(e.factor.comparison)}"
             + r"\footnote{" + tex_escape(e.cite()) + "}" for e in items]
    return [tex_escape(f"{LABEL}: {what} equal ") + ", ".join(parts) + ".", ""]


def _facility_kwh(runs: Sequence[RunSummary]) -> float | None:
    known = [r.energy_j * (r.pue or 1.0) for r in runs if r.energy_j is not None]
    return sum(known) / JOULES_PER_KWH if known else None


def render_latex(report: Report) -> str:
    """The report as a standalone LaTeX document (``article``, booktabs, graphicx, longtable): compile it, or paste
    its body into a paper's appendix (the preamble names the packages it needs)."""
    out = [
        "% Energy and emissions appendix written by green_callbacks (green-callbacks report --format latex).",
        "% Needs the booktabs, graphicx and longtable packages; compile with pdflatex or lualatex.",
        r"\documentclass[11pt]{article}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\usepackage{longtable}",
        r"\begin{document}",
        r"\section*{Energy, emissions and compute of the experiments}",
        "",
    ]
    runs = report.runs
    if runs:
        methods = sorted({f"{c.name}: {m}" for r in runs for c in r.components for m in c.methods
                          if c.status != "not used"})
        grids = _grid_note(runs)
        out += [
            "Energy was measured per component while training, with green\\_callbacks"
            r"\footnote{Measurement methods: " + tex_escape("; ".join(methods) or "none") + ". Energy is IT energy "
            "before PUE; emissions are energy $\\times$ PUE $\\times$ grid carbon intensity; FLOPs are counted, not "
            "estimated: training steps forward and backward, evaluation forward only.}; emissions use the grid "
            r"carbon intensity and PUE of each run\footnote{" + tex_escape(grids) + "}.",
            "",
        ]
        partial = any(r.energy_partial for r in runs)
        note = (r" \textsuperscript{*}Partial: a component was not measured in every epoch." if partial else "")
        out += _table(["Run", "Framework", "Status", "Epochs", "Time (s)", "Energy (J)", "Energy (kWh)",
                       "Emissions (gCO$_2$e)", "Training FLOPs", "Evaluation FLOPs", "Training FLOPs/J"],
                      _run_rows(report), "Training runs: wall time, IT energy (before PUE), emissions (after PUE) "
                      "and FLOPs. A value that was not measured is marked unavailable, never 0.",
                      "lllrrrrrrrr", escape=False, note=note)
        out.append("")
        out += _flops_notes(runs)
        out += _table(["Run", "Component", "Energy (J)", "Energy (kWh)", "Method"], _component_rows(report),
                      "Energy by component and the method that measured it.", "llrrl", escape=False)
        conv = _convergence_rows(report)
        if conv:
            out.append("")
            out += _table(["Run", "Monitored metric", "Best value", "Epochs", "Time (s)", "Training FLOPs",
                           "Energy (J)", "Emissions (gCO$_2$e)"], conv,
                          "Cost to convergence: totals up to the end of the epoch with the best monitored value.",
                          "llrrrrrr", escape=False)
        out.append("")
        total = report.emissions_gco2e
        out.append(tex_escape(f"All runs together emitted {tex_number_plain(total)} gCO2e"
                              + (" (partial: some runs or components were not measured)"
                                 if report.emissions_partial else "") + "."))
        out.append("")
        out += _equivalents_lines(total, _facility_kwh(runs), "these emissions and the facility energy (IT x PUE)")
    hyper = [[tex_escape(r.label), tex_escape(", ".join(f"{k}={v}" for k, v in r.hyperparameters.items()))]
             for r in runs if r.hyperparameters]
    if hyper:
        out += _table(["Run", "Hyperparameters"], hyper, "Hyperparameters of each run, as recorded.",
                      r"lp{0.75\linewidth}", escape=False)
        out.append("")
    if report.phases:  # test / predict / evaluate: what using the models cost
        header, rows = phase_table(report.phases)
        out += [r"\subsection*{" + tex_escape(INFERENCE_TITLE) + "}", ""]
        out += _table(header, rows, tex_escape(INFERENCE_FOOTNOTE), "l" * len(header))
        out.append("")
    for sweep in report.sweeps:
        title = f"Hyperparameter search: {sweep.runs} runs, {sweep.monitor} ({sweep.mode})"
        if sweep.group:
            title += f" — {sweep.group}"
        out += [r"\subsection*{" + tex_escape(title) + "}", ""]
        out += [tex_escape(s) for s in sweep_sentences(sweep)]
        out.append("")
        if sweep.sensitivity:
            out += _table(_SENS_HEADER, _sensitivity_rows(sweep),
                          tex_escape(f"Sensitivity of the best {sweep.monitor} to each hyperparameter: variance "
                                     "explained is the between-value over the total sum of squares (eta squared); "
                                     "std is the sample standard deviation (n − 1)."), "lllrrrrr")
            out.append("")
        out += [r"The expected best of $n$ random trials follows Dodge et al.\footnote{J. Dodge, S. Gururangan, "
                r"D. Card, R. Schwartz, N. A. Smith, ``Show Your Work: Improved Reporting of Experimental "
                r"Results'', EMNLP 2019: the expected maximum over $n$ draws with replacement from the observed "
                r"results.}.", ""]
        out += _table(_CURVE_HEADER, _curve_rows(sweep),
                      r"Expected best of $n$ random trials drawn from these results (Dodge et al., 2019).", "rrrl")
        out.append("")
        out += _equivalents_lines(sweep.total_emissions_gco2e, None, "the search's emissions")
    if report.search_note:
        out += [tex_escape(report.search_note + "."), ""]
    if report.skipped:
        out += [tex_escape(f"{len(report.skipped)} file(s) were not records and were left out."), ""]
    out += [r"\end{document}", ""]
    return "\n".join(out)


def tex_number_plain(value: float | None) -> str:
    """``.4g`` as the text report writes it (for prose that is escaped afterwards)."""
    return fmt.number(value)

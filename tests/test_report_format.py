"""The report formats once (#24.4): one policy (:mod:`green_callbacks.report.format`) writes every number, unit and
missing value; headings carry a role and the text emitter lays them out by it, never by their text; the terminal
summary printed at the end of a fit is the text emitter's output of the same blocks and policy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import green_callbacks.report
from green_callbacks.report import format as fmt
from green_callbacks.report.blocks import ROLES, Heading, Lines, Paragraph, Table, emit_text
from green_callbacks.report.build import build_report
from green_callbacks.report.render import build_document, render_text
from green_callbacks.report.runs import load_runs
from green_callbacks.report.summary import format_epoch_table, format_run_summary, run_summary_lines
from tests.records import RECORDS

REPORT = Path(green_callbacks.report.__file__).parent


def test_a_figure_not_measured_is_a_word_never_zero() -> None:
    assert fmt.energy(None) == fmt.number(None) == fmt.grams(None) == fmt.mass(None) == fmt.litres(None) \
        == fmt.percent(None) == "unavailable"
    assert fmt.flops(None) == "not counted" and fmt.interval(None, 2.0, "J") == "(no basis for an interval)"
    assert fmt.number(float("nan")) == "unavailable"  # a NaN from a logger is not a figure either
    # a measured zero stays a zero: the words are for what was not measured
    assert fmt.energy(0.0) == "0 J (0 kWh)" and fmt.flops(0.0) == "0" and fmt.grams(0.0) == "0 gCO2e"
    assert fmt.energy(1234.5) == "1234 J (0.000343 kWh)" and fmt.energy(1234.5, grouped=True).startswith("1,234 J")
    assert fmt.mass(1234.5) == "1.23 kg" and fmt.percent(0.1234) == "12.3 %" and fmt.litres(0.5) == "0.5 L"
    assert fmt.interval(1141.3, 94.2, "J") == "(1141–94.2 J)"
    assert fmt.text_table(["a", "bb"], [["1", "2"]], right=True) == "a  bb\n-  --\n1   2"


def test_headings_are_laid_out_by_role_not_by_text() -> None:
    # a heading whose text the old emitter matched ("Sweep: ", "Run ") is laid out by its role alone
    assert emit_text([Heading(2, "Sweep: a banner by its text only", "runs")]) == "\n"
    assert emit_text([Heading(2, "Anything at all", "phases")]) == "== Anything at all ==\n"
    assert emit_text([Heading(3, "Run abc (completed)", "search-part")]) == "\nRun abc (completed):\n"
    assert emit_text([Heading(3, "Sensitivity", "run")]) == "\n"
    with pytest.raises(ValueError, match="role"):
        Heading(2, "no role")


def test_every_heading_of_a_report_has_a_role() -> None:
    report = build_report(load_runs([RECORDS / "sweep", RECORDS / "single"]))
    for terminal in (True, False):
        headings = [b for b in build_document(report, terminal=terminal) if isinstance(b, Heading)]
        assert headings and all(h.role in ROLES for h in headings)
        assert {h.role for h in headings} >= {"title", "run", "search", "search-part"}
    assert render_text(report) == emit_text(build_document(report, terminal=True))


def test_the_terminal_summary_walks_the_same_blocks() -> None:
    run = load_runs([RECORDS / "single"]).runs[0]
    summary = format_run_summary(run)
    assert summary == emit_text([Lines(tuple(run_summary_lines(run)), "text")]).rstrip("\n")
    assert "total energy: 1920 J" in summary  # the policy's compact joules, as before
    table = format_epoch_table(run)
    report_text = render_text(build_report(load_runs([RECORDS / "single"])))
    assert table in report_text and summary in report_text  # the report's text shows the very same blocks
    assert emit_text([Table(("x",), (("1",),), right=True), Paragraph("p")]) == "x\n-\n1\np\n"


def test_no_report_module_formats_a_table_or_a_missing_value_of_its_own() -> None:
    words = {fmt.UNAVAILABLE, fmt.NOT_COUNTED, fmt.NOT_USED, fmt.NO_BASIS, fmt.NA}
    # status and method values of the record (data compared, not text shown)
    data_values = {("runs.py", "unavailable"), ("compare.py", "unavailable")}
    found = []
    modules = sorted(REPORT.glob("*.py"))
    assert len(modules) >= 15 and any(m.name == "render.py" for m in modules)
    for module in modules:
        if module.name == "format.py":
            continue
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in words and (module.name, node.value) not in data_values:
                found.append(f"{module.name}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Attribute) and node.attr in ("ljust", "rjust"):
                found.append(f"{module.name}:{node.lineno} .{node.attr} (a table of its own)")
    assert found == []

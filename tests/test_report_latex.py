"""``green-callbacks report --format latex``: a standalone appendix that compiles (pdflatex or lualatex where one is
installed; otherwise, and always, a structural check), with the text report's numbers, and inert record text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.report.command import run_report
from green_callbacks.report.latex import tex_escape

DATA = Path(__file__).parent / "data" / "records"
ENGINE = shutil.which("pdflatex") or shutil.which("lualatex")
# Every command the appendix may contain; a record's text must never add one.
ALLOWED = {
    "documentclass", "usepackage", "begin", "end", "section", "subsection", "footnote", "centering", "small",
    "resizebox", "ifdim", "width", "linewidth", "else", "fi", "toprule", "midrule", "bottomrule", "caption",
    "times", "textsuperscript", "textsubscript", "textbackslash", "textasciitilde", "textasciicircum", "textless",
    "textgreater", "textbar", "ldots", "approx", "geq", "leq", "cdot", "mu", "textdegree", "begingroup",
    "endgroup", "footnotesize", "endfirsthead", "endhead", "endlastfoot",
}


def _latex(paths: list[Path], capsys) -> str:
    assert run_report(paths=[str(p) for p in paths], format="latex") == 0
    return capsys.readouterr().out


def check_structure(tex: str) -> None:
    """What a LaTeX parser would reject: unknown commands, unbalanced braces or environments, math left open."""
    body = re.sub(r"(?m)^%.*$", "", tex)
    commands = set(re.findall(r"\\([A-Za-z]+)", body))
    assert commands <= ALLOWED, commands - ALLOWED
    unescaped = re.sub(r"\\[\\{}&%$#_]", "", body)  # escaped specials are text
    depth = 0
    for char in unescaped:
        depth += {"{": 1, "}": -1}.get(char, 0)
        assert depth >= 0, "a closing brace without an opening one"
    assert depth == 0
    assert "%" not in unescaped and "#" not in unescaped, "an unescaped comment or parameter character"
    for line in unescaped.splitlines():
        assert line.count("$") % 2 == 0, f"math left open: {line}"
    stack = []
    for kind, name in re.findall(r"\\(begin|end)\{([^}]*)\}", body):
        if kind == "begin":
            stack.append(name)
        else:
            assert stack and stack.pop() == name
    assert not stack and body.count(r"\begin{document}") == 1 and body.rstrip().endswith(r"\end{document}")


def compile_if_possible(tex: str, tmp_path: Path) -> None:
    check_structure(tex)
    if ENGINE is None:
        return  # no TeX engine here: the structural check above is the test (CI installs one where it can)
    source = tmp_path / "appendix.tex"
    source.write_text(tex, encoding="utf-8")
    done = subprocess.run([ENGINE, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
                           source.name], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "appendix.pdf").stat().st_size > 1000


def _from_tex(cell: str) -> float:
    match = re.fullmatch(r"\$(-?[\d.]+)\\times10\^\{(-?\d+)\}\$", cell.strip())
    return float(f"{match.group(1)}e{match.group(2)}") if match else float(cell.strip())


def _text_numbers(text: str) -> dict[str, dict[str, float]]:
    """Per run label, the totals as the text report prints them."""
    out: dict[str, dict[str, float]] = {}
    for block in text.split("green_callbacks run ")[1:]:
        label = block.split(" ", 1)[0]
        energy = re.search(r"total energy: ([\d.e+-]+) J \(([\d.e+-]+) kWh\)", block)
        emissions = re.search(r"emissions: ([\d.e+-]+) gCO2e", block)
        flops = re.search(r"FLOPs: training ([\d.e+-]+), evaluation ([\d.e+-]+)", block)
        out[label] = {"energy_j": float(energy.group(1)), "energy_kwh": float(energy.group(2)),
                      "emissions": float(emissions.group(1)), "train_flops": float(flops.group(1)),
                      "eval_flops": float(flops.group(2))}
    return out


def _tex_numbers(tex: str) -> dict[str, dict[str, float]]:
    table = tex.split(r"\caption{Training runs")[0].rsplit(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    out = {}
    for row in table.strip().splitlines():
        cells = row.removesuffix(r" \\").split(" & ")
        out[cells[0]] = {"energy_j": _from_tex(cells[5]), "energy_kwh": _from_tex(cells[6]),
                         "emissions": _from_tex(cells[7]), "train_flops": _from_tex(cells[8]),
                         "eval_flops": _from_tex(cells[9])}
    return out


@pytest.mark.parametrize("folder", ["single", "sweep"])
def test_appendix_compiles_and_its_numbers_are_the_text_reports(folder, tmp_path, capsys) -> None:
    tex = _latex([DATA / folder], capsys)
    assert run_report(paths=[str(DATA / folder)], format="text") == 0
    text = capsys.readouterr().out
    expected = _text_numbers(text)
    assert expected and _tex_numbers(tex) == expected
    assert r"\toprule" in tex and r"\footnote{Measurement methods:" in tex and "not an offset" in tex
    if folder == "single":  # 1920 J, 0.03584 g: the fixture's record, by hand
        assert expected["single00"]["energy_j"] == 1920 and expected["single00"]["emissions"] == 0.03584
    else:  # a search: its cost, the sensitivity and the expected-best sections
        assert r"\subsection*{Hyperparameter search" in tex and "Sensitivity of the best" in tex
        assert "Expected best of $n$ random trials" in tex
    compile_if_possible(tex, tmp_path)


def test_a_large_search_breaks_its_tables_across_pages(tmp_path, capsys) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    for copy in range(5):  # 45 runs: 90 rows of energy by component, more than a page holds
        for path in (DATA / "sweep").glob("green-run-*.json"):
            data = read_record(path)
            data["run_id"] = f"c{copy}" + data["run_id"][2:]
            (folder / f"green-run-c{copy}-{path.name[10:]}").write_text(json.dumps(data), encoding="utf-8")
    tex = _latex([folder], capsys)
    assert tex.count(r"\begin{longtable}") >= 2 and r"\endhead" in tex
    assert all(f"c{copy}" in tex for copy in range(5))
    compile_if_possible(tex, tmp_path)
    if ENGINE is not None:
        log = (tmp_path / "appendix.log").read_text(errors="replace")
        assert "Float too large" not in log


HOSTILE = r"}\end{document}\input{/etc/passwd}\write18{touch pwned}%^^5c$#&_~<>|" + "\"é中😀\x1b[31m\n"


def test_hostile_record_text_is_inert(tmp_path, capsys) -> None:
    data = read_record(DATA / "single" / "green-run-single.json")
    data["framework"] = HOSTILE
    data["run_id"] = "\\x{}#%$" + data["run_id"]
    data["carbon"]["source"] = HOSTILE
    data["carbon"]["location"] = HOSTILE
    data["methods"]["cpu"] = [HOSTILE]
    data["convergence"]["monitor"] = HOSTILE
    path = tmp_path / "green-run-hostile.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    tex = _latex([path], capsys)
    assert "\\input" not in tex and "\\write" not in tex and "\x1b" not in tex
    assert "[U+4E2D]" in tex and "é" in tex
    work = tmp_path / "tex"
    work.mkdir()
    compile_if_possible(tex, work)
    assert not (work / "pwned").exists()


def test_tex_escape_by_hand() -> None:
    assert tex_escape("50% of $5 & #1_{x}") == r"50\% of \$5 \& \#1\_\{x\}"
    assert tex_escape("a\\b~c^d") == r"a\textbackslash{}b\textasciitilde{}c\textasciicircum{}d"
    assert tex_escape("n − 1 — ok\x07") == "n $-$ 1 --- ok"

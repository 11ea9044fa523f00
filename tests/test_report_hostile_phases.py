"""A folder of test / predict / evaluate records only goes through the same report as fits: every ``--format``
escapes what the records hold and says ``unavailable`` the same way (#28.4); text that cannot be encoded (a file
name that was not UTF-8) is replaced, never fatal, and report files are written atomically (#28.5).

The phase records are written by the phase driver (``core/phase_session.py``, the one every adapter drives) with fake
sensors and the fake clock; hostile text goes into every string it writes (framework, model, hyperparameters, the
linked fit's id and framework, the error, the folder) and, by editing the file, into the phase name and quality.
"""

from __future__ import annotations

import csv
import html.parser
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.convergence import Totals
from green_callbacks.core.phase_session import PhaseSession
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.report.command import FORMATS, run_report

ROOT = Path(__file__).resolve().parents[1]
SINGLE = Path(__file__).parent / "data" / "records" / "single" / "green-run-single.json"
EVIL = ('<script>alert(1)</script> <img src=x onerror="alert(2)"> [c](javascript:alert(3)) '
        '![x](http://evil.example/p.png) <javascript:alert(4)> \x1b]0;pwned\x07\x1b[31mred\x1b[0m \x9b31m')
FOLDER = "<img src=x onerror=alert(5)>"
CAFE = os.fsdecode(b"/data/caf\xe9")  # a file name that is not UTF-8, as os.listdir gives it: '/data/caf\udce9'


class _Fit:
    """The parts of a finished fit session a phase links to (its record is not among those read)."""

    status = "completed"
    run_id = EVIL
    framework = EVIL
    record_path = Path("/nowhere") / "green-run-fit.json"
    totals = Totals(epochs=2, time_s=10.0, energy_j=1200.0, emissions_gco2e=0.5)
    carbon = None

    def add_phase(self, entry: dict) -> None:
        pass


def _phase(folder: Path, clock, *, training: object = None, fail: bool = False, text: str = EVIL) -> Path:
    """One phase of 3 batches of 4 samples at 120 W, 0.5 s each: the first is warm-up, then 120 × 1.0 J / 8 samples;
    with ``fail`` the first batch raises."""
    np = pytest.importorskip("numpy")
    config = GreenConfig(carbon_intensity=500.0, output_dir=str(folder))
    sensors = [ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node")]
    phase = PhaseSession(config, framework=text, kind="test", sensors=sensors, training=training)
    phase.start(extra={"model": text, "hyperparameters": {text: text}}, handle_signals=False)
    for _ in range(1 if fail else 3):
        phase.batch_start(np.zeros((4, 2)))
        clock.advance(0.5)
        if fail:  # the first batch raises: nothing per sample was measured
            phase.abort("failed", RuntimeError(text))
            return phase.record_path  # type: ignore[return-value]
        phase.batch_end()
    phase.end()
    assert phase.record_path is not None
    return phase.record_path


@pytest.fixture
def phases(tmp_path: Path, fake_clock) -> Path:
    """Three phase records with hostile text, and a broken file whose name holds an escape sequence."""
    folder = tmp_path / FOLDER
    linked = _phase(folder, fake_clock, training=_Fit())
    _phase(folder, fake_clock, fail=True)
    data = json.loads(linked.read_text())
    data.update(kind=EVIL, run_id=EVIL)
    data["phase"]["quality"] = EVIL
    (folder / "green-run-renamed.json").write_text(json.dumps(data))
    (folder / "green-run-\x1b[2Jbroken.json").write_text("{")
    return folder


def _no_control(text: str) -> bool:
    return not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in text)


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _check_html(page: str) -> None:
    parser = _Tags()
    parser.feed(page)
    names = [tag for tag, _ in parser.tags]
    assert "script" not in names and "table" in names
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert not str(attrs.get("href", "")).startswith("javascript:"), (tag, attrs)
        if tag == "img":
            assert str(attrs.get("src")).startswith("data:image/png;base64,"), attrs
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "Using the model</h2>" in page


def _check_markdown(text: str) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    page = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    assert "<script" not in page and "<img" not in page
    assert 'href="javascript:' not in page and "evil.example/p.png\"" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "Using the model</h2>" in page


def _check_csv(text: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["kind"] for r in rows].count("test") == 2 and len(rows) == 3
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["latency_p50_s"] == "" and failed["energy_per_sample_j"] == ""  # unmeasured: empty, never 0
    assert float(failed["energy_j"]) == pytest.approx(60.0)  # 0.5 s at 120 W before the first batch failed
    linked = next(r for r in rows if r["kind"] == "test" and r["status"] == "completed")
    assert float(linked["energy_per_sample_j"]) == pytest.approx(120.0 / 8)  # batches 2 and 3: 1 s at 120 W
    assert float(linked["break_even_samples_energy"]) == pytest.approx(1200.0 / 15.0)  # 80 predictions
    return rows


def _check_json(text: str) -> None:
    body = json.loads(text)
    assert body["runs"] == [] and len(body["phases"]) == 3
    kinds = sorted(p["kind"] for p in body["phases"])
    assert kinds == sorted([EVIL, "test", "test"])
    assert {p["framework"] for p in body["phases"]} == {EVIL}  # JSON keeps the text as it is, escaped by JSON
    failed = next(p for p in body["phases"] if p["status"] == "failed")
    assert failed["latency_p50_s"] is None and failed["energy_per_sample_j"] is None  # unmeasured: null, never 0
    assert failed["samples"] == 0 and failed["energy_j"] == pytest.approx(60.0)
    linked = next(p for p in body["phases"] if p["kind"] == "test" and p["break_even"] is not None)
    assert linked["break_even"]["samples_for_energy"] == pytest.approx(80.0)
    assert any("broken.json" in s["path"] for s in body["skipped"])


def _check_latex(text: str) -> None:
    import tempfile

    from tests.test_report_latex import compile_if_possible

    with tempfile.TemporaryDirectory() as folder:  # no command, brace, comment or math from a record; it compiles
        compile_if_possible(text, Path(folder))
    assert "Using the model" in text and r"\textless{}script\textgreater{}alert(1)" in text


CHECKS = {"markdown": _check_markdown, "html": _check_html, "csv": _check_csv, "json": _check_json,
          "latex": _check_latex}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_phase_only_folder_is_escaped_in_every_format(phases: Path, capsys, fmt: str) -> None:
    assert run_report(paths=[str(phases)], format=fmt) == 0
    captured = capsys.readouterr()
    assert _no_control(captured.out) and _no_control(captured.err), fmt  # ESC, BEL, CSI never reach the terminal
    assert "broken.json" in captured.err and "[2J" in captured.err  # the name stays, the ESC goes
    if fmt == "text":
        assert captured.out.startswith("== Using the model ==") and "pwned" in captured.out
        assert "unavailable" in captured.out
    else:
        CHECKS[fmt](captured.out)
    out = phases.parent / f"report.{fmt}"
    assert run_report(paths=[str(phases)], format=fmt, out=str(out)) == 0
    written = out.read_text(encoding="utf-8")
    assert written == captured.out  # the file and the terminal get the same text
    assert f"wrote {fmt} report to" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", FORMATS)
def test_out_under_a_file_is_one_line_and_exit_2(phases: Path, capsys, fmt: str) -> None:
    blocker = phases.parent / "a-file"
    blocker.write_text("not a folder")
    code = run_report(paths=[str(phases)], format=fmt, out=str(blocker / "report.out"))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("green-callbacks report:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert f"{blocker} is not a folder; give --out a writable place" in lines[0]
    assert blocker.read_text() == "not a folder"


def test_out_under_a_file_from_the_command_line(phases: Path) -> None:
    blocker = phases.parent / "a-file"
    blocker.write_text("x")
    result = subprocess.run([sys.executable, "-m", "green_callbacks.cli", "report", str(phases), "--format", "html",
                             "--out", str(blocker / "report.html")], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("green-callbacks report: cannot write the html report to ")


# ------------------------------------------------------------------------------------ text that cannot be encoded
@pytest.fixture
def cafe(tmp_path: Path, fake_clock) -> Path:
    """Two good fits, a fit whose hyperparameter is a non-UTF-8 file name, and a phase whose framework is one."""
    folder = tmp_path / "runs"
    folder.mkdir()
    good = json.loads(SINGLE.read_text())
    for run_id in ("good0000", "good1111"):
        (folder / f"green-run-{run_id}.json").write_text(json.dumps({**good, "run_id": run_id}))
    bad = {**good, "run_id": "cafe0000", "hyperparameters": {**good["hyperparameters"], "data": CAFE}}
    (folder / "green-run-cafe.json").write_text(json.dumps(bad))  # JSON keeps it as the escape "\udce9"
    _phase(folder, fake_clock, text=CAFE)
    return folder


# html draws the plots: 4 s
@pytest.mark.parametrize("fmt", [pytest.param(f, marks=pytest.mark.slow) if f == "html" else f for f in FORMATS])
def test_a_non_utf8_file_name_is_replaced_never_fatal(cafe: Path, capsys, fmt: str) -> None:
    out = cafe.parent / f"report.{fmt}"
    assert run_report(paths=[str(cafe)], format=fmt, out=str(out)) == 0  # before: UnicodeEncodeError, 0-byte file
    text = out.read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    assert all(run_id in text for run_id in ("good0000", "good1111", "cafe0000")), fmt  # no run is lost
    if fmt == "json":
        body = json.loads(text)
        assert any(r["hyperparameters"].get("data") == CAFE for r in body["runs"])  # exact, as a JSON escape
        assert body["phases"][0]["framework"] == CAFE
    elif fmt == "latex":
        assert "/data/caf\\textbackslash{}xe9" in text  # the same, its backslash escaped for LaTeX
    else:
        assert "/data/caf\\xe9" in text  # the byte the name held, written out
    assert run_report(paths=[str(cafe)], format=fmt) == 0  # the terminal too
    assert "cafe0000" in capsys.readouterr().out


def test_an_output_that_cannot_be_written_whole_leaves_the_old_file(tmp_path: Path) -> None:
    """A file-size limit (a full disk or quota) stops the write midway: the previous report stays whole, no
    temporary file is left, and the message is one line (before: the report was cut to the limit)."""
    out = tmp_path / "report.html"
    out.write_text("the previous report")

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    result = subprocess.run([sys.executable, "-m", "green_callbacks.cli", "report", str(SINGLE), "--format", "html",
                             "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            preexec_fn=small_files, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write the html report to" in result.stderr and "File too large" in result.stderr
    assert out.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_encodable_by_hand() -> None:
    from green_callbacks.report._text import encodable

    assert encodable(CAFE) == "/data/caf\\xe9"  # the byte os.fsdecode kept as U+DCE9
    assert encodable("a\ud800b") == "a\ufffdb"  # a surrogate that stands for no byte
    assert encodable(CAFE + " — ok", "ascii") == "/data/caf\\xe9 \\u2014 ok"  # an ASCII terminal
    assert encodable("plain — text") == "plain — text"

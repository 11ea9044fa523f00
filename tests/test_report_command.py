"""``green-callbacks report`` end to end (through run_report / add_report_arguments): every format, files written."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from green_callbacks.report.command import add_report_arguments, run_report

RECORDS = Path(__file__).parent / "data" / "records"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _parse(argv: list[str]) -> argparse.Namespace:
    return add_report_arguments(argparse.ArgumentParser(prog="report")).parse_args(argv)


def test_text_report_of_the_grid(capsys) -> None:
    assert run_report(_parse([str(RECORDS / "sweep"), "--tolerance", "3%"])) == 0
    out = capsys.readouterr().out
    assert "a full 3 x 3 grid over lr, batch_size (9 runs)" in out
    assert "5 random trial(s) would on average reach within 3% of the best" in out
    assert "saved 4 run(s)" in out and "1,200 J" in out
    assert "91.1 %" in out  # (2700 - 240) / 2700 of the energy went to runs that did not produce the best model
    assert "Dodge et al." in out and "Cost to offset 0.45 g CO2e" in out


def test_crashed_and_bad_files(capsys) -> None:
    code = run_report(paths=[str(RECORDS / "crashed"), str(RECORDS / "bad")])
    captured = capsys.readouterr()
    assert code == 0
    assert "green-run-corrupt.json" in captured.err and "is not the version this green_callbacks reads" in captured.err
    assert "interrupted" in captured.out
    assert "total energy is partial: gpu unavailable in 1 of 2 epoch(s)" in captured.out
    assert "MFU: unknown: FLOPs not counted" in captured.out


def test_exit_codes(capsys, tmp_path) -> None:
    assert run_report(paths=[str(RECORDS / "bad")]) == 1
    assert run_report(paths=[str(tmp_path / "missing")]) == 2
    assert run_report(paths=[str(RECORDS / "sweep")], tolerance="lots") == 2
    assert run_report(paths=[str(RECORDS / "sweep")], certificate_url="ftp://x") == 2
    assert run_report(paths=[str(RECORDS / "sweep")], mfu_dtype="int4") == 2
    err = capsys.readouterr().err
    assert "no readable run record" in err and "missing" in err and "tolerance" in err and "http(s) URL" in err
    assert "dtype='int4' is not a known compute dtype" in err
    with pytest.raises(TypeError, match="unknown option"):
        run_report(paths=["x"], colour="green")


def test_markdown_with_plots_and_badges(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "paper" / "appendix.md"
    code = run_report(paths=[str(RECORDS / "sweep"), str(RECORDS / "single")], format="markdown", out=str(out),
                      plots=str(tmp_path / "paper" / "fig"), badges=str(tmp_path / "badges"), pledge=True,
                      certificate_url="https://example.org/cert/7", tolerance="3%")
    assert code == 0
    text = out.read_text()
    assert "| lr | 0.001 | 3 | 0.78 | 0.03 | 0.75 | 0.81 | 73.5 % |" in text  # 0.015 / 0.0204 = 73.5 %
    assert "| batch_size | 16 | 3 | 0.75 | 0.05 | 0.7 | 0.8 | 26.5 % |" in text  # 0.0054 / 0.0204 = 26.5 %
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
        png = (out.parent / link).read_bytes()
        assert png.startswith(PNG_MAGIC)
    assert "![sweep-expected-best.png](fig/sweep-expected-best.png)" in text
    assert "[![carbon neutral (offset certificate)](../badges/carbon-neutral.svg)](https://example.org/cert/7)" in text
    for svg in (tmp_path / "badges").glob("*.svg"):
        assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert sorted(p.name for p in (tmp_path / "badges").iterdir()) == [
        "carbon-neutral.svg", "co2e-measured.svg", "green-ai-pledge.svg"]
    assert "wrote markdown report" in capsys.readouterr().err


def test_pngs_open_with_matplotlib(tmp_path) -> None:
    mpimg = pytest.importorskip("matplotlib.image")

    three = [RECORDS / "sweep" / "green-run-sweep-00.json", RECORDS / "sweep" / "green-run-sweep-22.json",
             RECORDS / "crashed"]  # three runs of val_acc: a small sweep, every run drawn
    assert run_report(paths=[str(p) for p in three], plots=str(tmp_path)) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "sweep-best-vs-energy.png" in names and "sweep-expected-best.png" in names
    assert "run-crashed0-energy.png" in names and "run-crashed0-metric.png" in names
    image = mpimg.imread(tmp_path / "sweep-expected-best.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_html_is_self_contained(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "report.html"
    assert run_report(paths=[str(RECORDS / "sweep")], format="html", out=str(out), pledge=True) == 0
    page = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # three search figures (best against energy with best-so-far, the metric against each hyperparameter, the
    # expected best), two of the best run (a sweep of 9 > 4 runs)
    assert len(images) == 3 + 2
    assert "best run of the search only" in page
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert not re.search(r'src="https?:', page) and "<svg" in page


def test_html_without_matplotlib(monkeypatch, tmp_path, capsys) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "r.html"
    assert run_report(paths=[str(RECORDS / "single")], format="html", out=str(out)) == 0
    assert 'pip install &quot;green-callbacks[plot]&quot;' in out.read_text()
    assert run_report(paths=[str(RECORDS / "single")], plots=str(tmp_path / "p")) == 2
    assert 'pip install "green-callbacks[plot]"' in capsys.readouterr().err


def test_csv_never_writes_a_silent_zero(capsys) -> None:
    assert run_report(paths=[str(RECORDS / "crashed"), str(RECORDS / "single")], format="csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    crashed = next(r for r in rows if r["status"] == "interrupted")
    assert crashed["train_flops"] == "" and crashed["train_flops_to_convergence"] == "" and crashed["mfu"] == ""
    assert crashed["energy_partial"] == "True" and float(crashed["energy_j"]) == 150.0
    single = next(r for r in rows if r["status"] == "completed")
    assert float(single["gpu_energy_j"]) == 1800.0 and float(single["energy_to_convergence_j"]) == 1280.0
    assert json.loads(single["hyperparameters"]) == {"lr": 0.001, "model.layers": 2, "model.width": 64}


def test_json_export(capsys) -> None:
    assert run_report(paths=[str(RECORDS / "sweep"), str(RECORDS / "bad")], format="json", peak_tflops=312) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["runs"]) == 9 and len(data["skipped"]) == 2
    sens = {s["name"]: s["variance_explained"] for s in data["sweep"]["sensitivity"]}
    assert sens["lr"] == pytest.approx(0.015 / 0.0204)
    assert data["sweep"]["grid"]["combinations"] == 9
    # per run: (3 x 1e12 + 3 x 1e11) FLOPs over 30 s on one GPU of 312 TFLOP/s
    assert data["runs"][0]["mfu"]["value"] == pytest.approx(3.3e12 / (30.0 * 312e12))
    assert data["offset"]["cost"] == pytest.approx(0.45 / 1e6 * 23.0)


def test_offset_price_option(capsys) -> None:
    assert run_report(paths=[str(RECORDS / "sweep")], offset_price=40.0, offset_currency="CHF") == 0
    out = capsys.readouterr().out
    assert f"{0.45 / 1e6 * 40:.4g} CHF at 40 CHF/t (price: given by the user" in out


def test_importing_the_report_does_not_import_matplotlib() -> None:
    code = ("import sys, green_callbacks.report.command, green_callbacks.report.render, green_callbacks.report.build;"
            "print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

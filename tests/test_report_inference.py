"""The report's "Using the model" section: rows and break-even from records (hand values), and end to end."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from green_callbacks.report.build import Report
from green_callbacks.report.inference import is_phase_record, phase_rows, phase_table
from green_callbacks.report.render import render_markdown, render_text


def _fit(run_id: str = "fit1", energy_j: float = 3600.0, grams: float = 0.4) -> dict:
    return {"schema": "green-callbacks/run/1", "run_id": run_id, "status": "completed", "epochs": [],
            "totals": {"energy_j": energy_j, "emissions_gco2e": grams}}


def _phase(kind: str = "predict", training: dict | None = None, per_sample_j: float | None = 0.5,
           per_sample_g: float | None = 1e-4) -> dict:
    return {"schema": "green-callbacks/run/1", "kind": kind, "run_id": "p1", "framework": "keras",
            "status": "completed", "epochs": [], "totals": {}, "_path": f"/x/green-run-{kind}.json",
            "training": training,
            "phase": {"samples": 1000, "duration_s": 2.0, "energy_j": 600.0, "emissions_gco2e": 0.05,
                      "energy_per_sample_j": per_sample_j, "wh_per_1000_samples": None if per_sample_j is None
                      else per_sample_j / 3.6, "samples_per_joule": 2.0, "mean_power_w": 300.0,
                      "latency_p50_s": 0.01, "latency_p95_s": 0.02, "emissions_per_sample_gco2e": per_sample_g,
                      "quality": "measured"}}


def test_which_records_are_phases() -> None:
    assert not is_phase_record({"status": "completed"})  # an older record without kind is a fit
    assert not is_phase_record({"kind": "fit"})
    assert is_phase_record({"kind": "predict"})


def test_break_even_prefers_the_fit_record_read_with_it() -> None:
    embedded = {"run_id": "fit1", "energy_j": 100.0, "emissions_gco2e": 0.01}
    rows = phase_rows([_fit(), _phase(training=embedded)])
    assert len(rows) == 1
    be = rows[0].break_even
    assert be is not None
    assert be.samples_for_energy == pytest.approx(3600.0 / 0.5)  # 7,200 predictions, from the fit record
    assert be.samples_for_emissions == pytest.approx(0.4 / 1e-4)  # 4,000: inference on a dirtier grid
    rows = phase_rows([_phase(training=embedded)])  # the fit record not among those read: its embedded totals
    assert rows[0].break_even.samples_for_energy == pytest.approx(200.0)  # type: ignore[union-attr]


def _phases_only(rows) -> Report:
    return Report(runs=(), skipped=(), sweeps=(), mfu=(), emissions_gco2e=None, emissions_runs_unavailable=0,
                  emissions_partial=False, offset=None, badges=(), phases=tuple(rows))


def test_text_and_markdown() -> None:
    rows = phase_rows([_fit(), _phase(training={"run_id": "fit1"}), _phase("test", per_sample_j=None)])
    header, cells = phase_table(rows)
    assert header[0] == "phase" and cells[0][-2] == "7,200 (energy), 4,000 (emissions)"
    assert cells[1][-2] == "no training record" and cells[1][4] == "unavailable"
    text = render_text(_phases_only(rows))  # the report's own emitters, as for fits
    assert text.startswith("== Using the model ==")
    assert "7,200 (energy), 4,000 (emissions)" in text
    assert "no training record" in text and "unavailable" in text
    md = render_markdown(_phases_only(rows))
    assert "\n## Using the model\n" in md and "| predict | keras | 1000 |" in md
    assert "## Runs" not in md  # no empty section for the fits that are not there
    assert "Using the model" not in render_text(_phases_only([]))


def test_report_command_shows_the_break_even_of_a_real_run(tmp_path, fake_clock, capsys) -> None:
    pytest.importorskip("lightning")
    from green_callbacks.lightning import GreenCallback
    from green_callbacks.report.command import run_report
    from tests.test_inference_lightning import FIT_J, J_PER_SAMPLE, data, make_module, make_trainer, sensors

    callback = GreenCallback(sensors=sensors(), carbon_intensity=400.0, output_dir=str(tmp_path / "runs"))
    trainer = make_trainer(tmp_path, callback)
    module = make_module(fake_clock.advance)
    trainer.fit(module, data(), data(6))
    trainer.predict(module, data())
    assert run_report(paths=[str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "== Using the model ==" in out
    line = next(x for x in out.splitlines() if x.startswith("predict"))
    assert line.split()[-2] == f"{FIT_J / J_PER_SAMPLE:,.0f}"  # break-even column: 500 J / 7.8125 J = 64
    assert out.count("green-run-") >= 1  # the fit's own section is still there
    assert run_report(paths=[str(tmp_path / "runs")], format="markdown") == 0
    assert "## Using the model" in capsys.readouterr().out
    assert run_report(paths=[str(tmp_path / "runs")], format="html") == 0  # one section model: HTML has it too
    html = capsys.readouterr().out
    assert "Using the model</h2>" in html and f"<td>{FIT_J / J_PER_SAMPLE:,.0f}</td>" in html
    phase_only = [p for p in Path(tmp_path / "runs").glob("green-run-*.json") if p != callback.record_path]
    assert run_report(paths=[str(p) for p in phase_only]) == 0
    assert capsys.readouterr().out.startswith("== Using the model ==")
    # the phase records alone, machine-readable: real JSON and CSV (before: the text table in every format)
    assert run_report(paths=[str(p) for p in phase_only], format="json") == 0
    body = json.loads(capsys.readouterr().out)
    assert body["runs"] == [] and [p["kind"] for p in body["phases"]] == ["predict"]
    assert body["phases"][0]["break_even"]["samples_for_energy"] == pytest.approx(FIT_J / J_PER_SAMPLE)
    assert run_report(paths=[str(p) for p in phase_only], format="csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["kind"], r["framework"], r["samples"]) for r in rows] == [("predict", "lightning", "10")]
    assert float(rows[0]["energy_per_sample_j"]) == pytest.approx(J_PER_SAMPLE)
    assert float(rows[0]["break_even_samples_energy"]) == pytest.approx(FIT_J / J_PER_SAMPLE)

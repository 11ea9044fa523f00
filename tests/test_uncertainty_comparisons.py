"""The report's own comparisons know the noise (docs/uncertainty.md): a counterfactual grid's difference from this
run is "within the uncertainty" when the intensities' ranges allow either to be lower, stated plainly otherwise;
hand-computed from the documented bounds (packaged lifecycle table: up to 45 gCO2e/kWh lower)."""

from __future__ import annotations

import pytest

from green_callbacks.core.uncertainty import (
    Factor,
    Interval,
    difference_interval,
    repriced_difference,
)
from green_callbacks.report.footprint import FootprintOptions, footprint_section, footprint_text

LIFECYCLE = "lifecycle, annual average, production-based"


def _record(low_j=3.0e6, high_j=4.5e6, kind="table"):
    """1 kWh at PUE 1 in France (56 gCO2e/kWh, lifecycle): the energy's interval 3.0–4.5 MJ."""
    return {"schema": "green-callbacks/run/1.1", "status": "completed", "epochs": [],
            "footprint": {}, "carbon": {"intensity_gco2e_per_kwh": 56.0, "kind": kind, "basis": LIFECYCLE,
                                        "location": "FR", "pue": 1.0},
            "totals": {"energy_j": 3.6e6, "energy_low_j": low_j, "energy_high_j": high_j, "time_s": 3600.0,
                       "emissions_gco2e": 56.0}}


OPTIONS = FootprintOptions(alternatives=("SE", "PL", 50.0, 0.0), cloud_regions=False, lowest=0)


def test_difference_interval_in_quadrature_by_side():
    d = difference_interval(Interval(10.0, 7.0, 14.0), Interval(4.0, 3.0, 8.0))
    # low: 10-3 on a's side, 8-4 on b's; high: 14-10 and 4-3
    assert d.value == 6.0
    assert d.low == pytest.approx(6.0 - (3.0 ** 2 + 4.0 ** 2) ** 0.5)
    assert d.high == pytest.approx(6.0 + (4.0 ** 2 + 1.0) ** 0.5)
    assert difference_interval(None, Interval(1, 1, 1)) is None


def test_repriced_difference_by_hand():
    fr = Factor(1 - 45 / 56, 1.0, "")
    pl = Factor(1 - 45 / 661.9, 1.0, "")
    shared = Interval(1.0, 3.0 / 3.6, 4.5 / 3.6)
    d = repriced_difference(1.0, shared, 56.0, fr, 661.9, pl)
    # intensities: PL within 616.9-661.9, FR within 11-56: the difference 605.9 within 605.9 -/+ 45
    assert d.beyond is True and d.value == pytest.approx(605.9)
    assert d.interval.low == pytest.approx(560.9 * 3.0 / 3.6)
    assert d.interval.high == pytest.approx(650.9 * 4.5 / 3.6)
    se = Factor(0.0, 1.0, "")  # 40.7 - 45 < 0: never below 0
    within = repriced_difference(1.0, shared, 56.0, fr, 40.7, se)
    # SE - FR = -15.3, down sqrt(40.7^2 + 0), up sqrt(0 + 45^2): -56 .. 29.7 holds 0
    assert within.beyond is False
    assert within.interval.low == pytest.approx(-56.0 * 4.5 / 3.6)
    assert within.interval.high == pytest.approx(29.7 * 4.5 / 3.6)
    unknown = repriced_difference(1.0, shared, 56.0, None, 40.7, se)
    assert unknown.beyond is None and unknown.interval is None


def test_grid_table_says_which_difference_is_within_the_uncertainty():
    section = footprint_section(_record(), OPTIONS)
    labels = [g.label for g in section.grids]
    assert labels == ["this run", "SE", "PL", "50 gCO2e/kWh", "0 gCO2e/kWh"]
    spans = dict(zip(labels, section.grid_spans, strict=True))
    assert spans["SE"].difference.beyond is False
    assert spans["PL"].difference.beyond is True
    # a value the user gave is exact: 50 - 56 = -6, up to 45 above (France's range): -6 .. 39, within
    assert spans["50 gCO2e/kWh"].difference.beyond is False
    assert spans["50 gCO2e/kWh"].difference.interval.high == pytest.approx(39.0 * 4.5 / 3.6)
    # 0 against France's 11..56: beyond, -56 .. -11 g per kWh, times the energy's 0.833..1.25 kWh
    zero = spans["0 gCO2e/kWh"].difference
    assert zero.beyond is True
    assert (zero.interval.low, zero.interval.high) == pytest.approx((-56.0 * 4.5 / 3.6, -11.0 * 3.0 / 3.6))
    # PL's own emissions: energy -1/6 +1/4, intensity -45/661.9: in quadrature on the low side
    pl = spans["PL"].emissions
    assert pl.low == pytest.approx(661.9 * (1 - ((0.5 / 3.6 * 1.2) ** 2 + (45 / 661.9) ** 2) ** 0.5))
    assert pl.high == pytest.approx(661.9 * 1.25)
    text = footprint_text(_record(), OPTIONS)
    se_line = next(line for line in text.splitlines() if line.split()[1:2] == ["SE"])
    pl_line = next(line for line in text.splitlines() if line.split()[1:2] == ["PL"])
    assert "-15.3 g (within the uncertainty)" in se_line
    assert "+606 g (+467 to +814 g)" in pl_line and "within" not in pl_line
    assert "operational emissions: 56 g CO2e (10 g–70 g)" in text


def test_without_an_energy_interval_the_verdict_stands_and_the_range_is_unavailable():
    section = footprint_section(_record(low_j=None, high_j=None), OPTIONS)
    se, pl = section.grid_spans[1], section.grid_spans[2]
    assert se.difference.beyond is False and pl.difference.beyond is True
    assert pl.difference.interval is None and pl.emissions is None
    text = footprint_text(_record(low_j=None, high_j=None), OPTIONS)
    pl_line = next(line for line in text.splitlines() if line.split()[1:2] == ["PL"])
    assert "+606 g" in pl_line and "(no basis for an interval)" in pl_line  # the emissions column, not the verdict
    assert "+606 g (" not in pl_line


def test_a_live_intensity_has_no_basis_to_tell():
    section = footprint_section(_record(kind="live"), OPTIONS)
    assert all(s.difference.beyond is None for s in section.grid_spans[1:])
    assert "(no basis for an interval)" in footprint_text(_record(kind="live"), OPTIONS)


def test_the_report_says_it_in_every_format(tmp_path):
    import json

    from green_callbacks.report.build import ReportOptions, build_report
    from green_callbacks.report.footprint import GRIDS_NOTE
    from green_callbacks.report.render import render_html, render_markdown, render_text
    from green_callbacks.report.runs import load_runs
    from tests.records import make_records

    carbon = {"intensity_gco2e_per_kwh": 56.0, "source": "Ember", "year": 2023, "location": "FR",
              "basis": LIFECYCLE, "kind": "table", "pue": 1.0}
    data = make_records.record(run_id="f" * 32, status="completed", carbon=carbon,
                               components={"gpu": {"scope": "device", "method": "nvml-energy-counter"}},
                               epochs_spec=[(1800.0, {"gpu": 1.8e6}, 0.0, 1e9, 1e8, {})] * 2, monitor="val_loss",
                               mode="min", hyperparameters={})
    data["footprint"] = {}
    data["totals"]["energy_low_j"], data["totals"]["energy_high_j"] = 3.0e6, 4.5e6
    (tmp_path / "green-run-1.json").write_text(json.dumps(data), encoding="utf-8")
    report = build_report(load_runs([tmp_path]), ReportOptions(footprint=OPTIONS))
    for text in (render_text(report), render_markdown(report)):
        assert "-15.3 g (within the uncertainty)" in text and "+606 g (+467 to +814 g)" in text
        assert GRIDS_NOTE.split(".")[0] in text
    assert "within the uncertainty" in render_html(report)

"""Run summaries, the 3 x 3 grid sweep, MFU, offsets and badges on the fixture records (tests/data/records).

The fixtures are written by tests/data/records/make_records.py with chosen numbers; the expectations below are
worked out by hand from those choices, not read from the code.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.report.badges import carbon_neutral_badge, emissions_badge, format_grams, pledge_badge
from green_callbacks.report.build import ReportOptions, build_report
from green_callbacks.report.efficiency import record_dtype, run_mfu
from green_callbacks.report.offsets import DEFAULT_PRICE, OffsetPrice, offset_cost
from green_callbacks.report.runs import load_runs, summarize_run
from green_callbacks.report.sweep import analyze_sweep

RECORDS = Path(__file__).parent / "data" / "records"
J_PER_KWH = 3.6e6
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def sweep_runs():
    return load_runs([RECORDS / "sweep"]).runs


@pytest.fixture(scope="module")
def single():
    return summarize_run(read_record(RECORDS / "single" / "green-run-single.json"))


@pytest.fixture(scope="module")
def crashed():
    return summarize_run(read_record(RECORDS / "crashed" / "green-run-interrupted.json"))


def test_fixture_records_pass_read_record() -> None:
    good = sorted(p.name for p in RECORDS.rglob("green-run-*.json") if "bad" not in p.parts)
    assert len(good) == 11
    for path in RECORDS.rglob("green-run-*.json"):
        if "bad" not in path.parts:
            assert read_record(path)["schema"] == "green-callbacks/run/1"


def test_single_run_summary(single) -> None:
    # 3 epochs of 2 s: GPU 600 J, CPU 30 J, RAM 10 J each (40 J of it evaluation); 4e14 + 1e13 FLOPs an epoch
    assert (single.status, single.epochs, single.time_s) == ("completed", 3, 6.0)
    parts = {c.name: c for c in single.components}
    assert parts["gpu"].energy_j == 3 * 600.0 and parts["gpu"].methods == ("nvml-energy-counter",)
    assert parts["cpu"].energy_j == 3 * 30.0 and parts["ram"].methods == ("estimate-ram-per-gb",)
    assert single.energy_j == pytest.approx(3 * 640.0) and not single.energy_partial
    assert single.emissions_gco2e == pytest.approx(1920 / J_PER_KWH * 1.2 * 56.0)
    assert (single.intensity_source, single.intensity_year, single.pue) == ("Ember via Our World in Data", 2023, 1.2)
    assert single.train_flops == pytest.approx(1.2e15) and single.eval_flops == pytest.approx(3e13)
    assert single.train_flops_per_j == pytest.approx(1.2e15 / (3 * (640.0 - 40.0)))
    conv = single.convergence
    assert (conv.monitor, conv.mode, conv.best_value, conv.best_epoch, conv.epochs) == ("val_loss", "min", 0.5, 1, 2)
    assert conv.time_s == 4.0 and conv.train_flops == pytest.approx(8e14)
    assert conv.energy_j == pytest.approx(1280.0)
    assert conv.emissions_gco2e == pytest.approx(1280 / J_PER_KWH * 1.2 * 56.0)
    assert single.hyperparameters == {"lr": 0.001, "model.layers": 2, "model.width": 64}


def test_crashed_run_is_reported_as_such(crashed) -> None:
    assert crashed.status == "interrupted" and not crashed.complete and crashed.error == "KeyboardInterrupt"
    gpu = next(c for c in crashed.components if c.name == "gpu")
    assert (gpu.energy_j, gpu.epochs_unavailable, gpu.status) == (100.0, 1, "partial")
    assert gpu.methods == ("nvml-power", "unavailable")
    assert crashed.energy_j == 150.0 and crashed.energy_partial  # 125 J + a CPU-only 25 J: not the whole truth
    assert crashed.train_flops is None  # the record's totals say 0.0; the rows say "not counted"
    assert crashed.convergence.train_flops is None and crashed.train_flops_per_j is None
    assert crashed.partial_epoch.epoch == 2 and crashed.lost == {"gpu": "NVMLError_GpuIsLost"}
    assert run_mfu(crashed, 1e15).value is None


def test_corrupt_and_newer_records_are_named_and_skipped() -> None:
    loaded = load_runs([RECORDS / "bad", RECORDS / "single"])
    assert len(loaded.runs) == 1
    reasons = dict(loaded.skipped)
    assert "not a readable run record" in reasons[str(RECORDS / "bad" / "green-run-corrupt.json")]
    assert "is not the version this green_callbacks reads" in reasons[str(RECORDS / "bad" / "green-run-future.json")]
    with pytest.raises(FileNotFoundError, match="no-such"):
        load_runs([RECORDS / "no-such"])


def test_sweep_totals_and_best(sweep_runs) -> None:
    sweep = analyze_sweep(sweep_runs, tolerance="3%")
    assert (sweep.monitor, sweep.mode, sweep.runs, sweep.incomplete_runs) == ("val_acc", "max", 9, 0)
    # batch 16/32/64 runs draw 3 x (100/80/60 + 20) = 360/300/240 J; three learning rates each
    assert sweep.total_energy_j == pytest.approx(3 * (360 + 300 + 240))
    assert sweep.total_emissions_gco2e == pytest.approx(2700 / J_PER_KWH * 1.5 * 400.0)  # 0.45 g
    assert sweep.best_value == pytest.approx(0.86)
    assert sweep.best_hyperparameters == {"lr": "0.01", "batch_size": "64"}
    assert sweep.share_not_best == pytest.approx((2700 - 240) / 2700)
    assert sweep.excluded == ()


def test_sweep_sensitivity_by_hand(sweep_runs) -> None:
    sweep = analyze_sweep(sweep_runs)
    by_name = {s.name: s for s in sweep.sensitivity}
    assert set(by_name) == {"lr", "batch_size"}  # optimizer is the same in every run
    lr = {g.value: g for g in by_name["lr"].groups}
    assert [g.value for g in by_name["lr"].groups] == ["0.001", "0.01", "0.1"]
    assert lr["0.01"].mean == pytest.approx((0.80 + 0.83 + 0.86) / 3)
    assert (lr["0.01"].min, lr["0.01"].max) == (pytest.approx(0.80), pytest.approx(0.86))
    assert lr["0.1"].std == pytest.approx(0.03)
    bs = {g.value: g for g in by_name["batch_size"].groups}
    assert bs["16"].mean == pytest.approx((0.70 + 0.80 + 0.75) / 3) and bs["16"].std == pytest.approx(0.05)
    # SS_lr = 3 (0.05^2 + 0.05^2 + 0) = 0.015; SS_bs = 3 (0.03^2 + 0 + 0.03^2) = 0.0054; additive -> total 0.0204
    assert by_name["lr"].variance_explained == pytest.approx(0.015 / 0.0204)
    assert by_name["batch_size"].variance_explained == pytest.approx(0.0054 / 0.0204)


def test_grid_detection_and_random_search_saving(sweep_runs) -> None:
    sweep = analyze_sweep(sweep_runs, tolerance="3%")
    assert sweep.grid is not None and sweep.grid.combinations == 9 and sweep.grid.runs == 9
    assert dict(sweep.grid.axes) == {"lr": ("0.001", "0.01", "0.1"), "batch_size": ("16", "32", "64")}
    eff = sweep.efficiency
    # threshold 0.86 x 0.97 = 0.8342; E[max of 4] = 0.8291 < 0.8342 <= E[max of 5] = 0.8349 (see test_report_stats)
    assert eff.threshold == pytest.approx(0.8342)
    assert (eff.trials_needed, eff.trials_saved) == (5, 4)
    assert eff.mean_energy_per_run_j == pytest.approx(2700 / 9)
    assert eff.energy_saved_j == pytest.approx(300.0 * 4)
    assert eff.emissions_saved_gco2e == pytest.approx(0.45 / 9 * 4)

    strict = analyze_sweep(sweep_runs, tolerance="1%").efficiency  # 0.8514 needs more trials than the grid ran
    assert strict.trials_needed > 9 and strict.trials_saved == 0 and strict.energy_saved_j == 0.0


def test_not_a_grid_when_a_combination_is_missing(sweep_runs) -> None:
    eight = [r for r in sweep_runs if not r.path.endswith("green-run-sweep-22.json")]
    sweep = analyze_sweep(eight)
    assert sweep.grid is None and "8 of the 9 combinations" in sweep.grid_note
    one_axis = [r for r in sweep_runs if r.hyperparameters["batch_size"] == 16]
    assert analyze_sweep(one_axis).grid is None
    assert analyze_sweep(sweep_runs[:1]) is None


def test_sweep_with_an_unmeasured_run(sweep_runs) -> None:
    blind = dataclasses.replace(sweep_runs[0], energy_j=None, emissions_gco2e=None)
    sweep = analyze_sweep([blind, *sweep_runs[1:]])
    assert sweep.energy_runs_unavailable == 1 and sweep.total_energy_j == pytest.approx(2700 - 360)
    assert sweep.efficiency.energy_runs_measured == 8
    assert sweep.efficiency.mean_energy_per_run_j == pytest.approx((2700 - 360) / 8)


def test_mixed_monitors_are_left_out(sweep_runs, single) -> None:
    sweep = analyze_sweep([*sweep_runs, single])
    assert sweep.runs == 9 and any("monitors val_loss" in note for note in sweep.excluded)
    assert sweep.total_energy_j == pytest.approx(2700 + 1920)  # its energy still counts in the search


def test_mfu_with_a_user_peak(single) -> None:
    # (3 x 4e14 + 3 x 1e13) FLOPs over 6 s on one GPU of 500 TFLOP/s
    mfu = run_mfu(single, 500e12)
    assert mfu.value == pytest.approx(1.23e15 / (6.0 * 500e12)) and mfu.peak_source.startswith("user")
    two = dataclasses.replace(single, gpu_names=("a", "b"))
    assert run_mfu(two, 500e12).value == pytest.approx(1.23e15 / (6.0 * 2 * 500e12))
    with pytest.raises(ValueError, match="positive"):
        run_mfu(single, 0.0)


def test_mfu_from_the_peak_table(single) -> None:
    # NVIDIA H100 80GB HBM3 is the SXM board: 989.4 TFLOP/s dense bf16, 67 TFLOP/s fp32 in the peak table
    mfu = run_mfu(single)
    assert mfu.value == pytest.approx(1.23e15 / (6.0 * 989.4e12))
    assert "H100 SXM bf16 (assumed)" in mfu.peak_source
    assert run_mfu(single, dtype="fp32").value == pytest.approx(1.23e15 / (6.0 * 67e12))
    from_record = dataclasses.replace(single, record={**single.record, "lightning": {"precision": "32-true"}})
    assert record_dtype(from_record.record) == "fp32"
    assert "(from the record)" in run_mfu(from_record, dtype="bf16").peak_source
    unknown = run_mfu(dataclasses.replace(single, gpu_names=("Fixture GPU 9000",)))
    assert unknown.value is None and unknown.peak_source == "unknown: no bf16 peak known for Fixture GPU 9000"
    assert run_mfu(dataclasses.replace(single, gpu_names=())).peak_source == "unknown: no GPU recorded"
    with pytest.raises(ValueError, match="dtype"):
        run_mfu(single, dtype="int4")


def test_offset_cost_by_hand() -> None:
    cost = offset_cost(0.45)  # 0.45 g = 4.5e-7 t at EUR 23/t
    assert cost.cost == pytest.approx(0.45 / 1e6 * 23.0) and cost.price.currency == "EUR"
    assert DEFAULT_PRICE.as_of.startswith("2026-11") and "Klima-Kollekte" in DEFAULT_PRICE.source
    assert offset_cost(2e6, OffsetPrice(40.0, "CHF", "test", "2007")).cost == pytest.approx(80.0)
    with pytest.raises(ValueError, match="price"):
        offset_cost(1.0, OffsetPrice(-1.0, "EUR", "x", "y"))
    with pytest.raises(ValueError, match="emissions"):
        offset_cost(float("nan"))


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def test_badges_are_valid_svg() -> None:
    pledge = _parse(pledge_badge().svg)
    texts = [t.text for t in pledge.iter(f"{SVG}text")]
    assert "Green AI" in texts and "pledged" in texts
    neutral = carbon_neutral_badge("https://example.org/cert/42?a=1&b=2")
    links = list(_parse(neutral.svg).iter(f"{SVG}a"))
    assert links[0].get("{http://www.w3.org/1999/xlink}href") == "https://example.org/cert/42?a=1&b=2"
    assert neutral.markdown("b/carbon-neutral.svg") == (
        "[![carbon neutral (offset certificate)](b/carbon-neutral.svg)](https://example.org/cert/42?a=1&b=2)")
    measured = emissions_badge(1234.5, partial=True, detail="a <b> & c")
    root = _parse(measured.svg)
    assert "1.23 kg (partial)" in [t.text for t in root.iter(f"{SVG}text")]
    rects = [int(r.get("width")) for r in root.iter(f"{SVG}rect") if r.get("fill") in ("#555", "#007ec6")]
    assert sum(rects) == int(root.get("width"))
    assert measured.markdown("x.svg") == "![CO2e measured: 1.23 kg (partial)](x.svg)"
    for bad in ("", "javascript:alert(1)", "example.org/cert"):
        with pytest.raises(ValueError, match="http"):
            carbon_neutral_badge(bad)


def test_format_grams() -> None:
    assert format_grams(0.45) == "0.45 g"
    assert format_grams(12_300.0) == "12.3 kg"
    assert format_grams(2.5e6) == "2.5 t"


def test_per_run_figures_of_a_large_sweep_are_the_best_run_only(sweep_runs, single) -> None:
    from green_callbacks.report.build import figure_runs

    report = build_report(load_runs([RECORDS / "sweep"]))
    assert [r.label for r in figure_runs(report)] == ["sweep120"]  # lr 0.01, batch 64: val_acc 0.86
    assert len(figure_runs(report, all_runs=True)) == 9
    small = build_report(load_runs([RECORDS / "sweep" / "green-run-sweep-00.json", RECORDS / "single"]))
    assert len(figure_runs(small)) == 2


def test_report_badges_only_when_asked(sweep_runs) -> None:
    loaded = load_runs([RECORDS / "sweep"])
    plain = build_report(loaded)
    assert [b.name for b in plain.badges] == ["co2e-measured"]
    full = build_report(loaded, ReportOptions(pledge=True, certificate_url="https://example.org/c"))
    assert [b.name for b in full.badges] == ["green-ai-pledge", "carbon-neutral", "co2e-measured"]
    assert full.emissions_gco2e == pytest.approx(0.45) and not full.emissions_partial
    assert full.offset.cost == pytest.approx(0.45 / 1e6 * 23.0)
    with pytest.raises(ValueError, match="certificate"):
        build_report(loaded, ReportOptions(certificate_url="not a url"))

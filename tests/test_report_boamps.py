"""``green-callbacks report --format boamps``: one report per run, validated against the published BoAmps schemas
shipped in the package (their ``$ref`` URLs resolved to the packaged copies: no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.report.boamps import boamps_report, schemas
from green_callbacks.report.command import run_report
from green_callbacks.report.runs import summarize_run

DATA = Path(__file__).parent / "data" / "records"
J_PER_KWH = 3.6e6


def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="validating BoAmps reports needs jsonschema (dev extra)")
    referencing = pytest.importorskip("referencing")

    def offline(uri: str):
        raise referencing.exceptions.NoSuchResource(ref=uri)  # never fetched: every $ref must be packaged

    registry = referencing.Registry(retrieve=offline).with_resources(
        (uri, referencing.Resource.from_contents(schema, default_specification=referencing.jsonschema.DRAFT4))
        for uri, schema in schemas().items())
    report = next(s for uri, s in schemas().items() if uri.endswith("/report_schema.json"))
    return jsonschema.Draft4Validator(report, registry=registry)


def test_the_packaged_schemas_are_the_published_ones_with_their_licence() -> None:
    from importlib import resources

    folder = resources.files("green_callbacks.core") / "data" / "boamps"
    assert "creativecommons.org/licenses/by/4.0" in (folder / "LICENSE.md").read_text(encoding="utf-8")
    assert "3bfefec8446ee196d1723c0e35859eb7762da3c9" in (folder / "SOURCES.md").read_text(encoding="utf-8")
    report = next(s for uri, s in schemas().items() if uri.endswith("/report_schema.json"))
    assert report["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert set(report["required"]) == {"task", "measures", "infrastructure"}
    assert len(schemas()) == 5


def test_one_valid_report_per_run(tmp_path, capsys) -> None:
    check = validator()
    out = tmp_path / "boamps"
    assert run_report(paths=[str(DATA / "sweep")], format="boamps", out=str(out)) == 0
    files = sorted(out.glob("boamps-*.json"))
    assert len(files) == len(list((DATA / "sweep").glob("green-run-*.json"))) == 9
    for path in files:
        report = json.loads(path.read_text(encoding="utf-8"))
        errors = [e.message for e in check.iter_errors(report)]
        assert not errors, (path.name, errors)


def test_the_fixture_run_by_hand(capsys) -> None:
    check = validator()
    assert run_report(paths=[str(DATA / "single")], format="boamps") == 0
    report = json.loads(capsys.readouterr().out)
    check.validate(report)
    measure = report["measures"][0]
    assert measure["powerConsumption"] == pytest.approx(1920 / J_PER_KWH)  # kWh, IT energy before PUE
    assert measure["measurementDuration"] == 6.0
    assert measure["cpuTrackingMode"] == "rapl" and measure["gpuTrackingMode"] == "nvml-energy-counter"
    assert report["environment"] == {"country": "FRA", "powerSourceCarbonIntensity": 56.0}
    assert {"componentName": "NVIDIA H100 80GB HBM3", "componentType": "gpu", "nbComponent": 1} in \
        report["infrastructure"]["components"]
    assert report["header"]["reportDatetime"] == "2026-09-21 14:15:00"  # updated_at 1790000100 in UTC
    assert report["task"]["taskStage"] == "training"


def test_the_validator_rejects_what_the_schema_forbids() -> None:
    check = validator()
    report = boamps_report(summarize_run(read_record(DATA / "single" / "green-run-single.json")))
    bad = {**report, "measures": [{"measurementMethod": "x"}]}  # powerConsumption is required
    assert list(check.iter_errors(bad))
    assert list(check.iter_errors({k: v for k, v in report.items() if k != "infrastructure"}))


def test_a_run_without_energy_gets_no_report_and_no_zero(tmp_path, capsys) -> None:
    data = read_record(DATA / "single" / "green-run-single.json")
    data["epochs"] = []
    path = tmp_path / "green-run-empty.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert run_report(paths=[str(path)], format="boamps") == 1
    assert "energy unavailable" in capsys.readouterr().err


def test_a_tracker_run_and_a_cloud_region_validate(tmp_path, fake_clock, capsys) -> None:
    check = validator()
    pytest.importorskip("torch")
    from tests.models import mlp
    from tests.test_loop import Tracker, sensors, train

    tracker = Tracker(region="gcp:europe-west1", output_dir=str(tmp_path), sensors=sensors())
    train(tracker, mlp(seed=0), fake_clock.advance)
    assert run_report(paths=[str(tmp_path)], format="boamps") == 0
    report = json.loads(capsys.readouterr().out)
    check.validate(report)
    assert report["infrastructure"]["cloudProvider"] == "google"
    assert report["environment"]["country"] == "BE" and report["environment"]["location"] == "gcp:europe-west1"


def test_out_under_a_file_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run_report(paths=[str(DATA / "single")], format="boamps", out=str(blocker / "reports")) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("green-callbacks report:")]
    assert len(lines) == 1 and f"{blocker} is not a folder" in lines[0]

"""The report's footprint section from a real run record, and which total offsets and the carbon-neutral badge
cover."""

from __future__ import annotations

import pytest

from green_callbacks.core.carbon import lookup_region
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.counterfactual import Infrastructure
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import Session
from green_callbacks.core.water import lookup_water
from green_callbacks.report.badges import carbon_neutral_badge
from green_callbacks.report.footprint import FootprintOptions, footprint_section, footprint_text
from green_callbacks.report.offsets import offset_cost

H100_KG, HOST_KG = 164.0, 2500.0


class NamedGpu(ConstantPowerSensor):
    def info(self):
        return {**super().info(), "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}


@pytest.fixture
def record(tmp_path, fake_clock):
    sensors = [NamedGpu("gpu", 300.0, scope="device"), ConstantPowerSensor("cpu", 60.0, scope="node")]
    session = Session(GreenConfig(output_dir=str(tmp_path), country="DE", pue=1.2), framework="test",
                      sensors=sensors, dist=DistInfo(), reducer=lambda v: [float(x) for x in v])
    session.start(device_indices=[0])
    for _ in range(2):
        session.epoch_start()
        fake_clock.advance(1800.0)
        session.epoch_end({})
    return read_record(session.finish())


def test_section_from_a_real_record_by_hand(record):
    options = FootprintOptions(alternatives=("FR", 50.0), cloud_regions=False, lowest=2,
                               local=Infrastructure.local(pue=1.6, utilisation=0.25, country="DE"),
                               cloud=Infrastructure.cloud("gcp:europe-north1"))
    section = footprint_section(record, options)
    # 360 W for 1 h = 0.36 kWh
    assert section.energy_kwh == pytest.approx(0.36) and section.hours == pytest.approx(1.0)
    per_h = (H100_KG + HOST_KG / 8) * 1000 / (6 * 8760 * 0.85)
    assert section.embodied_gco2e == pytest.approx(per_h)
    assert section.operational_gco2e == pytest.approx(0.36 * 1.2 * section.intensity_gco2e_per_kwh)
    assert section.water_l == pytest.approx(0.36 * (0.49 + 1.2 * lookup_water("DE").offsite_l_per_kwh))
    assert [g.group for g in section.grids] == ["actual", "alternative", "alternative", "lowest", "lowest"]
    assert section.grids[2].emissions_gco2e == pytest.approx(0.36 * 1.2 * 50)
    local, cloud = section.infrastructure
    assert local.embodied_gco2e == pytest.approx((H100_KG + HOST_KG / 8) * 1000 / (6 * 8760 * 0.25))
    assert cloud.operational_gco2e == pytest.approx(
        0.36 * 1.10 * lookup_region("gcp:europe-north1").intensity_gco2e_per_kwh)
    text = footprint_text(record, options)
    assert "counterfactual" in text and "embodied emissions" in text and "not in them" in text
    assert "Shared local machine vs on-demand cloud" in text and "NVIDIA HGX H100" in text


def test_record_without_footprint_block_has_no_section(record):
    old = {k: v for k, v in record.items() if k != "footprint"}
    assert footprint_section(old) is None and footprint_text(old) is None


def test_offsets_and_badge_say_which_total_they_cover():
    assert offset_cost(1.0).covers == "operational"
    both = offset_cost(2e6, covers="operational+embodied")
    assert both.covers == "operational+embodied" and both.cost == pytest.approx(46.0)
    with pytest.raises(ValueError, match="covers"):
        offset_cost(1.0, covers="everything")
    assert "neutral (offset, operational)" in carbon_neutral_badge("https://example.org/c/1").svg
    badge = carbon_neutral_badge("https://example.org/c/1", covers="operational+embodied")
    assert "incl. embodied" in badge.message and "operational and embodied emissions" in badge.svg
    with pytest.raises(ValueError, match="covers"):
        carbon_neutral_badge("https://example.org/c/1", covers="scope3")


def test_report_command_compares_the_users_grids_and_a_local_machine(record, tmp_path, capsys):
    """`green-callbacks report` with the counterfactual options: the user's grid at 50 g/kWh is 0.36 kWh × PUE 1.2 ×
    50 = 21.6 g, and the shared local machine against the cloud region appear, labelled counterfactual."""
    from green_callbacks.report.command import run_report

    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "green-run-x.json").write_text(__import__("json").dumps(record), encoding="utf-8")
    rc = run_report(paths=[str(folder)], alternative=["50"], lowest=0, no_cloud_regions=True,
                    local_pue=1.6, local_utilisation=0.25, local_country="DE", cloud_region="gcp:europe-north1")
    out = capsys.readouterr().out
    assert rc == 0
    assert "counterfactual" in out and "21.6 g" in out
    assert "Shared local machine vs on-demand cloud" in out and "gcp:europe-north1" not in out.split("Where")[0]


def test_report_command_needs_the_whole_local_comparison(record, tmp_path, capsys):
    from green_callbacks.report.command import run_report

    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "green-run-x.json").write_text(__import__("json").dumps(record), encoding="utf-8")
    assert run_report(paths=[str(folder)], local_pue=1.6) == 2
    assert "--cloud-region" in capsys.readouterr().err

"""Embodied emissions, water and counterfactual grids: every formula against a hand computation."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from green_callbacks.core.carbon import gcp_region_table, lookup_country, lookup_region
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.counterfactual import (
    Infrastructure,
    compare_infrastructure,
    counterfactuals,
    grid_option,
    lowest_options,
)
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.embodied import embodied_gco2e, embodied_rate, lookup_accelerator
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import METRIC_KEYS, Session
from green_callbacks.core.water import lookup_water, water_for_location, water_l

H100_KG, HOST_KG, B200_KG, A100_KG, H200_KG = 164.0, 2500.0, 284.0, 150.0, 217.0
GAL_TO_L = 3.785411784
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ embodied
def test_embodied_formula_by_hand():
    # 164 kg × 1000 g/kg × 2 h / (4 y × 8760 h/y × 1.0) × 1 = 328 000 / 35 040 g
    assert embodied_gco2e(164.0, 2.0, 4.0, 1.0) == pytest.approx(328_000 / 35_040, rel=1e-12)
    # share and utilisation: 2500 kg, 1 h, 6 y, 85 %, 1/8 of the host
    assert embodied_gco2e(2500.0, 1.0, 6.0, 0.85, 0.125) == pytest.approx(2_500_000 / (6 * 8760 * 0.85) / 8)


@pytest.mark.parametrize(("name", "kg"), [
    ("NVIDIA H100 80GB HBM3", H100_KG), ("NVIDIA H100 PCIe", H100_KG), ("NVIDIA H200", H200_KG),
    ("NVIDIA B200", B200_KG), ("NVIDIA A100-SXM4-80GB", A100_KG), ("NVIDIA A100 80GB PCIe", A100_KG),
])
def test_accelerator_rows_match_nvml_names(name, kg):
    row = lookup_accelerator(name)
    assert row is not None and row.kgco2e == kg and row.source and row.year


def test_gh200_is_not_an_h200_and_unknown_models_are_unavailable():
    assert lookup_accelerator("NVIDIA GH200 480GB") is None
    rate = embodied_rate(["NVIDIA GeForce RTX 4090", "NVIDIA L40S"])
    gpu_parts = [p for p in rate.parts if p.kind == "accelerator"]
    assert [p.rate_gco2e_per_h for p in gpu_parts] == [None, None]  # never 0
    assert "RTX 4090" in gpu_parts[0].reason and "no embodied figure" in gpu_parts[0].reason
    assert "L40S" in gpu_parts[1].reason
    assert len(rate.missing) == 2
    # the host is still charged: 2 of 8 GPUs
    assert rate.rate_gco2e_per_h == pytest.approx(2_500_000 / (6 * 8760 * 0.85) * 2 / 8)


def test_default_rate_of_one_h100_with_its_host_share():
    rate = embodied_rate(["NVIDIA H100 80GB HBM3"])
    per_h = 1000.0 / (6 * 8760 * 0.85)
    assert rate.rate_gco2e_per_h == pytest.approx(H100_KG * per_h + HOST_KG * per_h / 8, rel=1e-12)
    assert any("host share 0.125" in a for a in rate.assumptions)
    assert rate.to_record()["lifetime_years"] == 6.0


def test_cpu_only_run_gets_the_whole_host_but_a_vm_its_share_only_when_given():
    rate = embodied_rate([], lifetime_years=4.0, utilisation=0.5)  # a physical machine: the whole host
    assert rate.rate_gco2e_per_h == pytest.approx(HOST_KG * 1000 / (4 * 8760 * 0.5))
    assert any("whole machine" in a for a in rate.assumptions)
    # a VM's part of its unseen physical server is unknown: unavailable with the reason, never the whole server
    vm = embodied_rate([], virtual_machine=True, lifetime_years=4.0, utilisation=0.5)
    assert not vm.available and vm.to_record()["rate_gco2e_per_h"] is None
    assert "virtual machine" in vm.missing[0] and "embodied_host_share" in vm.missing[0]
    assert embodied_rate([], virtual_machine=True, host_share=0.25).rate_gco2e_per_h == pytest.approx(
        HOST_KG * 1000 / (6 * 8760 * 0.85) * 0.25)


def test_rank_without_hardware_has_rate_zero_and_unidentified_gpus_are_unavailable():
    assert embodied_rate([], host=False).parts == ()
    rate = embodied_rate([], unidentified=2, unidentified_reason="NVML missing")
    assert [p.reason for p in rate.parts if p.kind == "accelerator"] == ["NVML missing", "NVML missing"]
    assert any("host share 0.25" in a for a in rate.assumptions)


@pytest.mark.parametrize("kwargs", [
    {"embodied_lifetime_years": 0}, {"embodied_lifetime_years": float("inf")}, {"embodied_utilisation": 0.0},
    {"embodied_utilisation": 1.5}, {"embodied_host_share": -0.1}, {"wue_l_per_kwh": -1.0},
    {"wue_l_per_kwh": True}, {"embodied_lifetime_years": "5"},
])
def test_bad_footprint_settings_fail_at_construction(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GreenConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ water
def test_water_formula_by_hand():
    # 2 kWh × (0.49 + 1.5 × 3.0) = 2 × 4.99
    assert water_l(2.0, 0.49, 1.5, 3.0) == pytest.approx(9.98)


def test_france_offsite_water_is_its_mix_times_macknick_medians():
    # generation (TWh) of France, 2023, from CodeCarbon's global_energy_mix.json; factors in gal/MWh
    mix = {"coal": (2.16, 687), "gas": (31.43, 205), "oil": (9.71, 826), "nuclear": (335.65, 672),
           "hydro": (53.19, 4491), "solar": (23.26, 1), "wind": (48.61, 0), "bio": (9.5, 553), "geo": (0.6, 15)}
    total = sum(twh for twh, _ in mix.values())
    expected = sum(twh * f for twh, f in mix.values()) / total * GAL_TO_L / 1000
    row = lookup_water("FR")
    assert row.offsite_l_per_kwh == pytest.approx(expected, abs=6e-4)  # the table keeps 3 decimals
    assert row.hydro_l_per_kwh == pytest.approx(53.19 * 4491 / total * GAL_TO_L / 1000, abs=6e-4)
    assert row.kind == "table" and "derived" in row.method and "Macknick" in row.source
    assert lookup_water("FRA") == row


def test_generator_script_reproduces_the_packaged_table(tmp_path):
    spec = importlib.util.spec_from_file_location("make_water_table", ROOT / "tools" / "make_water_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # a synthetic mix: half coal, half wind → 687/2 gal/MWh
    water, hydro = module.water_l_per_kwh({"coal_TWh": 1.0, "wind_TWh": 1.0})
    assert water == pytest.approx(687 / 2 * GAL_TO_L / 1000) and hydro == 0.0
    assert module.water_l_per_kwh({}) == (None, None)


def test_water_location_from_region_zone_and_unknown():
    assert water_for_location("gcp:europe-west9").offsite_l_per_kwh == lookup_water("FR").offsite_l_per_kwh
    assert water_for_location("US-CAL-CISO").offsite_l_per_kwh == lookup_water("US").offsite_l_per_kwh
    default = water_for_location("user")
    assert default.kind == "default" and default.offsite_l_per_kwh == lookup_water("world").offsite_l_per_kwh
    assert "world value used" in default.method


def test_every_gcp_region_has_a_country_with_water():
    for region in gcp_region_table():
        assert water_for_location(f"gcp:{region}").kind == "table", region


# ------------------------------------------------------------------------------------------------ counterfactuals
def test_counterfactual_grids_by_hand():
    fr = lookup_country("FR").intensity_gco2e_per_kwh
    rows = counterfactuals(10.0, 1.2, actual_gco2e_per_kwh=400.0, alternatives=["FR", 100.0], cloud_regions=False,
                           lowest=3, wue_l_per_kwh=0.0)
    actual, france, hundred, *lowest = rows
    assert actual.group == "actual" and actual.emissions_gco2e == pytest.approx(10 * 1.2 * 400)
    assert france.emissions_gco2e == pytest.approx(10 * 1.2 * fr)
    assert hundred.emissions_gco2e == pytest.approx(1200.0)
    assert hundred.difference_gco2e == pytest.approx(1200.0 - 4800.0) and hundred.ratio_to_actual == pytest.approx(0.25)
    assert france.water_l == pytest.approx(10 * 1.2 * lookup_water("FR").offsite_l_per_kwh)
    assert [r.group for r in lowest] == ["lowest"] * 3
    assert [r.intensity_gco2e_per_kwh for r in lowest] == sorted(r.intensity_gco2e_per_kwh for r in lowest)
    assert lowest[0].intensity_gco2e_per_kwh == min(o.intensity_gco2e_per_kwh for o in lowest_options(1000))


def test_counterfactuals_list_every_cloud_region_and_reject_bad_alternatives():
    rows = counterfactuals(1.0, 1.0, actual_gco2e_per_kwh=300.0, lowest=0)
    assert len([r for r in rows if r.group == "cloud region"]) == len(gcp_region_table())
    with pytest.raises(ValueError, match="gCO2e/kWh"):
        grid_option(-5.0)
    with pytest.raises(ValueError, match="No packaged carbon intensity"):
        grid_option("ZZ")
    assert counterfactuals(1.0, 1.0, actual_gco2e_per_kwh=0.0, lowest=0, cloud_regions=False)[0].ratio_to_actual \
        is None


def test_shared_local_machine_against_cloud_region_embodied_included():
    local = Infrastructure.local(pue=1.5, utilisation=0.3, carbon_intensity=50.0)
    cloud = Infrastructure.cloud("gcp:europe-west1")
    out = compare_infrastructure(10.0, 5.0, ["NVIDIA H100 80GB HBM3"], [local, cloud])
    gcp = lookup_region("gcp:europe-west1").intensity_gco2e_per_kwh
    per_h_local = (H100_KG + HOST_KG / 8) * 1000 / (6 * 8760 * 0.3)
    per_h_cloud = (H100_KG + HOST_KG / 8) * 1000 / (6 * 8760 * 0.85)
    assert out[0].operational_gco2e == pytest.approx(10 * 1.5 * 50)
    assert out[0].embodied_gco2e == pytest.approx(per_h_local * 5)
    assert out[0].total_gco2e == pytest.approx(750 + per_h_local * 5)
    assert out[1].pue == 1.10 and out[1].operational_gco2e == pytest.approx(10 * 1.10 * gcp)
    assert out[1].embodied_gco2e == pytest.approx(per_h_cloud * 5)
    with pytest.raises(ValueError, match="exactly one"):
        Infrastructure.local(pue=1.2, utilisation=0.5)
    with pytest.raises(ValueError, match="utilisation"):
        Infrastructure.local(pue=1.2, utilisation=0.0, country="FR")


# ------------------------------------------------------------------------------------------------ session
class NamedGpu(ConstantPowerSensor):
    """A constant-power GPU that names its device the way the NVML sensor's info() does."""

    def info(self):
        return {**super().info(), "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}


def _session(tmp_path, gpu, **config):
    sensors = [gpu, ConstantPowerSensor("cpu", 20.0, scope="node"), ConstantPowerSensor("ram", 5.0, scope="process")]
    if "country" not in config:
        config["carbon_intensity"] = 400.0
    return Session(GreenConfig(output_dir=str(tmp_path), pue=1.5, **config),
                   framework="test", sensors=sensors, dist=DistInfo(), reducer=lambda v: [float(x) for x in v])


def _epoch(session, clock, seconds):
    session.epoch_start()
    clock.advance(seconds)
    return session.epoch_end({})


def test_session_logs_embodied_and_water_from_the_first_epoch(tmp_path, fake_clock):
    session = _session(tmp_path, NamedGpu("gpu", 100.0, scope="device"), wue_l_per_kwh=0.2)
    session.start(device_indices=[0])
    first = _epoch(session, fake_clock, 12.0)
    second = _epoch(session, fake_clock, 24.0)
    assert set(METRIC_KEYS) >= {"green/epoch_embodied_gco2e", "green/total_embodied_gco2e", "green/total_water_l"}
    per_h = (H100_KG + HOST_KG / 8) * 1000 / (6 * 8760 * 0.85)
    assert first["green/epoch_embodied_gco2e"] == pytest.approx(per_h * 12 / 3600, rel=1e-12)
    assert second["green/total_embodied_gco2e"] == pytest.approx(per_h * 36 / 3600, rel=1e-12)
    # 125 W for 12 s = 1500 J; water = kWh × (0.2 + 1.5 × world off-site) since the grid has no country
    offsite = lookup_water("world").offsite_l_per_kwh
    assert first["green/total_water_l"] == pytest.approx(1500 / 3.6e6 * (0.2 + 1.5 * offsite), rel=1e-12)
    assert second["green/total_water_l"] == pytest.approx(4500 / 3.6e6 * (0.2 + 1.5 * offsite), rel=1e-12)
    # operational emissions are untouched by embodied: 1500/3.6e6 × 1.5 × 400
    assert first["green/epoch_emissions_gco2e"] == pytest.approx(0.25, rel=1e-12)
    path = session.finish()
    block = read_record(path)["footprint"]
    assert block["embodied"]["total_gco2e"] == pytest.approx(per_h * 36 / 3600)
    assert block["embodied"]["partial"] is False and block["embodied"]["lifetime_years"] == 6.0
    assert [p["name"] for p in block["embodied"]["parts"]] == ["accelerator 0: NVIDIA H100 80GB HBM3", "host"]
    assert block["water"]["wue_source"] == "user-set wue_l_per_kwh"
    assert block["water"]["offsite"]["kind"] == "default"
    assert [e["epoch"] for e in block["epochs"]] == [0, 1]
    json.dumps(block, allow_nan=False)


def test_session_unnamed_gpu_is_partial_never_zero(tmp_path, fake_clock):
    session = _session(tmp_path, ConstantPowerSensor("gpu", 100.0, scope="device"), country="FR")
    session.start()
    out = _epoch(session, fake_clock, 3600.0)
    # the GPU has no figure: only 1/8 of the host is counted, and the record says what is missing
    assert out["green/epoch_embodied_gco2e"] == pytest.approx(HOST_KG * 1000 / (6 * 8760 * 0.85) / 8)
    block = session.to_record()["footprint"]
    assert block["embodied"]["partial"] is True
    assert "sensor names no device model" in block["embodied"]["missing"][0]
    assert block["water"]["offsite"]["location"] == "FR"
    session.finish()


def test_session_cpu_only_is_unavailable_when_no_hardware_has_a_figure(tmp_path, fake_clock, monkeypatch):
    from green_callbacks.core import embodied

    host = embodied.host_row()
    monkeypatch.setattr(embodied, "host_row", lambda: embodied.EmbodiedRow(**{**vars(host), "kgco2e": None}))
    session = _session(tmp_path, ConstantPowerSensor("gpu", 100.0, scope="device"))
    session.context.sensors = session.context.sensors[1:]  # no GPU sensor at all: a CPU-only run
    session.start(device_indices=[])
    out = _epoch(session, fake_clock, 10.0)
    assert math.isnan(out["green/epoch_embodied_gco2e"]) and math.isnan(out["green/total_embodied_gco2e"])
    assert out["green/total_water_l"] > 0
    session.finish()


def test_resume_continues_footprint_totals(tmp_path, fake_clock):
    session = _session(tmp_path, NamedGpu("gpu", 100.0, scope="device"))
    session.start(device_indices=[0])
    _epoch(session, fake_clock, 3600.0)
    state = session.state_dict()
    session.finish()
    again = _session(tmp_path, NamedGpu("gpu", 100.0, scope="device"))
    again.start(device_indices=[0])
    again.load_state_dict(state)
    out = _epoch(again, fake_clock, 3600.0)
    per_h = (H100_KG + HOST_KG / 8) * 1000 / (6 * 8760 * 0.85)
    assert out["green/total_embodied_gco2e"] == pytest.approx(2 * per_h)
    again.finish()


def test_a_gpu_the_run_does_not_use_is_no_accelerator():
    """A CPU-only run ('not-used' GPU) is charged its host share only, not an unidentified accelerator."""
    from green_callbacks.core.footprint import FootprintTracker

    tracker = FootprintTracker(location="FR", pue=1.0)
    tracker.configure({"gpu": {"method": "not-used", "reason": "training on CPU"}}, device_indices=[])
    assert tracker.accelerators == []
    assert tracker.local_rate_gco2e_per_h == pytest.approx(HOST_KG * 1000 / (6 * 8760 * 0.85))

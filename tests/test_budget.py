"""Projection and budget decisions, checked against hand computation; the session stops at the right epoch."""

from __future__ import annotations

import math

import pytest

from green_callbacks.core.budget import decide, plan_epochs, project
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import Session


def test_projection_skips_warmup_and_bands_by_spread():
    # epochs 0..2 used 150, 100, 110 J; 10 planned. Rate from epochs 1-2: 105 J; 7 remaining.
    proj = project([150.0, 100.0, 110.0], 10)
    assert proj.total == 360.0
    assert proj.projected == pytest.approx(360 + 105 * 7)
    spread = math.sqrt(((100 - 105) ** 2 + (110 - 105) ** 2) / 1)  # sample std of [100, 110]
    assert proj.low == pytest.approx(360 + 105 * 7 - spread * 7)
    assert proj.high == pytest.approx(360 + 105 * 7 + spread * 7)


def test_projection_single_epoch_and_unknown_plan():
    assert project([50.0], 4).projected == 200.0  # one epoch: its value is the rate
    assert project([50.0], None).projected is None
    assert project([50.0, None], 4).projected is None  # unavailable energy is not projected as zero


def test_decide_actual_and_projected():
    energy = project([3.6e6, 3.6e6], 10)  # 2 kWh so far, 10 kWh projected
    none = project([1.0], None)
    assert decide(energy, none, budget_kwh=20, budget_gco2e=None).exceeded is False
    verdict = decide(energy, none, budget_kwh=5, budget_gco2e=None)
    assert verdict.exceeded and "projected for the whole run, 10 kWh, exceeds the budget of 5 kWh" in verdict.reason
    verdict = decide(energy, none, budget_kwh=1.5, budget_gco2e=None)
    assert "energy so far, 2 kWh" in verdict.reason


def test_decide_ignores_projection_when_told():
    energy = project([3.6e6], 10)  # 1 kWh so far, 10 kWh projected from one (warm-up) epoch
    none = project([1.0], None)
    assert decide(energy, none, budget_kwh=5, budget_gco2e=None, use_projection=False).exceeded is False
    assert decide(energy, none, budget_kwh=0.5, budget_gco2e=None, use_projection=False).exceeded is True


def test_plan_epochs():
    assert plan_epochs(10, None, None) == 10.0
    assert plan_epochs(10, 4, 2) == 2.0  # max_steps ends the run after 4 / 2 = 2 epochs
    assert plan_epochs(10, 100, 2) == 10.0
    assert plan_epochs(None, 3, 2) == 1.5
    assert plan_epochs(-1, None, 5) is None  # Lightning's "no limit"
    assert plan_epochs(None, 4, float("inf")) is None


@pytest.mark.parametrize(("action", "stops"), [("stop", True), ("warn", False)])
def test_session_stops_after_first_projection_over_budget_past_warmup(tmp_path, fake_clock, action, stops):
    # 1000 W for 10 s per epoch = 10 kJ; 10 planned epochs → projection 100 kJ from epoch 0 on.
    # A budget of 0.02 kWh = 72 kJ: after epoch 0 only the actual total (10 kJ) counts (warm-up), so the run goes
    # on; after epoch 1 the projection (100 kJ) exceeds it.
    session = Session(GreenConfig(output_dir=str(tmp_path), carbon_intensity=100.0, budget_kwh=0.02,
                                  budget_action=action),
                      framework="test", sensors=[ConstantPowerSensor("gpu", 1000.0)], dist=DistInfo(),
                      reducer=lambda v: list(v))
    session.start(planned_epochs=10)
    session.epoch_start()
    fake_clock.advance(10.0)
    first = session.epoch_end({})
    assert session.should_stop is False and session.stop_reason is None
    assert first["green/projected_total_energy_kwh"] == pytest.approx(100_000 / 3.6e6)
    session.epoch_start()
    fake_clock.advance(10.0)
    with pytest.warns(UserWarning, match="exceeds the budget of 0.02 kWh"):
        out = session.epoch_end({})
    assert out["green/projected_total_energy_kwh"] == pytest.approx(100_000 / 3.6e6)
    # emissions: 100 kJ = 1/36 kWh × 100 g/kWh
    assert out["green/projected_total_emissions_gco2e"] == pytest.approx(100 / 36)
    assert session.should_stop is stops
    session.finish()
    record = read_record(session.record_path)
    assert "budget" in record["stop_reason"]
    assert record["budget"]["projection"]["energy_j"]["projected"] == pytest.approx(100_000)



def test_running_projection_equals_project_epoch_by_epoch():
    """The O(1)-per-epoch projection the session keeps gives what project() computes from the whole list."""
    from green_callbacks.core.budget import RunningProjection

    values = [100.0, 120.0, 95.5, 101.25, 99.0, 130.0, 88.0]
    running = RunningProjection()
    for n, value in enumerate(values, start=1):
        running.add(value)
        for planned in (None, 10.0, 7.5):
            mine, theirs = running.projection(planned), project(values[:n], planned)
            assert mine.total == pytest.approx(theirs.total, rel=1e-12)
            for field in ("projected", "low", "high"):
                a, b = getattr(mine, field), getattr(theirs, field)
                assert (a is None and b is None) or a == pytest.approx(b, rel=1e-12), (n, planned, field)
    running.add(None)
    assert running.projection(10.0).projected is None  # unavailable energy is not projected as zero

"""One run context for every kind of run: a fit and a test / predict / evaluate phase are set up by the same
:class:`RunContext` (carbon, sensors, ranks, the node leader's share, the record path, the exit handlers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from green_callbacks.core import phase_session
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.phase_session import PhaseSession, PhaseTap
from green_callbacks.core.run_context import RunContext
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import Session


def _sensors():
    return [ConstantPowerSensor("gpu", 100.0, scope="device"), ConstantPowerSensor("cpu", 20.0, scope="node")]


def test_a_fit_and_its_phase_share_the_set_up_and_the_fit_owns_the_intensity(tmp_path, fake_clock):
    fit = Session(GreenConfig(carbon_intensity=300.0), framework="test", sensors=_sensors(), dist=DistInfo(),
                  reducer=lambda v: list(v))
    fit.start(output_dir=tmp_path / "fit")
    fit.epoch_start()
    fake_clock.advance(2.0)
    fit.epoch_end({})
    fit.finish()
    phase = PhaseSession(GreenConfig(carbon_intensity=300.0), framework="test", kind="test", sensors=_sensors(),
                         training=fit, dist=DistInfo(), reducer=lambda v: list(v))
    assert isinstance(fit.context, RunContext) and isinstance(phase.context, RunContext)
    assert phase.context.carbon_choice is fit.carbon_choice  # one intensity for the fit and its phases
    assert fit.context.owns_carbon and not phase.context.owns_carbon
    phase.start(output_dir=tmp_path / "elsewhere")
    fake_clock.advance(1.0)
    phase.end()
    assert phase.record_path is not None and phase.record_path.parent == tmp_path / "fit"  # beside the fit's
    assert phase.context.started_at is not None and phase.meter is phase.context.meter


def test_node_level_energy_counts_on_the_node_leader_only() -> None:
    config = GreenConfig(carbon_intensity=1.0)
    follower = RunContext(config, on_exit=lambda *a: None, sensors=_sensors(),
                          dist=DistInfo(rank=1, local_rank=1, world_size=2))
    assert follower.local_j("cpu", 5.0) == 5.0  # no meter yet: nothing to say about the sensor's scope
    follower.open_meter()
    assert follower.local_j("cpu", 5.0) == 0.0 and follower.local_j("gpu", 5.0) == 5.0
    leader = RunContext(config, on_exit=lambda *a: None, sensors=_sensors(), dist=DistInfo())
    leader.open_meter()
    assert leader.local_j("cpu", 5.0) == 5.0
    follower.meter.close()  # type: ignore[union-attr]
    leader.meter.close()  # type: ignore[union-attr]


def test_the_record_path_is_kept_once_set_and_output_dir_wins(tmp_path: Path) -> None:
    ctx = RunContext(GreenConfig(carbon_intensity=1.0, output_dir=str(tmp_path / "out")), on_exit=lambda *a: None,
                     dist=DistInfo())
    first = ctx.open_record(tmp_path / "ignored")
    assert first.parent == tmp_path / "out"
    resumed = tmp_path / "out" / "green-run-resumed.json"
    ctx.record_path = resumed  # a checkpoint's record
    assert ctx.open_record(None) == resumed


def test_a_phase_whose_set_up_fails_is_not_measured_and_the_call_goes_on(monkeypatch) -> None:
    monkeypatch.delenv("GREEN_CALLBACKS_STRICT", raising=False)

    def broken(*args, **kwargs):
        raise OSError("no carbon table")

    monkeypatch.setattr(phase_session, "RunContext", broken)
    tap = PhaseTap(GreenConfig(carbon_intensity=1.0), framework="test", sensors=_sensors(), training=lambda: None)
    with pytest.warns(RuntimeWarning, match="no carbon table"):
        assert tap.begin("test") is False
    assert tap.current is None and not tap.running

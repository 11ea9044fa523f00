"""A per-epoch value is declared once, on its :class:`EpochRow` field (``per_epoch``), and everything else follows:
the epoch window declares its cross-rank state, gives this rank's value and hands the reduced one to the row; the
row's logged values get their ``green/epoch_<field>`` key; the record writes it and the reader reads it back, and a
checkpoint keeps it with its row.

The checks walk the row's fields, so a value added the way docs/architecture.md says is checked with no edit here.
"""

from __future__ import annotations

import dataclasses

import pytest

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.epoch_state import EpochState
from green_callbacks.core.metric_keys import METRIC_KEYS, PREFIX, ROW_KEYS
from green_callbacks.core.record import load_record
from green_callbacks.core.rows import EpochRow, per_epoch_fields
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import Session

# the row's numbers that are computed from the declared values and the measurement, not combined over ranks
DERIVED = {"time_s", "energy_j", "eval_energy_j", "emissions_gco2e", "energy_low_j", "energy_high_j",
           "emissions_low_gco2e", "emissions_high_gco2e"}


class _NamedGpu(ConstantPowerSensor):
    """A constant-power GPU that names its device (so that the devices' peak FLOP/s is known)."""

    def info(self):
        return {**super().info(), "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}


def _one_epoch(tmp_path, fake_clock, monkeypatch):
    """One epoch in which every per-epoch value is known, and the reduction it went through."""
    seen = []
    reduce = EpochState.reduce

    def spy(self, local, dist, reducer):
        out = reduce(self, local, dist, reducer)
        seen.append((dict(local), out))
        return out

    monkeypatch.setattr(EpochState, "reduce", spy)
    sensors = [_NamedGpu("gpu", 100.0, scope="device"), ConstantPowerSensor("cpu", 20.0, scope="node"),
               ConstantPowerSensor("ram", 5.0, scope="process")]
    session = Session(GreenConfig(output_dir=str(tmp_path), carbon_intensity=100.0), framework="test",
                      sensors=sensors, dist=DistInfo(), reducer=lambda v: [float(x) for x in v])
    session.start(device_indices=[0], compute_dtype="bf16")
    session.epoch_start()
    session.add_samples(samples=32, tokens=640)
    fake_clock.advance(10.0)
    session.add_flops(train=3e12, train_hardware=4e12)
    session.eval_start()
    fake_clock.advance(2.0)
    session.add_flops(eval=1e11)
    session.eval_end()
    metrics = session.epoch_end({})
    path = session.finish()
    (local, reduced), = seen
    return session, local, reduced, metrics, path


def test_every_numeric_row_field_is_declared_per_epoch_or_derived() -> None:
    declared = {f.name for f in per_epoch_fields()}
    numeric = {f.name for f in dataclasses.fields(EpochRow) if f.type == "float | None" or f.type == "float"}
    assert declared <= numeric
    assert numeric - declared == DERIVED, "a new per-epoch number needs per_epoch(...) on its field (or is derived)"
    assert {"train_flops", "eval_flops", "samples", "tokens", "train_time_s"} <= declared


def test_every_declared_row_value_is_given_reduced_into_the_row_and_logged(tmp_path, fake_clock, monkeypatch):
    session, local, reduced, metrics, path = _one_epoch(tmp_path, fake_clock, monkeypatch)
    row = session.rows[0]
    for f in per_epoch_fields():
        name = f.name
        assert local[name] is not None, f"the epoch window gives no value of {name} in this epoch"
        assert reduced.values[name] == getattr(row, name), name  # the row holds the reduced value
        if f.metadata["logged"]:
            key = f"{PREFIX}epoch_{name}"
            assert key in ROW_KEYS and key in METRIC_KEYS
            assert metrics[key] == pytest.approx(getattr(row, name))
        else:
            assert f"{PREFIX}epoch_{name}" not in METRIC_KEYS
    # the values by hand: one rank, so each reduction gives this rank's value
    assert (row.train_flops, row.eval_flops, row.train_hardware_flops) == (3e12, 1e11, 4e12)
    assert (row.samples, row.tokens, row.train_time_s) == (32.0, 640.0, 10.0)
    assert row.peak_flops_per_s is not None and row.peak_flops_per_s > 0
    assert metrics["green/epoch_train_flops"] == 3e12 and metrics["green/epoch_eval_flops"] == 1e11
    read = load_record(path).epochs[0]  # the reader gives the same row back
    resumed = Session(GreenConfig(carbon_intensity=100.0), framework="test")
    resumed.load_state_dict(session.state_dict())  # and a checkpoint keeps it with its row
    for f in per_epoch_fields():
        assert getattr(read, f.name) == getattr(row, f.name), f.name
        assert getattr(resumed.rows[0], f.name) == getattr(row, f.name), f.name


def test_the_window_declares_each_row_value_with_the_rows_reduction(tmp_path):
    session = Session(GreenConfig(output_dir=str(tmp_path), carbon_intensity=1.0), framework="t",
                      sensors=[ConstantPowerSensor("gpu", 1.0, scope="device")], dist=DistInfo(),
                      reducer=lambda v: list(v))
    session.start()
    declared = session.window.declared
    for f in per_epoch_fields():
        assert declared[f.name] == f.metadata["reduce"], f.name
    assert declared["intensity"] == "rank_zero" and declared["energy_j/gpu"] == "sum"  # the window's own values
    session.finish()


def test_a_value_declared_but_not_given_or_given_but_not_declared_is_an_error() -> None:
    state = EpochState()
    state.add_state("foo_j", "sum")
    state.add_state("bar_j", "rank_zero")
    one = DistInfo()
    assert state.reduce({"foo_j": 1.0, "bar_j": None}, one, lambda v: list(v)).values == {"foo_j": 1.0, "bar_j": None}
    with pytest.raises(ValueError, match=r"declared but not given: \['bar_j'\]"):
        state.reduce({"foo_j": 1.0}, one, lambda v: list(v))
    with pytest.raises(ValueError, match=r"given but not declared: \['baz_j'\]"):
        state.reduce({"foo_j": 1.0, "bar_j": 2.0, "baz_j": 3.0}, one, lambda v: list(v))

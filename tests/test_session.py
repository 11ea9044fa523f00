"""The session engine with fake sensors and a fake clock: every number checked against a hand computation."""

from __future__ import annotations

import json
import math

import pytest

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import METRIC_KEYS, Session


def sensors(gpu_fail_after_s: float | None = None):
    return [
        ConstantPowerSensor("gpu", 100.0, scope="device", fail_after_s=gpu_fail_after_s),
        ConstantPowerSensor("cpu", 20.0, scope="node"),
        ConstantPowerSensor("ram", 5.0, scope="process"),
    ]


def make_session(tmp_path, **config):
    config.setdefault("carbon_intensity", 400.0)
    config.setdefault("pue", 1.5)
    return Session(GreenConfig(output_dir=str(tmp_path), **config), framework="test", sensors=sensors(),
                   dist=DistInfo(), reducer=lambda v: [float(x) for x in v])


def run_epoch(session, clock, *, train_s=10.0, eval_s=2.0, train_flops=1e12, eval_flops=1e11, metrics=None):
    session.epoch_start()
    clock.advance(train_s)
    session.add_flops(train=train_flops)
    session.eval_start()
    clock.advance(eval_s)
    session.add_flops(eval=eval_flops)
    session.eval_end()
    return session.epoch_end(metrics or {})


def test_epoch_metrics_equal_hand_computation(tmp_path, fake_clock):
    session = make_session(tmp_path)
    session.start()
    out = run_epoch(session, fake_clock)
    assert set(out) == set(METRIC_KEYS)
    assert all(type(v) is float for v in out.values())
    # 100 W + 20 W + 5 W for 12 s = 1500 J; evaluation 2 s of 125 W = 250 J
    assert out["green/epoch_energy_kwh"] == pytest.approx(1500 / 3.6e6, rel=1e-12)
    assert out["green/epoch_gpu_energy_kwh"] == pytest.approx(1200 / 3.6e6, rel=1e-12)
    assert out["green/epoch_cpu_energy_kwh"] == pytest.approx(240 / 3.6e6, rel=1e-12)
    assert out["green/epoch_ram_energy_kwh"] == pytest.approx(60 / 3.6e6, rel=1e-12)
    assert out["green/epoch_eval_energy_kwh"] == pytest.approx(250 / 3.6e6, rel=1e-12)
    # kWh × PUE × intensity = 1500/3.6e6 × 1.5 × 400 = 0.25 g
    assert out["green/epoch_emissions_gco2e"] == pytest.approx(0.25, rel=1e-12)
    assert out["green/epoch_time_s"] == pytest.approx(12.0)
    assert out["green/epoch_train_flops"] == 1e12
    assert out["green/epoch_eval_flops"] == 1e11
    # training FLOPs per joule of training energy: 1e12 / (1500 - 250)
    assert out["green/train_flops_per_joule"] == pytest.approx(1e12 / 1250, rel=1e-12)
    # no monitor: convergence is unknown, not zero
    assert math.isnan(out["green/flops_to_convergence"])
    session.finish()


def test_totals_and_convergence_to_best(tmp_path, fake_clock):
    session = make_session(tmp_path, monitor="val_loss")
    session.start()
    losses = [0.9, 0.5, 0.5, 0.7]  # best first reached at epoch 1; the tie at epoch 2 does not move it
    outs = [run_epoch(session, fake_clock, metrics={"val_loss": v}) for v in losses]
    last = outs[-1]
    assert last["green/total_energy_kwh"] == pytest.approx(4 * 1500 / 3.6e6, rel=1e-12)
    assert last["green/total_emissions_gco2e"] == pytest.approx(4 * 0.25, rel=1e-12)
    assert last["green/total_train_flops"] == 4e12
    assert last["green/epochs_to_convergence"] == 2.0
    assert last["green/flops_to_convergence"] == 2e12
    assert last["green/energy_to_convergence_kwh"] == pytest.approx(2 * 1500 / 3.6e6, rel=1e-12)
    assert last["green/emissions_to_convergence_gco2e"] == pytest.approx(0.5, rel=1e-12)
    assert outs[0]["green/epochs_to_convergence"] == 1.0
    session.finish()


def test_record_written_every_epoch_and_final_status(tmp_path, fake_clock):
    session = make_session(tmp_path, monitor="val_acc")
    session.start(hyperparameters={"lr": 0.1})
    session.flush()  # the record is written off the training thread
    first = read_record(session.record_path)
    assert first["status"] == "running" and first["epochs"] == []
    run_epoch(session, fake_clock, metrics={"val_acc": 0.8})
    session.flush()
    mid = read_record(session.record_path)
    assert len(mid["epochs"]) == 1 and mid["status"] == "running"
    session.finish("completed")
    record = read_record(session.record_path)
    assert record["schema"] == "green-callbacks/run/1.1"
    assert record["status"] == "completed"
    assert record["hyperparameters"] == {"lr": 0.1}
    assert record["carbon"]["intensity_gco2e_per_kwh"] == 400.0 and record["carbon"]["pue"] == 1.5
    assert record["convergence"]["mode"] == "max"
    assert record["methods"]["gpu"] == ["fake-constant-power"]
    assert record["totals"]["energy_j"] == pytest.approx(1500.0)
    assert record["epochs"][0]["component_energy_j"]["cpu"] == pytest.approx(240.0)
    assert session.record_path.name.startswith("green-run-")
    json.loads(session.record_path.read_text())  # plain JSON


def test_lost_gpu_is_unavailable_not_zero(tmp_path, fake_clock):
    session = Session(GreenConfig(output_dir=str(tmp_path), carbon_intensity=100.0), framework="test",
                      sensors=sensors(gpu_fail_after_s=15.0), dist=DistInfo(), reducer=lambda v: list(v))
    session.start()
    first = run_epoch(session, fake_clock)  # ends at 12 s: GPU still there
    second = run_epoch(session, fake_clock)  # ends at 24 s: GPU gone
    assert first["green/epoch_gpu_energy_kwh"] == pytest.approx(1200 / 3.6e6)
    assert math.isnan(second["green/epoch_gpu_energy_kwh"])
    # the other components are still measured: (20 + 5) W × 12 s = 300 J
    assert second["green/epoch_energy_kwh"] == pytest.approx(300 / 3.6e6)
    session.finish()
    record = read_record(session.record_path)
    assert record["methods"]["gpu"] == ["fake-constant-power", "unavailable"]
    assert record["epochs"][1]["component_energy_j"]["gpu"] is None


def test_distributed_sum_and_node_level_counted_once(tmp_path, fake_clock):
    """Two ranks on one node: rank 1 is not the node leader, so its node-level CPU counts 0 before the sum."""
    seen: list[list[float]] = []

    def reducer(values):  # stands for an all-reduce over two identical ranks, recording rank 1's contribution
        seen.append(list(values))
        return [2 * float(v) for v in values]

    session = Session(GreenConfig(output_dir=str(tmp_path), carbon_intensity=100.0), framework="test",
                      sensors=sensors(), dist=DistInfo(rank=1, local_rank=1, world_size=2), reducer=reducer)
    session.start()
    out = run_epoch(session, fake_clock)
    # rank 1 contributes gpu 1200 J, cpu 0 J (the leader counts it), ram 60 J; doubled by the fake all-reduce
    assert seen[0][:3] == [1200.0, 0.0, 60.0]
    assert out["green/epoch_gpu_energy_kwh"] == pytest.approx(2400 / 3.6e6)
    assert out["green/epoch_cpu_energy_kwh"] == 0.0
    assert out["green/epoch_train_flops"] == 2e12
    session.finish()
    assert not session.record_path.exists()  # only global rank zero writes


def test_resume_continues_totals(tmp_path, fake_clock):
    first = make_session(tmp_path, monitor="val_loss")
    first.start()
    run_epoch(first, fake_clock, metrics={"val_loss": 1.0})
    state = first.state_dict()
    first.finish("interrupted")

    resumed = make_session(tmp_path, monitor="val_loss")
    resumed.load_state_dict(state)
    resumed.start()
    out = run_epoch(resumed, fake_clock, metrics={"val_loss": 2.0})
    assert out["green/total_energy_kwh"] == pytest.approx(2 * 1500 / 3.6e6)
    assert out["green/epochs_to_convergence"] == 1.0  # epoch 0 stays the best
    resumed.finish()
    record = read_record(resumed.record_path)
    assert resumed.record_path == first.record_path
    assert [row["epoch"] for row in record["epochs"]] == [0, 1]
    assert record["resumed_from"]["epochs"] == 1


def test_failure_keeps_partial_epoch(tmp_path, fake_clock):
    session = make_session(tmp_path)
    session.start()
    run_epoch(session, fake_clock)
    session.epoch_start()
    fake_clock.advance(4.0)
    session.finish("failed", RuntimeError("boom"))
    record = read_record(session.record_path)
    assert record["status"] == "failed" and record["error"] == "RuntimeError: boom"
    assert len(record["epochs"]) == 1
    assert record["partial_epoch"]["energy_j"] == pytest.approx(125.0 * 4.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"pue": 0.9}, "pue=0.9 is physically impossible"),
        ({"pue": float("nan")}, "pue must be a finite number"),
        ({"carbon_intensity": -1.0}, "carbon_intensity must not be negative"),
        ({"carbon_intensity": float("nan")}, "carbon_intensity must be a finite number"),
        ({"gpus": [-1]}, "gpus must be a list of non-negative"),
        ({"mode": "up", "monitor": "x"}, "mode must be 'min', 'max'"),
        ({"target": 0.5}, "target= needs monitor="),
        ({"budget_kwh": 0}, "budget_kwh must be a finite number > 0"),
    ],
)
def test_bad_config_is_a_clear_value_error(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        GreenConfig(**kwargs)


def test_monitor_without_inferable_mode_explains(tmp_path):
    with pytest.raises(ValueError, match="pass mode='min' or mode='max'"):
        make_session(tmp_path, monitor="val_wobble")


class _H100(ConstantPowerSensor):
    """A constant-power GPU that names its board, as NVML does (the hardware boundary)."""

    def info(self):
        return {**super().info(), "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}


def _h100_session(tmp_path, **config):
    config.setdefault("carbon_intensity", 400.0)
    return Session(GreenConfig(output_dir=str(tmp_path), **config), framework="test",
                   sensors=[_H100("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node"),
                            ConstantPowerSensor("ram", 5.0, scope="process")],
                   dist=DistInfo(), reducer=lambda v: [float(x) for x in v])


def test_the_reader_gives_back_the_rows_the_engine_wrote(tmp_path, fake_clock):
    from green_callbacks.core.record import load_record

    session = _h100_session(tmp_path, monitor="val_loss")
    session.start(compute_dtype="bf16")
    for loss in (0.9, 0.5):
        session.epoch_start()
        session.add_batch({"input_ids": _Shape((4, 6))})  # 4 samples, 24 tokens
        fake_clock.advance(10.0)
        session.add_flops(train=1e12)
        session.eval_start()
        fake_clock.advance(2.0)
        session.add_flops(eval=1e11)
        session.eval_end()
        session.epoch_end({"val_loss": loss})
    session.finish("completed")
    record = load_record(session.record_path)
    # every field of every row, read back into the engine's own type
    assert record.epochs == session.rows
    assert record.totals == session.totals
    row = record.epochs[0]
    assert (row.train_time_s, row.samples, row.tokens) == (10.0, 4.0, 24.0)
    assert row.peak_flops_per_s == 989.4e12  # the H100 SXM's dense bf16 peak


def test_the_report_shows_the_mfu_the_run_logged(tmp_path, fake_clock):
    from green_callbacks.core.record import load_record
    from green_callbacks.report.efficiency import run_mfu
    from green_callbacks.report.runs import summarize_run

    session = _h100_session(tmp_path)
    session.start(compute_dtype="fp32")
    logged = []
    for train_s in (10.0, 30.0):
        session.epoch_start()
        fake_clock.advance(train_s)
        session.add_flops(train=6.7e14)
        session.eval_start()
        fake_clock.advance(2.0)
        session.add_flops(eval=5e13)  # evaluation FLOPs and time are not part of MFU
        session.eval_end()
        logged.append(session.epoch_end({})["green/mfu"])
    session.finish("completed")
    # by hand: 6.7e14 FLOPs in 10 s, then in 30 s, at the H100 SXM's 67 TFLOP/s fp32
    assert logged == [pytest.approx(6.7e14 / (10.0 * 67e12)), pytest.approx(6.7e14 / (30.0 * 67e12))]
    run = summarize_run(load_record(session.record_path))
    shown = run_mfu(run)
    # the run's MFU is the training-time-weighted mean of the logged values: 2 x 6.7e14 / (40 s x 67e12)
    assert shown.value == pytest.approx((logged[0] * 10 + logged[1] * 30) / 40, rel=1e-12)
    assert shown.value == pytest.approx(2 * 6.7e14 / (40.0 * 67e12), rel=1e-12)
    assert "as logged" in shown.peak_source and "fp32" in shown.peak_source
    # the report's dtype assumption does not override what the run trained at
    assert run_mfu(run, dtype="bf16").value == shown.value
    # one epoch: exactly the logged figure
    single = _h100_session(tmp_path / "one")
    single.start(compute_dtype="fp32")
    single.epoch_start()
    fake_clock.advance(10.0)
    single.add_flops(train=6.7e14)
    one = single.epoch_end({})["green/mfu"]
    single.finish("completed")
    assert run_mfu(summarize_run(load_record(single.record_path))).value == one


class _Shape:
    """A batch entry with a shape, as a tensor has (no framework needed)."""

    def __init__(self, shape):
        self.shape = shape


def test_the_summary_says_not_counted_never_zero(tmp_path, fake_clock):
    from green_callbacks.core.record import load_record
    from green_callbacks.report.summary import format_run_summary

    session = make_session(tmp_path)
    session.start()
    run_epoch(session, fake_clock, train_flops=1e12, eval_flops=1e11)
    session.finish("completed")
    record = load_record(session.record_path)
    assert "FLOPs: training 1e+12, evaluation 1e+11" in format_run_summary(record)
    # the same record with evaluation FLOPs that were never counted (an epoch's null): never printed as 0
    data = dict(record.data)
    data["epochs"] = [{**row, "eval_flops": None} for row in data["epochs"]]
    from green_callbacks.core.record import parse_record

    text = format_run_summary(parse_record(data))
    assert "evaluation not counted" in text and "evaluation 0" not in text

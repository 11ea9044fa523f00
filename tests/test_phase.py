"""The phase arithmetic (core/phase.py) and driver (core/phase_session.py) against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from green_callbacks.core import clock
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.phase import (
    PHASE_METRIC_SUFFIXES,
    PhaseInputs,
    batch_signature,
    break_even,
    percentile,
    phase_metric_keys,
    samples_of,
    summarize_phase,
    tokens_in_of,
)
from green_callbacks.core.phase_session import PhaseSession
from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor

J_PER_KWH = 3.6e6


def _inputs(**changes: object) -> PhaseInputs:
    values: dict[str, object] = dict(
        kind="test",
        duration_s=10.0,
        component_energy_j={"gpu": 100.0, "cpu": 50.0, "ram": None},
        component_method={"gpu": "fake", "cpu": "fake", "ram": "unavailable"},
        warmup_component_energy_j={"gpu": 20.0, "cpu": 10.0, "ram": None},
        warmup_time_s=2.0,
        batches=10,
        samples=100,
        warmup_batches=1,
        warmup_samples=10,
        intensity_gco2e_per_kwh=400.0,
        pue=1.5,
        flops=1e9,
        latencies_s=(0.4, 0.1, 0.3, 0.2),
        warmup_latencies_s=(0.9,),
    )
    values.update(changes)
    return PhaseInputs(**values)  # type: ignore[arg-type]


def test_summary_by_hand() -> None:
    r = summarize_phase(_inputs())
    assert r.energy_j == 150.0
    assert r.missing_components == ("ram",)
    assert r.emissions_gco2e == pytest.approx(150.0 / J_PER_KWH * 400.0 * 1.5)
    assert r.warmup_energy_j == 30.0
    assert r.steady_energy_j == 120.0 and r.steady_time_s == 8.0 and r.steady_samples == 90
    assert not r.rates_include_warmup
    assert r.energy_per_sample_j == pytest.approx(120.0 / 90)
    assert r.wh_per_1000_samples == pytest.approx(120.0 / 90 / 3600.0 * 1000.0)
    assert r.samples_per_joule == pytest.approx(90 / 120.0)
    assert r.emissions_per_sample_gco2e == pytest.approx(120.0 / J_PER_KWH * 400.0 * 1.5 / 90)
    assert r.mean_power_w == pytest.approx(120.0 / 8.0)
    assert r.flops_per_sample == pytest.approx(1e9 / 100)
    assert r.latency_p50_s == pytest.approx(0.25)  # sorted 0.1 0.2 0.3 0.4: halfway between 0.2 and 0.3
    assert r.latency_p95_s == pytest.approx(0.3 + 0.85 * 0.1)  # position 3 × 0.95 = 2.85
    assert r.quality == "measured" and r.short_window_components == ()
    m = r.metrics()
    assert list(m) == list(phase_metric_keys("test"))
    assert m["green/test_energy_kwh"] == pytest.approx(150.0 / J_PER_KWH)
    assert m["green/test_gpu_energy_kwh"] == pytest.approx(100.0 / J_PER_KWH)
    assert math.isnan(m["green/test_ram_energy_kwh"])
    assert m["green/test_warmup_energy_kwh"] == pytest.approx(30.0 / J_PER_KWH)
    assert math.isnan(m["green/test_tokens_in"]) and math.isnan(m["green/test_energy_per_token_in_j"])
    assert all(isinstance(v, float) for v in m.values())
    assert len(PHASE_METRIC_SUFFIXES) == len(set(PHASE_METRIC_SUFFIXES))


def test_no_steady_batch_uses_the_whole_phase() -> None:
    r = summarize_phase(_inputs(batches=1, samples=10, warmup_samples=10, latencies_s=()))
    assert r.rates_include_warmup
    assert r.energy_per_sample_j == pytest.approx(150.0 / 10)
    assert r.mean_power_w == pytest.approx(15.0)
    assert r.latency_p50_s is None
    assert any("rates include warm-up" in n for n in r.notes)


def test_window_shorter_than_the_sensor_resolution_is_labelled() -> None:
    methods = {"gpu": "nvml-energy-counter", "cpu": "estimate-cpu-time", "ram": "unavailable"}
    r = summarize_phase(_inputs(duration_s=2.05, component_method=methods))  # steady part 0.05 s
    assert r.quality == "below-sensor-resolution"
    assert r.short_window_components == ("gpu",)  # 0.05 s < 0.1 s; not < 0.01 s
    assert r.resolution_s == {"gpu": 0.1, "cpu": 0.01}
    r2 = summarize_phase(_inputs(duration_s=2.005, component_method=methods))
    assert r2.short_window_components == ("gpu", "cpu")
    # two warm-up windows: the steady energy is two differences of reads, each off by up to 0.1 s of the counter,
    # so 0.15 s of steady time is not enough for NVML (0.15 < 2 × 0.1) and enough for CPU time (0.15 > 2 × 0.01)
    r3 = summarize_phase(_inputs(duration_s=2.15, warmup_batches=2, component_method=methods))
    assert r3.short_window_components == ("gpu",) and "× 2 reads apart" in r3.notes[-1]
    assert summarize_phase(_inputs(duration_s=2.15, component_method=methods)).quality == "measured"


def test_nothing_measured_is_unavailable_not_zero() -> None:
    r = summarize_phase(_inputs(component_energy_j={"gpu": None}, component_method={"gpu": "unavailable"},
                                warmup_component_energy_j={"gpu": None}))
    assert r.energy_j is None and r.quality == "unavailable"
    assert r.energy_per_sample_j is None and r.samples_per_joule is None
    assert math.isnan(r.metrics()["green/test_energy_per_sample_j"])


def test_percentile_and_break_even() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95) == pytest.approx(9.55)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 95)
    b = break_even(3600.0, 0.5, 2.0, 1e-4)
    assert b.samples_for_energy == 7200.0 and b.samples_for_emissions == pytest.approx(20000.0)
    assert break_even(None, 0.5).samples_for_energy is None
    assert break_even(10.0, 0.0).samples_for_energy is None


def test_batch_inspection() -> None:
    np = pytest.importorskip("numpy")
    batch = {"input_ids": np.zeros((2, 5), dtype=np.int64), "attention_mask": np.array([[1, 1, 1, 0, 0], [1] * 5])}
    sig = batch_signature(batch)
    int64 = np.dtype("int64")
    assert sig == (("attention_mask", ("leaf", (2, 5), int64)), ("input_ids", ("leaf", (2, 5), int64)))
    assert samples_of(sig) == 2
    assert int(tokens_in_of(batch)) == 8
    assert int(tokens_in_of((batch, None))) == 8
    assert tokens_in_of((np.zeros((3, 4)), np.zeros(3))) is None
    assert samples_of(batch_signature((np.zeros((3, 4)), np.zeros(3)))) == 3
    assert samples_of(batch_signature([1.0, "x"])) is None


# ------------------------------------------------------------------------------------------ the driver
@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> clock.FakeClock:
    fake = clock.FakeClock(100.0)
    monkeypatch.setattr(clock, "now_s", fake)
    return fake


def _run_phase(tmp_path: Path, fake_clock: clock.FakeClock, training: object = None) -> PhaseSession:
    """gpu 100 W + cpu 20 W; 3 batches of 4 samples (the first is warm-up) and 1 new-shape batch of 2."""
    np = pytest.importorskip("numpy")
    sensors = [ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node")]
    config = GreenConfig(carbon_intensity=500.0, pue=1.2, output_dir=str(tmp_path))
    phase = PhaseSession(config, framework="test", kind="predict", sensors=sensors, training=training)
    phase.start()
    mask = np.ones((4, 6), dtype=np.int64)
    mask[0, 3:] = 0  # 21 tokens in each batch of 4
    big = {"input_ids": np.zeros((4, 6)), "attention_mask": mask}
    small = {"input_ids": np.zeros((2, 6)), "attention_mask": np.ones((2, 6), dtype=np.int64)}  # 12 tokens
    fake_clock.advance(1.0)  # loader start-up: part of the first warm-up window
    for batch, seconds in ((big, 0.5), (big, 0.2), (big, 0.2), (small, 0.3)):
        phase.batch_start(batch)
        fake_clock.advance(seconds)
        phase.batch_end()
        fake_clock.advance(0.1)
    phase.end()
    return phase


def test_phase_session_exact_against_constant_power(tmp_path: Path, fake_clock: clock.FakeClock) -> None:
    phase = _run_phase(tmp_path, fake_clock)
    r = phase.result
    assert r is not None
    total_s = 1.0 + 0.5 + 0.2 + 0.2 + 0.3 + 4 * 0.1  # 2.6 s
    warm_s = (1.0 + 0.5) + 0.3  # phase start → end of batch 1, and the new-shape batch 4
    steady_s = total_s - warm_s  # 0.8 s
    assert r.duration_s == pytest.approx(total_s)
    assert r.component_energy_j["gpu"] == pytest.approx(100.0 * total_s)
    assert r.energy_j == pytest.approx(120.0 * total_s)
    assert r.warmup_time_s == pytest.approx(warm_s) and r.warmup_batches == 2 and r.warmup_samples == 6
    assert r.samples == 14 and r.batches == 4 and r.steady_samples == 8
    assert r.energy_per_sample_j == pytest.approx(120.0 * steady_s / 8)  # 12 J
    assert r.samples_per_joule == pytest.approx(8 / (120.0 * steady_s))
    assert r.mean_power_w == pytest.approx(120.0)
    assert r.emissions_gco2e == pytest.approx(120.0 * total_s / J_PER_KWH * 500.0 * 1.2)
    assert r.latency_p50_s == pytest.approx(0.2) and r.latency_p95_s == pytest.approx(0.2)
    assert r.warmup_latencies_s == pytest.approx((0.5, 0.3))
    assert r.flops is None and r.flops_per_sample is None  # no model handed with the batches: unavailable
    assert r.tokens_in == 3 * 21 + 12
    assert r.energy_per_token_in_j == pytest.approx(120.0 * steady_s / (2 * 21))
    record = read_record(phase.record_path)  # type: ignore[arg-type]
    assert record["kind"] == "predict" and record["status"] == "completed" and record["epochs"] == []
    assert record["phase"]["energy_per_sample_j"] == pytest.approx(12.0)
    assert record["training"] is None and record["break_even"] is None
    assert record["totals"]["energy_j"] == pytest.approx(120.0 * total_s)
    assert record["software"]["python"] and "hardware" in record


class _FitSession:
    """The parts of a finished fit session a phase reads (the real one is tested through the adapters)."""

    def __init__(self, path: Path) -> None:
        from green_callbacks.core.convergence import Totals

        self.status = "completed"
        self.run_id = "fit123"
        self.framework = "test"
        self.record_path = path
        self.totals = Totals(epochs=2, time_s=10.0, energy_j=1200.0, emissions_gco2e=0.5)
        self.carbon = None
        self.phases: list[dict[str, object]] = []

    def add_phase(self, entry: dict[str, object]) -> None:
        self.phases.append(entry)


def test_phase_links_to_its_fit_and_computes_the_break_even(tmp_path: Path, fake_clock: clock.FakeClock) -> None:
    fit = _FitSession(tmp_path / "fit" / "green-run-x.json")
    phase = _run_phase(tmp_path / "elsewhere", fake_clock, training=fit)
    assert phase.record_path is not None
    assert phase.record_path.parent == tmp_path / "elsewhere"  # output_dir= wins over the fit's folder
    assert phase.break_even is not None
    assert phase.break_even.samples_for_energy == pytest.approx(1200.0 / 12.0)
    per_sample_g = 12.0 / J_PER_KWH * 500.0 * 1.2
    assert phase.break_even.samples_for_emissions == pytest.approx(0.5 / per_sample_g)
    assert len(fit.phases) == 1 and fit.phases[0]["kind"] == "predict"
    assert fit.phases[0]["record"] == phase.record_path.name
    record = json.loads(phase.record_path.read_text())
    assert record["training"]["run_id"] == "fit123" and record["training"]["record"] == "green-run-x.json"
    assert record["break_even"]["samples_for_energy"] == pytest.approx(100.0)


def test_aborted_phase_keeps_what_was_measured(tmp_path: Path, fake_clock: clock.FakeClock) -> None:
    np = pytest.importorskip("numpy")
    config = GreenConfig(carbon_intensity=500.0, output_dir=str(tmp_path))
    phase = PhaseSession(config, framework="test", kind="test", sensors=[ConstantPowerSensor("gpu", 10.0)])
    phase.start()
    phase.batch_start(np.zeros((3, 2)))
    fake_clock.advance(2.0)
    phase.abort("failed", RuntimeError("boom"))
    record = read_record(phase.record_path)  # type: ignore[arg-type]
    assert record["status"] == "failed" and "boom" in record["error"]
    assert record["phase"]["energy_j"] == pytest.approx(20.0) and record["phase"]["batches"] == 0


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="predict"):
        PhaseSession(GreenConfig(carbon_intensity=1.0), framework="x", kind="serve")


def test_the_phase_and_its_first_warmup_window_open_on_one_read(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    from green_callbacks.core.sensors.fake import StepEnergySensor

    sensor = StepEnergySensor("gpu", 1.0)
    phase = PhaseSession(GreenConfig(carbon_intensity=1.0, output_dir=str(tmp_path)), framework="t", kind="test",
                         sensors=[sensor])
    phase.start()
    assert sensor.reads == 1
    phase.batch_start(np.zeros((2, 2)))
    phase.batch_end()  # the first warm-up window closes: read 2
    phase.batch_start(np.zeros((2, 2)))
    phase.batch_end()  # a steady batch: no read
    assert sensor.reads == 2
    result = phase.end()  # read 3
    assert result is not None and result.energy_j == 2.0 and result.warmup_energy_j == 1.0
    assert result.steady_energy_j == 1.0 and result.energy_per_sample_j == 0.5


def test_sigterm_mid_phase_writes_an_interrupted_record(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from green_callbacks.core.config import GreenConfig
        from green_callbacks.core.phase_session import PhaseSession
        from green_callbacks.core.sensors.fake import StepEnergySensor
        phase = PhaseSession(GreenConfig(carbon_intensity=1.0, output_dir={str(tmp_path)!r}), framework="t",
                             kind="predict", sensors=[StepEnergySensor("gpu", 1.0)])
        phase.start()
        phase.batch_start([[1.0, 2.0]])
        phase.batch_end()
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # it still dies of SIGTERM, as without us
    (path,) = tmp_path.glob("green-run-*.json")
    record = read_record(path)
    assert record["kind"] == "predict" and record["status"] == "interrupted" and record["error"] == "SIGTERM"
    assert record["phase"]["batches"] == 1


def test_output_tokens_split_between_warmup_and_steady(tmp_path: Path, fake_clock: clock.FakeClock) -> None:
    np = pytest.importorskip("numpy")
    phase = PhaseSession(GreenConfig(carbon_intensity=1.0, output_dir=str(tmp_path)), framework="t", kind="predict",
                         sensors=[ConstantPowerSensor("gpu", 10.0)])
    phase.start()
    for out in (7, 5, 3):  # batch 1 is warm-up; batches 2 and 3 (same shape) are steady: 1 s and 8 tokens
        phase.batch_start(np.zeros((2, 3)))
        phase.add_tokens_out(out)
        fake_clock.advance(0.5)
        phase.batch_end()
    phase.add_tokens_out(100)  # between batches: belongs to none, ignored
    r = phase.end()
    assert r is not None and r.tokens_out == 15
    assert r.energy_per_token_out_j == pytest.approx(10.0 * 1.0 / 8)


def _phase_of(tmp_path: Path, **options: object) -> PhaseSession:
    sensors = [ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node")]
    config = GreenConfig(carbon_intensity=500.0, pue=1.2, output_dir=str(tmp_path))
    return PhaseSession(config, framework="test", kind="predict", sensors=sensors, **options)  # type: ignore[arg-type]


def test_phase_flops_are_observed_on_the_real_batches(tmp_path: Path, fake_clock: clock.FakeClock) -> None:
    """A Linear 6 -> 3 on batches of 4, 4, 4 and 2 rows: 2·6·3 = 36 FLOPs per row, 14 rows = 504, counted while the
    batches run (the first of each shape observed, the others cache hits): the forward runs once per batch."""
    torch = pytest.importorskip("torch")
    from green_callbacks.core.phase_flops import PhaseFlops

    model = torch.nn.Linear(6, 3)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    flops = PhaseFlops()
    flops.open()
    phase = _phase_of(tmp_path, flops=flops)
    phase.start()
    for rows in (4, 4, 4, 2):
        batch = torch.ones(rows, 6)
        phase.batch_start(batch, model)
        with torch.no_grad():
            model(batch)
        fake_clock.advance(0.1)
        phase.batch_end()
    result = phase.end()
    assert result is not None and len(calls) == 4
    assert result.flops == 2 * 6 * 3 * 14 and result.flops_per_sample == 36.0
    assert flops.tracker.info()["counts"]["observed"] == 2  # one per shape: (4, 6) and (2, 6)

    # a batch whose model is not handed over: the phase's FLOPs are unavailable, not a partial sum
    flops.open()
    phase = _phase_of(tmp_path, flops=flops)
    phase.start()
    for handed in (model, None):
        phase.batch_start(torch.ones(4, 6), handed)
        model(torch.ones(4, 6))
        phase.batch_end()
    result = phase.end()
    assert result is not None and result.flops is None and result.batches == 2


def test_batches_not_seen_are_unavailable_not_zero(tmp_path: Path, fake_clock: clock.FakeClock) -> None:
    """A backend whose steps run out of the adapter's sight (Keras on TensorFlow): the energy is measured, batches,
    samples and every per-sample figure are unavailable (NaN), never 0."""
    phase = _phase_of(tmp_path, sees_batches=False)
    phase.start()
    fake_clock.advance(2.0)
    result = phase.end()
    assert result is not None and result.energy_j == pytest.approx(120.0 * 2.0) and result.quality == "measured"
    metrics = result.metrics()
    for suffix in ("batches", "samples", "samples_per_joule", "energy_per_sample_j", "warmup_batches"):
        assert math.isnan(metrics[f"green/predict_{suffix}"]), suffix
    assert metrics["green/predict_mean_power_w"] == pytest.approx(120.0)
    assert any("not seen" in note for note in result.notes)
    assert read_record(phase.record_path)["phase"]["samples"] is None  # type: ignore[arg-type]

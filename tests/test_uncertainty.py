"""Intervals of energy and emissions: each checked against a hand computation from the bounds in
docs/uncertainty.md (the numbers are written here, not read from the module), and a simulation with known sensor
noise showing that the intervals contain the truth at the stated 95 %."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from green_callbacks.core.carbon import CarbonIntensity, lookup_country
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.metric_keys import INTERVAL_KEYS, METRIC_KEYS
from green_callbacks.core.record import load_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor
from green_callbacks.core.session import Session
from green_callbacks.core.uncertainty import (
    ENERGY_BOUNDS,
    Bound,
    Factor,
    Part,
    RunSpread,
    emission_factors,
    energy_bound,
    energy_interval,
    intensity_factor,
    pue_factor,
    scaled_interval,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "uncertainty.md"


# --- the documented bounds, by hand ------------------------------------------------------------------------------
def counter_widths(energy_j: float, time_s: float, boundaries: int = 2) -> tuple[float, float]:
    """NVML counter: reported within +/-5 % of the truth, and each boundary off by up to power x 100 ms."""
    edge = math.sqrt(boundaries) * energy_j / time_s * 0.1
    return math.hypot(energy_j * (1 - 1 / 1.05), edge), math.hypot(energy_j * (1 / 0.95 - 1), edge)


def rapl_widths(energy_j: float) -> tuple[float, float]:
    """RAPL: reported within +/-73 % of the truth."""
    return energy_j * (1 - 1 / 1.73), energy_j * (1 / 0.27 - 1)


def test_one_counter_window_equals_hand_computation():
    got = energy_interval([Part("gpu", "nvml-energy-counter", 600.0, 10.0)])
    # truth in [600/1.05, 600/0.95] from the sensor, ± sqrt(2) × 60 W × 0.1 s from the two boundaries
    down = math.hypot(600 - 600 / 1.05, math.sqrt(2) * 60 * 0.1)
    up = math.hypot(600 / 0.95 - 600, math.sqrt(2) * 60 * 0.1)
    assert got.value == 600.0
    assert got.low == pytest.approx(600 - down, rel=1e-12)
    assert got.high == pytest.approx(600 + up, rel=1e-12)


def test_independent_components_add_in_quadrature():
    parts = [Part("gpu", "nvml-energy-counter", 1200.0, 12.0), Part("cpu", "estimate-cpu-time", 240.0, 12.0)]
    got = energy_interval(parts)
    gpu_down, gpu_up = counter_widths(1200.0, 12.0)
    # CPU time x W per core against RAPL: -67.5 % to +190 %, so the truth is in [240/2.9, 240/0.325]
    cpu_down, cpu_up = 240 - 240 / 2.9, 240 / 0.325 - 240
    assert got.low == pytest.approx(1440 - math.hypot(gpu_down, cpu_down), rel=1e-12)
    assert got.high == pytest.approx(1440 + math.hypot(gpu_up, cpu_up), rel=1e-12)


def test_a_method_without_basis_gives_no_interval():
    assert energy_bound("estimate-rss") is None
    assert energy_bound("amdsmi-energy-counter") is None
    parts = [Part("cpu", "rapl", 100.0, 1.0), Part("ram", "estimate-rss", 1.0, 1.0)]
    assert energy_interval(parts) is None
    assert scaled_interval(None, 1.0, [pue_factor(1.0)]) is None


def test_a_combined_method_takes_the_widest_bound():
    both = energy_bound("nvml-energy-counter+nvml-power")
    assert (both.error_low, both.error_high, both.boundary_s) == (-0.40, 0.40, 0.1)
    assert energy_bound("nvml-energy-counter+fake") is None


def test_shared_factors_multiply_the_sum_once():
    energy = energy_interval([Part("gpu", "nvml-energy-counter", 1200.0, 12.0), Part("cpu", "rapl", 240.0, 12.0)])
    grid = CarbonIntensity(481.0, "table", 2023, "world", "lifecycle, annual average, production-based", "table")
    factors = emission_factors(grid, 1.58)
    grams = 1440 / 3.6e6 * 1.58 * 481
    got = scaled_interval(energy, grams, factors)
    # PUE 1.58 (Uptime 2023): 1.55-1.59; a lifecycle annual average may be up to 45 g lower on another basis/year
    down = math.sqrt((1 - energy.low / 1440) ** 2 + (1 - 1.55 / 1.58) ** 2 + (45 / 481) ** 2)
    up = math.sqrt((energy.high / 1440 - 1) ** 2 + (1.59 / 1.58 - 1) ** 2)
    assert got.low == pytest.approx(grams * (1 - down), rel=1e-12)
    assert got.high == pytest.approx(grams * (1 + up), rel=1e-12)


def test_grid_and_pue_factors():
    assert intensity_factor(400.0, "explicit", "user-supplied value") == Factor(1.0, 1.0, "user-supplied value, "
                                                                                          "as given")
    assert intensity_factor(400.0, "live", "live API") is None
    operational = intensity_factor(90.0, "table", "operational grid average (location-based), annual average")
    assert (operational.low, operational.high) == (1.0, pytest.approx(1 + 45 / 90))
    clean = intensity_factor(30.0, "table", "lifecycle, annual average, production-based")
    assert clean.low == 0.0  # Sweden: 40.7 lifecycle vs 5.67 direct; a 30 g grid may be near zero on a direct basis
    assert (pue_factor(1.0).low, pue_factor(1.0).high) == (1.0, 1.0)  # IT energy only, by definition
    assert pue_factor(1.58).low == pytest.approx(1.55 / 1.58)


def test_a_run_total_keeps_one_calibration_and_two_boundaries():
    spread = RunSpread()
    for _ in range(3):  # three 10 s epochs of 60 W: the boundaries between epochs cancel
        spread.add([Part("gpu", "nvml-energy-counter", 600.0, 10.0)])
    got = spread.interval()
    down, up = counter_widths(1800.0, 30.0)
    assert got.low == pytest.approx(1800 - down, rel=1e-12)
    assert got.high == pytest.approx(1800 + up, rel=1e-12)


def test_every_bound_is_in_the_documented_table():
    text = DOCS.read_text(encoding="utf-8")
    for method, bound in ENERGY_BOUNDS.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{method}`")), None)
        assert row is not None, method
        assert f"{bound.error_low * 100:+g} %" in row and f"{bound.error_high * 100:+g} %" in row, row
    assert "estimate-rss" in text and "no basis for an interval" in text


# --- fake sensors and a fake clock through the fit driver ----------------------------------------------------------
def make_session(tmp_path, sensors, **config):
    config.setdefault("carbon_intensity", 400.0)
    config.setdefault("pue", 1.58)
    return Session(GreenConfig(output_dir=str(tmp_path), **config), framework="test", sensors=sensors,
                   dist=DistInfo(), reducer=lambda v: [float(x) for x in v])


def measured_sensors():
    return [ConstantPowerSensor("gpu", 100.0, method="nvml-energy-counter"),
            ConstantPowerSensor("cpu", 20.0, scope="node", method="rapl"),
            ConstantPowerSensor("ram", 5.0, scope="node", method="rapl")]


def hand_interval(seconds: float) -> tuple[float, float, float]:
    """100 W GPU counter + 20 W and 5 W RAPL for ``seconds`` (one window, or a run whose boundaries telescope)."""
    gd, gu = counter_widths(100 * seconds, seconds)
    cd, cu = rapl_widths(20 * seconds)
    rd, ru = rapl_widths(5 * seconds)
    total = 125 * seconds
    return total, total - math.sqrt(gd**2 + cd**2 + rd**2), total + math.sqrt(gu**2 + cu**2 + ru**2)


def test_epochs_and_totals_carry_their_interval_to_loggers_and_record(tmp_path, fake_clock):
    session = make_session(tmp_path, measured_sensors())
    session.start()
    logged = []
    for _ in range(2):
        session.epoch_start()
        fake_clock.advance(12.0)
        logged.append(session.epoch_end({}))
    path = session.finish()
    total, low, high = hand_interval(24.0)
    assert logged[-1]["green/total_energy_kwh_low"] == pytest.approx(low / 3.6e6, rel=1e-12)
    assert logged[-1]["green/total_energy_kwh_high"] == pytest.approx(high / 3.6e6, rel=1e-12)
    grams = total / 3.6e6 * 1.58 * 400  # an explicit intensity is taken as given; PUE 1.58 is 1.55-1.59
    down = math.sqrt((1 - low / total) ** 2 + (1 - 1.55 / 1.58) ** 2)
    up = math.sqrt((high / total - 1) ** 2 + (1.59 / 1.58 - 1) ** 2)
    assert logged[-1]["green/total_emissions_gco2e_low"] == pytest.approx(grams * (1 - down), rel=1e-12)
    assert logged[-1]["green/total_emissions_gco2e_high"] == pytest.approx(grams * (1 + up), rel=1e-12)
    assert set(INTERVAL_KEYS) <= set(logged[0]) and set(logged[0]) == set(METRIC_KEYS)

    record = load_record(path)
    one, one_low, one_high = hand_interval(12.0)
    epoch = record.epochs[1]
    assert (epoch.energy_j, epoch.energy_low_j, epoch.energy_high_j) == pytest.approx((one, one_low, one_high))
    assert epoch.emissions_low_gco2e < epoch.emissions_gco2e < epoch.emissions_high_gco2e
    assert (record.totals.energy_low_j, record.totals.energy_high_j) == pytest.approx((low, high), rel=1e-12)
    assert record.totals.emissions_high_gco2e == pytest.approx(grams * (1 + up), rel=1e-12)


def test_a_resumed_run_continues_its_interval(tmp_path, fake_clock):
    first = make_session(tmp_path, measured_sensors())
    first.start()
    first.epoch_start()
    fake_clock.advance(12.0)
    first.epoch_end({})
    state = first.ledger.state_dict()
    first.finish()
    second = make_session(tmp_path, measured_sensors())
    second.ledger.load_state_dict(state)
    second.start()
    second.epoch_start()
    fake_clock.advance(12.0)
    out = second.epoch_end({})
    _, low, high = hand_interval(24.0)
    assert out["green/total_energy_kwh_low"] == pytest.approx(low / 3.6e6, rel=1e-12)
    assert out["green/total_energy_kwh_high"] == pytest.approx(high / 3.6e6, rel=1e-12)


def test_no_basis_is_nan_from_the_first_epoch(tmp_path, fake_clock):
    sensors = [ConstantPowerSensor("cpu", 20.0, scope="node", method="rapl"),
               ConstantPowerSensor("ram", 5.0, scope="node", method="estimate-rss")]
    session = make_session(tmp_path, sensors)
    session.start()
    session.epoch_start()
    fake_clock.advance(10.0)
    out = session.epoch_end({})
    session.finish()
    assert out["green/total_energy_kwh"] == pytest.approx(250 / 3.6e6)
    assert all(math.isnan(out[k]) for k in INTERVAL_KEYS)


def test_a_country_table_intensity_widens_emissions_downwards(tmp_path, fake_clock):
    session = make_session(tmp_path, measured_sensors(), carbon_intensity=None, country="SE", pue=1.0)
    session.start()
    session.epoch_start()
    fake_clock.advance(12.0)
    out = session.epoch_end({})
    session.finish()
    g = lookup_country("SE").intensity_gco2e_per_kwh
    total, low, high = hand_interval(12.0)
    grams = total / 3.6e6 * g
    down = math.sqrt((1 - low / total) ** 2 + min(45 / g, 1.0) ** 2)
    assert out["green/total_emissions_gco2e_low"] == pytest.approx(max(grams * (1 - down), 0.0), abs=1e-15)
    assert out["green/total_emissions_gco2e_high"] == pytest.approx(grams * high / total, rel=1e-12)


# --- a simulation with known sensor noise -------------------------------------------------------------------------
def noisy_reading(rng: random.Random, true_j: float, bound: Bound) -> float:
    """A sensor whose error ``reported/true - 1`` has its 2.5 and 97.5 % quantiles at the bound (log-normal)."""
    lo, hi = math.log1p(bound.error_low), math.log1p(bound.error_high)
    mu, sigma = (lo + hi) / 2, (hi - lo) / (2 * 1.959964)
    return true_j * math.exp(rng.gauss(mu, sigma))


@pytest.mark.parametrize("method", ["nvml-energy-counter", "nvml-power", "rapl", "estimate-cpu-time"])
def test_one_sensors_interval_holds_the_truth_95_percent_of_the_time(method):
    rng = random.Random(20261207)
    bound = energy_bound(method)
    trials, inside = 4000, 0
    for _ in range(trials):
        true_j, time_s = rng.uniform(100, 5000), 3600.0  # a long window: the boundary term is negligible
        got = energy_interval([Part("gpu", method, noisy_reading(rng, true_j, bound), time_s)])
        inside += got.low <= true_j <= got.high
    # binomial sd at 95 % over 4000 trials is 0.34 %: +/-1.2 % is 3.5 sd
    assert abs(inside / trials - 0.95) < 0.012, inside / trials


def test_components_and_boundaries_hold_the_truth_at_least_at_the_stated_rate():
    rng = random.Random(7)
    gpu, cpu = energy_bound("nvml-energy-counter"), energy_bound("rapl")
    trials, inside = 4000, 0
    for _ in range(trials):
        power, time_s = rng.uniform(50, 700), rng.uniform(0.5, 5.0)  # short windows: the boundaries matter
        true_gpu, true_cpu = power * time_s, rng.uniform(5, 50) * time_s
        edges = sum(rng.uniform(-1, 1) * power * 0.1 for _ in range(2))  # each boundary within power x 100 ms
        got = energy_interval([Part("gpu", "nvml-energy-counter", noisy_reading(rng, true_gpu, gpu) + edges, time_s),
                               Part("cpu", "rapl", noisy_reading(rng, true_cpu, cpu), time_s)])
        inside += got.low <= true_gpu + true_cpu <= got.high
    # hard boundary limits read as 95 % ranges make the combination conservative, never short of 95 %
    assert 0.94 <= inside / trials <= 0.995, inside / trials


def test_the_summary_prints_each_figure_with_its_interval(tmp_path, fake_clock):
    from green_callbacks.report.summary import format_run_summary

    sensors = [ConstantPowerSensor("gpu", 100.0, method="nvml-energy-counter"),
               ConstantPowerSensor("ram", 5.0, scope="node", method="estimate-rss")]
    session = make_session(tmp_path, sensors)
    session.start()
    session.epoch_start()
    fake_clock.advance(12.0)
    session.epoch_end({})
    text = format_run_summary(load_record(session.finish()))
    down, up = counter_widths(1200.0, 12.0)
    assert f"gpu energy: 1200 J (0.000333 kWh) ({1200 - down:.0f}–{1200 + up:.0f} J)" in text
    assert "ram energy: 60 J (1.67e-05 kWh) (no basis for an interval)" in text
    assert "total energy: 1260 J (0.00035 kWh) (no basis for an interval)" in text
    assert "emissions: 0.2212 gCO2e (no basis for an interval)" in text


def test_embodied_interval_from_the_sources_min_max():
    from green_callbacks.core.embodied import embodied_rate
    from green_callbacks.core.uncertainty import embodied_interval

    # one A100 (150 kg; sources 143-181) and 1/8 of its host (2,500 kg; sources 1,000-3,000), 6 years at 85 %
    rate = embodied_rate(["NVIDIA A100-SXM4-40GB"])
    per_h = 1000.0 / (6 * 8760 * 0.85)
    gpu, host = 150 * per_h, 2500 * per_h / 8
    w_gpu, w_host = gpu / (gpu + host), host / (gpu + host)
    got = embodied_interval(rate.parts, 10.0)
    down = math.hypot(w_gpu * (1 - 143 / 150), w_host * (1 - 1000 / 2500))
    up = math.hypot(w_gpu * (181 / 150 - 1), w_host * (3000 / 2500 - 1))
    assert (got.low, got.high) == (pytest.approx(10 * (1 - down)), pytest.approx(10 * (1 + up)))
    # an H100 has one published figure: no basis for an interval
    assert embodied_interval(embodied_rate(["NVIDIA H100 80GB HBM3"]).parts, 10.0) is None
    # a CPU-only physical machine: the host alone
    alone = embodied_interval(embodied_rate([]).parts, 10.0)
    assert (alone.low, alone.high) == (pytest.approx(4.0), pytest.approx(12.0))


def test_a_record_from_before_the_intervals_gets_its_total_interval_from_its_epochs(tmp_path, fake_clock):
    import json

    from green_callbacks.core.record import parse_record
    from green_callbacks.report.summary import format_run_summary

    session = make_session(tmp_path, measured_sensors())
    session.start()
    for _ in range(2):
        session.epoch_start()
        fake_clock.advance(12.0)
        session.epoch_end({})
    data = json.loads(session.finish().read_text())
    for block in (data["totals"], *(e for e in data["epochs"]), *(e["totals"] for e in data["epochs"])):
        for name in ("energy_low_j", "energy_high_j", "emissions_low_gco2e", "emissions_high_gco2e"):
            block.pop(name, None)
    old = parse_record(data)
    assert old.totals.energy_low_j is None and old.epochs[0].energy_high_j is None
    _, low, high = hand_interval(24.0)
    assert f"total energy: 3000 J (0.000833 kWh) ({low:.0f}–{high:.0f} J)" in format_run_summary(old)


def test_a_phase_carries_its_energy_interval():
    from green_callbacks.core.phase import PhaseInputs, summarize_phase

    def phase(methods):
        return summarize_phase(PhaseInputs(
            kind="test", duration_s=10.0, component_energy_j={"gpu": 1000.0, "cpu": 50.0, "ram": None},
            component_method=methods, warmup_component_energy_j={"gpu": 100.0, "cpu": 5.0, "ram": None},
            warmup_time_s=1.0, batches=10, samples=100, warmup_batches=1, warmup_samples=10,
            intensity_gco2e_per_kwh=400.0, pue=1.0))

    got = phase({"gpu": "nvml-energy-counter", "cpu": "rapl", "ram": "unavailable"})
    gd, gu = counter_widths(1000.0, 10.0)
    cd, cu = rapl_widths(50.0)
    assert got.energy_low_j == pytest.approx(1050 - math.hypot(gd, cd), rel=1e-12)
    assert got.energy_high_j == pytest.approx(1050 + math.hypot(gu, cu), rel=1e-12)
    assert got.to_record()["energy_high_j"] == got.energy_high_j
    unknown = phase({"gpu": "nvml-energy-counter", "cpu": "estimate-rss", "ram": "unavailable"})
    assert unknown.energy_low_j is None and unknown.energy_high_j is None

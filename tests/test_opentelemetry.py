"""The OpenTelemetry bridge, read with the SDK's in-memory reader: the same hand-computed run as the Prometheus
test (2 epochs of 9 s; GPU 100 W, CPU 20 W, RAM 5 W; 100 gCO2e/kWh)."""

from __future__ import annotations

import sys
import warnings

import pytest

from tests.test_prometheus import CPU_J, EMISSIONS_G, GPU_J, RAM_J, _run


def _points(reader) -> dict[str, list]:
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out[metric.name] = [(dict(p.attributes), p.value, metric) for p in metric.data.data_points]
    return out


def test_in_memory_reader_gets_the_hand_computed_values(tmp_path, fake_clock) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the opentelemetry extra (and its SDK) is not installed")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

    from green_callbacks.opentelemetry import instrument

    tracker, _, train_flops, fit = _run(tmp_path, fake_clock)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(tracker, job="tiny", meter_provider=provider)
    assert "green.energy" not in _points(reader) or not _points(reader)["green.energy"]  # nothing measured yet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit()
    points = _points(reader)
    energy = {attrs["device"]: value for attrs, value, _ in points["green.energy"]}
    assert energy == pytest.approx({"gpu": GPU_J, "cpu": CPU_J, "ram": RAM_J})
    attrs, _, metric = points["green.energy"][0]
    assert metric.unit == "J" and metric.data.is_monotonic
    assert metric.data.aggregation_temporality == AggregationTemporality.CUMULATIVE
    assert {attrs["job"], attrs["rank"]} == {"tiny", "0"}
    assert points["green.emissions"][0][1] == pytest.approx(EMISSIONS_G, rel=1e-12)
    assert points["green.flops.train"][0][1] == 2 * train_flops
    assert {a["device"]: v for a, v, _ in points["green.power"]} == pytest.approx({"gpu": 100, "cpu": 20, "ram": 5})
    assert points["green.throughput"][0][1] == 4.0
    provider.shutdown()


def test_missing_api_names_the_extra(monkeypatch) -> None:
    from green_callbacks import opentelemetry as bridge

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"green-callbacks\[opentelemetry\]"):
        bridge.instrument(object(), job="x")

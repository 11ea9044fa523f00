"""The Prometheus exporter: the scrape text by hand, then a real Prometheus server (Debian's ``prometheus``,
started on loopback) scraping it and answering ``/api/v1/query`` with the record's values.

The run: the Tracker test loop, 2 epochs of 9 s (8 training steps of 1 s, 2 evaluation steps of 0.5 s) on a fake
clock, constant-power sensors GPU 100 W, CPU 20 W, RAM 5 W, 100 gCO2e/kWh, PUE 1.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings

import pytest

from green_callbacks.core.record import read_record

J_PER_KWH = 3.6e6
GPU_J, CPU_J, RAM_J = 100 * 18, 20 * 18, 5 * 18  # watts x 2 epochs x 9 s
EMISSIONS_G = (GPU_J + CPU_J + RAM_J) * 100 / J_PER_KWH


def _run(tmp_path, fake_clock):
    pytest.importorskip("torch")
    from tests.models import mlp
    from tests.test_loop import TRAIN_FLOPS, Tracker, loss_of, sensors, train

    model = mlp(seed=0)
    tracker = Tracker(carbon_intensity=100.0, output_dir=str(tmp_path), sensors=sensors(), model=model,
                      forward=loss_of)
    return tracker, model, TRAIN_FLOPS, lambda: train(tracker, model, fake_clock.advance)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_scrape_has_the_hand_computed_values(tmp_path, fake_clock) -> None:
    pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed")
    from green_callbacks.prometheus import serve

    tracker, _, train_flops, fit = _run(tmp_path, fake_clock)
    exporter = serve(tracker, job="tiny", port=0)
    try:
        before = _scrape(exporter.url)
        assert ("green_running", (("job", "tiny"), ("rank", "0"))) in before  # served before the run starts
        assert not any(name == "green_energy_joules_total" for name, _ in before)  # nothing measured: no series
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit()
        got = _scrape(exporter.url)
    finally:
        exporter.close()
    labels = (("job", "tiny"), ("rank", "0"))
    for device, joules in (("gpu", GPU_J), ("cpu", CPU_J), ("ram", RAM_J)):
        assert got[("green_energy_joules_total", (("device", device), *labels))] == pytest.approx(joules)
    assert got[("green_power_watts", (("device", "gpu"), *labels))] == pytest.approx(100.0)
    assert got[("green_emissions_grams_total", labels)] == pytest.approx(EMISSIONS_G, rel=1e-12)
    assert got[("green_train_flops_total", labels)] == 2 * train_flops
    assert got[("green_train_samples_per_second", labels)] == 4.0  # 32 samples over 8 s of training
    assert got[("green_epochs", labels)] == 2 and got[("green_running", labels)] == 0
    record = read_record(tracker.record_path)
    assert got[("green_emissions_grams_total", labels)] == record["totals"]["emissions_gco2e"]


def test_missing_extra_and_other_ranks(monkeypatch, tmp_path) -> None:
    from green_callbacks import prometheus

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"green-callbacks\[prometheus\]"):
        prometheus.serve(object(), job="x")
    monkeypatch.delitem(sys.modules, "prometheus_client")
    pytest.importorskip("prometheus_client")
    from green_callbacks.loop import Tracker

    with pytest.raises(ValueError, match="job"):
        prometheus.serve(Tracker(carbon_intensity=1.0, output_dir=str(tmp_path)), job="")
    monkeypatch.setenv("LOCAL_RANK", "1")  # one endpoint per node: served by local rank 0 only
    assert prometheus.serve(Tracker(carbon_intensity=1.0, output_dir=str(tmp_path)), job="x", port=0) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(base: str, promql: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.slow
def test_a_real_prometheus_server_scrapes_the_record_values(tmp_path, fake_clock) -> None:
    pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed")
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus package is not installed (apt-get install prometheus); .ci/run installs it "
                    "where it can")
    from green_callbacks.prometheus import serve

    tracker, _, train_flops, fit = _run(tmp_path, fake_clock)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit()
    exporter = serve(tracker, job="tiny", port=0)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: green\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter.port}']\n", encoding="utf-8")
    port = _free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        server = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        result: list[dict] = []
        deadline = time.monotonic() + 90  # a start-up and a first scrape; a loaded CI machine gets room
        while time.monotonic() < deadline and len(result) < 3:
            time.sleep(1)
            try:
                result = _query(base, 'green_energy_joules_total{job="tiny"}')
            except OSError:
                continue
        assert len(result) == 3, (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
        by_device = {r["metric"]["device"]: float(r["value"][1]) for r in result}
        assert by_device == pytest.approx({"gpu": GPU_J, "cpu": CPU_J, "ram": RAM_J})
        assert all(r["metric"]["rank"] == "0" for r in result)
        record = read_record(tracker.record_path)
        (emissions,) = _query(base, 'green_emissions_grams_total{job="tiny"}')
        assert float(emissions["value"][1]) == pytest.approx(record["totals"]["emissions_gco2e"], rel=1e-12)
        (flops,) = _query(base, 'green_train_flops_total{job="tiny"}')
        assert float(flops["value"][1]) == record["totals"]["train_flops"] == 2 * train_flops
        (energy,) = _query(base, 'sum by (job) (green_energy_joules_total{job="tiny"})')  # the panel's query
        assert float(energy["value"][1]) == pytest.approx(record["totals"]["energy_j"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        exporter.close()

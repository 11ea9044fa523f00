"""Live metrics for Prometheus (``pip install "green-callbacks[prometheus]"``): an HTTP endpoint serving the run's
energy, emissions, FLOPs, power and throughput, read from the callback's session when Prometheus scrapes.

::

    from green_callbacks.lightning import GreenCallback
    from green_callbacks.prometheus import serve

    green = GreenCallback(country="FR")
    exporter = serve(green, job="bert-finetune", port=9464)   # http://127.0.0.1:9464/metrics
    trainer = Trainer(callbacks=[green]); trainer.fit(model)

The same call takes a Keras or HF callback, or a :class:`~green_callbacks.loop.Tracker`. Series (Prometheus naming:
base units, counters end in ``_total``), labelled ``job``, ``rank`` and, per component, ``device``
(``gpu``/``cpu``/``ram``):

=====================================  =======  ========================================================
``green_energy_joules_total``          counter  IT energy (before PUE) of each component, complete epochs
``green_emissions_grams_total``        counter  grams CO2e (after PUE) of the complete epochs
``green_train_flops_total``            counter  training FLOPs (forward + backward), when counted
``green_eval_flops_total``             counter  evaluation FLOPs (forward), when counted
``green_power_watts``                  gauge    each component's mean power over the last complete epoch
``green_train_samples_per_second``     gauge    training throughput of the last complete epoch
``green_epochs``                       gauge    complete epochs so far
``green_running``                      gauge    1 while the run is going, else 0
=====================================  =======  ========================================================

Nothing runs on the training thread: a collector reads the session's completed rows when scraped (see
:mod:`green_callbacks.core.live_totals`); values move once per epoch. Prometheus recommends exporting energy as a
counter and deriving power with ``rate(green_energy_joules_total[5m])``. A value never measured has no series
(never 0).

One endpoint per node: under distributed training :func:`serve` starts the server on each node's local rank 0 only
and returns ``None`` on the other ranks. The session's rows are summed over all ranks, so each endpoint serves the
job's totals (labelled with the serving rank): aggregate across nodes with ``max by (job, device)``, not ``sum``.
The ``job`` label collides with the ``job`` Prometheus gives each scrape target: scrape with ``honor_labels: true``
(or read it as ``exported_job``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.live_totals import LiveTotals, live_totals, session_source

__all__ = ["GreenCollector", "PrometheusExporter", "serve"]

_HINT = 'pip install "green-callbacks[prometheus]"'


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as err:
        raise ImportError(f"green_callbacks.prometheus needs prometheus-client: {_HINT}") from err
    return prometheus_client


class GreenCollector:
    """A ``prometheus_client`` collector of one run: ``registry.register(GreenCollector(callback, job="x"))``."""

    def __init__(self, source: Any, job: str) -> None:
        if not isinstance(job, str) or not job:
            raise ValueError(f"job must be a non-empty string naming the training job, got {job!r}")
        self._session = session_source(source)
        self.job = job

    def describe(self) -> list[Any]:
        return []  # no collect() at registration: the run may not have started

    def snapshot(self) -> LiveTotals:
        return live_totals(self._session())

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        values = self.snapshot()
        base = [self.job, str(values.rank)]
        energy = CounterMetricFamily("green_energy_joules", "IT energy (before PUE) of each component over the "
                                     "complete epochs, in joules", labels=["job", "rank", "device"])
        for device, joules in sorted(values.energy_j.items()):
            energy.add_metric([*base, device], joules)
        power = GaugeMetricFamily("green_power_watts", "mean power of each component over the last complete epoch, "
                                  "in watts", labels=["job", "rank", "device"])
        for device, watts in sorted(values.power_w.items()):
            power.add_metric([*base, device], watts)
        yield energy
        yield power
        for name, doc, value, kind in (
            ("green_emissions_grams", "emissions (after PUE) of the complete epochs, in grams CO2e",
             values.emissions_gco2e, CounterMetricFamily),
            ("green_train_flops", "training FLOPs (forward and backward) of the complete epochs", values.train_flops,
             CounterMetricFamily),
            ("green_eval_flops", "evaluation FLOPs (forward) of the complete epochs", values.eval_flops,
             CounterMetricFamily),
            ("green_train_samples_per_second", "training samples per second over the last complete epoch",
             values.samples_per_s, GaugeMetricFamily),
            ("green_epochs", "complete epochs so far", float(values.epochs), GaugeMetricFamily),
            ("green_running", "1 while the run is going, else 0", 1.0 if values.running else 0.0, GaugeMetricFamily),
        ):
            family = kind(name, doc, labels=["job", "rank"])
            if value is not None and math.isfinite(value):
                family.add_metric(base, value)
            yield family


@dataclass
class PrometheusExporter:
    """A running endpoint: :attr:`url` to scrape, :meth:`close` to stop it (the run goes on either way)."""

    collector: GreenCollector
    registry: Any
    server: Any
    thread: Any

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(source: Any, *, job: str, port: int = 9464, addr: str = "127.0.0.1",
          every_rank: bool = False) -> PrometheusExporter | None:
    """Serve ``source``'s metrics (a GreenCallback of any framework, a Tracker or a Session) on ``addr:port``
    (``port=0``: a free port; ``addr="0.0.0.0"`` to be scraped from another machine). Under distributed training
    only each node's local rank 0 serves (``None`` elsewhere) unless ``every_rank``."""
    client = _client()
    collector = GreenCollector(source, job)
    if not every_rank:
        from green_callbacks.core.distributed import dist_info

        if dist_info().local_rank != 0:
            return None
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, thread = client.start_http_server(port, addr=addr, registry=registry)
    return PrometheusExporter(collector, registry, server, thread)

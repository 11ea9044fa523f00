"""An OpenTelemetry metrics bridge (``pip install "green-callbacks[opentelemetry]"``) for users who already run a
collector: observable instruments whose callbacks read the callback's session when the SDK's reader collects.

::

    from green_callbacks.opentelemetry import instrument

    green = GreenCallback(country="FR")
    instrument(green, job="bert-finetune")            # the global MeterProvider, or meter_provider=...

Instruments (attributes ``job``, ``rank`` and, per component, ``device``; the energy ones after the hardware
semantic conventions' ``hw.energy`` / ``hw.power``, which are still in development):

==================================  ================  ======  ==============================================
``green.energy``                    counter (async)   J       IT energy (before PUE) of each component
``green.emissions``                 counter (async)   g       grams CO2e (after PUE)
``green.flops.train``               counter (async)   {FLOP}  training FLOPs, when counted
``green.power``                     gauge (async)     W       mean power of the last complete epoch
``green.throughput``                gauge (async)     {sample}/s  training samples per second, last epoch
==================================  ================  ======  ==============================================

Like the Prometheus exporter, nothing runs on the training thread: the values are those of the last complete
epoch (:mod:`green_callbacks.core.live_totals`), read at collection time; a value never measured is not observed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from green_callbacks.core.live_totals import LiveTotals, live_totals, session_source

__all__ = ["instrument"]

_HINT = 'pip install "green-callbacks[opentelemetry]"'


def _api() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as err:
        raise ImportError(f"green_callbacks.opentelemetry needs opentelemetry-api: {_HINT}") from err
    return metrics


def instrument(source: Any, *, job: str, meter_provider: Any = None) -> list[Any]:
    """Register ``source``'s instruments (a GreenCallback of any framework, a Tracker or a Session) with
    ``meter_provider`` (default: the global one); returns them."""
    metrics = _api()
    if not isinstance(job, str) or not job:
        raise ValueError(f"job must be a non-empty string naming the training job, got {job!r}")
    session = session_source(source)
    provider = meter_provider or metrics.get_meter_provider()
    meter = provider.get_meter("green_callbacks")

    def observe(read: Callable[[LiveTotals], Iterable[tuple[float | None, dict[str, str]]]]) -> Callable[..., Any]:
        def callback(_options: Any) -> list[Any]:
            values = live_totals(session())
            base = {"job": job, "rank": str(values.rank)}
            return [metrics.Observation(v, {**base, **extra}) for v, extra in read(values)
                    if v is not None and math.isfinite(v)]
        return callback

    def per_device(mapping: Any) -> list[tuple[float | None, dict[str, str]]]:
        return [(v, {"device": k}) for k, v in sorted(mapping.items())]

    return [
        meter.create_observable_counter("green.energy", [observe(lambda v: per_device(v.energy_j))], unit="J",
                                        description="IT energy (before PUE) of each component, complete epochs"),
        meter.create_observable_counter("green.emissions", [observe(lambda v: [(v.emissions_gco2e, {})])],
                                        unit="g", description="grams CO2e (after PUE) of the complete epochs"),
        meter.create_observable_counter("green.flops.train", [observe(lambda v: [(v.train_flops, {})])],
                                        unit="{FLOP}", description="training FLOPs (forward and backward)"),
        meter.create_observable_gauge("green.power", [observe(lambda v: per_device(v.power_w))], unit="W",
                                      description="mean power of each component over the last complete epoch"),
        meter.create_observable_gauge("green.throughput", [observe(lambda v: [(v.samples_per_s, {})])],
                                      unit="{sample}/s", description="training samples per second, last epoch"),
    ]

"""What a trained model costs to use: the arithmetic of a test / validate / predict / evaluate phase.

A *phase* is one call such as Lightning's ``trainer.test``, Keras' ``model.predict`` or HF's ``trainer.evaluate``,
run outside ``fit``. Its window is measured like an epoch (energy by component, emissions), and per batch only a
clock read and the shapes of the batch are noted. From those this module computes, with pure functions:

- the per-sample rates (J per sample, Wh per 1,000 samples, samples per joule, gCO2e per sample, mean power) over
  the *steady* part of the phase: the phase less its warm-up batches (the first batch of each input shape, which
  pays for lazy initialisation, compilation, allocator growth, and, for the very first one, the loader start-up);
- FLOPs per sample (forward FLOPs are the same for warm-up and steady batches, so over all samples);
- latency per batch p50 / p95 over the steady batches (the warm-up latencies are kept apart);
- tokens in (non-padding, from ``attention_mask``) and J per token, where the inputs carry a mask;
- whether the window was shorter than a sensor's resolution (NVML's energy counter updates about every 100 ms,
  CPU-time ticks are 10 ms): such figures are labelled ``below-sensor-resolution``;
- the break-even with training: after how many predictions inference has used as much energy (and emissions) as
  the training did.

Nothing here imports a framework; batches are inspected by duck typing (``.shape``, ``.dtype``, ``.sum()``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from green_callbacks.core.metric_keys import PHASE_KINDS, PHASE_METRIC_SUFFIXES, phase_metric_keys
from green_callbacks.core.record_sections import PhaseInfo, to_json
from green_callbacks.core.uncertainty import energy_interval, window_parts
from green_callbacks.core.units import emissions_gco2e, joules_to_kwh

__all__ = [
    "PHASE_KINDS",
    "PHASE_METRIC_SUFFIXES",
    "RESOLUTION_S",
    "BreakEven",
    "PhaseInputs",
    "PhaseResult",
    "batch_signature",
    "break_even",
    "percentile",
    "phase_metric_keys",
    "resolution_s",
    "samples_of",
    "summarize_phase",
    "tokens_in_of",
]

BELOW_RESOLUTION = "below-sensor-resolution"
MEASURED = "measured"
UNAVAILABLE = "unavailable"

RESOLUTION_S: Mapping[str, float] = MappingProxyType({
    "nvml-energy-counter": 0.1,  # the counter advances about every 100 ms (Zeus: approx_instant_energy below it)
    "nvml-power": 1.0,  # nvmlDeviceGetPowerUsage averages over about 1 s (torch.cuda.power_draw docstring)
    "rapl": 0.001,  # RAPL energy-status counters update about every 1 ms
    "estimate-cpu-time": 0.01,  # CPU time advances in scheduler ticks of 10 ms (USER_HZ = 100)
})
"""Time resolution of each measuring method, in seconds; a method not listed is taken as exact (0 s)."""

NAN = float("nan")


def resolution_s(method: str) -> float:
    """The time resolution of a measuring method (0 for methods taken as exact, e.g. the fakes)."""
    return float(RESOLUTION_S.get(method, 0.0))


# --------------------------------------------------------------------------------------------- batch inspection
def batch_signature(batch: Any) -> tuple[Any, ...]:
    """Shapes and dtypes of a batch's leaves: metadata only, no device synchronisation, no copy.

    Sequences and mappings are walked (mapping keys in sorted order); a leaf without ``shape`` is a scalar leaf
    named by its type. Two batches with the same signature run the same kernels: the first of each is warm-up.
    """
    if isinstance(batch, (list, tuple)):
        return tuple(batch_signature(item) for item in batch)
    if isinstance(batch, Mapping):
        return tuple((str(k), batch_signature(batch[k])) for k in sorted(batch, key=str))
    shape = getattr(batch, "shape", None)
    if shape is None:
        return ("leaf", None, type(batch).__name__)
    return ("leaf", tuple(shape), getattr(batch, "dtype", None))  # torch.Size / numpy shapes: tuples of ints


def samples_of(signature: tuple[Any, ...]) -> int | None:
    """The batch size: the leading dimension of the first leaf that has one (``None`` when no leaf is an array)."""
    if len(signature) == 3 and signature[0] == "leaf":
        shape = signature[1]
        return int(shape[0]) if shape and isinstance(shape[0], int) and shape[0] >= 0 else None
    for item in signature:
        if isinstance(item, tuple):
            if len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], tuple):  # a mapping entry
                found = samples_of(item[1])
            else:
                found = samples_of(item)
            if found is not None:
                return found
    return None


def tokens_in_of(batch: Any) -> Any:
    """The non-padding input tokens of a language-model batch: ``attention_mask.sum()``, else ``None``.

    The sum stays a device scalar (no synchronisation now); it is turned into a number once, at the end of the
    phase. Found in a mapping batch (HF ``BatchEncoding``/dict), or in the first element of a tuple batch.
    """
    if isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if mask is not None and hasattr(mask, "sum") and hasattr(mask, "shape"):
            return mask.sum()
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0 ≤ q ≤ 1) by linear interpolation between closest ranks (numpy's default method).

    ``None`` for no values.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q must be within [0, 1], got {q!r}")
    if not values:
        return None
    ordered = sorted(float(v) for v in values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --------------------------------------------------------------------------------------------- results
def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class PhaseInputs:
    """What was measured and counted in one phase (already summed over ranks), before any rate is computed.

    Energies in joules before PUE, ``None`` = unavailable. ``warmup_*`` cover the warm-up batches (the first of
    each input signature; the first one from the start of the phase). ``latencies_s`` are the steady batches'.
    ``batches``/``samples`` (and their warm-up parts) are ``None`` where the framework's batches were not seen
    (every per-sample figure is then unavailable, never 0).
    """

    kind: str
    duration_s: float
    component_energy_j: Mapping[str, float | None]
    component_method: Mapping[str, str]
    warmup_component_energy_j: Mapping[str, float | None]
    warmup_time_s: float
    batches: int | None
    samples: int | None
    warmup_batches: int | None
    warmup_samples: int | None
    intensity_gco2e_per_kwh: float
    pue: float
    flops: float | None = None
    tokens_in: float | None = None
    warmup_tokens_in: float | None = None
    tokens_out: float | None = None
    warmup_tokens_out: float | None = None
    latencies_s: tuple[float, ...] = ()
    warmup_latencies_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("component_energy_j", "component_method", "warmup_component_energy_j"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "latencies_s", tuple(float(v) for v in self.latencies_s))
        object.__setattr__(self, "warmup_latencies_s", tuple(float(v) for v in self.warmup_latencies_s))


@dataclass(frozen=True)
class PhaseResult(PhaseInfo):
    """One measured phase: totals, warm-up apart, per-sample rates over the steady part, and their quality — the
    record's ``phase`` section (:class:`~green_callbacks.core.record_sections.PhaseInfo`, its fields and their
    order) with what the session logs and lists of it.

    ``rates_include_warmup`` is true when the phase had no steady batch (every batch was the first of its shape):
    the rates are then over the whole phase. ``quality`` is ``"measured"``, ``"below-sensor-resolution"`` (the
    rates' window was shorter than the resolution of the methods in ``short_window_components``: treat the
    rates as rough) or ``"unavailable"`` (no component measured).
    """

    def __post_init__(self) -> None:
        for name in ("component_energy_j", "component_method", "resolution_s"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def metrics(self) -> dict[str, float]:
        """The ``green/<kind>_...`` keys of :func:`phase_metric_keys` as plain floats (NaN = unavailable)."""
        comp = self.component_energy_j
        values: dict[str, float | None] = {
            "energy_kwh": _kwh(self.energy_j),
            "gpu_energy_kwh": _kwh(comp.get("gpu")),
            "cpu_energy_kwh": _kwh(comp.get("cpu")),
            "ram_energy_kwh": _kwh(comp.get("ram")),
            "emissions_gco2e": self.emissions_gco2e,
            "time_s": self.duration_s,
            "batches": self.batches,
            "samples": self.samples,
            "flops": self.flops,
            "energy_per_sample_j": self.energy_per_sample_j,
            "wh_per_1000_samples": self.wh_per_1000_samples,
            "samples_per_joule": self.samples_per_joule,
            "emissions_per_sample_gco2e": self.emissions_per_sample_gco2e,
            "flops_per_sample": self.flops_per_sample,
            "mean_power_w": self.mean_power_w,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "energy_per_token_in_j": self.energy_per_token_in_j,
            "energy_per_token_out_j": self.energy_per_token_out_j,
            "warmup_batches": self.warmup_batches,
            "warmup_time_s": self.warmup_time_s,
            "warmup_energy_kwh": _kwh(self.warmup_energy_j),
        }
        return {key: NAN if values[suffix] is None else float(values[suffix])  # the keys' order, by name
                for key, suffix in zip(phase_metric_keys(self.kind), PHASE_METRIC_SUFFIXES, strict=True)}

    def to_record(self) -> dict[str, Any]:
        """JSON-ready dict with the same field names (the ``phase`` section of a record)."""
        return to_json(self)

    def summary(self) -> dict[str, Any]:
        """The few numbers a fit's record lists for each phase it ran."""
        return {
            "kind": self.kind,
            "samples": self.samples,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "emissions_gco2e": self.emissions_gco2e,
            "energy_per_sample_j": self.energy_per_sample_j,
            "emissions_per_sample_gco2e": self.emissions_per_sample_gco2e,
            "quality": self.quality,
        }


def _kwh(value_j: float | None) -> float | None:
    return None if value_j is None else joules_to_kwh(value_j)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator) / float(denominator)


def summarize_phase(inputs: PhaseInputs) -> PhaseResult:
    """Every figure of one phase from what was measured (pure; see the module docstring for the definitions)."""
    names = list(inputs.component_energy_j)
    comp = {n: inputs.component_energy_j[n] for n in names}
    measured = [n for n in names if comp[n] is not None]
    energy_j = float(sum(comp[n] for n in measured)) if measured else None  # type: ignore[misc]
    emissions = None if energy_j is None else emissions_gco2e(
        joules_to_kwh(energy_j), inputs.intensity_gco2e_per_kwh, inputs.pue
    )
    # warm-up and steady energy over the components measured in both the phase and its warm-up windows
    both = [n for n in measured if inputs.warmup_component_energy_j.get(n) is not None]
    warm_j = float(sum(inputs.warmup_component_energy_j[n] for n in both)) if both else None  # type: ignore[misc]
    notes: list[str] = []
    if both != measured:
        lost = sorted(set(measured) - set(both))
        notes.append(f"warm-up energy unavailable for {', '.join(lost)}: steady energy leaves it out")
    steady_j = None if warm_j is None else max(float(sum(comp[n] for n in both)) - warm_j, 0.0)  # type: ignore[misc]
    steady_time = max(inputs.duration_s - inputs.warmup_time_s, 0.0)
    counted = inputs.samples is not None and inputs.warmup_samples is not None
    steady_samples = inputs.samples - inputs.warmup_samples if counted else None  # type: ignore[operator]
    steady_tokens_in = _minus(inputs.tokens_in, inputs.warmup_tokens_in)
    steady_tokens_out = _minus(inputs.tokens_out, inputs.warmup_tokens_out)

    include_warmup = steady_samples is None or steady_samples <= 0 or steady_j is None
    if not counted:
        notes.append("the framework's batches were not seen: batches, samples and per-sample figures are unavailable")
    if include_warmup:
        rate_j, rate_t, rate_n = energy_j, inputs.duration_s, inputs.samples
        rate_tok_in, rate_tok_out = inputs.tokens_in, inputs.tokens_out
        if counted and inputs.samples > 0:  # type: ignore[operator]
            notes.append("no steady batch (each batch was the first of its shape): rates include warm-up")
    else:
        rate_j, rate_t, rate_n = steady_j, steady_time, steady_samples
        rate_tok_in, rate_tok_out = steady_tokens_in, steady_tokens_out

    per_sample = _ratio(rate_j, rate_n)
    rate_g = None if rate_j is None else emissions_gco2e(
        joules_to_kwh(rate_j), inputs.intensity_gco2e_per_kwh, inputs.pue
    )
    resolution = {n: resolution_s(inputs.component_method.get(n, "")) for n in measured}
    # The rates' energy is a sum of differences of two reads (the stretches between warm-up windows, or the whole
    # phase); each difference can be off by up to one resolution of its sensor, so the window must outlast them all.
    differences = 1 if include_warmup else max(int(inputs.warmup_batches or 0), 1)
    short = tuple(n for n in measured if rate_t < differences * resolution[n])
    if not measured:
        quality = UNAVAILABLE
    elif short:
        quality = BELOW_RESOLUTION
        spans = "" if differences == 1 else f" × {differences} reads apart"
        notes.append(
            f"the {'steady part of the ' if not include_warmup else ''}phase lasted {rate_t:.4g} s, shorter than "
            + ", ".join(f"the {n} sensor's resolution ({resolution[n]:g} s{spans})" for n in short)
            + ": its energy and rates are rough; measure more batches"
        )
    else:
        quality = MEASURED
    span = None if energy_j is None else energy_interval(
        window_parts(comp, inputs.component_method, float(inputs.duration_s)))
    return PhaseResult(
        kind=inputs.kind,
        duration_s=float(inputs.duration_s),
        energy_j=energy_j,
        component_energy_j=comp,
        component_method=dict(inputs.component_method),
        missing_components=tuple(n for n in names if comp[n] is None),
        emissions_gco2e=emissions,
        intensity_gco2e_per_kwh=float(inputs.intensity_gco2e_per_kwh),
        pue=float(inputs.pue),
        batches=_int(inputs.batches),
        samples=_int(inputs.samples),
        flops=inputs.flops,
        tokens_in=inputs.tokens_in,
        tokens_out=inputs.tokens_out,
        warmup_batches=_int(inputs.warmup_batches),
        warmup_samples=_int(inputs.warmup_samples),
        warmup_time_s=float(inputs.warmup_time_s),
        warmup_energy_j=warm_j,
        steady_time_s=steady_time,
        steady_energy_j=steady_j,
        steady_samples=_int(steady_samples),
        rates_include_warmup=include_warmup,
        energy_per_sample_j=per_sample,
        wh_per_1000_samples=None if per_sample is None else per_sample / 3600.0 * 1000.0,
        samples_per_joule=_ratio(rate_n, rate_j),
        emissions_per_sample_gco2e=_ratio(rate_g, rate_n),
        flops_per_sample=_ratio(inputs.flops, inputs.samples),
        mean_power_w=_ratio(rate_j, rate_t),
        energy_per_token_in_j=_ratio(rate_j, rate_tok_in),
        energy_per_token_out_j=_ratio(rate_j, rate_tok_out),
        latency_p50_s=percentile(inputs.latencies_s, 0.5),
        latency_p95_s=percentile(inputs.latencies_s, 0.95),
        warmup_latencies_s=inputs.warmup_latencies_s,
        resolution_s=resolution,
        short_window_components=short,
        quality=quality,
        notes=tuple(notes),
        energy_low_j=None if span is None else span.low,
        energy_high_j=None if span is None else span.high,
    )


def _int(value: int | None) -> int | None:
    return None if value is None else int(value)


def _minus(total: float | None, part: float | None) -> float | None:
    if total is None:
        return None
    return float(total) - (0.0 if part is None else float(part))


# --------------------------------------------------------------------------------------------- break-even
@dataclass(frozen=True)
class BreakEven:
    """After how many predictions inference has used as much energy (and emissions) as training did.

    ``samples_for_energy = training_energy_j / energy_per_sample_j``; likewise for emissions (which differ when
    training and inference ran on different grids or PUEs). ``None`` where an input is unavailable.
    """

    training_energy_j: float | None
    energy_per_sample_j: float | None
    samples_for_energy: float | None
    training_emissions_gco2e: float | None
    emissions_per_sample_gco2e: float | None
    samples_for_emissions: float | None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def break_even(
    training_energy_j: float | None,
    energy_per_sample_j: float | None,
    training_emissions_gco2e: float | None = None,
    emissions_per_sample_gco2e: float | None = None,
) -> BreakEven:
    """The break-even of a trained model (pure): training cost over the cost of one prediction."""
    return BreakEven(
        training_energy_j=training_energy_j,
        energy_per_sample_j=energy_per_sample_j,
        samples_for_energy=_ratio(training_energy_j, energy_per_sample_j),
        training_emissions_gco2e=training_emissions_gco2e,
        emissions_per_sample_gco2e=emissions_per_sample_gco2e,
        samples_for_emissions=_ratio(training_emissions_gco2e, emissions_per_sample_gco2e),
    )


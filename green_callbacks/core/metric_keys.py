"""The one place where the ``green/...`` metric keys are named and built (the contract in the README's table of keys).

An epoch's keys are built from its :class:`~green_callbacks.core.rows.EpochRow` by :func:`epoch_metrics`: a row
value declared ``per_epoch(..., logged=True)`` is logged under ``green/epoch_<field>`` by the one rule here
(:data:`ROW_KEYS`; the field's name carries its unit); a key derived otherwise is named in :data:`METRIC_KEYS` and
given its value in :func:`epoch_metrics`. Either way it reaches every framework's loggers without a change in any
adapter. :func:`user_metrics` is the one filter of a framework's
metrics down to the user's own numbers (the record's per-epoch ``metrics`` and the monitored value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from green_callbacks.core.rows import per_epoch_fields
from green_callbacks.core.throughput import Throughput, throughput
from green_callbacks.core.units import joules_to_kwh

if TYPE_CHECKING:  # pragma: no cover - types only
    from green_callbacks.core.budget import Projection
    from green_callbacks.core.convergence import ConvergencePoint
    from green_callbacks.core.rows import EpochRow

__all__ = [
    "FOOTPRINT_KEYS",
    "INTERVAL_KEYS",
    "METRIC_KEYS",
    "PHASE_KINDS",
    "PHASE_METRIC_SUFFIXES",
    "PREFIX",
    "PROGRESS_BAR_KEYS",
    "ROW_KEYS",
    "THROUGHPUT_KEYS",
    "console_view",
    "epoch_metrics",
    "footprint_metrics",
    "is_own_key",
    "nan_metrics",
    "phase_metric_keys",
    "phase_progress_metrics",
    "progress_bar_metrics",
    "throughput_metrics",
    "to_number",
    "user_metrics",
]

PREFIX = "green/"
PROGRESS_BAR_KEYS: tuple[str, ...] = ("Wh", "gCO2e")
"""The compact running totals a progress bar shows (logged to the bar only, never to loggers)."""

PHASE_KINDS: tuple[str, ...] = ("test", "validate", "predict", "evaluate")
"""The phases a framework runs outside ``fit``: Lightning ``test``/``validate``/``predict``, Keras
``evaluate``/``predict``, HF ``evaluate``/``predict``. The kind names the call, and the metric keys."""

PHASE_METRIC_SUFFIXES: tuple[str, ...] = (
    "energy_kwh",
    "gpu_energy_kwh",
    "cpu_energy_kwh",
    "ram_energy_kwh",
    "emissions_gco2e",
    "time_s",
    "batches",
    "samples",
    "flops",
    "energy_per_sample_j",
    "wh_per_1000_samples",
    "samples_per_joule",
    "emissions_per_sample_gco2e",
    "flops_per_sample",
    "mean_power_w",
    "latency_p50_s",
    "latency_p95_s",
    "tokens_in",
    "tokens_out",
    "energy_per_token_in_j",
    "energy_per_token_out_j",
    "warmup_batches",
    "warmup_time_s",
    "warmup_energy_kwh",
)
"""Every phase key is ``green/<kind>_<suffix>``, e.g. ``green/test_energy_per_sample_j``; all are always emitted
(NaN where unavailable)."""


def phase_metric_keys(kind: str) -> tuple[str, ...]:
    """The ``green/<kind>_...`` keys of one phase, in a fixed order."""
    return tuple(f"{PREFIX}{kind}_{suffix}" for suffix in PHASE_METRIC_SUFFIXES)


THROUGHPUT_KEYS: tuple[str, ...] = (
    "green/samples_per_s",
    "green/tokens_per_s",
    "green/train_flops_per_s",
    "green/mfu",
    "green/hfu",
)
"""The per-epoch throughput keys, emitted from the first epoch on (NaN where unknown)."""

FOOTPRINT_KEYS: tuple[str, ...] = (
    "green/epoch_embodied_gco2e",
    "green/total_embodied_gco2e",
    "green/total_water_l",
)
"""The hardware's manufacturing emissions amortised over the epoch and the run, and the run's water (built by
:class:`~green_callbacks.core.footprint.FootprintTracker`; beside the operational emissions, never folded in)."""

INTERVAL_KEYS: tuple[str, ...] = (
    "green/total_energy_kwh_low",
    "green/total_energy_kwh_high",
    "green/total_emissions_gco2e_low",
    "green/total_emissions_gco2e_high",
)
"""The range the run's true energy and emissions lie in (95 %, docs/uncertainty.md), so that a dashboard can draw
a band; NaN where a method or factor has no basis for an interval."""

_LOGGED_ROW_VALUES: tuple[str, ...] = tuple(f.name for f in per_epoch_fields(logged=True))
ROW_KEYS: tuple[str, ...] = tuple(f"{PREFIX}epoch_{name}" for name in _LOGGED_ROW_VALUES)
"""The keys of the row's logged values: ``green/epoch_<field>`` for each field declared ``per_epoch(...,
logged=True)`` on :class:`~green_callbacks.core.rows.EpochRow` (``green/epoch_train_flops``,
``green/epoch_eval_flops``)."""

METRIC_KEYS: tuple[str, ...] = (
    "green/epoch_energy_kwh",
    "green/epoch_gpu_energy_kwh",
    "green/epoch_cpu_energy_kwh",
    "green/epoch_ram_energy_kwh",
    "green/epoch_eval_energy_kwh",
    "green/epoch_emissions_gco2e",
    "green/epoch_time_s",
    *ROW_KEYS,
    "green/total_energy_kwh",
    "green/total_emissions_gco2e",
    *INTERVAL_KEYS,
    "green/total_train_flops",
    "green/flops_to_convergence",
    "green/energy_to_convergence_kwh",
    "green/emissions_to_convergence_gco2e",
    "green/epochs_to_convergence",
    "green/train_flops_per_joule",
    "green/projected_total_energy_kwh",
    "green/projected_total_emissions_gco2e",
    *FOOTPRINT_KEYS,
    *THROUGHPUT_KEYS,
)
"""Every key an epoch returns, from the first epoch on (NaN where a value is unavailable)."""

NAN = float("nan")


def _nan(value: float | None) -> float:
    return NAN if value is None else float(value)


def _kwh(value_j: float | None) -> float:
    return NAN if value_j is None else joules_to_kwh(value_j)


def nan_metrics() -> dict[str, float]:
    """Every key, all NaN: what an epoch logs when its measurement was lost (loggers keep their columns)."""
    return dict.fromkeys(METRIC_KEYS, NAN)


def epoch_metrics(
    row: EpochRow,
    best: ConvergencePoint | None,
    projection: tuple[Projection, Projection] | None,
) -> dict[str, float]:
    """The ``green/...`` metrics of one epoch row, every key of :data:`METRIC_KEYS`, as plain floats."""
    train_j = None
    if row.energy_j is not None and row.eval_energy_j is not None:
        train_j = row.energy_j - row.eval_energy_j
    per_joule = NAN
    if row.train_flops is not None and train_j:
        per_joule = row.train_flops / train_j
    energy_p, emissions_p = (None, None) if projection is None else (p.projected for p in projection)
    return {
        "green/epoch_energy_kwh": _kwh(row.energy_j),
        "green/epoch_gpu_energy_kwh": _kwh(row.component_energy_j.get("gpu")),
        "green/epoch_cpu_energy_kwh": _kwh(row.component_energy_j.get("cpu")),
        "green/epoch_ram_energy_kwh": _kwh(row.component_energy_j.get("ram")),
        "green/epoch_eval_energy_kwh": _kwh(row.eval_energy_j),
        "green/epoch_emissions_gco2e": _nan(row.emissions_gco2e),
        "green/epoch_time_s": float(row.time_s),
        **{key: _nan(getattr(row, name)) for key, name in zip(ROW_KEYS, _LOGGED_ROW_VALUES, strict=True)},
        "green/total_energy_kwh": _kwh(row.totals.energy_j),
        "green/total_emissions_gco2e": _nan(row.totals.emissions_gco2e),
        "green/total_energy_kwh_low": _kwh(row.totals.energy_low_j),
        "green/total_energy_kwh_high": _kwh(row.totals.energy_high_j),
        "green/total_emissions_gco2e_low": _nan(row.totals.emissions_low_gco2e),
        "green/total_emissions_gco2e_high": _nan(row.totals.emissions_high_gco2e),
        "green/total_train_flops": _nan(row.totals.train_flops),
        "green/flops_to_convergence": NAN if best is None else _nan(best.totals.train_flops),
        "green/energy_to_convergence_kwh": NAN if best is None else _kwh(best.totals.energy_j),
        "green/emissions_to_convergence_gco2e": NAN if best is None else _nan(best.totals.emissions_gco2e),
        "green/epochs_to_convergence": NAN if best is None else float(best.totals.epochs),
        "green/train_flops_per_joule": per_joule,
        "green/projected_total_energy_kwh": _kwh(energy_p),
        "green/projected_total_emissions_gco2e": _nan(emissions_p),
        **throughput_metrics(throughput(train_time_s=row.train_time_s, samples=row.samples, tokens=row.tokens,
                                        train_flops=row.train_flops, peak_flops_per_s=row.peak_flops_per_s,
                                        train_hardware_flops=_hardware(row))),
    }


def _hardware(row: Any) -> float | None:
    """An epoch's hardware FLOPs; a row without them (no recompute counted apart) ran its model FLOPs."""
    hardware = getattr(row, "train_hardware_flops", None)
    return row.train_flops if hardware is None else hardware


def throughput_metrics(t: Throughput) -> dict[str, float]:
    """The keys of :data:`THROUGHPUT_KEYS` as plain floats (NaN where unknown)."""
    values = (t.samples_per_s, t.tokens_per_s, t.train_flops_per_s, t.mfu, t.hfu)
    return {k: math.nan if v is None else float(v) for k, v in zip(THROUGHPUT_KEYS, values, strict=True)}


def footprint_metrics(last_embodied_gco2e: float | None, total_embodied_gco2e: float | None,
                      total_water_l: float | None) -> dict[str, float]:
    """The three keys of :data:`FOOTPRINT_KEYS` as plain floats (NaN where unavailable)."""
    values = (last_embodied_gco2e, total_embodied_gco2e, total_water_l)
    return {k: math.nan if v is None else float(v) for k, v in zip(FOOTPRINT_KEYS, values, strict=True)}


def progress_bar_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Energy in Wh (small runs would show 0.000 kWh) and grams CO2e so far, for a progress bar."""
    return {
        "Wh": metrics["green/total_energy_kwh"] * 1000.0,
        "gCO2e": metrics["green/total_emissions_gco2e"],
    }


def phase_progress_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """A phase's energy in Wh and its grams CO2e (the compact console view of a test / validate / predict /
    evaluate), from its ``green/<kind>_...`` keys; empty when ``metrics`` holds no phase."""
    for kind in PHASE_KINDS:
        energy = metrics.get(f"{PREFIX}{kind}_energy_kwh")
        if energy is not None:
            return {"Wh": float(energy) * 1000.0, "gCO2e": float(metrics[f"{PREFIX}{kind}_emissions_gco2e"])}
    return {}


def console_view(logs: Mapping[str, Any], console: str) -> dict[str, Any]:
    """What a console line shows of an epoch's (or a phase's) logs: ``"all"``: everything; ``"compact"``: the
    user's own keys and the running totals (a phase's: its own) in Wh and gCO2e in place of the ``green/...`` keys
    (loggers still get every key)."""
    if console == "all" or not any(is_own_key(str(k)) for k in logs):
        return dict(logs)
    out = {k: v for k, v in logs.items() if not is_own_key(str(k))}
    out.update(progress_bar_metrics(logs) if "green/total_energy_kwh" in logs else phase_progress_metrics(logs))
    return out


def is_own_key(key: str) -> bool:
    """A key this library logs itself (``green/...`` and the progress-bar totals), never a user metric."""
    return key.startswith(PREFIX) or key in PROGRESS_BAR_KEYS


def to_number(value: Any) -> float | None:
    """``value`` as a float when it is one number (a Python/NumPy scalar, a one-element tensor), else ``None``.

    Booleans are not numbers here; NaN and infinities are kept (a diverged loss is still the loss).
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        if getattr(value, "ndim", 0):  # an array or tensor: only a one-element one is a number
            if math.prod(value.shape) != 1:
                return None
            value = value.reshape(())
        return float(value)
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return None


def user_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The user's own numeric metrics of an epoch: one-number values only, this library's keys left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = str(key)
        if is_own_key(name):
            continue
        number = to_number(value)
        if number is not None:
            out[name] = number
    return out

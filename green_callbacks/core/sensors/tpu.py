"""Google TPU energy: no energy or power API is known, so an *estimate* from duty cycle × chip power, or nothing.

Neither libtpu nor Cloud TPU exposes energy or power to the VM (as of this writing; ``tpu-info`` and libtpu's
monitoring SDK give utilisation only). The estimate, labelled ``estimate-tpu-duty-cycle``:

    power(t) = Σ over this process's chips of duty_cycle_pct(chip, t) / 100 × chip power

sampled every ``sample_period_s`` by a daemon thread from ``libtpu.sdk.tpumonitoring.get_metric("duty_cycle_pct")
.data()`` (one value per chip, in percent, as strings) and integrated by the trapezoid rule
(:mod:`green_callbacks.core.sensors.polling`). Chip powers are Green Algorithms' figures: v2 280 W, v3 220 W,
v4 170 W. Every other version (v4 lite/v4i, v5e, v5p, v6e "Trillium", v7 "Ironwood") has no published figure we
can cite, so the sensor is ``unavailable`` there, with the reason. The estimate leaves out idle draw (a chip at 0 %
duty cycle still draws power), the host and the interconnect: a rough lower bound, never a measurement.

The chip version comes from ``device_kind`` (JAX's ``device.device_kind``, e.g. ``"TPU v4"``) or from
``TPU_ACCELERATOR_TYPE`` (set on Cloud TPU VMs, e.g. ``"v4-8"``).

Untested on a real TPU: tested against a fake ``libtpu.sdk`` (tests/fakes/fake_libtpu.py).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

from green_callbacks.core.sensors.base import NOT_USED, Component, NullSensor, Reading, Scope, Sensor
from green_callbacks.core.sensors.lifecycle import SensorLifecycle
from green_callbacks.core.sensors.optional import SensorUnavailableError, import_optional
from green_callbacks.core.sensors.polling import PowerTrace

__all__ = ["CHIP_POWER_W", "METHOD", "TpuDutyCycleSensor", "build_tpu_sensor", "tpu_version"]

METHOD = "estimate-tpu-duty-cycle"
CHIP_POWER_W = {"v2": 280.0, "v3": 220.0, "v4": 170.0}
"""Per-chip power used by Green Algorithms (Lannelongue et al.) for Cloud TPU v2/v3/v4."""
DEFAULT_SAMPLE_PERIOD_S = 1.0
NO_API = "no TPU energy or power API is known (libtpu reports utilisation only)"


def _load_monitoring() -> Any:
    sdk = import_optional("libtpu.sdk", extra="tpu", package="libtpu", what="TPU energy (estimate)")
    try:
        return sdk.tpumonitoring
    except AttributeError as err:
        raise SensorUnavailableError(
            f"TPU energy is not estimated: this libtpu has no monitoring SDK ({err}); upgrade it "
            "(`pip install -U libtpu`)."
        ) from err


def tpu_version(device_kind: str | None = None) -> str | None:
    """``"v4"`` from ``"TPU v4"`` / ``"v4-8"``; suffixed kinds keep their suffix (``"v5e"``, ``"v5lite"``)."""
    text = device_kind or os.environ.get("TPU_ACCELERATOR_TYPE") or ""
    match = re.search(r"v(\d+)\s*([a-z]*)", text.lower())
    if match is None:
        return None
    suffix = match.group(2)
    suffix = "" if suffix in ("", "pod") else suffix
    return f"v{match.group(1)}{suffix}"


def _duty_cycles(monitoring: Any) -> list[float]:
    return [float(v) for v in monitoring.get_metric("duty_cycle_pct").data()]


class TpuDutyCycleSensor(SensorLifecycle):
    """Estimated energy of this process's TPU chips since ``start()``; ``component="gpu"`` (the accelerator)."""

    component: Component = "gpu"
    scope: Scope = "device"
    _what = "the TPU sensor"
    _sampler_what = "the TPU sampler"
    _sampler_name = "green-callbacks-tpu-duty"

    def __init__(self, chips: Sequence[int], chip_power_w: float, version: str, *,
                 sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S, monitoring: Any = None) -> None:
        if not chips:
            raise ValueError("TpuDutyCycleSensor needs at least one chip.")
        if not (isinstance(sample_period_s, (int, float)) and math.isfinite(sample_period_s) and sample_period_s > 0):
            raise ValueError(f"sample_period_s={sample_period_s!r}; it must be a positive number of seconds.")
        self._monitoring = monitoring if monitoring is not None else _load_monitoring()
        self._chips = list(chips)
        self._chip_w = float(chip_power_w)
        self._version = version
        self._period_s = float(sample_period_s)
        self._init_lifecycle()
        self._trace = PowerTrace()
        self._power_w()  # probe: raises if the metric cannot be read or a chip is missing

    def _power_w(self) -> float:
        duty = _duty_cycles(self._monitoring)
        missing = [c for c in self._chips if c >= len(duty)]
        if missing:
            raise SensorUnavailableError(f"duty_cycle_pct lists {len(duty)} chip(s); chip {missing[0]} is not there")
        return sum(min(max(duty[c], 0.0), 100.0) / 100.0 * self._chip_w for c in self._chips)

    @property
    def method(self) -> str:
        return METHOD

    def _sample_period_s(self) -> float | None:
        return self._period_s

    def _start_locked(self, now_s: float) -> None:
        self._trace.reset()
        self._sample_locked(now_s)

    def _sample_locked(self, now_s: float) -> None:
        try:
            self._trace.add(now_s, self._power_w())
        except Exception as err:
            self._lose(f"the TPU duty cycle could not be read ({type(err).__name__}: {err}); unavailable from then on")

    def _measure_locked(self, now_s: float) -> Reading:
        self._sample_locked(now_s)
        return Reading(self._trace.energy_j, METHOD, self._note())

    def _note(self) -> str:
        return (f"estimate: duty cycle × {self._chip_w:.0f} W per TPU {self._version} chip (Green Algorithms); "
                f"{NO_API}; idle draw is not counted")

    def info(self) -> dict[str, Any]:
        lost = {"lost": self._lost_note} if self._lost_note else {}
        return {"method": METHOD, "tpu_version": self._version, "chips": self._chips,
                "chip_power_w": self._chip_w, "chip_power_source": "Green Algorithms",
                "sample_period_s": self._period_s, "note": self._note(), **lost}


def build_tpu_sensor(
    device_indices: Sequence[int] | None = None,
    *,
    device_kind: str | None = None,
    sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S,
) -> Sensor:
    """The TPU duty-cycle estimate, or a ``NullSensor`` (``unavailable``, never 0) that says why not."""
    if device_indices is not None and len(device_indices) == 0:
        return NullSensor("gpu", "training on CPU: this run uses no TPU, so TPU energy is not part of it",
                          scope="device", method=NOT_USED)
    version = tpu_version(device_kind)
    if version is None or version not in CHIP_POWER_W:
        known = ", ".join(f"{v} {w:.0f} W" for v, w in CHIP_POWER_W.items())
        what = f"TPU {version}" if version else "this TPU (its version is unknown: pass device_kind or set " \
                                                "TPU_ACCELERATOR_TYPE)"
        return NullSensor("gpu", f"TPU energy is not measured: {NO_API}, and the duty-cycle estimate needs a chip "
                          f"power, known only for {known} (Green Algorithms), not for {what}.", scope="device")
    try:
        monitoring = _load_monitoring()
        chips = list(device_indices) if device_indices is not None else list(range(len(_duty_cycles(monitoring))))
        return TpuDutyCycleSensor(chips, CHIP_POWER_W[version], version, sample_period_s=sample_period_s,
                                  monitoring=monitoring)
    except SensorUnavailableError as err:
        return NullSensor("gpu", f"{err} ({NO_API})", scope="device")
    except Exception as err:
        return NullSensor("gpu", f"TPU energy is not estimated: the duty cycle could not be read "
                          f"({type(err).__name__}: {err}); {NO_API}.", scope="device")

"""Pure unit conversions and the emissions formula, each checkable against a hand computation."""

from __future__ import annotations

import math

__all__ = [
    "JOULES_PER_KWH",
    "emissions_gco2e",
    "joules_to_kwh",
    "kwh_to_joules",
    "nan_to_none",
]

JOULES_PER_KWH = 3.6e6


def joules_to_kwh(energy_j: float) -> float:
    """Joules (W·s) to kilowatt-hours: ``J / 3.6e6``."""
    return float(energy_j) / JOULES_PER_KWH


def kwh_to_joules(energy_kwh: float) -> float:
    """Kilowatt-hours to joules: ``kWh · 3.6e6``."""
    return float(energy_kwh) * JOULES_PER_KWH


def emissions_gco2e(energy_kwh: float, intensity_gco2e_per_kwh: float, pue: float) -> float:
    """Grams CO2-equivalent of ``energy_kwh`` of IT energy: ``kWh × PUE × gCO2e/kWh``."""
    return float(energy_kwh) * float(pue) * float(intensity_gco2e_per_kwh)


def nan_to_none(value: float | None) -> float | None:
    """``None`` for a missing or NaN value (JSON has no NaN), the float otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)

"""Pure unit conversions and the emissions formula, each checkable against a hand computation."""

from __future__ import annotations

__all__ = [
    "JOULES_PER_KWH",
    "emissions_gco2e",
    "joules_to_kwh",
    "kwh_to_joules",
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

"""What it would cost to offset measured emissions, at a price per tonne the user can change.

Offsetting is not reduction ("do your best, offset the rest"): the report prints this as a cost, never as a claim.
A carbon-neutral badge is only made from a certificate the user gives (see :mod:`.badges`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["COVERS", "DEFAULT_PRICE", "OffsetCost", "OffsetPrice", "offset_cost"]

GRAMS_PER_TONNE = 1e6


@dataclass(frozen=True)
class OffsetPrice:
    """A price per tonne CO2e with where it came from and when it was read."""

    per_tonne: float
    currency: str
    source: str
    as_of: str


DEFAULT_PRICE = OffsetPrice(
    per_tonne=23.0,
    currency="EUR",
    source=(
        "Klima-Kollekte, 'How the system works': EUR 23/t all-in retail (it buys certificates at EUR 19/t); "
        "for comparison Gold Standard's Fairtrade minimums are EUR 8.10-13/t before premium and fees"
    ),
    as_of="2026-11 (read for the project's research note; the provider's page carries no date)",
)
"""The default price. Prices move and differ by project type: pass your provider's current price instead."""


COVERS = ("operational", "operational+embodied")
"""Which total an offset (and the carbon-neutral badge) covers: operational emissions only (energy × PUE ×
intensity), or operational plus the hardware's amortised embodied emissions (see docs/footprint.md)."""


@dataclass(frozen=True)
class OffsetCost:
    emissions_gco2e: float
    price: OffsetPrice
    cost: float
    covers: str = "operational"


def offset_cost(emissions_gco2e: float, price: OffsetPrice = DEFAULT_PRICE, covers: str = "operational") -> OffsetCost:
    """``cost = emissions [g] / 1e6 [g/t] x price per tonne`` (the emissions already include PUE); ``covers`` says
    which total ``emissions_gco2e`` is (:data:`COVERS`)."""
    if covers not in COVERS:
        raise ValueError(f"covers must be one of {COVERS}, got {covers!r}")
    if not (math.isfinite(emissions_gco2e) and emissions_gco2e >= 0):
        raise ValueError(f"emissions must be a finite number of grams >= 0, got {emissions_gco2e!r}")
    if not (math.isfinite(price.per_tonne) and price.per_tonne >= 0):
        raise ValueError(f"the offset price per tonne must be >= 0, got {price.per_tonne!r}; e.g. --offset-price 23")
    return OffsetCost(emissions_gco2e, price, emissions_gco2e / GRAMS_PER_TONNE * price.per_tonne, covers)

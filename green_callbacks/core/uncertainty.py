"""How far off each figure may be: an interval per measuring method, and the rule that combines them. No I/O.

Every bound is in :data:`ENERGY_BOUNDS` (energy methods), :func:`intensity_factor` (grid intensity),
:func:`pue_factor` (PUE) and :data:`EMBODIED_SOURCES_KGCO2E` (embodied emissions), each with its cited basis; the
table in docs/uncertainty.md lists the same numbers with their sources. A method or factor without a published
basis has no interval: its functions return ``None`` and the figure's interval is ``None`` ("no basis for an
interval"), never a made-up range.

A bound is published as the error of the reported value against the truth, ``reported / true - 1`` in
``[error_low, error_high]``; the truth is then in ``[reported / (1 + error_high), reported / (1 + error_low)]``.
Each bound is read as a 95 % range. The combination rule (first order, errors independent unless shared):

- a component's window: its method's relative bound and, for a counter that updates every ``boundary_s``
  seconds, each of the window's two boundaries off by up to ``power × boundary_s``: combined in quadrature;
- a run's total of one component: the method's relative bound applies to the whole total (the same sensor's
  calibration in every epoch: fully correlated), and the boundaries telescope (an epoch ends where the next one
  starts), so only the run's first and last boundary remain;
- independent components (GPU, CPU, RAM sensors) add in quadrature (absolute half-widths);
- a factor shared by all components (PUE, grid intensity) multiplies the sum once: its relative half-width
  combines in quadrature with the energy's (the first-order rule for a product of independent factors).

Low and high half-widths are combined separately, so an asymmetric bound stays asymmetric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "EMBODIED_SOURCES_KGCO2E",
    "ENERGY_BOUNDS",
    "INTENSITY_SPREAD_GCO2E_PER_KWH",
    "Bound",
    "Difference",
    "Factor",
    "Interval",
    "MedianInterval",
    "Part",
    "RunSpread",
    "difference_interval",
    "embodied_factor",
    "embodied_interval",
    "emission_factors",
    "energy_bound",
    "energy_interval",
    "factor_interval",
    "intensity_factor",
    "median_interval",
    "pue_factor",
    "repriced_difference",
    "run_interval",
    "scaled_interval",
    "window_parts",
]


@dataclass(frozen=True)
class Bound:
    """A method's published error: ``reported / true - 1`` lies in ``[error_low, error_high]`` (a 95 % range).

    ``boundary_s``: a counter's update period; each window boundary may be off by ``power × boundary_s``.
    """

    error_low: float
    error_high: float
    basis: str
    boundary_s: float = 0.0

    @property
    def true_low(self) -> float:
        """The smallest true value per unit reported."""
        return 1.0 / (1.0 + self.error_high)

    @property
    def true_high(self) -> float:
        """The largest true value per unit reported."""
        return 1.0 / (1.0 + self.error_low)


#: Energy methods with a published basis (docs/uncertainty.md has the sources). A method not here has none.
_NVML_COUNTER = Bound(-0.05, 0.05, "NVML power accuracy +/-5 % (the only accuracy NVIDIA states); counter updated "
                      "about every 100 ms (ML.ENERGY; NVIDIA open kernel module)", boundary_s=0.1)
_NVML_POWER = Bound(-0.40, 0.40, "errors up to 40 % against an external meter (Fischer 2025, arXiv:2509.22092); "
                    "power sampled for about 25 % of the runtime on A100/H100 (Yang et al., SC24)")
_RAPL = Bound(-0.73, 0.73, "RAPL/NVML against power meters: mean error up to 73 % (Fahad et al., Energies 2019)")
_CPU_ESTIMATE = Bound(-0.675, 1.90, "TDP x load models against RAPL: -60 % to +190 % (CodeCarbon accuracy page, "
                      "Jan 2025); -67.5 % at 20 % load on an EPYC 8024P (CodeCarbon profiling data)")
ENERGY_BOUNDS: Mapping[str, Bound] = MappingProxyType({
    "nvml-energy-counter": _NVML_COUNTER,
    "nvml-power": _NVML_POWER,
    "rapl": _RAPL,
    "estimate-cpu-time": _CPU_ESTIMATE,
    "estimate-cpu-tdp": _CPU_ESTIMATE,
})

#: Largest spread between published grid intensities of one place on different bases or years (gCO2e/kWh):
#: world 481 (Ember 2023, lifecycle) vs 436 (Ember 2022); lifecycle minus direct 19.5-36 for the world, the US,
#: Sweden, Norway and Switzerland (research notes, data-and-style.md).
INTENSITY_SPREAD_GCO2E_PER_KWH = 45.0

#: PUE values whose published range is known: the Uptime Institute average (1.58 in 2023, "ranging from 1.55 to
#: 1.59 since around 2020", Uptime Intelligence update 221).
_PUE_RANGES: Mapping[float, tuple[float, float]] = MappingProxyType({1.58: (1.55, 1.59)})

#: Embodied kgCO2e per device where sources differ: (min, max) of the published figures.
#: A100: 143 (Boavizta, via EcoLogits), 150 (Luccioni et al. 2023), ~181 (ADEME/Hubblo, via Falk et al. 2025).
#: host (a server without accelerators): 1,000 (Cloud Carbon Footprint), 2,500 (Luccioni et al. 2023), 3,000
#: (Boavizta, via EcoLogits).
EMBODIED_SOURCES_KGCO2E: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"A100": (143.0, 181.0), "host": (1000.0, 3000.0)})


@dataclass(frozen=True)
class Factor:
    """A factor shared by every component (PUE, grid intensity): the true value per unit used, low and high."""

    low: float
    high: float
    basis: str


@dataclass(frozen=True)
class Part:
    """One component's energy over a window: its joules, the window's seconds and the method that measured it."""

    component: str
    method: str
    energy_j: float
    time_s: float


@dataclass(frozen=True)
class Interval:
    """A figure and the range the truth lies in (95 %), in the figure's unit."""

    value: float
    low: float
    high: float


def energy_bound(method: str) -> Bound | None:
    """The bound of a method; a combined method (``a+b``) takes the widest of its parts; ``None``: no basis."""
    bounds = [ENERGY_BOUNDS.get(m) for m in method.split("+")]
    if not bounds or any(b is None for b in bounds):
        return None
    known = [b for b in bounds if b is not None]
    return Bound(min(b.error_low for b in known), max(b.error_high for b in known),
                 "; ".join(dict.fromkeys(b.basis for b in known)), max(b.boundary_s for b in known))


def _half_widths(part: Part, bounds: Mapping[str, Bound] | None, boundaries: int) -> tuple[float, float] | None:
    bound = energy_bound(part.method) if bounds is None else bounds.get(part.method)
    if bound is None:
        return None
    down = part.energy_j * (1.0 - bound.true_low)
    up = part.energy_j * (bound.true_high - 1.0)
    edge = 0.0
    if bound.boundary_s and part.time_s > 0:
        edge = math.sqrt(boundaries) * part.energy_j / part.time_s * bound.boundary_s
    return math.hypot(down, edge), math.hypot(up, edge)


def energy_interval(parts: Iterable[Part], bounds: Mapping[str, Bound] | None = None,
                    boundaries: int = 2) -> Interval | None:
    """The interval of a sum of independent components' energies; ``None`` when one has no basis (or none given).

    ``bounds``: a table in place of :data:`ENERGY_BOUNDS` (tests). ``boundaries``: the window boundaries each
    part's counter error enters at (2 for one window).
    """
    parts = list(parts)
    if not parts:
        return None
    down2 = up2 = total = 0.0
    for part in parts:
        widths = _half_widths(part, bounds, boundaries)
        if widths is None:
            return None
        down2 += widths[0] ** 2
        up2 += widths[1] ** 2
        total += part.energy_j
    return Interval(total, max(total - math.sqrt(down2), 0.0), total + math.sqrt(up2))


def scaled_interval(energy: Interval | None, value: float | None, factors: Iterable[Factor | None]) -> Interval | None:
    """The interval of ``value`` = energy × shared factors: relative half-widths in quadrature. ``None`` when the
    energy or any factor has no basis."""
    if energy is None or value is None:
        return None
    factors = list(factors)
    if any(f is None for f in factors):
        return None
    if energy.value <= 0:
        return Interval(value, value, value) if energy.high <= 0 else None
    down2 = (1.0 - energy.low / energy.value) ** 2
    up2 = (energy.high / energy.value - 1.0) ** 2
    for f in factors:
        assert f is not None
        down2 += (1.0 - f.low) ** 2
        up2 += (f.high - 1.0) ** 2
    return Interval(value, max(value * (1.0 - math.sqrt(down2)), 0.0), value * (1.0 + math.sqrt(up2)))


def difference_interval(a: Interval | None, b: Interval | None) -> Interval | None:
    """``a − b`` of two independent figures: each side's half-widths in quadrature (the difference's low end takes
    ``a``'s low and ``b``'s high side); ``None`` when either has no basis."""
    if a is None or b is None:
        return None
    value = a.value - b.value
    down = math.hypot(a.value - a.low, b.high - b.value)
    up = math.hypot(a.high - a.value, b.value - b.low)
    return Interval(value, value - down, value + up)


def factor_interval(value: float, factor: Factor | None) -> Interval | None:
    """A figure times its factor's range (e.g. a grid intensity and :func:`intensity_factor`); ``None``: no basis."""
    return None if factor is None else Interval(value, value * factor.low, value * factor.high)


@dataclass(frozen=True)
class Difference:
    """A difference between two figures and its interval (``None``: no basis for one).

    ``beyond``: the interval excludes 0 (the difference is larger than the uncertainty); ``False``: it holds 0
    ("within the uncertainty"); ``None``: no basis to tell.
    """

    value: float
    interval: Interval | None
    beyond: bool | None


def _verdict(interval: Interval | None) -> bool | None:
    return None if interval is None else not (interval.low <= 0.0 <= interval.high)


def repriced_difference(scale: float, shared: Interval | None, actual: float, actual_factor: Factor | None,
                        other: float, other_factor: Factor | None) -> Difference:
    """``scale × (other − actual)``: the same energy re-priced by another factor (a grid's intensity).

    ``scale`` is the shared amount (energy in kWh × PUE: grams per gCO2e/kWh) and ``shared`` its interval
    (``None``: no basis); ``actual`` and ``other`` the two intensities with their factors' ranges (independent
    sources: :func:`difference_interval`). The shared amount multiplies the whole difference: being positive, it
    cannot change its sign, so whether the difference is beyond the uncertainty depends on the intensities alone;
    its range widens the difference's by interval arithmetic (each end times the shared amount's end that widens
    it).
    """
    value = scale * (other - actual)
    spread = difference_interval(factor_interval(other, other_factor), factor_interval(actual, actual_factor))
    beyond = _verdict(spread)
    if spread is None or shared is None or scale <= 0 or shared.value <= 0:
        return Difference(value, None, beyond)
    low_m, high_m = scale * shared.low / shared.value, scale * shared.high / shared.value
    low = spread.low * (high_m if spread.low < 0 else low_m)
    high = spread.high * (high_m if spread.high > 0 else low_m)
    return Difference(value, Interval(value, low, high), beyond)


def intensity_factor(intensity_gco2e_per_kwh: float, kind: str, basis: str) -> Factor | None:
    """The grid intensity's range per unit used: a published annual average on a lifecycle basis may be lower on a
    direct basis or another year's data, an operational (direct) one higher, by up to
    :data:`INTENSITY_SPREAD_GCO2E_PER_KWH`; a user's value is taken as given; a live value has no basis."""
    if kind == "explicit":
        return Factor(1.0, 1.0, "user-supplied value, as given")
    if kind == "live" or intensity_gco2e_per_kwh <= 0:
        return None
    spread = INTENSITY_SPREAD_GCO2E_PER_KWH / intensity_gco2e_per_kwh
    why = "spread between published sources, bases and years (largest 45 gCO2e/kWh)"
    if "lifecycle" in basis:
        return Factor(max(1.0 - spread, 0.0), 1.0, why)
    if "operational" in basis or "direct" in basis:
        return Factor(1.0, 1.0 + spread, why)
    return None


def pue_factor(pue: float) -> Factor:
    """PUE as given (1.0 counts IT energy only, by definition), or the published range of a preset's average."""
    for value, (low, high) in _PUE_RANGES.items():
        if math.isclose(pue, value):
            return Factor(low / pue, high / pue, "Uptime Institute average 1.55-1.59 since 2020")
    return Factor(1.0, 1.0, "as given")


def embodied_interval(parts: Iterable[Any], total_gco2e: float | None) -> Interval | None:
    """The interval of an embodied total from its parts (:class:`~green_callbacks.core.embodied.EmbodiedPart`):
    each part's sources' min/max relative to the figure used, weighted by its share of the rate, in quadrature;
    ``None`` when a part with a figure has no such range (one published figure) or nothing is known."""
    known = [p for p in parts if p.rate_gco2e_per_h is not None and p.kgco2e]
    rate = sum(p.rate_gco2e_per_h for p in known)
    if total_gco2e is None or not known or rate <= 0:
        return None
    down2 = up2 = 0.0
    for part in known:
        factor = embodied_factor("host" if part.kind == "host" else part.name)
        if factor is None:
            return None
        weight = part.rate_gco2e_per_h / rate
        down2 += (weight * (1.0 - factor.low / part.kgco2e)) ** 2
        up2 += (weight * (factor.high / part.kgco2e - 1.0)) ** 2
    return Interval(total_gco2e, total_gco2e * (1.0 - math.sqrt(down2)), total_gco2e * (1.0 + math.sqrt(up2)))


def embodied_factor(name: str) -> Factor | None:
    """The published sources' min/max in kgCO2e (not relative) for a device whose name holds a key of
    :data:`EMBODIED_SOURCES_KGCO2E` (``"host"``, or e.g. ``"accelerator 0: NVIDIA A100-SXM4-80GB"``)."""
    key = name if name == "host" else next((k for k in EMBODIED_SOURCES_KGCO2E if k != "host" and k in name.upper()),
                                           None)
    span = None if key is None else EMBODIED_SOURCES_KGCO2E[key]
    return None if span is None else Factor(span[0], span[1], "min/max of the published figures")


def emission_factors(grid: Any, pue: float) -> tuple[Factor, Factor | None]:
    """The shared factors of emissions = energy × PUE × intensity: PUE's and the grid's (a
    :class:`~green_callbacks.core.carbon.CarbonIntensity`)."""
    return pue_factor(pue), intensity_factor(grid.intensity_gco2e_per_kwh, grid.kind, grid.basis)


class RunSpread:
    """A run's energy total per (component, method) and the time it ran: its interval in O(1) per epoch.

    The method's bound covers the component's whole total (one calibration); counter boundaries telescope, so the
    run's total carries two (its first and last) at the mean power of the run with that method.
    """

    def __init__(self, bounds: Mapping[str, Bound] | None = None) -> None:
        self._sums: dict[tuple[str, str], list[float]] = {}
        self._bounds = bounds

    def add(self, parts: Iterable[Part]) -> None:
        for part in parts:
            sums = self._sums.setdefault((part.component, part.method), [0.0, 0.0])
            sums[0] += part.energy_j
            sums[1] += part.time_s

    def interval(self) -> Interval | None:
        return energy_interval((Part(c, m, e, t) for (c, m), (e, t) in self._sums.items()), self._bounds)


def window_parts(energy_j: Mapping[str, float | None], methods: Mapping[str, str], time_s: float) -> list[Part]:
    """The measured components of a window as parts (a component with no energy is not in the figure)."""
    return [Part(name, methods.get(name, ""), float(value), time_s) for name, value in energy_j.items()
            if value is not None and methods.get(name) != "not-used"]


def run_interval(rows: Iterable[Any], component: str | None = None) -> Interval | None:
    """The interval of a run's energy from its epoch rows (:class:`~green_callbacks.core.rows.EpochRow`), all
    components or one; ``None`` when a part of it has no basis or nothing was measured."""
    spread = RunSpread()
    for row in rows:
        parts = window_parts(row.component_energy_j, row.component_method, row.time_s)
        spread.add(p for p in parts if component is None or p.component == component)
    return spread.interval()


@dataclass(frozen=True)
class MedianInterval:
    """The median of repeated rounds and the distribution-free interval of the median (order statistics)."""

    median: float
    low: float
    high: float
    coverage: float
    """The interval's actual coverage (at least the level asked for, or the most ``n`` rounds allow)."""


def median_interval(values: Iterable[float], confidence: float = 0.95) -> MedianInterval | None:
    """The median and the order-statistic interval ``[x(k), x(n-k+1)]`` with the largest ``k`` whose coverage
    ``1 - 2 P(Binomial(n, 1/2) < k)`` is at least ``confidence``; with too few rounds for that, the range
    ``[min, max]`` and its own coverage. ``None`` for no value."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if not n:
        return None
    mid = n // 2
    median = xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2
    tail, k = 1 / 2**n, 1  # tail = P(B < k) = P(B <= k - 1)
    while k < (n + 1) // 2:
        nxt = tail + math.comb(n, k) / 2**n  # P(B < k + 1)
        if 1 - 2 * nxt < confidence:
            break
        tail, k = nxt, k + 1
    return MedianInterval(median, xs[k - 1], xs[n - k], 1 - 2 * tail)

"""Repeated measurement of a test / validate / predict / evaluate workload: run it after warm-up rounds, N times,
and give the median round with the distribution-free interval of the median (docs/uncertainty.md).

Framework-free: :func:`repeat_phase` calls the user's ``run_once`` (e.g. ``lambda: trainer.test(model, dl)``), each
call measured as one phase by the callback it runs with, and reads that phase's
:class:`~green_callbacks.core.phase.PhaseResult` through ``read`` (the callback's ``last_phase``). Every round
writes its own phase record; the warm-up rounds are measured too and left out of the medians.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.phase import PhaseResult
from green_callbacks.core.uncertainty import MedianInterval, median_interval

__all__ = ["RepeatedPhase", "repeat_phase"]

#: The figures given a median and its interval: (attribute of PhaseResult, name, unit).
FIGURES = (("energy_j", "energy", "J"), ("duration_s", "time", "s"), ("energy_per_sample_j", "energy per sample",
                                                                       "J"))


@dataclass(frozen=True)
class RepeatedPhase:
    """The rounds of one repeated workload and their medians.

    ``rounds``: the measured rounds' results, in order (``None`` for a round the callback did not measure: phases
    switched off after a failure, or the call ran inside a fit); ``warmup``: the warm-up rounds' results.
    ``medians``: per figure of :data:`FIGURES`, the median and its interval, ``None`` when a round lacks it
    (never a median of the rounds that happen to have one). ``output``: what the last round's ``run_once``
    returned.
    """

    rounds: tuple[PhaseResult | None, ...]
    warmup: tuple[PhaseResult | None, ...]
    medians: dict[str, MedianInterval | None]
    confidence: float
    output: Any = None

    def median(self, figure: str) -> MedianInterval | None:
        """The median and interval of ``"energy_j"``, ``"duration_s"`` or ``"energy_per_sample_j"``."""
        return self.medians.get(figure)

    def summary(self) -> str:
        """One line: ``'5 rounds after 1 warm-up: median energy 400 J (200–600 J), …; the interval covers 93.8 %
        …'``."""
        parts = [f"{len(self.rounds)} round(s) after {len(self.warmup)} warm-up round(s)"]
        coverage = None
        for attribute, name, unit in FIGURES:
            m = self.medians.get(attribute)
            if m is None:
                parts.append(f"median {name} unavailable")
                continue
            parts.append(f"median {name} {m.median:.4g} {unit} ({m.low:.4g}–{m.high:.4g} {unit})")
            coverage = m.coverage
        if coverage is not None:
            parts.append(f"the median's interval over the rounds covers {coverage * 100:.1f} % (order statistics; "
                         "the method's own bound comes on top)")
        return "; ".join(parts)


def _medians(results: Sequence[PhaseResult | None], confidence: float) -> dict[str, MedianInterval | None]:
    out: dict[str, MedianInterval | None] = {}
    for attribute, _, _ in FIGURES:
        values = [None if r is None else getattr(r, attribute) for r in results]
        known = [float(v) for v in values if v is not None]
        out[attribute] = median_interval(known, confidence) if known and len(known) == len(values) else None
    return out


def repeat_phase(run_once: Callable[[], Any], read: Callable[[], PhaseResult | None], *, rounds: int = 5,
                 warmup_rounds: int = 1, confidence: float = 0.95) -> RepeatedPhase:
    """Call ``run_once`` ``warmup_rounds + rounds`` times; after each, ``read()`` gives the phase it measured.

    A round whose ``read()`` is the previous round's result (no new phase was measured) counts as unmeasured. An
    exception from ``run_once`` stops the rounds and propagates (the callback has written that phase's record
    with its status). With fewer than 6 rounds the interval is the rounds' range, with its own coverage
    (5 rounds: 93.8 %); see :func:`~green_callbacks.core.uncertainty.median_interval`.
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"rounds must be an integer of at least 1, got {rounds!r}")
    if not isinstance(warmup_rounds, int) or isinstance(warmup_rounds, bool) or warmup_rounds < 0:
        raise ValueError(f"warmup_rounds must be an integer of at least 0, got {warmup_rounds!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    results: list[PhaseResult | None] = []
    previous = read()
    output = None
    for _ in range(warmup_rounds + rounds):
        output = run_once()
        current = read()
        results.append(None if current is None or current is previous else current)
        previous = current
    measured = tuple(results[warmup_rounds:])
    return RepeatedPhase(rounds=measured, warmup=tuple(results[:warmup_rounds]),
                         medians=_medians(measured, confidence), confidence=confidence, output=output)

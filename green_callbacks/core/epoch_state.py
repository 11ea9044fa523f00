"""Per-epoch values that declare how they are reduced across ranks (the idea of torchmetrics' ``add_state``).

A value is declared once with its reduction; :meth:`EpochState.reduce` then packs every declared value into one
vector, makes one collective call, and unpacks the result — no hand-packed indices anywhere. Reductions:

* ``"sum"``: summed over ranks; unavailable (``None``) if any rank lacked it (a partial sum would be silently low),
  with the number of ranks that lacked it;
* ``"rank_zero"``: global rank zero's value for everyone (e.g. the carbon intensity, so all ranks take the same
  budget decision).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from green_callbacks.core.distributed import DistInfo, Reducer, sum_with_missing

__all__ = ["EpochState", "Reduced"]

Reduction = Literal["sum", "rank_zero"]


@dataclass(frozen=True)
class Reduced:
    """The reduced values (``None`` = unavailable) and, per name, how many ranks lacked it."""

    values: Mapping[str, float | None]
    lacking: Mapping[str, int] = field(default_factory=dict)


class EpochState:
    """The declared per-epoch values of a run; see the module docstring."""

    def __init__(self) -> None:
        self._reductions: dict[str, Reduction] = {}

    def add_state(self, name: str, reduce: Reduction = "sum") -> None:
        if reduce not in ("sum", "rank_zero"):
            raise ValueError(f"reduce={reduce!r} is not a known reduction; use 'sum' or 'rank_zero'")
        if name in self._reductions:
            raise ValueError(f"state {name!r} is declared twice")
        self._reductions[name] = reduce

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._reductions)

    @property
    def reductions(self) -> Mapping[str, Reduction]:
        """Each declared value's reduction, in the order declared."""
        return dict(self._reductions)

    def reduce(self, local: Mapping[str, float | None], dist: DistInfo, reducer: Reducer) -> Reduced:
        """One collective call for every declared value; ``local`` gives this rank's value of each (``None``: this
        rank lacks it), and no other: a value declared but never given, or given but never declared, is a
        :class:`ValueError` (it would be silently unavailable, or silently dropped, on every epoch)."""
        names = self.names
        if len(local) != len(names) or any(name not in local for name in names):
            given = set(local)
            raise ValueError(f"per-epoch values declared but not given: {sorted(set(names) - given)}; given but "
                             f"not declared: {sorted(given - set(names))}")
        vector: list[float | None] = []
        for name in names:
            value = local[name]
            if self._reductions[name] == "rank_zero":
                value = (value if value is not None else float("nan")) if dist.is_global_zero else 0.0
            vector.append(value)
        sums, lacks = sum_with_missing(vector, reducer)
        return Reduced(dict(zip(names, sums, strict=True)), dict(zip(names, lacks, strict=True)))

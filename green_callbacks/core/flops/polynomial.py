"""A bounded number of counts: the FLOPs of signatures that differ in one dimension, fitted, verified, predicted.

Each signature is a static part (kind, model state, batch structure) and its tensor dimensions. When two signatures
of the same static part differ in one dimension only (the padded length, in every tensor that carries it), their
counts are points of a function of that dimension. After ``degree + 1`` counted points the polynomial through them
is fitted with exact rational arithmetic (:class:`fractions.Fraction`); the next counted point must match it
exactly. From then on a new value is predicted when the prediction is an integer and the value lies on the lattice
of the counted points (same residue modulo the gcd of their differences). Spot checks count the 16th, 64th, 256th,
… distinct value for real. Pure bookkeeping, no I/O: :class:`~green_callbacks.core.flops.FlopTracker` decides what
a failed fit does to the figures already added. See docs/flops.md, "A bounded number of counts".
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from fractions import Fraction

__all__ = ["Line", "Lines", "describe_lines"]

_FIRST_SPOT_CHECK = 16
_MAX_REFS = 8  # reference signatures kept per static part (the first counted ones no line passed through)


def _is_spot_check(n: int) -> bool:
    """The 16th, 64th, 256th, ... distinct predicted value is counted on its real step and compared instead."""
    while n > _FIRST_SPOT_CHECK and n % 4 == 0:
        n //= 4
    return n == _FIRST_SPOT_CHECK


def describe_lines(degree: int) -> str:
    """The run record's ``flops.interpolation``."""
    return (f"polynomial of degree <= {degree} per varying dimension, exact rational fit, verified on a further "
            "count, spot checks at the 16th, 64th, 256th... value")


class Line:
    """Counts of one static signature along one varying dimension: fit, verify, predict."""

    __slots__ = ("degree", "failed", "modulus", "points", "seen", "verified")

    def __init__(self, degree: int) -> None:
        self.degree = degree
        self.points: dict[int, int] = {}  # dimension value -> exact FLOPs
        self.verified = False
        self.failed = False
        self.modulus = 0  # gcd of the differences of the counted values
        self.seen = 0  # distinct values met (counted or predicted)

    def _basis(self) -> list[tuple[int, int]]:
        return list(self.points.items())[: self.degree + 1]

    def value_at(self, x: int) -> Fraction:
        """The polynomial through the first ``degree + 1`` counted points, at ``x`` (Lagrange, exact)."""
        basis = self._basis()
        total = Fraction(0)
        for i, (xi, yi) in enumerate(basis):
            term = Fraction(yi)
            for j, (xj, _) in enumerate(basis):
                if i != j:
                    term *= Fraction(x - xj, xi - xj)
            total += term
        return total

    def add(self, x: int, flops: int) -> bool:
        """Add a counted point; False when it contradicts the polynomial (the line then stops predicting). A line
        that failed before takes no more points and reports no new failure (one failure, counted once)."""
        if self.failed or x in self.points:
            return True
        first = next(iter(self.points), x)
        self.modulus = math.gcd(self.modulus, abs(x - first))
        if len(self.points) > self.degree and self.value_at(x) != flops:
            self.failed, self.verified = True, False
            self.points[x] = flops
            return False
        self.points[x] = flops
        if len(self.points) >= self.degree + 2:
            self.verified = True
        return True

    def predict(self, x: int) -> int | None:
        """The verified polynomial's integer value at ``x``, or None (not verified, off-lattice, spot check, …)."""
        if not self.verified or self.failed:
            return None
        self.seen += 1
        if _is_spot_check(self.seen):
            return None
        first = next(iter(self.points))
        if self.modulus > 1 and (x - first) % self.modulus:
            return None
        value = self.value_at(x)
        if value.denominator != 1 or value < 0:
            return None
        return int(value)


class Lines:
    """Every line of a run: per static part, its reference signatures and the lines through them.

    ``off``: static parts that predict nothing (a signature of them re-ran forwards or was found data-dependent).
    """

    def __init__(self, degree: int) -> None:
        self.degree = degree
        self._refs: dict[Hashable, list[tuple[int, ...]]] = {}  # static -> counted dims no line passed through
        self._lines: dict[Hashable, Line] = {}
        self.off: set[Hashable] = set()

    @property
    def failed(self) -> int:
        return sum(1 for line in self._lines.values() if line.failed)

    def line_of(self, static: Hashable, dims: tuple[int, ...], exact: Mapping[Hashable, tuple[int, str]] | None
                ) -> tuple[Line | None, int]:
        """The line through ``dims`` (one dimension varies from a reference signature of the static part), and its
        x; ``(None, 0)`` when no reference differs from ``dims`` in exactly one (possibly repeated) dimension. With
        ``exact`` (the known counts), a missing line is created, seeded with its reference's count."""
        for ref in self._refs.get(static, ()):
            if len(ref) != len(dims):
                continue
            varying = tuple(i for i, (a, b) in enumerate(zip(dims, ref, strict=True)) if a != b)
            if not varying:
                continue
            values = {dims[i] for i in varying}
            ref_values = {ref[i] for i in varying}
            if len(values) != 1 or len(ref_values) != 1:
                continue  # more than one dimension varies (a partial batch with a new length)
            fixed = tuple(0 if i in varying else d for i, d in enumerate(dims))
            line_key = (static, varying, fixed)
            line = self._lines.get(line_key)
            if line is None and exact is not None:
                line = self._lines[line_key] = Line(self.degree)
                ref_flops = exact.get((static, ref))
                if ref_flops is not None and ref_flops[1] == "counted":
                    line.add(ref_values.pop(), ref_flops[0])
            if line is not None:
                return line, values.pop()
        return None, 0

    def predict(self, static: Hashable, dims: tuple[int, ...]) -> int | None:
        """The verified polynomial's value for a new signature, or None (count it)."""
        if static in self.off:
            return None
        line, x = self.line_of(static, dims, None)
        return None if line is None else line.predict(x)

    def verified_at(self, static: Hashable, dims: tuple[int, ...]) -> bool:
        """Whether ``dims`` lies on a verified line that has not failed (its count is checked by the fit): a point
        the line passes through from a reference, or the reference itself (the line's first point)."""
        line, _ = self.line_of(static, dims, None)
        if line is not None:
            return line.verified and not line.failed
        for (line_static, varying, fixed), line in self._lines.items():
            if line_static != static or not line.verified or line.failed or len(fixed) != len(dims):
                continue
            values = {dims[i] for i in varying}
            if len(values) == 1 and tuple(0 if i in varying else d for i, d in enumerate(dims)) == fixed \
                    and values.pop() in line.points:
                return True
        return False

    def learn(self, static: Hashable, dims: tuple[int, ...], flops: int,
              exact: Mapping[Hashable, tuple[int, str]]) -> tuple[int, list[int]] | None:
        """Add a counted point; ``(x, the line's first points)`` when it contradicts the line's polynomial."""
        line, x = self.line_of(static, dims, exact)
        if line is None:
            refs = self._refs.setdefault(static, [])
            if len(refs) < _MAX_REFS:
                refs.append(dims)
            return None
        if line.add(x, flops):
            return None
        return x, sorted(line.points)[:4]

"""``green-callbacks compare BASE NEW``: does NEW cost more energy than BASE, beyond the noise?

Each side is a record, a folder of records, or a search (a folder of many runs). From every complete epoch of every
fit it takes the training energy (the epoch's energy less its evaluation), the training samples and the training
FLOPs, and compares three figures: energy per training sample, per training FLOP and per epoch. Each comes with a
bootstrap interval over runs and epochs (runs resampled with replacement, then each chosen run's epochs; Python's
``random`` seeded, so the same inputs give the same answer), and so does the change from BASE to NEW. A change whose
interval holds 0 is "no difference beyond the noise". FLOPs are counted, not measured: their change is exact.

The measurement's own bound (docs/uncertainty.md) is not in these intervals: on the same machine with the same
method it is the same calibration on both sides and cancels in the ratio; when the methods differ, the output says
so, and then only the bound, not the noise, separates the two.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from green_callbacks.report import format as fmt

__all__ = [
    "Comparison",
    "Side",
    "add_compare_arguments",
    "bootstrap_change",
    "compare_sides",
    "github_benchmark",
    "load_side",
    "run_compare",
]

#: (name, unit, numerator, denominator) of each compared figure; the first available one gates ``--fail-above``.
FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("energy per sample", "J", "train_energy_j", "samples"),
    ("energy per training FLOP", "J", "train_energy_j", "train_flops"),
    ("energy per epoch", "J", "energy_j", "one"),
)

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


@dataclass(frozen=True)
class Side:
    """One side of a comparison: per run, its complete epochs as plain numbers (``None``: not known)."""

    label: str
    runs: tuple[tuple[dict[str, float | None], ...], ...]
    methods: frozenset[str] = frozenset()

    @property
    def epochs(self) -> int:
        return sum(len(r) for r in self.runs)


@dataclass(frozen=True)
class Change:
    """One figure on both sides, each with its interval, and NEW's change relative to BASE with its interval."""

    name: str
    unit: str
    base: tuple[float, float, float]
    new: tuple[float, float, float]
    change: tuple[float, float, float]
    """(point, low, high) of ``new / base - 1``."""

    @property
    def verdict(self) -> str:
        if self.change[1] > 0:
            return "NEW costs more beyond the noise"
        if self.change[2] < 0:
            return "NEW costs less beyond the noise"
        return "no difference beyond the noise"


@dataclass(frozen=True)
class Comparison:
    base: Side
    new: Side
    changes: tuple[Change, ...]
    flops_per_epoch: tuple[float | None, float | None]
    confidence: float
    resamples: int
    notes: tuple[str, ...] = field(default=())

    @property
    def gate(self) -> Change | None:
        """The figure ``--fail-above`` judges: energy per sample, else per FLOP, else per epoch."""
        return self.changes[0] if self.changes else None


def _epoch_numbers(row: Any) -> dict[str, float | None]:
    energy = row.energy_j
    evaluation = row.eval_energy_j or 0.0
    train = None if energy is None else energy - evaluation
    return {"energy_j": energy, "train_energy_j": train, "samples": row.samples, "train_flops": row.train_flops,
            "one": 1.0}


def load_side(path: str, skip_epochs: int = 0) -> Side:
    """The complete epochs of every fit record at ``path`` (a record or a folder), each run's first
    ``skip_epochs`` left out (a warm-up)."""
    from green_callbacks.report.runs import load_runs

    loaded = load_runs([path])
    runs, methods = [], set()
    for record in loaded.fits:
        epochs = tuple(_epoch_numbers(row) for row in record.epochs[skip_epochs:])
        if epochs:
            runs.append(epochs)
        for row in record.epochs:
            methods.update(m for m in row.component_method.values() if m not in ("not-used", "unavailable"))
    return Side(path, tuple(runs), frozenset(methods))


def _usable(side: Side, num: str, den: str) -> list[list[tuple[float, float]]]:
    runs = []
    for run in side.runs:
        pairs = [(e[num], e[den]) for e in run if e[num] is not None and e[den] is not None and e[den] > 0]
        if pairs:
            runs.append(pairs)  # type: ignore[arg-type]
    return runs


def _ratio(runs: Sequence[Sequence[tuple[float, float]]]) -> float:
    return sum(n for r in runs for n, _ in r) / sum(d for r in runs for _, d in r)


def _resample(runs: Sequence[Sequence[tuple[float, float]]], rng: random.Random) -> float:
    """One bootstrap draw of a side's ratio of sums: runs with replacement (when there are several), then epochs."""
    chosen = runs if len(runs) == 1 else [runs[rng.randrange(len(runs))] for _ in runs]
    num = den = 0.0
    for run in chosen:
        n = len(run)
        for _ in range(n):
            a, b = run[rng.randrange(n)]
            num += a
            den += b
    return num / den if den else math.nan


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values``, linearly interpolated."""
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def bootstrap_change(base: Sequence[Sequence[tuple[float, float]]], new: Sequence[Sequence[tuple[float, float]]],
                     *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                     ) -> tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]:
    """Percentile bootstrap of BASE's ratio, NEW's ratio and NEW/BASE − 1: each (point, low, high)."""
    rng = random.Random(seed)
    draws_b, draws_n, draws_c = [], [], []
    for _ in range(resamples):
        b, n = _resample(base, rng), _resample(new, rng)
        draws_b.append(b)
        draws_n.append(n)
        draws_c.append(n / b - 1.0 if b else math.nan)
    tail = (1.0 - confidence) / 2

    def summary(point: float, draws: list[float]) -> tuple[float, float, float]:
        draws = sorted(d for d in draws if not math.isnan(d))
        return point, _quantile(draws, tail), _quantile(draws, 1.0 - tail)

    pb, pn = _ratio(base), _ratio(new)
    return summary(pb, draws_b), summary(pn, draws_n), summary(pn / pb - 1.0, draws_c)


def compare_sides(base: Side, new: Side, *, resamples: int = 2000, confidence: float = 0.95,
                  seed: int = 0) -> Comparison:
    """Every figure both sides have, with its bootstrap intervals; FLOPs per epoch exactly."""
    changes, notes = [], []
    for name, unit, num, den in FIGURES:
        b, n = _usable(base, num, den), _usable(new, num, den)
        if not b or not n:
            notes.append(f"{name}: not compared ({'BASE' if not b else 'NEW'} has no epoch with it)")
            continue
        bb, nn, cc = bootstrap_change(b, n, resamples=resamples, confidence=confidence, seed=seed)
        changes.append(Change(name, unit, bb, nn, cc))
    flops = tuple(_mean_flops(side) for side in (base, new))
    if base.methods != new.methods:
        notes.append(f"the sides were measured by different methods (BASE: {', '.join(sorted(base.methods))}; NEW: "
                     f"{', '.join(sorted(new.methods))}): their bounds (docs/uncertainty.md), not only the noise, "
                     "separate them")
    return Comparison(base, new, tuple(changes), flops, confidence, resamples, tuple(notes))  # type: ignore[arg-type]


def _mean_flops(side: Side) -> float | None:
    values = [e["train_flops"] for run in side.runs for e in run]
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


# --- output --------------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def _value(v: tuple[float, float, float], unit: str) -> str:
    return f"{v[0]:.4g} {unit} ({v[1]:.3g}–{v[2]:.3g})"


def format_comparison(c: Comparison) -> str:
    """The comparison as the terminal says it."""
    from green_callbacks.report.format import text_table

    level = f"{c.confidence * 100:g} %"
    lines = [f"compare BASE {c.base.label} ({len(c.base.runs)} run(s), {c.base.epochs} epoch(s)) with NEW "
             f"{c.new.label} ({len(c.new.runs)} run(s), {c.new.epochs} epoch(s)); {level} bootstrap intervals over "
             f"runs and epochs ({c.resamples} resamples)", ""]
    rows = [[ch.name, _value(ch.base, ch.unit), _value(ch.new, ch.unit),
             f"{_pct(ch.change[0])} ({_pct(ch.change[1])} … {_pct(ch.change[2])})", ch.verdict] for ch in c.changes]
    fb, fn = c.flops_per_epoch
    if fb is not None and fn is not None:
        rows.append(["training FLOPs per epoch", f"{fb:.6g}", f"{fn:.6g}", f"{_pct(fn / fb - 1)} (exact)" if fb
                     else fmt.NA, "counted, not measured: no noise"])
    lines.append(text_table(["figure", "BASE", "NEW", "change", ""], rows))
    gate = c.gate
    if gate is not None:
        lines += ["", f"{gate.name}: {gate.verdict} ({_pct(gate.change[0])}, {level} interval "
                      f"{_pct(gate.change[1])} … {_pct(gate.change[2])})"]
    lines += [f"note: {n}" for n in c.notes]
    return "\n".join(lines)


def github_benchmark(c: Comparison) -> list[dict[str, Any]]:
    """NEW's figures in the "customSmallerIsBetter" JSON the continuous-benchmark actions read."""
    out = []
    for ch in c.changes:
        half = (ch.new[2] - ch.new[1]) / 2
        out.append({"name": ch.name, "unit": ch.unit, "value": ch.new[0], "range": f"± {half:.3g}",
                    "extra": f"{c.confidence * 100:g} % interval {ch.new[1]:.4g}–{ch.new[2]:.4g} {ch.unit}; change "
                             f"from BASE {_pct(ch.change[0])} ({_pct(ch.change[1])} … {_pct(ch.change[2])}): "
                             f"{ch.verdict}"})
    fn = c.flops_per_epoch[1]
    if fn is not None:
        out.append({"name": "training FLOPs per epoch", "unit": "FLOP", "value": fn, "extra": "counted: exact"})
    return out


# --- the command -------------------------------------------------------------------------------------------------
def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("base", help="BASE: a run record, a folder of records, or a search's folder")
    parser.add_argument("new", help="NEW: the same kinds")
    parser.add_argument("--fail-above", type=float, metavar="PCT",
                        help="exit 1 when NEW's energy per sample (else per FLOP, else per epoch) is more than PCT %% "
                             "above BASE's beyond the noise (the lower end of the change's interval is above PCT)")
    parser.add_argument("--format", choices=("text", "github-benchmark"), default="text",
                        help="text (default) or the customSmallerIsBetter JSON of continuous-benchmark actions")
    parser.add_argument("--output", help="write the output to this file (default: standard output)")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the intervals (default 0.95)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--skip-epochs", type=int, default=0, help="leave out each run's first N epochs (warm-up)")
    return parser


def run_compare(args: argparse.Namespace, out: Callable[[str], None] | None = None) -> int:
    """Compare, print or write, and return the exit code: 0, 1 (a regression beyond the noise) or 2 (an error)."""
    if not 0.5 <= args.confidence < 1 or args.resamples < 100 or args.skip_epochs < 0:
        print("green-callbacks compare: --confidence must be from 0.5 to below 1, --resamples at least 100, "
              "--skip-epochs not negative.", file=sys.stderr)
        return EXIT_ERROR
    try:
        base, new = load_side(args.base, args.skip_epochs), load_side(args.new, args.skip_epochs)
    except FileNotFoundError as err:
        print(f"green-callbacks compare: {err}", file=sys.stderr)
        return EXIT_ERROR
    for side, name in ((base, "BASE"), (new, "NEW")):
        if not side.runs:
            print(f"green-callbacks compare: {name} {side.label} holds no complete epoch of a fit record.",
                  file=sys.stderr)
            return EXIT_ERROR
    result = compare_sides(base, new, resamples=args.resamples, confidence=args.confidence, seed=args.seed)
    if result.gate is None:
        print("green-callbacks compare: no energy figure both sides measured; " + "; ".join(result.notes),
              file=sys.stderr)
        return EXIT_ERROR
    text = (json.dumps(github_benchmark(result), indent=2) if args.format == "github-benchmark"
            else format_comparison(result))
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        (out or print)(text)
    if args.fail_above is not None and result.gate.change[1] * 100 > args.fail_above:
        print(f"green-callbacks compare: NEW's {result.gate.name} is {_pct(result.gate.change[0])} above BASE's, "
              f"beyond the noise and more than {args.fail_above:g} %.", file=sys.stderr)
        return EXIT_REGRESSION
    return EXIT_OK

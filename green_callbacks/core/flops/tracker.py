"""The one FLOP wrapper every adapter drives: one call before a step, one after, one per epoch.

    tracker = FlopTracker()                        # one per run: it owns every cache
    tracker.begin("train", model, batch)           # before the framework runs the step (its key: a few µs)
    ...                                            # the framework's own forward + backward
    tracker.end()                                  # after the backward, before the optimizer step
    epoch = tracker.take_epoch()                   # EpochFlops(train_flops, eval_flops, method, steps)
    tracker.info()                                 # how the FLOPs were counted, for the run record

**Counting never re-runs user code.** The first step of each new input signature is *observed*: the tracker
enters torch's ``FlopCounterMode`` (with the engine's formulas) at ``begin`` and leaves it at ``end``, so the
counter watches the step the training runs anyway. Nothing is replayed, no random number is drawn, no weight,
gradient, buffer or user state is touched: a run with the callback computes bit-identical weights and calls the
user's step exactly as often as a run without it. Every later step of that signature is a cache hit.

**A bounded number of counts per model.** Each signature is split into a static part (kind, model state, batch
structure) and its tensor dimensions. When two signatures of the same static part differ in one dimension only
(the padded length, in every tensor that carries it), their counts are points of a function of that dimension.
After ``max_degree + 1`` counted points the polynomial through them is fitted with exact rational arithmetic
(:class:`fractions.Fraction`); the next counted point must match it exactly. From then on a new value of the
dimension is *predicted* (method ``interpolated-verified``) when the prediction is an integer and the value lies
on the lattice of the counted points (same residue modulo the gcd of their differences: lengths padded to a
multiple of 8 predict multiples of 8 only). Spot checks count the 16th, 64th, 256th, … distinct value for real.
A failed verification or spot check (data-dependent work, strided or windowed shapes, MoE routing) switches
that dimension back to counting every value, with one warning. See docs/flops.md.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Literal

from green_callbacks.core import rng
from green_callbacks.core.flops.result import CONVENTION, FlopCountWarning, Kind

__all__ = ["EPOCH_METHODS", "EpochFlops", "FlopTracker"]

EpochMethod = Literal["counted", "interpolated-verified", "sampled", "estimated", "none"]
EPOCH_METHODS = ("counted", "interpolated-verified", "sampled", "estimated")
"""How the steps of an epoch got their FLOPs: every one from a count (observed, or the cache of one), some from the
verified polynomial, some estimated from the watched steps of a data-dependent signature (``sampled``: with a range),
or figures a later check contradicted (``estimated``: kept, not corrected; the reason in ``epoch_notes``)."""

_CHECK_FACTOR = 2
"""A counted signature is watched again on its 2nd step, then its 4th, 8th, 16th, ... (x2 each time: log2 of its
steps)."""
_SAMPLE_EVERY = 8
"""A data-dependent signature has 1 step in 8 watched (every step with ``every_step=True``)."""

_FIRST_SPOT_CHECK = 16


def _is_spot_check(n: int) -> bool:
    """The 16th, 64th, 256th, ... distinct predicted value is counted on its real step and compared instead."""
    while n > _FIRST_SPOT_CHECK and n % 4 == 0:
        n //= 4
    return n == _FIRST_SPOT_CHECK


class _Check:
    """The later checks of one counted signature: its steps so far, the step of the next check, the counts watched
    (number, sum, smallest, largest) and whether they differed (the work is then data-dependent)."""

    __slots__ = ("dependent", "hi", "lo", "n", "next", "seen", "total")

    def __init__(self, flops: int) -> None:
        self.seen = 1  # steps of the signature added so far (the first, counted one)
        self.next = 2
        self.n, self.total, self.lo, self.hi = 1, flops, flops, flops
        self.dependent = False

    def add(self, flops: int) -> None:
        self.n += 1
        self.total += flops
        self.lo, self.hi = min(self.lo, flops), max(self.hi, flops)

    @property
    def mean(self) -> float:
        return self.total / self.n


_MAX_REFS = 8
_IN_RUN: tuple[str, int | None, str, Any] = ("run", None, "", None)
"""The open step is one more step of the run (see ``FlopTracker._run_key``): nothing to add or stop at its end."""


@dataclass(frozen=True)
class EpochFlops:
    """FLOPs of one epoch's steps: training (forward + backward) and evaluation (forward).

    ``method`` is ``"interpolated-verified"`` when at least one step's count came from the verified polynomial,
    ``"counted"`` when every step's count was counted (observed on a real step, or a cache hit of such a count),
    ``"none"`` when no step was seen. ``steps`` gives the number of steps per method.
    """

    train_flops: float
    eval_flops: float
    method: EpochMethod
    steps: Mapping[str, int] = field(default_factory=dict)
    train_hardware_flops: float | None = None
    """Training FLOPs the device ran: ``train_flops`` plus activation checkpointing's recompute (PaLM's hardware
    FLOPs); ``None`` = same as ``train_flops``."""

    train_flops_range: tuple[float, float] | None = None
    """For a ``sampled`` epoch: the training FLOPs if every unwatched step of a data-dependent signature had done the
    least / the most work of its watched steps (``train_flops`` lies between)."""
    note: str | None = None
    """Why the epoch is ``sampled`` or ``estimated``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", MappingProxyType(dict(self.steps)))


class _Line:
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


class FlopTracker:
    """Counts the FLOPs of a run's steps for any adapter (see the module docstring for the method).

    Args:
        engine: the counting engine; default a new :class:`~green_callbacks.core.flops.TorchFlopCounter` whose meta
            replays (compiled models only) raise instead of falling back to a real step.
        interpolate: predict new lengths from a verified polynomial (default True); False counts every new
            signature on its first real step.
        max_degree: degree of the polynomial fitted per varying dimension (2: a transformer's step is at most
            quadratic in the sequence length).
        every_step: a signature found data-dependent has every later step watched (exact epochs, a counter around
            every such step) instead of 1 in 8 (an estimate with its range).
    """

    def __init__(self, engine: Any = None, *, interpolate: bool = True, max_degree: int = 2,
                 every_step: bool = False) -> None:
        if max_degree < 0:
            raise ValueError(f"max_degree={max_degree!r} must be a non-negative integer.")
        if engine is None:
            from green_callbacks.core.flops.torch_engine import TorchFlopCounter

            engine = TorchFlopCounter(fallback_to_real_step=False)  # a replay never runs a real (user) step
        self.engine = engine
        self.interpolate = bool(interpolate)
        self.max_degree = int(max_degree)
        self.every_step = bool(every_step)
        self._checks: dict[Hashable, _Check] = {}  # observed signature -> its later checks
        self._run_check = 0  # the step of the current run that is the run signature's next check (0: none)
        self._epoch_keys: dict[Hashable, int] = {}  # signature -> its steps in this epoch's sums at its cached count
        self._epoch_sampled: dict[Hashable, list[Any]] = {}  # data-dependent signature -> [kind, watched FLOPs,
        # watched steps, unwatched steps] of this epoch
        self._epoch_note: str | None = None
        self._past_keys: list[frozenset[Hashable]] = []  # per closed epoch: the signatures it added
        self._epoch_notes: list[str | None] = []
        self._epoch_ranges: list[list[float] | None] = []
        self._exact: dict[Hashable, tuple[int, str]] = {}  # (static, dims) -> (FLOPs, "counted" | "interpolated-…")
        self._refs: dict[Hashable, list[tuple[int, ...]]] = {}  # static -> counted dims no line passed through
        self._lines: dict[Hashable, _Line] = {}
        self._current: tuple[str, int | None, str, Any] | None = None
        # consecutive steps of one known signature are counted as a run, added to the sums when it ends (a step of
        # another signature, the epoch's end, info()): the engine gives such a step the very same key object
        self._run_key: Hashable | None = None
        self._run: tuple[str, int, str, int] = ("train", 0, "counted", 0)  # kind, FLOPs per step, method, recompute
        self._recompute: dict[Hashable, int] = {}  # signature -> FLOPs activation checkpointing re-runs per step
        self._no_lines: set[Hashable] = set()  # static parts with recompute: every new length is counted
        self._run_steps = 0  # its steps not yet in the sums
        self._looked_up: tuple[Hashable, tuple[int, str]] | None = None  # lookup()'s last known signature
        self.watching = False
        """The open step is a new signature whose count is running (until :meth:`pause`, :meth:`end` or
        :meth:`discard`); a plain attribute: read after every step's begin."""
        self._epoch = {"train": 0, "eval": 0, "hardware": 0}
        self._epoch_steps = {"counted": 0, "interpolated-verified": 0, "sampled": 0}
        self._counts = {"observed": 0, "meta": 0, "interpolated": 0, "verifications_failed": 0, "steps": 0,
                        "checks": 0, "checks_failed": 0}
        self.replaying = False  # a new signature is being counted on a meta copy (``replay=``): its forwards are
        # the count's, not training steps (a plain attribute: read on every step)
        self._counting_s = 0.0
        self._epoch_methods: list[str] = []
        self._warned: set[str] = set()

    # -- per step -----------------------------------------------------------------------------------------------

    def begin(self, kind: Kind, model: Any, batch: Any, replay: Any = None) -> Hashable | None:
        """A step of ``kind`` on ``batch`` is about to run; a new signature opens a counter around it.

        A step whose FLOPs are known (a cache hit, a prediction, a replay) is counted now, as one more step of a run
        (consecutive steps of one signature: the engine hands such a step the very key object of the previous one,
        so nothing is hashed; the run goes into the sums when a step of another signature begins, and before any
        figure is read): :meth:`end` then only closes it, :meth:`discard` takes it back. Returns the step's
        signature (``None`` when no step was opened): adapters key per-signature facts on it (the batch's samples
        and tokens), by identity for a step like the previous one.

        A second ``begin`` before ``end`` (a step that calls the model twice) is part of the open step.

        ``replay``: for a model whose real step the counter cannot see op by op (``torch.compile``: inductor's fused
        kernels), a ``forward(model, batch)`` returning the loss; a new signature is then counted on a meta copy of
        the *uncompiled* model instead, with every random generator (torch CPU/CUDA, NumPy, Python) restored after.
        """
        if self._current is not None or self.replaying:
            return None
        key = self.engine.step_key(kind, model, batch)
        if key is self._run_key:  # the signature of the previous step: one more step of the run
            self._run_steps += 1
            if self._run_steps != self._run_check:
                self._current = _IN_RUN
                return key
            if self._check_due(key):
                self._run_steps -= 1  # this step is the signature's next check: watched, not one more of the run
                self._end_run()
                return self._open_check(kind, model, key)
            self._current = _IN_RUN
            return key
        self._end_run()
        found = self._exact.get(key)
        if found is not None and self._checks:
            check = self._checks.get(key)
            if check is not None and check.seen + 1 == check.next and self._check_due(key):
                return self._open_check(kind, model, key)
        if found is None:
            static, dims = key
            predicted = self._predict(static, dims) if self.interpolate else None
            if predicted is not None:
                found = self._exact[key] = (predicted, "interpolated-verified")
                self._counts["interpolated"] += 1
            elif replay is not None:
                flops, recompute = self._replay(kind, model, replay, batch)
                found = self._exact[key] = (flops, "counted")
                self._note_recompute(key, recompute)
                if self.interpolate:
                    self._learn(static, dims, flops)
            else:
                self._current = (kind, None, "counted", (static, dims, self.engine.start_observing(model)))
                self.watching = True
                return key
        self._run_key, self._run_steps = key, 1
        self._run = (kind, found[0], found[1], self._recompute.get(key, 0) if self._recompute else 0)
        check = self._checks.get(key) if self._checks else None
        self._run_check = 0 if check is None else check.next - check.seen  # the run's step that is the next check
        self._current = _IN_RUN
        return key

    def _check_due(self, key: Hashable) -> bool:
        """Whether the due check of ``key`` runs: not when its count lies on a verified polynomial (#20), whose own
        verification and spot checks already check it against other counts; its checks then stop."""
        check = self._checks[key]
        if not check.dependent and self.interpolate and not self.every_step:
            line, _ = self._line_of(key[0], key[1], create=False)  # type: ignore[index]
            if line is not None and line.verified and not line.failed:
                check.next = 0  # never again (a later failure of the line counts every new length anew)
                self._run_check = 0
                return False
        return True

    def _open_check(self, kind: Kind, model: Any, key: Hashable) -> Hashable:
        """Watch this step of a known signature (a later check, or a data-dependent signature's sample): nothing
        extra runs, the counter watches the real step as it did the first one."""
        self._run_key = None
        static, dims = key  # type: ignore[misc]
        self._current = (kind, None, "check", (static, dims, self.engine.start_observing(model)))
        self.watching = True
        return key

    # -- steps counted by a caller that watches the run itself (the loop Tracker's StepWatch) ------------------------

    def lookup(self, kind: Kind, model: Any, batch: Any) -> tuple[Hashable, tuple[int, str] | None]:
        """A step's signature and, when known (counted before, or the verified polynomial's prediction), its
        ``(FLOPs, method)``; nothing is opened or added."""
        key = self.engine.step_key(kind, model, batch)
        last = self._looked_up
        if last is not None and last[0] is key:  # the previous step's signature (the same key object): not hashed
            return last
        found = self._exact.get(key)
        if found is None and self.interpolate:
            predicted = self._predict(*key)
            if predicted is not None:
                found = self._exact[key] = (predicted, "interpolated-verified")
                self._counts["interpolated"] += 1
        self._looked_up = None if found is None else (key, found)
        return key, found

    def add_observed(self, key: Hashable, flops: int) -> None:
        """The FLOPs of signature ``key``, counted on a real step the caller watched: cached and fitted."""
        static, dims = key  # type: ignore[misc]
        self._counts["observed"] += 1
        self._exact[key] = (int(flops), "counted")
        if self.interpolate:
            self._learn(static, dims, int(flops))

    def add_steps(self, kind: Kind, flops: int, method: str, steps: int = 1) -> None:
        """``steps`` steps of ``kind`` with ``flops`` each, obtained by ``method``, to the epoch."""
        self._end_run()
        self._add(kind, flops, method, steps)

    def add_unobserved(self, steps: int) -> None:
        """``steps`` steps of this epoch whose FLOPs could not be counted: the epoch's (and the run's) FLOPs are a
        lower bound, which :meth:`info` says (``unobserved_steps``, ``lower_bound``)."""
        self._counts["unobserved_steps"] = self._counts.get("unobserved_steps", 0) + int(steps)

    def _end_run(self) -> None:
        """Add the run's steps to the sums (its signature stays known: a later step of it starts a new run)."""
        if self._run_steps:
            kind, flops, method, recompute = self._run
            key, steps = self._run_key, self._run_steps
            self._run_steps = 0
            check = self._checks.get(key) if self._checks else None
            if check is not None:
                check.seen += steps
            if method == "sampled":  # a data-dependent signature: unwatched steps, estimated at the epoch's end
                self._sampled_entry(key, kind)[3] += steps
                self._counts["steps"] += steps
                return
            self._add(kind, flops, method, steps, recompute)
            self._epoch_keys[key] = self._epoch_keys.get(key, 0) + steps

    def _replay(self, kind: Kind, model: Any, forward: Any, batch: Any) -> tuple[int, int]:
        start = time.perf_counter()
        self.replaying = True
        state = rng.save()
        try:
            count = self.engine.count_train_step if kind == "train" else self.engine.count_eval_step
            return _split(count(model, forward, batch))
        finally:
            rng.restore(state)
            self.replaying = False
            self._counts["meta"] += 1
            self._counting_s += time.perf_counter() - start

    def pause(self) -> None:
        """The open step's own work is done (its backward ran): a counter watching it stops here, so the optimizer's
        work is not counted; the count waits for :meth:`end` (added, and cached for the signature) or
        :meth:`discard` (dropped: a step skipped after its forward must not stand for its signature)."""
        current = self._current
        if current is None or current[3] is None or current[3][2] is None:
            return
        kind, _, method, (static, dims, handle) = current
        self.watching = False
        self._current = (kind, self._stop(kind, handle), method, (static, dims, None))

    def _stop(self, kind: str, handle: Any) -> tuple[int, int]:
        start = time.perf_counter()
        try:
            return _split(self.engine.stop_observing(handle, kind))
        finally:
            self._counting_s += time.perf_counter() - start

    def end(self) -> None:
        """The step opened by :meth:`begin` has run its backward (training) or forward (evaluation)."""
        current, self._current = self._current, None
        if current is None or current[3] is None:  # none open, or one more step of the run
            return
        self.watching = False
        kind, flops, method, (static, dims, handle) = current
        if handle is not None:
            flops = self._stop(kind, handle)
        flops, recompute = flops
        if method == "check":
            self._checked(kind, (static, dims), flops, recompute)
            return
        self._counts["observed"] += 1
        self._checks[(static, dims)] = _Check(flops)  # (every_step: every later step is a check)
        self._epoch_keys[(static, dims)] = self._epoch_keys.get((static, dims), 0) + 1
        self._exact[(static, dims)] = (flops, "counted")
        self._note_recompute((static, dims), recompute)
        if self.interpolate:
            self._learn(static, dims, flops)
        self._add(kind, flops, method, 1, recompute)

    def _sampled_entry(self, key: Hashable, kind: str) -> list[Any]:
        entry = self._epoch_sampled.get(key)
        if entry is None:
            entry = self._epoch_sampled[key] = [kind, 0, 0, 0]
        return entry

    def _checked(self, kind: str, key: Hashable, flops: int, recompute: int) -> None:
        """A later check of ``key`` counted ``flops``: agreeing, the step is one more counted step and the next check
        is 8x further; differing, the signature is data-dependent from now on (its steps sampled, this epoch's steps
        of it re-estimated, earlier epochs with it re-labelled ``estimated``)."""
        check = self._checks[key]
        check.seen += 1
        check.add(flops)
        if check.dependent:
            entry = self._sampled_entry(key, kind)
            entry[1] += flops
            entry[2] += 1
            self._counts["steps"] += 1
            check.next = check.seen + (1 if self.every_step else _SAMPLE_EVERY)
            return
        self._counts["checks"] += 1
        cached = self._exact[key][0]
        if flops == cached:
            self._add(kind, flops, "counted", 1, recompute)
            self._epoch_keys[key] = self._epoch_keys.get(key, 0) + 1
            check.next = check.seen + 1 if self.every_step else check.seen * _CHECK_FACTOR
            return
        self._counts["checks_failed"] += 1
        check.dependent = True
        check.next = check.seen + (1 if self.every_step else _SAMPLE_EVERY)
        self._exact[key] = (cached, "sampled")
        static = key[0]  # type: ignore[index]
        self._no_lines.add(static)  # its lengths are not a function of the shape: none predicted from it
        self._exact = {k: v for k, v in self._exact.items() if v[1] != "interpolated-verified" or k[0] != static}
        self._looked_up = None
        # this epoch's steps of it added at the first count: taken back, estimated from the watched ones
        earlier = self._epoch_keys.pop(key, 0)
        entry = self._sampled_entry(key, kind)
        if earlier:
            self._epoch[kind] -= earlier * cached
            self._epoch_steps["counted"] -= earlier
            self._counts["steps"] -= earlier
            if kind == "train":
                self._epoch["hardware"] -= earlier * (cached + self._recompute.get(key, 0))
            if self.every_step:  # every step of it was watched, each agreeing with the first count: exact
                entry[1] += earlier * cached
                entry[2] += earlier
            else:
                entry[3] += earlier
            self._counts["steps"] += earlier
        entry[1] += flops
        entry[2] += 1
        self._counts["steps"] += 1
        reason = (f"the FLOPs of one input signature differ between its steps ({cached} then {flops}): the work "
                  "depends on the data (routing, a branch on values, layers skipped at random)")
        for i, keys in enumerate(self._past_keys):
            if key in keys:
                self._epoch_methods[i] = "estimated"
                self._epoch_notes[i] = reason + "; this epoch's figure used the first count and is not corrected"
        if "data" not in self._warned:
            self._warned.add("data")
            mode = "every step" if self.every_step else f"1 step in {_SAMPLE_EVERY}"
            warnings.warn(
                f"FLOPs: {reason}. Such a signature now has {mode} watched; an epoch with unwatched steps is "
                "labelled 'sampled' with the range of its FLOPs in the record (flops='every-step' counts every "
                "step).",
                FlopCountWarning,
                stacklevel=3,
            )

    def _note_recompute(self, key: Hashable, recompute: int) -> None:
        """A signature whose counted step re-ran forwards (activation checkpointing): its hardware FLOPs are kept,
        and its static part predicts no lengths (the recompute is not fitted: every new length is counted)."""
        if recompute:
            self._recompute[key] = recompute
            self._no_lines.add(key[0])  # type: ignore[index]

    def _add(self, kind: str, flops: int, method: str, steps: int, recompute: int = 0) -> None:
        """``steps`` steps of ``flops`` each (and ``recompute`` more on the device), obtained by ``method``."""
        self._epoch[kind] += steps * int(flops)
        if kind == "train":
            self._epoch["hardware"] += steps * (int(flops) + int(recompute))
        self._epoch_steps[method] += steps
        self._counts["steps"] += steps

    def discard(self) -> None:
        """Forget the open step (it was skipped, or raised): its counter is closed, or its FLOPs taken back."""
        current, self._current = self._current, None
        if current is None:
            return
        if current is _IN_RUN:
            self._run_steps -= 1
            return
        if current[3][2] is None:  # paused: the count is dropped
            return
        self.watching = False
        try:
            self.engine.stop_observing(current[3][2], current[0])
        except Exception:  # closing after a failed step: the count is dropped anyway
            pass

    @property
    def in_step(self) -> bool:
        return self._current is not None

    def refresh(self, model: Any) -> None:
        """Re-read ``model``'s module and parameter lists (call at epoch start; flags are read every step)."""
        refresh = getattr(self.engine, "refresh", None)
        if refresh is not None:
            refresh(model)

    # -- per epoch ----------------------------------------------------------------------------------------------

    def take_epoch(self) -> EpochFlops:
        """This epoch's FLOPs (steps ended since the last call) and how they were obtained; resets the sums."""
        self._end_run()
        sums = {"train": float(self._epoch["train"]), "eval": float(self._epoch["eval"]),
                "hardware": float(self._epoch["hardware"])}
        low = high = sums["train"]
        for key, (kind, watched, n, unwatched) in self._epoch_sampled.items():
            check = self._checks[key]
            estimate = watched + unwatched * check.mean
            sums[kind] += estimate
            self._epoch_steps["sampled"] += n + unwatched
            if kind == "train":
                sums["hardware"] += estimate + (n + unwatched) * self._recompute.get(key, 0)
                low += watched + unwatched * check.lo
                high += watched + unwatched * check.hi
        steps = dict(self._epoch_steps)
        note = self._epoch_note
        sampled = any(entry[3] for entry in self._epoch_sampled.values())
        if sampled and note is None:
            note = (f"data-dependent work: 1 step in {_SAMPLE_EVERY} of such signatures watched, the others at "
                    "the mean of the watched ones")
        method: EpochMethod = ("estimated" if self._epoch_note is not None else "sampled" if sampled
                               else "interpolated-verified" if steps["interpolated-verified"]
                               else "counted" if steps["counted"] or steps["sampled"] else "none")
        flops_range = (low, high) if sampled else None
        out = EpochFlops(sums["train"], sums["eval"], method, steps, sums["hardware"], flops_range, note)
        self._past_keys.append(frozenset(self._epoch_keys) | frozenset(self._epoch_sampled))
        self._epoch_methods.append(method)
        self._epoch_notes.append(note)
        self._epoch_ranges.append(None if flops_range is None else list(flops_range))
        self._reset_sums()
        return out

    def _reset_sums(self) -> None:
        self._epoch = {"train": 0, "eval": 0, "hardware": 0}
        self._epoch_steps = {"counted": 0, "interpolated-verified": 0, "sampled": 0}
        self._epoch_keys = {}
        self._epoch_sampled = {}
        self._epoch_note = None

    def reset_epoch(self) -> None:
        """Forget the sums since the last :meth:`take_epoch` (steps outside any epoch); no epoch is recorded."""
        self._end_run()
        self._reset_sums()

    def info(self) -> dict[str, Any]:
        """How the FLOPs were counted: engine, convention, lower-bound flag, counts made; JSON-ready."""
        self._end_run()
        uncounted = list(getattr(self.engine, "uncounted_ops", ()))
        return {
            "engine": _engine_name(),
            "where": _where(self._counts),
            "convention": CONVENTION,
            "lower_bound": bool(uncounted) or bool(self._counts.get("unobserved_steps")),
            "uncounted_ops": uncounted,
            "interpolation": (f"polynomial of degree <= {self.max_degree} per varying dimension, exact rational fit, "
                              "verified on a further count, spot checks at the 16th, 64th, 256th... value")
            if self.interpolate else "off",
            "counts": dict(self._counts),
            "activation_checkpointing": bool(self._recompute),
            "hardware_flops": ("model FLOPs plus the forwards activation checkpointing re-runs in the backward "
                               "(counted apart on the observed step; green/hfu)") if self._recompute
            else "equal to the model FLOPs (no recompute seen)",
            "epoch_methods": list(self._epoch_methods),
            "epoch_notes": list(self._epoch_notes),
            "epoch_train_flops_range": list(self._epoch_ranges),
            "verification": ("each counted signature watched again on its 2nd, 4th, 8th, 16th, ... step (log2 of its "
                             "steps); a differing count makes it data-dependent: "
                             + ("every step watched" if self.every_step
                                else f"1 step in {_SAMPLE_EVERY} watched, the others estimated")),
            "data_dependent": {f"{key[0][0]} {list(key[1])}": {"watched": c.n, "mean": c.mean, "min": c.lo,
                                                               "max": c.hi}
                               for key, c in self._checks.items() if c.dependent},
            "lines_failed": sum(1 for line in self._lines.values() if line.failed),
            "counting_time_s": self._counting_s,
        }

    def per_signature(self) -> dict[str, dict[str, Any]]:
        """``"<kind> <tensor dims>" -> {"flops", "method"}`` for every signature met so far (JSON-ready)."""
        return {f"{static[0]} {list(dims)}": {"flops": flops, "method": method}
                for (static, dims), (flops, method) in self._exact.items()}

    # -- interpolation ------------------------------------------------------------------------------------------

    def _line_of(self, static: Hashable, dims: tuple[int, ...], create: bool) -> tuple[_Line | None, int]:
        """The line through ``dims`` (one dimension varies from a reference signature of the static part), and its
        x; ``(None, 0)`` when no reference differs from ``dims`` in exactly one (possibly repeated) dimension."""
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
            if line is None and create:
                line = self._lines[line_key] = _Line(self.max_degree)
                ref_flops = self._exact.get((static, ref))
                if ref_flops is not None and ref_flops[1] == "counted":
                    line.add(ref_values.pop(), ref_flops[0])
            if line is not None:
                return line, values.pop()
        return None, 0

    def _predict(self, static: Hashable, dims: tuple[int, ...]) -> int | None:
        if static in self._no_lines:
            return None
        line, x = self._line_of(static, dims, create=False)
        return None if line is None else line.predict(x)

    def _learn(self, static: Hashable, dims: tuple[int, ...], flops: int) -> None:
        line, x = self._line_of(static, dims, create=True)
        if line is None:
            refs = self._refs.setdefault(static, [])
            if len(refs) < _MAX_REFS:
                refs.append(dims)
            return
        if not line.add(x, flops):
            self._counts["verifications_failed"] += 1
            # predictions made from this line before are dropped from the cache: their shapes are counted anew
            self._end_run()
            self._run_key = self._looked_up = None
            predicted = {k for k, v in self._exact.items() if v[1] == "interpolated-verified"}
            self._exact = {k: v for k, v in self._exact.items() if v[1] != "interpolated-verified"}
            reason = (f"a count at {x} contradicted the polynomial that predicted other lengths; the FLOPs of the "
                      "predicted steps are kept, not corrected")
            if self._epoch_steps["interpolated-verified"]:
                self._epoch_note = reason
            for i, keys in enumerate(self._past_keys):
                if self._epoch_methods[i] == "interpolated-verified" and keys & predicted:
                    self._epoch_methods[i] = "estimated"
                    self._epoch_notes[i] = reason
            if "poly" not in self._warned:
                self._warned.add("poly")
                warnings.warn(
                    f"FLOPs: the step's FLOPs are not a polynomial of degree <= {self.max_degree} in a varying "
                    f"input dimension (a count at {x} did not match the fit through {sorted(line.points)[:4]}); "
                    "every new value of it is counted on its first real step instead.",
                    FlopCountWarning,
                    stacklevel=3,
                )


def _split(step: Any) -> tuple[int, int]:
    """``(model FLOPs, recompute FLOPs)`` of an engine's count."""
    return int(step.flops), int(getattr(step, "recompute_flops", 0))


def _where(counts: Mapping[str, int]) -> str:
    """How the counts of this run were made, from what was counted (a meta copy, the observed real step, or both)."""
    observed, meta = counts.get("observed", 0), counts.get("meta", 0)
    parts = []
    if observed:
        parts.append(f"observed: FlopCounterMode around the training's own steps ({observed} counted; nothing re-run)")
    if meta:
        parts.append(f"meta: FlopCounterMode around a meta-device copy of the uncompiled model ({meta} counted; no "
                     "real arithmetic, random generators restored)")
    return "; ".join(parts) if parts else "nothing counted yet"


def _engine_name() -> str:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return "torch.utils.flop_counter.FlopCounterMode"
    return f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__}) with green_callbacks formulas"

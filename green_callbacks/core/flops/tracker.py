"""The one FLOP wrapper every adapter drives: one call before a step, one after, one per epoch.

    tracker = FlopTracker()                        # one per run: it owns every cache
    tracker.begin("train", model, batch)           # before the framework runs the step (its key: a few µs)
    ...                                            # the framework's own forward + backward
    tracker.end()                                  # after the backward, before the optimizer step
    epoch = tracker.take_epoch()                   # EpochFlops(train_flops, eval_flops, method, steps)
    tracker.describe()                             # how the FLOPs were counted (FlopInfo), for the record

**Counting never re-runs user code.** The first step of each new input signature is *observed*: the tracker
enters torch's ``FlopCounterMode`` (with the engine's formulas) at ``begin`` and leaves it at ``end``, so the
counter watches the step the training runs anyway. Nothing is replayed, no random number is drawn, no weight,
gradient, buffer or user state is touched: a run with the callback computes bit-identical weights and calls the
user's step exactly as often as a run without it. Every later step of that signature is a cache hit, but for the
later checks (its 2nd, 4th, 8th, ... step watched again, :mod:`~green_callbacks.core.flops.verification`): a check
that differs makes the signature data-dependent and its epochs ``sampled``.

**A bounded number of counts per model.** Signatures that differ in one dimension (the padded length) are points of
a polynomial fitted, verified and then used to predict new lengths (:mod:`~green_callbacks.core.flops.polynomial`).
A hand-driven loop that watches its steps itself (the loop ``Tracker``'s
:class:`~green_callbacks.core.flops.step_watch.StepWatch`) uses :meth:`FlopTracker.lookup` and the ``add_*`` calls
instead of ``begin``/``end``: the same caches, checks and labels. See docs/flops.md.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Hashable, Mapping
from typing import Any

from green_callbacks.core import rng
from green_callbacks.core.flops.polynomial import Lines, describe_lines
from green_callbacks.core.flops.result import CONVENTION, FlopCountWarning, Kind
from green_callbacks.core.flops.verification import (
    EPOCH_METHODS,
    NEVER,
    SAMPLE_EVERY,
    Check,
    EpochBook,
    EpochFlops,
    data_reason,
    describe_checks,
)
from green_callbacks.core.record_sections import DataDependentSignature, FlopInfo, to_json

__all__ = ["EPOCH_METHODS", "EpochFlops", "FlopTracker"]

_IN_RUN: tuple[str, int | None, str, Any] = ("run", None, "", None)
"""The open step is one more step of the run (see ``FlopTracker._run_key``): nothing to add or stop at its end."""


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
        self._checks: dict[Hashable, Check] = {}  # observed signature -> its later checks
        self._run_check = 0  # the step of the current run that is the run signature's next check (0: none)
        self._run_due = False  # add_known: that check was found due (and not yet watched)
        self._book = EpochBook()
        self._exact: dict[Hashable, tuple[int, str]] = {}  # (static, dims) -> (FLOPs, "counted" | "interpolated-…")
        self._lines = Lines(self.max_degree)
        self._current: tuple[str, int | None, str, Any] | None = None
        # consecutive steps of one known signature are counted as a run, added to the sums when it ends (a step of
        # another signature, the epoch's end, info()): the engine gives such a step the very same key object
        self._run_key: Hashable | None = None
        self._run: tuple[str, int, str, int] = ("train", 0, "counted", 0)  # kind, FLOPs per step, method, recompute
        self._recompute: dict[Hashable, int] = {}  # signature -> FLOPs activation checkpointing re-runs per step
        self._once: set[Hashable] = set()  # signatures counted by a replay: their later steps cannot be re-checked
        self._run_steps = 0  # its steps not yet in the sums
        self._looked_up: tuple[Hashable, tuple[int, str]] | None = None  # lookup()'s last known signature
        self.watching = False
        """The open step is a new signature whose count is running (until :meth:`pause`, :meth:`end` or
        :meth:`discard`); a plain attribute: read after every step's begin."""
        self._counts = {"observed": 0, "meta": 0, "interpolated": 0, "verifications_failed": 0, "steps": 0,
                        "checks": 0, "checks_failed": 0}
        self.replaying = False  # a new signature is being counted on a meta copy (``replay=``): its forwards are
        # the count's, not training steps (a plain attribute: read on every step)
        self._counting_s = 0.0
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
            if self._run_steps == self._run_check and self._check_due(key):
                self._run_steps -= 1  # this step is the signature's next check: watched, not one more of the run
                self._end_run()
                return self._open(kind, model, key, "check")
            self._current = _IN_RUN
            return key
        self._end_run()
        found = self._exact.get(key)
        if found is not None and self._checks:
            check = self._checks.get(key)
            if check is not None and check.due and self._check_due(key):
                return self._open(kind, model, key, "check")
        if found is None:
            static, dims = key
            predicted = self._lines.predict(static, dims) if self.interpolate else None
            if predicted is not None:
                found = self._exact[key] = (predicted, "interpolated-verified")
                self._counts["interpolated"] += 1
            elif replay is not None:
                flops, recompute = self._replay(kind, model, replay, batch)
                found = self._exact[key] = (flops, "counted")
                self._once.add(key)
                self._note_recompute(key, recompute)
                if self.interpolate:
                    self._learn(static, dims, flops)
            else:
                return self._open(kind, model, key, "counted")
        self._start_run(kind, key, found)
        self._run_steps = 1
        self._current = _IN_RUN
        return key

    def _start_run(self, kind: Kind, key: Hashable, found: tuple[int, str]) -> None:
        """Steps of the known signature ``key`` begin a run (the previous run was added to the sums)."""
        self._run_key, self._run_steps, self._run_due = key, 0, False
        method = "counted-once" if self._once and found[1] == "counted" and key in self._once else found[1]
        self._run = (kind, found[0], method, self._recompute.get(key, 0) if self._recompute else 0)
        check = self._checks.get(key) if self._checks else None
        # the run's step that is the next check (an overdue one: its first)
        self._run_check = 0 if check is None else max(check.next - check.seen, 1)

    def _check_due(self, key: Hashable) -> bool:
        """Whether the due check of ``key`` runs: not when its count lies on a verified polynomial (#20), whose own
        verification and spot checks already check it against other counts; its checks then stop."""
        check = self._checks[key]
        if not check.dependent and self.interpolate and not self.every_step and self._lines.verified_at(*key):
            check.next = NEVER  # never again (a later failure of the line counts every new length anew)
            self._run_check = 0
            return False
        return True

    def _open(self, kind: Kind, model: Any, key: Hashable, method: str) -> Hashable:
        """Watch this step: a new signature's count, or a known one's later check (or a data-dependent signature's
        sample). Nothing extra runs, the counter watches the real step."""
        if method == "check":
            self._run_key = None
        static, dims = key  # type: ignore[misc]
        self._current = (kind, None, method, (static, dims, self.engine.start_observing(model)))
        self.watching = True
        return key

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
        if method == "check":
            self._checked(kind, (static, dims), *flops)
        else:
            self.add_observed(kind, (static, dims), *flops)

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
            predicted = self._lines.predict(*key)
            if predicted is not None:
                found = self._exact[key] = (predicted, "interpolated-verified")
                self._counts["interpolated"] += 1
        self._looked_up = None if found is None else (key, found)
        return key, found

    def add_observed(self, kind: Kind, key: Hashable, flops: int, recompute: int = 0, steps: int = 1) -> bool:
        """Signature ``key`` counted ``flops`` (``recompute`` more re-run by activation checkpointing) on a real step:
        cached, fitted, and its ``steps`` steps (that one and any of this epoch before it) added. Returns whether
        the signature's next step is due a check (watch it: :meth:`add_checked`)."""
        self._end_run()
        self._run_key = None
        flops, recompute = int(flops), int(recompute)
        self._counts["observed"] += 1
        self._checks[key] = check = Check(flops, steps)  # (every_step: every later step is a check)
        self._exact[key] = (flops, "counted")
        self._note_recompute(key, recompute)
        if self.interpolate:
            self._learn(*key, flops)  # type: ignore[misc]
        self._book.add(kind, flops, "counted", steps, recompute, key)
        return check.due and self._check_due(key)

    def add_known(self, kind: Kind, key: Hashable, found: tuple[int, str], steps: int = 1) -> bool:
        """``steps`` unwatched steps of a known signature (``found``: :meth:`lookup`'s figure), added to the epoch
        as a run (the same key object as the previous step's: nothing hashed). Returns whether its next step is due
        a check (a check the caller could not watch stays due)."""
        if key is not self._run_key:
            self._end_run()
            self._start_run(kind, key, found)
        self._run_steps += steps
        if not 0 < self._run_check <= self._run_steps + 1:
            return False
        self._run_due = self._run_due or self._check_due(key)  # (an overdue check: decided once)
        return self._run_due

    def add_checked(self, kind: Kind, key: Hashable, flops: int, recompute: int = 0) -> bool:
        """A step of a known signature watched again (a later check): compared with its count, added. Returns
        whether its next step is due a check. A predicted signature's watched step is its count (the polynomial's
        own check: :meth:`add_observed`)."""
        if key not in self._checks:
            return self.add_observed(kind, key, flops, recompute)
        self._end_run()
        self._run_key = None  # its figure or label may change: a later step starts a new run
        self._checked(kind, key, int(flops), int(recompute))
        check = self._checks[key]
        return check.due and self._check_due(key)

    def add_unobserved(self, steps: int) -> None:
        """``steps`` steps of this epoch whose FLOPs could not be counted: the epoch's (and the run's) FLOPs are a
        lower bound, which :meth:`info` says (``unobserved_steps``, ``lower_bound``)."""
        self._counts["unobserved_steps"] = self._counts.get("unobserved_steps", 0) + int(steps)

    # -- bookkeeping --------------------------------------------------------------------------------------------

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
                self._book.add_unwatched(key, kind, steps)
            else:
                self._book.add(kind, flops, method, steps, recompute, key)

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

    def _checked(self, kind: str, key: Hashable, flops: int, recompute: int) -> None:
        """A later check of ``key`` counted ``flops``: agreeing, the step is one more counted step and the next check
        is twice as far; differing, the signature is data-dependent from now on (its steps sampled, this epoch's
        steps of it re-estimated, earlier epochs with it re-labelled ``estimated``)."""
        cached = self._exact[key][0]
        outcome = self._checks[key].record(flops, cached, self.every_step)
        if outcome == "sample":
            self._book.add_watched(key, kind, flops)
            return
        self._counts["checks"] += 1
        if outcome == "agree":
            self._book.add(kind, flops, "counted", 1, recompute, key)
            return
        self._counts["checks_failed"] += 1
        self._exact[key] = (cached, "sampled")
        static = key[0]  # type: ignore[index]
        self._lines.off.add(static)  # its lengths are not a function of the shape: none predicted from it
        self._exact = {k: v for k, v in self._exact.items() if v[1] != "interpolated-verified" or k[0] != static}
        self._looked_up = None
        # this epoch's steps of it added at the first count: taken back, estimated from the watched ones (with
        # every_step, every one of them was watched and agreed with the first count: exact)
        self._book.to_sampled(key, kind, cached, self._recompute.get(key, 0), watched=self.every_step)
        self._book.add_watched(key, kind, flops)
        reason = data_reason(cached, flops)
        self._book.relabel(lambda keys, _: key in keys,
                           reason + "; this epoch's figure used the first count and is not corrected")
        mode = "every step" if self.every_step else f"1 step in {SAMPLE_EVERY}"
        self._warn_once("data", f"FLOPs: {reason}. Such a signature now has {mode} watched; an epoch with unwatched "
                        "steps is labelled 'sampled' with the range of its FLOPs in the record (flops='every-step' "
                        "counts every step).")

    def _note_recompute(self, key: Hashable, recompute: int) -> None:
        """A signature whose counted step re-ran forwards (activation checkpointing): its hardware FLOPs are kept,
        and its static part predicts no lengths (the recompute is not fitted: every new length is counted)."""
        if recompute:
            self._recompute[key] = recompute
            self._lines.off.add(key[0])  # type: ignore[index]

    def _learn(self, static: Hashable, dims: tuple[int, ...], flops: int) -> None:
        failed = self._lines.learn(static, dims, flops, self._exact)
        if failed is None:
            return
        x, points = failed
        self._counts["verifications_failed"] += 1
        # predictions made from this line before are dropped from the cache: their shapes are counted anew
        self._end_run()
        self._run_key = self._looked_up = None
        predicted = {k for k, v in self._exact.items() if v[1] == "interpolated-verified"}
        self._exact = {k: v for k, v in self._exact.items() if v[1] != "interpolated-verified"}
        reason = (f"a count at {x} contradicted the polynomial that predicted other lengths; the FLOPs of the "
                  "predicted steps are kept, not corrected")
        if self._book.steps["interpolated-verified"]:
            self._book.note = reason
        self._book.relabel(lambda keys, method: method == "interpolated-verified" and bool(keys & predicted), reason)
        self._warn_once("poly", f"FLOPs: the step's FLOPs are not a polynomial of degree <= {self.max_degree} in a "
                        f"varying input dimension (a count at {x} did not match the fit through {points}); every "
                        "new value of it is counted on its first real step instead.")

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            warnings.warn(message, FlopCountWarning, stacklevel=4)

    # -- per epoch ----------------------------------------------------------------------------------------------

    def take_epoch(self) -> EpochFlops:
        """This epoch's FLOPs (steps ended since the last call) and how they were obtained; resets the sums."""
        self._end_run()
        return self._book.close(self._checks, self._recompute, self._replay_where)

    @property
    def _replay_where(self) -> str:
        return getattr(self.engine, "replay_where", None) or _META_WHERE

    def reset_epoch(self) -> None:
        """Forget the sums since the last :meth:`take_epoch` (steps outside any epoch); no epoch is recorded."""
        self._end_run()
        self._book.drop()

    def describe(self) -> FlopInfo:
        """How the FLOPs were counted: engine, convention, lower-bound flag, counts made, each epoch's label; the
        record's ``flops`` section."""
        self._end_run()
        uncounted = tuple(getattr(self.engine, "uncounted_ops", ()))
        counts = {**self._counts, "steps": self._book.steps_total}
        book = self._book
        return FlopInfo(
            engine=getattr(self.engine, "name", None) or _engine_name(),
            where=_where(counts, self._replay_where),
            convention=getattr(self.engine, "convention", None) or CONVENTION,
            lower_bound=bool(uncounted) or bool(counts.get("unobserved_steps")),
            uncounted_ops=uncounted,
            interpolation=describe_lines(self.max_degree) if self.interpolate else "off",
            counts=counts,
            activation_checkpointing=bool(self._recompute),
            hardware_flops=_hardware_text(bool(self._recompute)),
            epoch_methods=tuple(book.methods),
            epoch_notes=tuple(book.notes),
            epoch_train_flops_range=tuple(None if r is None else (r[0], r[1]) for r in book.ranges),
            verification=describe_checks(self.every_step, len(self._once), self._replay_where),
            data_dependent=tuple(DataDependentSignature(f"{key[0][0]} {list(key[1])}", **c.info())
                                 for key, c in self._checks.items() if c.dependent),
            lines_failed=self._lines.failed,
            counting_time_s=self._counting_s,
        )

    def info(self) -> dict[str, Any]:
        """:meth:`describe` as the record's JSON."""
        return to_json(self.describe())

    def per_signature(self) -> dict[str, dict[str, Any]]:
        """``"<kind> <tensor dims>" -> {"flops", "method"}`` for every signature met so far (JSON-ready)."""
        return {f"{static[0]} {list(dims)}": {"flops": flops, "method": method}
                for (static, dims), (flops, method) in self._exact.items()}


def _hardware_text(recompute: bool) -> str:
    """What the record's hardware FLOPs are, with or without activation checkpointing's recompute."""
    if recompute:
        return ("model FLOPs plus the forwards activation checkpointing re-runs in the backward (counted apart on the "
                "observed step; green/hfu)")
    return "equal to the model FLOPs (no recompute seen)"


def _split(step: Any) -> tuple[int, int]:
    """``(model FLOPs, recompute FLOPs)`` of an engine's count."""
    return int(step.flops), int(getattr(step, "recompute_flops", 0))


_META_WHERE = ("FlopCounterMode around a meta-device copy of the uncompiled model; no real arithmetic, random "
               "generators restored")


def _where(counts: Mapping[str, int], replay: str = _META_WHERE) -> str:
    """How the counts of this run were made, from what was counted (a meta copy, the observed real step, or both)."""
    observed, meta = counts.get("observed", 0), counts.get("meta", 0)
    parts = []
    if observed:
        parts.append(f"observed: FlopCounterMode around the training's own steps ({observed} counted; nothing re-run)")
    if meta:
        parts.append(f"{'meta' if replay == _META_WHERE else 'traced'}: {replay} ({meta} counted)")  # (counts: "meta")
    return "; ".join(parts) if parts else "nothing counted yet"


def _engine_name() -> str:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return "torch.utils.flop_counter.FlopCounterMode"
    return f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__}) with green_callbacks formulas"

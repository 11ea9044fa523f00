"""Later checks of a counted signature, and the epoch figures they label: ``counted``, ``sampled``, ``estimated``.

A signature's count holds for its later steps only if the shapes decide the work. So each counted signature is
watched again on its 2nd step, then its 4th, 8th, 16th, ... (x2: log2 of its steps). A differing check makes it
*data-dependent*: from then on 1 step in 8 is watched (every step with ``every_step``), and an epoch with unwatched
steps of it is ``sampled``: the watched counts plus the unwatched steps at their mean, with a range (the unwatched
steps at the smallest / largest watched count). Figures a later check contradicted are kept and re-labelled
``estimated`` with the reason. Pure bookkeeping, no I/O: the :class:`~green_callbacks.core.flops.FlopTracker`
decides when a step is watched; see docs/flops.md, "When the shape does not decide the work".
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["CHECK_FACTOR", "EPOCH_METHODS", "NEVER", "SAMPLE_EVERY", "Check", "EpochBook", "EpochFlops", "data_reason",
           "describe_checks"]

EpochMethod = Literal["counted", "counted-once", "interpolated-verified", "sampled", "estimated", "none"]
EPOCH_METHODS = ("counted", "counted-once", "interpolated-verified", "sampled", "estimated")
"""How the steps of an epoch got their FLOPs: every one from a count (observed, or the cache of one; its later
checks agreed), some from a count made once on a copy or a traced step that later steps cannot re-check
(``counted-once``: a ``torch.compile``d model's meta copy, Keras on JAX's XLA cost analysis), some from the verified
polynomial, some estimated from the watched steps of a data-dependent signature (``sampled``: with a range), or
figures a later check contradicted (``estimated``: kept, not corrected; the reason in ``epoch_notes``)."""

CHECK_FACTOR = 2
"""A counted signature is watched again on its 2nd step, then its 4th, 8th, 16th, ... (x2 each time: log2 of its
steps)."""
SAMPLE_EVERY = 8
"""A data-dependent signature has 1 step in 8 watched (every step with ``every_step=True``)."""
NEVER = 1 << 62
"""``Check.next`` of a signature checked no more (its count lies on a verified polynomial)."""


def data_reason(cached: int, flops: int) -> str:
    """Why a signature is data-dependent: its first count and a later check differ."""
    return (f"the FLOPs of one input signature differ between its steps ({cached} then {flops}): the work depends on "
            "the data (routing, a branch on values, layers skipped at random)")


def describe_checks(every_step: bool, once: int, where: str) -> str:
    """The run record's ``flops.verification``: the schedule, and the signatures counted once (not re-checked)."""
    text = ("each counted signature watched again on its 2nd, 4th, 8th, 16th, ... step (log2 of its steps); a "
            "differing count makes it data-dependent: "
            + ("every step watched" if every_step else f"1 step in {SAMPLE_EVERY} watched, the others estimated"))
    if once:
        text += f"; {once} signature(s) counted once ({where}) are not re-checked (label counted-once)"
    return text


class Check:
    """The later checks of one counted signature: its steps so far, the step of the next check, the counts watched
    (number, sum, smallest, largest) and whether they differed (the work is then data-dependent)."""

    __slots__ = ("dependent", "hi", "lo", "n", "next", "seen", "total")

    def __init__(self, flops: int, steps: int = 1) -> None:
        self.seen = steps  # steps of the signature added so far (the counted one, and any before it was counted)
        self.next = steps + 1
        self.n, self.total, self.lo, self.hi = 1, flops, flops, flops
        self.dependent = False

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def due(self) -> bool:
        """The signature's next step is a check (or a data-dependent signature's sample); a check a loop's watch
        missed (another forward took it) is due at the next step."""
        return self.seen + 1 >= self.next

    def record(self, flops: int, cached: int, every_step: bool) -> Literal["sample", "agree", "differ"]:
        """One more watched step of the signature, counting ``flops`` (``cached``: its first count); the next check
        is scheduled."""
        self.seen += 1
        self.n += 1
        self.total += flops
        self.lo, self.hi = min(self.lo, flops), max(self.hi, flops)
        if not self.dependent and flops == cached:
            self.next = self.seen + 1 if every_step else self.seen * CHECK_FACTOR
            return "agree"
        outcome: Literal["sample", "differ"] = "sample" if self.dependent else "differ"
        self.dependent = True
        self.next = self.seen + (1 if every_step else SAMPLE_EVERY)
        return outcome

    def info(self) -> dict[str, Any]:
        return {"watched": self.n, "mean": self.mean, "min": self.lo, "max": self.hi}


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


class EpochBook:
    """The open epoch's sums and the labels of the closed ones.

    Steps of a signature whose figure is known are added at it (``add``); a data-dependent signature's steps are
    kept apart, watched (their counts) and unwatched (estimated at the epoch's end, :meth:`close`).
    """

    def __init__(self) -> None:
        self.steps_total = 0  # steps added in the run
        self.methods: list[str] = []  # per closed epoch: its label, note, training FLOPs range
        self.notes: list[str | None] = []
        self.ranges: list[list[float] | None] = []
        self._past_keys: list[frozenset[Hashable]] = []  # per closed epoch: the signatures it added
        self._reset()

    def _reset(self) -> None:
        self.sums = {"train": 0, "eval": 0, "hardware": 0}
        self.steps = {"counted": 0, "counted-once": 0, "interpolated-verified": 0, "sampled": 0}
        self.keys: dict[Hashable, int] = {}  # signature -> its steps in the sums at its cached count
        self._sampled: dict[Hashable, list[Any]] = {}  # data-dependent signature -> [kind, watched FLOPs, watched
        # steps, unwatched steps]
        self.note: str | None = None

    # -- steps ------------------------------------------------------------------------------------------------

    def add(self, kind: str, flops: int, method: str, steps: int, recompute: int = 0, key: Hashable = None) -> None:
        """``steps`` steps of ``flops`` each (and ``recompute`` more on the device), obtained by ``method``."""
        self.sums[kind] += steps * int(flops)
        if kind == "train":
            self.sums["hardware"] += steps * (int(flops) + int(recompute))
        self.steps[method] += steps
        self.steps_total += steps
        if key is not None:
            self.keys[key] = self.keys.get(key, 0) + steps

    def _entry(self, key: Hashable, kind: str) -> list[Any]:
        entry = self._sampled.get(key)
        if entry is None:
            entry = self._sampled[key] = [kind, 0, 0, 0]
        return entry

    def add_watched(self, key: Hashable, kind: str, flops: int, steps: int = 1) -> None:
        """``steps`` watched steps of a data-dependent signature, ``flops`` each."""
        entry = self._entry(key, kind)
        entry[1] += steps * flops
        entry[2] += steps
        self.steps_total += steps

    def add_unwatched(self, key: Hashable, kind: str, steps: int) -> None:
        """``steps`` unwatched steps of a data-dependent signature: estimated at the epoch's end."""
        self._entry(key, kind)[3] += steps
        self.steps_total += steps

    def to_sampled(self, key: Hashable, kind: str, cached: int, recompute: int, *, watched: bool) -> None:
        """``key`` turned out data-dependent: this epoch's steps of it added at its first count ``cached`` are taken
        back and kept apart, as watched steps (``watched``: each was checked and agreed) or unwatched ones."""
        earlier = self.keys.pop(key, 0)
        if not earlier:
            return
        self.sums[kind] -= earlier * cached
        self.steps["counted"] -= earlier
        self.steps_total -= earlier
        if kind == "train":
            self.sums["hardware"] -= earlier * (cached + recompute)
        if watched:
            self.add_watched(key, kind, cached, earlier)
        else:
            self.add_unwatched(key, kind, earlier)

    # -- labels -----------------------------------------------------------------------------------------------

    def relabel(self, which: Callable[[frozenset[Hashable], str], bool], reason: str) -> None:
        """Closed epochs ``which(their signatures, their label)`` selects become ``estimated``, for ``reason``."""
        for i, keys in enumerate(self._past_keys):
            if which(keys, self.methods[i]):
                self.methods[i] = "estimated"
                self.notes[i] = reason

    def close(self, checks: Mapping[Hashable, Check], recompute: Mapping[Hashable, int], once: str) -> EpochFlops:
        """The open epoch's figures and label (its data-dependent steps estimated from ``checks``; ``once``: how
        the ``counted-once`` counts were made, for the note); resets the sums."""
        sums = {name: float(value) for name, value in self.sums.items()}
        low = high = sums["train"]
        for key, (kind, watched, n, unwatched) in self._sampled.items():
            check = checks[key]
            estimate = watched + unwatched * check.mean
            sums[kind] += estimate
            self.steps["sampled"] += n + unwatched
            if kind == "train":
                sums["hardware"] += estimate + (n + unwatched) * recompute.get(key, 0)
                low += watched + unwatched * check.lo
                high += watched + unwatched * check.hi
        steps = dict(self.steps)
        note = self.note
        sampled = any(entry[3] for entry in self._sampled.values())
        if sampled and note is None:
            note = (f"data-dependent work: 1 step in {SAMPLE_EVERY} of such signatures watched, the others at "
                    "the mean of the watched ones")
        if steps["counted-once"] and note is None:
            note = (f"each input signature counted once ({once}); its later steps cannot be watched, so they are "
                    "not re-checked: work that depends on the data would go unseen")
        method: EpochMethod = ("estimated" if self.note is not None else "sampled" if sampled
                               else "interpolated-verified" if steps["interpolated-verified"]
                               else "counted-once" if steps["counted-once"]
                               else "counted" if steps["counted"] or steps["sampled"] else "none")
        flops_range = (low, high) if sampled else None
        out = EpochFlops(sums["train"], sums["eval"], method, steps, sums["hardware"], flops_range, note)
        self._past_keys.append(frozenset(self.keys) | frozenset(self._sampled))
        self.methods.append(method)
        self.notes.append(note)
        self.ranges.append(None if flops_range is None else list(flops_range))
        self._reset()
        return out

    def drop(self) -> None:
        """Forget the open epoch's sums (steps outside any epoch); no epoch is recorded."""
        self._reset()

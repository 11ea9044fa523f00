"""Forward FLOPs of a test / validate / predict / evaluate phase, counted the way a fit counts them.

The first batch of each input signature is *observed*: torch's ``FlopCounterMode`` (the engine's formulas) is entered
when the batch begins and left when it ends, around the step the phase runs anyway; every later batch of that
signature is a cache hit (or an exact prediction, :class:`~green_callbacks.core.flops.FlopTracker`). Nothing is
re-run: the user's step is called as often as without the callback, and no random generator moves.

A phase's FLOPs are those of every op between the batch's start and its end (the step, with the loss and metrics it
computes). They are unavailable (``None``) when a batch was not seen with its model (a compiled model, a backend
other than torch, generation whose forwards vary per batch) or when counting failed.

One :class:`PhaseFlops` per phase kind lives as long as the callback: its tracker's caches serve every later phase
of that kind (``trainer.test`` twice counts nothing the second time).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PhaseFlops"]


class PhaseFlops:
    """The FLOP tracker of one phase kind; :meth:`open` at the phase's start, :meth:`total` at its end."""

    def __init__(self) -> None:
        self._tracker: Any = None
        self._open = False  # a batch's step is open in the tracker
        self.steps = 0
        self.missing = False

    @property
    def tracker(self) -> Any:
        if self._tracker is None:
            from green_callbacks.core.flops import FlopTracker

            self._tracker = FlopTracker()
        return self._tracker

    def open(self) -> None:
        """A phase begins: no step counted yet."""
        self.discard()
        if self._tracker is not None:
            self._tracker.reset_epoch()
        self.steps = 0
        self.missing = False

    def begin(self, model: Any, batch: Any) -> None:
        """A batch of the phase begins on ``model`` (``None``: its FLOPs cannot be counted: the phase's are
        unavailable)."""
        if model is None:
            self.missing = True
            return
        self._open = self.tracker.begin("eval", model, batch) is not None

    def end(self) -> None:
        """The batch begun last is done."""
        if self._open:
            self._open = False
            self._tracker.end()
            self.steps += 1

    def discard(self) -> None:
        """The batch begun last raised (or counting failed): its counter is closed, nothing added."""
        if self._open:
            self._open = False
            self._tracker.discard()

    def total(self, batches: int) -> float | None:
        """The phase's forward FLOPs over its ``batches`` batches, or ``None`` when any batch went uncounted."""
        self.discard()
        if self._tracker is None:
            return None
        epoch = self._tracker.take_epoch()
        if self.missing or batches <= 0 or self.steps != batches:
            return None
        return float(epoch.eval_flops)

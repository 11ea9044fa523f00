"""FLOPs of steps that cannot be watched one by one, noted by batch signature and counted at the epoch's end.

For a backend whose steps run inside a graph (Keras on TensorFlow: only the calls are seen, the batch sizes come
from the data adapter at the epoch's end) the adapter notes each call as it goes (:meth:`NotedSteps.add`), and at
the epoch's end hands over how to count one step of a signature; each signature is counted once per fit
(:attr:`NotedSteps.per_step`, kept in the run record) and multiplied by its steps. The torch and JAX backends hand
their batches to :class:`~green_callbacks.core.flops.FlopTracker` instead (torch: observed on the real step; JAX:
each new signature counted by XLA, labelled ``counted-once``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["NotedSteps", "signature"]

CountStep = Callable[[str, Any], Any]
"""``count(kind, batch)``: one step's FLOPs, an object with ``flops`` and ``matmul_flops``."""
Expand = Callable[[str, Any, int], Iterable[tuple[Any, int]]]
"""``expand(kind, example, calls)``: ``(batch to count, steps)`` pairs for ``calls`` noted calls of one signature
(the noted example batch, or ``None`` where only the calls were seen)."""


def signature(data: Any) -> tuple[Any, ...]:
    """Shapes and dtypes of a batch's leaves (metadata only: no device synchronisation)."""
    if isinstance(data, (list, tuple)):
        return tuple(signature(d) for d in data)
    if isinstance(data, dict):
        return tuple((k, signature(v)) for k, v in sorted(data.items()))
    shape = getattr(data, "shape", None)
    return ("leaf", None if shape is None else tuple(shape), str(getattr(data, "dtype", type(data).__name__)))


def describe(batch: Any) -> str:
    """The batch's shapes as text, the key of :attr:`NotedSteps.per_step` (``"train [[10, 4], [10, 1]]"``)."""

    def shapes(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [shapes(v) for v in value]
        if isinstance(value, dict):
            return {k: shapes(v) for k, v in value.items()}
        return list(getattr(value, "shape", ()))

    return str(shapes(batch))


class NotedSteps:
    """The steps of each batch signature (per kind) since the last :meth:`take_epoch`, one example batch each."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, Any], int] = {}
        self.examples: dict[tuple[str, Any], Any] = {}
        self.per_step: dict[str, dict[str, float]] = {}
        """``"<kind> <shapes>" -> {"flops", "matmul_flops"}`` of every signature counted in this fit."""

    def add(self, kind: str, batch: Any, n: int = 1) -> None:
        key = (kind, signature(batch))
        if key not in self.counts:
            self.examples[key] = batch
            self.counts[key] = 0
        self.counts[key] += n

    def reset(self) -> None:
        self.counts = {}
        self.examples = {}

    def take_epoch(self, expand: Expand, count: CountStep) -> dict[str, float]:
        """The epoch's ``{"train": FLOPs, "eval": FLOPs}``, each new signature counted by ``count``; the noted
        steps are forgotten."""
        totals = {"train": 0.0, "eval": 0.0}
        try:
            for (kind, sig), calls in self.counts.items():
                for batch, steps in expand(kind, self.examples.get((kind, sig)), calls):
                    totals[kind] += steps * self._step_flops(count, kind, batch)
        finally:
            self.reset()
        return totals

    def _step_flops(self, count: CountStep, kind: str, batch: Any) -> float:
        key = f"{kind} {describe(batch)}"
        if key not in self.per_step:
            result = count(kind, batch)
            self.per_step[key] = {"flops": result.flops, "matmul_flops": result.matmul_flops}
        return float(self.per_step[key]["flops"])

"""The framework-free result of one FLOP count, and the counting convention it follows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = ["CONVENTION", "FlopCountWarning", "FlopCountingError", "StepFlops"]

CONVENTION = (
    "model FLOPs: 2 FLOPs per multiply-accumulate (2*M*N*K per matmul); matmul, convolution, attention and "
    "recurrent-cell matmuls only; elementwise ops, norms, softmax, embeddings, losses and the optimizer step "
    "excluded; activation checkpointing's recompute excluded (kept apart as hardware FLOPs); "
    "backward as executed (no dX for inputs that need no gradient, no dW for frozen weights); "
    "attention backward = 2x its forward (no flash-attention recompute); causal masks not discounted"
)
"""The convention every :class:`StepFlops` follows (see docs/flops.md)."""

Method = Literal["meta", "real-step", "observed"]
Kind = Literal["train", "eval"]


class FlopCountWarning(UserWarning):
    """A count that is incomplete (an op ran that carries compute but has no formula) or that fell back."""


class FlopCountingError(RuntimeError):
    """A step could not be counted (and no fallback was allowed or the fallback failed too)."""


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one step (training: forward + backward; evaluation: forward).

    ``flops`` is the sum of ``by_op`` (keys are aten op names such as ``"aten.mm"``). ``uncounted_ops`` names
    the ops that ran without a formula and are not known to be compute-free: the count is a lower bound
    whenever it is not empty. ``method`` says how the step ran: ``"meta"`` (a meta-device copy of the model,
    no arithmetic), ``"real-step"`` (one extra real step on the real model, its side effects undone) or
    ``"observed"`` (the training's own step, watched by the counter while it ran; nothing extra ran).

    ``flops`` and ``by_op`` are model FLOPs: activation checkpointing's re-run forward is not in them but in
    ``recompute_flops``; :attr:`hardware_flops` is what the device ran (model FLOPs + recompute; PaLM's HFU).
    """

    flops: int
    kind: Kind
    method: Method
    by_op: Mapping[str, int] = field(default_factory=dict)
    uncounted_ops: tuple[str, ...] = ()
    convention: str = CONVENTION
    recompute_flops: int = 0

    @property
    def hardware_flops(self) -> int:
        """Model FLOPs plus activation checkpointing's recompute: what the device ran."""
        return self.flops + self.recompute_flops

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_op", MappingProxyType(dict(self.by_op)))
        object.__setattr__(self, "uncounted_ops", tuple(self.uncounted_ops))

    @property
    def complete(self) -> bool:
        """True when every op that ran was either counted or known to carry no matmul-class compute."""
        return not self.uncounted_ops

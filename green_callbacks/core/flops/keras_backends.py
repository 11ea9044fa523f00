"""FLOPs of a Keras 3 train/test step on the JAX and TensorFlow backends (the torch backend uses the torch engine).

Both count a step from shapes alone, once per batch signature, never inside the training loop:

* **JAX** — ``jax.jit(model.train_step).lower(state, data).compile().cost_analysis()["flops"]``: XLA's count of the
  compiled step, **all ops** (matmuls plus elementwise ops, the loss, the metrics and the optimizer update). The
  matmul part is counted separately from the step's jaxpr (``dot_general`` and ``conv_general_dilated``), so the
  two conventions can be compared.
* **TensorFlow** — the TF profiler (``tf.compat.v1.profiler`` with ``float_operation()``) on the concrete function
  of ``model.train_step``: every op with a registered FLOP statistic (MatMul, BiasAdd, the optimizer's Mul/Sub/...;
  ReLU has none and counts 0). The matmul part is its MatMul/BatchMatMul/Conv ops.

The logged number is ``BackendStepFlops.flops`` (the all-ops count); ``matmul_flops`` follows the torch engine's
convention (2·M·N·K per matmul, forward + backward) and is kept in the run record. See docs/keras.md.
Nothing here imports jax or tensorflow at module import time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "JAX_CONVENTION",
    "KERAS_FLOP_METHODS",
    "TF_CONVENTION",
    "BackendStepFlops",
    "JaxStepEngine",
    "count_jax_step",
    "count_tf_step",
    "jaxpr_matmul_flops",
]

KERAS_FLOP_METHODS: dict[str, dict[str, str]] = {
    "torch": {"method": "torch-flop-counter (green_callbacks.core.flops, observed on the real step)",
              "convention": "matmul-only"},
    "jax": {"method": "xla-cost-analysis", "convention": "all-ops"},
    "tensorflow": {"method": "tf-profiler", "convention": "all-ops (ops with a registered FLOP statistic)"},
}
"""How the Keras adapter counts FLOPs on each backend (the run record's ``flops`` keys ``method``, ``convention``)."""

Kind = Literal["train", "eval"]

JAX_CONVENTION = (
    "all ops (XLA cost analysis of the compiled Keras step): matmuls (2 FLOPs per multiply-accumulate) plus "
    "elementwise ops, loss, metrics and, for training, the optimizer update"
)
TF_CONVENTION = (
    "ops with a registered FLOP statistic (TF profiler on the concrete Keras step): matmuls (2 FLOPs per "
    "multiply-accumulate), bias adds, loss and, for training, the optimizer update; activations such as ReLU count 0"
)
_TF_MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv3D",
                  "Conv2DBackpropInput", "Conv2DBackpropFilter", "Conv3DBackpropInputV2", "Conv3DBackpropFilterV2",
                  "DepthwiseConv2dNative", "DepthwiseConv2dNativeBackpropInput",
                  "DepthwiseConv2dNativeBackpropFilter")


@dataclass(frozen=True)
class BackendStepFlops:
    """One counted step. ``flops`` (all ops, as the backend's tool counts them) is what is logged;
    ``matmul_flops`` is the matmul/convolution part alone (the torch engine's convention)."""

    flops: float
    matmul_flops: float
    kind: Kind
    method: str
    convention: str


# ---------------------------------------------------------------------------------------------------- JAX
def _abstract(values: Iterable[Any]) -> list[Any]:
    import jax

    return [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in values]


def jax_state(model: Any, kind: Kind) -> tuple[Any, ...]:
    """Abstract (shape/dtype only) state of ``model.train_step``/``test_step``, in the order Keras passes it."""
    trainable = _abstract(model.trainable_variables)
    non_trainable = _abstract(model.non_trainable_variables)
    metrics = _abstract(model.metrics_variables)
    if kind == "train":
        return trainable, non_trainable, _abstract(model.optimizer.variables), metrics
    return trainable, non_trainable, metrics


def _product(values: Iterable[int]) -> int:
    return math.prod(int(v) for v in values)


def jaxpr_matmul_flops(jaxpr: Any) -> int:
    """2·(multiply-accumulates) of every ``dot_general`` and ``conv_general_dilated`` in a (closed) jaxpr,
    recursing into sub-jaxprs (``pjit``, custom derivatives; a ``scan`` body counts ``length`` times)."""
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in inner.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            out_shape = eqn.outvars[0].aval.shape
            total += 2 * _product(out_shape) * _product(lhs_shape[d] for d in lhs_contract)
        elif name == "conv_general_dilated":
            rhs_shape = eqn.invars[1].aval.shape
            out_shape = eqn.outvars[0].aval.shape
            out_features = rhs_shape[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * _product(out_shape) * (_product(rhs_shape) // int(out_features))
        repeat = int(eqn.params.get("length", 1)) if name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    total += repeat * jaxpr_matmul_flops(sub)
    return total


def _cost_flops(cost: Any) -> float:
    if isinstance(cost, Sequence) and not isinstance(cost, Mapping):  # older jax: a list with one dict
        cost = cost[0] if cost else None
    if not isinstance(cost, Mapping) or "flops" not in cost:
        raise RuntimeError(f"XLA cost analysis returned no 'flops' ({cost!r}); JAX says it is best-effort")
    return float(cost["flops"])


def count_jax_step(model: Any, data: Any, kind: Kind) -> BackendStepFlops:
    """FLOPs of one ``model.train_step`` (``kind="train"``) or ``test_step`` on the abstract batch ``data``
    (a pytree of ``jax.ShapeDtypeStruct``)."""
    import jax

    step = model.train_step if kind == "train" else model.test_step
    state = jax_state(model, kind)
    all_ops = _cost_flops(jax.jit(step).lower(state, data).compile().cost_analysis())
    matmul = jaxpr_matmul_flops(jax.make_jaxpr(step)(state, data))
    return BackendStepFlops(all_ops, float(matmul), kind, "xla-cost-analysis", JAX_CONVENTION)


class JaxStepEngine:
    """The :class:`~green_callbacks.core.flops.FlopTracker`'s engine for Keras on JAX: a step's signature is its
    batch's shapes and dtypes (metadata only, no device synchronisation); a new signature is counted by
    :func:`count_jax_step` on its abstract batch (the tracker's ``replay``), the FLOPs of every later step of it come
    from that count. A compiled step's later steps cannot be watched: such counts are labelled ``counted-once``.

    ``per_step``: ``"<kind> <shapes>" -> {"flops", "matmul_flops"}`` of every signature counted (the run record's
    ``flops.per_step``)."""

    name = "XLA cost analysis of the compiled Keras step (jax.jit(...).lower(...).compile().cost_analysis())"
    convention = KERAS_FLOP_METHODS["jax"]["convention"]  # the record keeps the short name (JAX_CONVENTION: the text)
    replay_where = "XLA cost analysis of the traced step, on abstract shapes"
    uncounted_ops = ()

    def __init__(self) -> None:
        self.per_step: dict[str, dict[str, float]] = {}

    def step_key(self, kind: Kind, model: Any, batch: Any) -> tuple[tuple[Any, ...], tuple[int, ...]]:
        """``(static, dims)``: the kind, the model and the batch's tree of ranks and dtypes; its dimensions."""
        static: list[Any] = [kind, id(model)]
        dims: list[int] = []
        _walk(batch, static, dims)
        return tuple(static), tuple(dims)

    def count_train_step(self, model: Any, forward: Any, batch: Any) -> BackendStepFlops:
        return self._count(model, batch, "train")

    def count_eval_step(self, model: Any, forward: Any, batch: Any) -> BackendStepFlops:
        return self._count(model, batch, "eval")

    def _count(self, model: Any, batch: Any, kind: Kind) -> BackendStepFlops:
        import jax

        from green_callbacks.core.flops.noted_steps import describe

        abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(tuple(a.shape), a.dtype), batch)
        step = count_jax_step(model, abstract, kind)
        self.per_step[f"{kind} {describe(batch)}"] = {"flops": step.flops, "matmul_flops": step.matmul_flops}
        return step


def _walk(data: Any, static: list[Any], dims: list[int]) -> None:
    if isinstance(data, (list, tuple)):
        static.append(("(", len(data)))
        for item in data:
            _walk(item, static, dims)
    elif isinstance(data, dict):
        static.append(("{", tuple(sorted(data))))
        for name in sorted(data):
            _walk(data[name], static, dims)
    else:
        shape = getattr(data, "shape", None)
        if shape is None:
            static.append(("leaf", None, type(data).__name__))
            return
        static.append(("leaf", len(shape), str(data.dtype)))
        dims.extend(int(d) for d in shape)


# ---------------------------------------------------------------------------------------------------- TF
def _tf_profile(graph: Any) -> tuple[float, float]:
    """(all ops, matmul ops) FLOPs of a graph by the TF profiler's ``float_operation`` statistics."""
    import tensorflow as tf

    profiler = tf.compat.v1.profiler
    options = profiler.ProfileOptionBuilder(profiler.ProfileOptionBuilder.float_operation()).with_empty_output()
    result = profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options.build())
    by_op: dict[str, int] = {}
    stack = list(result.children)  # cmd="op" nests the op types as a chain; float_ops is each node's own part
    while stack:
        node = stack.pop()
        by_op[node.name] = by_op.get(node.name, 0) + int(node.float_ops)
        stack.extend(node.children)
    matmul = sum(flops for name, flops in by_op.items() if name in _TF_MATMUL_OPS)
    return float(result.total_float_ops), float(matmul)


def count_tf_step(model: Any, spec: Any, kind: Kind) -> BackendStepFlops:
    """FLOPs of one ``model.train_step``/``test_step`` traced on ``spec`` (a structure of ``tf.TensorSpec``
    with a known batch dimension). Tracing builds a graph and runs nothing."""
    import tensorflow as tf

    step = model.train_step if kind == "train" else model.test_step
    concrete = tf.function(step).get_concrete_function(spec)
    all_ops, matmul = _tf_profile(concrete.graph)
    return BackendStepFlops(all_ops, matmul, kind, "tf-profiler", TF_CONVENTION)

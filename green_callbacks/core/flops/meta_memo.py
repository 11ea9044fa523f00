"""Memoised meta kernels: the output metadata of a functional op on meta tensors, reused for the same inputs.

On the meta device torch 2.13 runs most elementwise, norm and dropout kernels as Python reference
implementations (``torch._refs``/``torch._prims``): 0.1-5 ms per op, most of a meta count. Their result is a
tensor without data whose sizes, strides and dtype are a pure function of the inputs' sizes, strides, storage
offsets and dtypes and of the op's other arguments. :class:`MetaMemo` runs below ``FlopCounterMode`` (which sees
and counts every op first), remembers the output metadata of each such call, and answers the same call again
(the second encoder layer, the backward of a layer with the shapes of another, the next count) with fresh
``empty_strided`` meta tensors instead of re-running the Python kernel. FLOP counts are therefore unchanged: the
memo only replaces how an op's output *shape* is computed, never which ops the counter sees.

It is deliberately narrow; anything else runs the real meta kernel:

- ``aten`` ops only, with no mutable argument, no aliased (view) output, no data-dependent output shape;
- every tensor argument a plain strided meta tensor (no conjugate/negative/zero-tensor bit, not quantized);
  ops that touch a real tensor (token ids, masks) keep running for real;
- every other argument a plain value (None, bool, int, float, str, dtype, device, layout, memory format, or
  lists/tuples of these and of tensors), part of the key by type and value;
- every output a fresh plain meta tensor (storage offset 0, the storage ``empty_strided`` would allocate, not one
  of the inputs') or None. Ops that answer with a number (``_fused_sdp_choice``, ``is_same_size``) are queries
  that may read global settings: they always run.

The default dtype is part of the key (creation ops depend on it).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

__all__ = ["MAX_ENTRIES", "memo_mode"]

MAX_ENTRIES = 1 << 15
"""Calls remembered per table; the table is emptied when full (entries are a few hundred bytes)."""

_VALUE_TYPES = (bool, int, float, str, type(None))


def memo_mode(table: dict[Hashable, Any]) -> Any:
    """A dispatch mode that memoises meta kernels into ``table`` (shared across counts by its owner)."""
    return _memo_class()(table)


@functools.lru_cache(maxsize=1)
def _memo_class() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    plain_types = (torch.Tensor, torch.nn.Parameter)
    value_types = (*_VALUE_TYPES, torch.dtype, torch.device, torch.layout, torch.memory_format)

    def tensor_key(t: Any) -> Hashable | None:
        if (type(t) not in plain_types or not t.is_meta or t.layout != torch.strided or t.is_quantized
                or t.is_conj() or t.is_neg() or t._is_zerotensor()):
            return None
        return (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype)

    def arg_key(value: Any) -> Hashable | None:
        if isinstance(value, torch.Tensor):
            return tensor_key(value)
        if isinstance(value, value_types):
            return (type(value), value)
        if isinstance(value, (list, tuple)):
            keys = []
            for item in value:
                key = arg_key(item)
                if key is None:
                    return None
                keys.append(key)
            return (type(value), tuple(keys))
        return None

    def output_spec(out: Any, inputs: set[int]) -> Hashable | None:
        """How to rebuild ``out`` (None if it cannot be rebuilt exactly); ``inputs``: the inputs' storages."""
        if isinstance(out, torch.Tensor):
            if (type(out) is not torch.Tensor or tensor_key(out) is None or out.storage_offset() != 0
                    or out.untyped_storage()._cdata in inputs):
                return None
            shape, stride, dtype = tuple(out.shape), out.stride(), out.dtype
            replica = torch.empty_strided(shape, stride, dtype=dtype, device="meta")
            if replica.untyped_storage().nbytes() != out.untyped_storage().nbytes():
                return None
            return ("T", shape, stride, dtype)
        if out is None:
            return ("N",)
        if type(out) in (list, tuple):
            specs = []
            for item in out:
                spec = output_spec(item, inputs)
                if spec is None:
                    return None
                specs.append(spec)
            return (type(out), tuple(specs))
        return None

    def rebuild(spec: Any) -> Any:
        if spec[0] == "T":
            return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device="meta")
        if spec[0] == "N":
            return None
        return spec[0](rebuild(item) for item in spec[1])

    excluded_tags = {torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output, torch.Tag.inplace_view}

    @functools.cache
    def memoizable(func: Any) -> bool:
        if not isinstance(func, torch._ops.OpOverload) or func.namespace != "aten":
            return False
        schema = func._schema
        if schema.is_mutable or any(r.alias_info is not None for r in schema.returns):
            return False
        return not (set(func.tags) & excluded_tags)

    class MetaMemo(TorchDispatchMode):
        """Answers a repeated functional meta op from its remembered output metadata (see the module doc)."""

        def __init__(self, table: dict[Hashable, Any]) -> None:
            super().__init__()
            self.table = table
            self.default_dtype = torch.get_default_dtype()

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if not memoizable(func):
                return func(*args, **kwargs)
            key = arg_key((args, tuple(kwargs.items())))
            if key is None:
                return func(*args, **kwargs)
            key = (func, self.default_dtype, key)
            spec = self.table.get(key)
            if spec is not None:
                return rebuild(spec)
            out = func(*args, **kwargs)
            inputs = {v.untyped_storage()._cdata for v in _flat((*args, *kwargs.values()))
                      if isinstance(v, torch.Tensor)}
            spec = output_spec(out, inputs)
            if spec is not None:
                if len(self.table) >= MAX_ENTRIES:
                    self.table.clear()
                self.table[key] = spec
            return out

    return MetaMemo


def _flat(values: Any) -> list[Any]:
    """The items of nested lists/tuples, in order."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            out.extend(_flat(value))
        else:
            out.append(value)
    return out

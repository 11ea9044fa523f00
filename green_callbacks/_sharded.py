"""The module whose FLOPs a step has, behind the wrappers distributed training puts around it.

The FLOP engine counts on a meta-device copy of a plain ``nn.Module``. Wrappers are looked through: DDP,
``DataParallel`` and DeepSpeed's engine (``.module``), Lightning Fabric's ``_FabricModule`` (``_original_module``)
and ``torch.compile`` (the engine itself). A model sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``)
cannot be deep-copied and holds only this rank's shard of each parameter (so does DeepSpeed ZeRO stage 3, whose
hooks gather them); :func:`flop_model` gives instead an *unsharded meta twin*: the same module tree with its
original classes, every parameter a meta tensor of the full (global) shape, and none of the sharding hooks, so
counting it runs no collective and reads no weight. Each rank counts its own batches on the full model, which is
what FSDP and ZeRO-3 compute (they gather the weights before each layer's matmuls); the session sums the ranks, so
the total equals the single-process count of the same data.

FSDP1 (``FullyShardedDataParallel``, Lightning's ``FSDPStrategy``) flattens parameters into shards whose original
shapes are not kept on the modules; it is not supported here (FLOPs are then reported unavailable, with a reason).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

__all__ = ["flop_model"]

_TWINS: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()
_STATE_KEY_PREFIX = "__composable_api_state_key"


def unwrap(model: Any) -> Any:
    """``model`` without DDP / DataParallel / Fabric wrappers (at most a few levels deep)."""
    for _ in range(8):
        inner = getattr(model, "_original_module", None)  # lightning.fabric.wrappers._FabricModule
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel", "DeepSpeedEngine"):
            inner = getattr(model, "module", None)
        if inner is None:
            return model
        model = inner
    return model


def _fsdp2_class() -> Any:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return None
    return FSDPModule


def _is_fsdp1(module: Any) -> bool:
    return type(module).__name__ == "FullyShardedDataParallel"


def _zero3(model: Any) -> bool:
    """DeepSpeed ZeRO stage 3 partitions each parameter and keeps its full shape in ``ds_shape``."""
    return any(hasattr(p, "ds_shape") for p in model.parameters())


def flop_model(model: Any) -> Any:
    """The plain module to count FLOPs on: ``model`` unwrapped, or the unsharded meta twin of a sharded model
    (FSDP2, DeepSpeed ZeRO-3)."""
    model = unwrap(model)
    fsdp2 = _fsdp2_class()
    modules = list(model.modules())
    if any(_is_fsdp1(m) for m in modules):
        raise NotImplementedError(
            "FLOPs of an FSDP1 (FullyShardedDataParallel) model are not counted: its flat parameter shards do not "
            "keep the layers' shapes. Use FSDP2 (torch.distributed.fsdp.fully_shard), or train unsharded."
        )
    sharded = (fsdp2 is not None and any(isinstance(m, fsdp2) for m in modules)) or _zero3(model)
    if not sharded:
        return model
    structure = tuple((_full_shape(p), p.dtype) for p in model.parameters())
    entry = _TWINS.get(model)
    if entry is None or entry[1] != structure:
        entry = (_twin(model, fsdp2), structure)
        _TWINS[model] = entry
    twin = entry[0]
    for real_m, twin_m in zip(modules, twin.modules(), strict=True):  # train/eval flags as they are now
        twin_m.training = real_m.training
    return twin


def _full_shape(p: Any) -> tuple[int, ...]:
    """The global shape of a parameter: ZeRO-3's ``ds_shape``, else its shape (a DTensor's is the global one)."""
    return tuple(getattr(p, "ds_shape", None) or p.shape)


def _original_class(cls: type, fsdp2: type | None) -> type:
    """The user's class behind FSDP2's dynamic ``FSDP<Name>(FSDPModule, <Name>)`` class."""
    for base in cls.__mro__[1:]:
        if not issubclass(base, fsdp2):
            return base
    return cls  # pragma: no cover


def _meta_param(p: Any) -> Any:
    import torch

    with torch.no_grad():
        twin = torch.empty(_full_shape(p), dtype=p.dtype, device="meta")
    return torch.nn.Parameter(twin, requires_grad=p.requires_grad)


def _twin(module: Any, fsdp2: type | None) -> Any:
    """A meta copy of the module tree with the original classes, full-shape parameters and no hooks."""
    import torch

    cls = _original_class(type(module), fsdp2) if fsdp2 is not None and isinstance(module, fsdp2) else type(module)
    twin = cls.__new__(cls)
    state = {k: v for k, v in vars(module).items() if not k.startswith(_STATE_KEY_PREFIX)}
    for key, value in list(state.items()):
        if "hooks" in key and isinstance(value, dict):
            state[key] = type(value)() if isinstance(value, OrderedDict) else {}
    state["_parameters"] = {k: None if p is None else _meta_param(p) for k, p in module._parameters.items()}
    state["_buffers"] = {k: None if b is None else torch.empty(tuple(b.shape), dtype=b.dtype, device="meta")
                         for k, b in module._buffers.items()}
    state["_modules"] = {k: None if m is None else _twin(m, fsdp2) for k, m in module._modules.items()}
    twin.__dict__.update(state)
    return twin

"""What a model is, in a few bytes: its architecture and parameter count (not its class name), and the data it saw.

The report groups runs without a declared search only when their fingerprints, data signatures and monitored
metrics agree (docs/report.md): two ``Sequential`` models of different layers are different models, and one model
under two names is one. Everything here reads metadata only (module types, parameter shapes); nothing is run,
copied or moved, and no random generator is touched.

* torch ``nn.Module``: the type of every submodule with its place in the tree, and every parameter's name and shape;
* Keras: every layer's class (recursively) and every weight's path and shape (``count_params`` when built);
* anything else: no fingerprint (``None``), and the report never groups such runs by class name.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.phase import batch_signature

__all__ = ["ModelInfo", "data_signature", "model_fingerprint", "parse_model_info"]

_MAX_ITEMS = 100_000  # a bound on what is read of a model (a huge model is still fingerprinted by its first items)


def _digest(parts: Any) -> str:
    text = json.dumps(parts, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _shape(value: Any) -> list[int]:
    return [int(d) if d is not None else -1 for d in tuple(getattr(value, "shape", ()) or ())]


def _torch(model: Any) -> tuple[list[Any], int]:
    tree: list[Any] = []
    for index, (name, module) in enumerate(model.named_modules()):
        if index >= _MAX_ITEMS:
            break
        tree.append([name, f"{type(module).__module__}.{type(module).__qualname__}"])
    count = 0
    for index, (name, param) in enumerate(model.named_parameters()):
        shape = _shape(param)
        count += math.prod(shape) if shape else 1
        if index < _MAX_ITEMS:
            tree.append([name, shape])
    return tree, count


def _keras_layers(layer: Any, prefix: str, out: list[Any]) -> None:
    for index, child in enumerate(getattr(layer, "layers", None) or ()):
        if len(out) >= _MAX_ITEMS:
            return
        out.append([f"{prefix}{index}", type(child).__name__])
        _keras_layers(child, f"{prefix}{index}.", out)


def _keras(model: Any) -> tuple[list[Any], int]:
    tree: list[Any] = [["", type(model).__name__]]
    _keras_layers(model, "", tree)
    count = 0
    for index, weight in enumerate(model.weights):
        shape = _shape(weight)
        count += math.prod(shape) if shape else 1
        if index < _MAX_ITEMS:
            tree.append([str(getattr(weight, "path", None) or getattr(weight, "name", index)), shape])
    return tree, count


def model_fingerprint(model: Any) -> dict[str, Any] | None:
    """``{"fingerprint": "sha256:…", "parameters": n, "class": name}`` of a torch or Keras model; ``None`` for a
    model of another kind (or none). Reads module types and parameter shapes only."""
    if model is None:
        return None
    if callable(getattr(model, "named_modules", None)) and callable(getattr(model, "named_parameters", None)):
        tree, count = _torch(model)
        kind = "torch"
    elif hasattr(model, "weights") and hasattr(model, "layers"):
        tree, count = _keras(model)
        kind = "keras"
    else:
        return None
    return {"fingerprint": _digest([kind, tree]), "parameters": int(count), "class": type(model).__name__}


def _describe(signature: Any) -> str:
    if isinstance(signature, tuple) and len(signature) == 3 and signature[0] == "leaf":
        shape, dtype = signature[1], signature[2]
        if shape is None:
            return str(dtype)
        dims = ",".join(str(d) for d in shape[1:])  # the batch dimension varies (last batch): left out
        return f"{str(dtype).replace('torch.', '')}[*{',' + dims if dims else ''}]"
    if isinstance(signature, tuple):
        items = []
        for item in signature:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], tuple):
                items.append(f"{item[0]}: {_describe(item[1])}")
            else:
                items.append(_describe(item))
        return "(" + ", ".join(items) + ")"
    return str(signature)


def data_signature(batch: Any) -> str:
    """The shapes (less the batch dimension) and dtypes of a training batch's leaves, as short text
    (``(float32[*,5], float32[*,1])``); metadata only."""
    return _describe(batch_signature(batch))[:500]


@dataclass(frozen=True)
class ModelInfo:
    """A record's ``model`` section, as the report compares it."""

    fingerprint: str | None
    parameters: int | None
    name: str | None
    data_signature: str | None


def parse_model_info(data: Any) -> ModelInfo | None:
    """The record's ``model`` section (``None`` when absent or not a mapping); fields of the wrong type read as
    ``None``, never as a match."""
    if not isinstance(data, Mapping):
        return None

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    count = data.get("parameters")
    return ModelInfo(fingerprint=text("fingerprint"),
                     parameters=count if isinstance(count, int) and not isinstance(count, bool) else None,
                     name=text("class") or text("name"), data_signature=text("data_signature"))

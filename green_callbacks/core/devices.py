"""Which accelerators this process trains on, resolved once for every front end.

Every adapter hands :meth:`~green_callbacks.core.session.Session.start` (and a phase's ``begin``) the same three facts:
the device type (:data:`~green_callbacks.core.sensors.accelerators.DEVICE_TYPES`), the framework's ordinals of the
devices and, where the framework knows them, their UUIDs (exact whatever ``CUDA_VISIBLE_DEVICES`` says). They are
read here from what the framework trains on — a ``torch.device`` (or ``"cuda:1"``, an ordinal), JAX's local devices,
TensorFlow's distribution strategy — and from nothing else. Frameworks are imported lazily, by the branch that needs
them, and only when the caller's framework is already loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.sensors.accelerators import jax_device_type, torch_device_type

__all__ = ["Devices", "jax_devices", "tensorflow_devices", "torch_devices"]


@dataclass(frozen=True)
class Devices:
    """``type``: ``"cpu"``, ``"cuda"``, ``"rocm"``, ``"xpu"``, ``"mps"``, ``"tpu"``; ``indices``: the framework's
    ordinals (``[]`` on CPU, ``None``: unknown, every visible device of ``type`` is measured); ``uuids``: exact ids
    where the framework gives them (CUDA), else ``None``."""

    type: str = "cuda"
    indices: list[int] | None = None
    uuids: list[str] | None = None

    def start_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``Session.start`` / ``PhaseTap.begin`` that name the devices."""
        return {"device_type": self.type, "device_indices": self.indices, "device_uuids": self.uuids}


CPU = Devices("cpu", [], None)
UNKNOWN = Devices()
"""No device known (a loop Tracker without ``model=`` or ``device=``): every visible GPU is measured."""


def torch_devices(device: Any, *, count: int = 1) -> Devices:
    """The devices of a torch run on ``device`` (a ``torch.device``, ``"cuda:1"``, ``"mps"``, an ordinal; ``None``:
    unknown). ``count``: how many devices of that type one process drives (``nn.DataParallel``: ordinals
    ``0 … count-1``). An ordinal-less CUDA/ROCm/XPU device is the framework's current one; ``mps`` is device 0."""
    if device is None:
        return UNKNOWN
    if isinstance(device, int) and not isinstance(device, bool):
        kind, index = "cuda", device
    elif hasattr(device, "type"):
        kind, index = torch_device_type(device), getattr(device, "index", None)
    else:  # a string such as "cuda:1", "xpu" or "cpu"
        name, _, rest = str(device).partition(":")
        kind, index = torch_device_type(name), int(rest) if rest.isdigit() else None
    if kind == "cpu":
        return CPU
    indices = list(range(count)) if count > 1 else [int(index) if index is not None else _current(kind)]
    return Devices(kind, indices, _cuda_uuids(indices) if kind == "cuda" else None)


def module_device(model: Any) -> Any:
    """The device of a torch module's first parameter (``None``: no parameters, or torch not loaded)."""
    if model is None or "torch" not in sys.modules or not hasattr(model, "parameters"):
        return None
    param = next(iter(model.parameters()), None)
    return None if param is None else param.device


def jax_devices() -> Devices:
    """The accelerators JAX computes on in this process (its local non-CPU devices)."""
    import jax

    accelerators = [d for d in jax.local_devices() if d.platform != "cpu"]
    if not accelerators:
        return CPU
    first = accelerators[0]
    version = str(getattr(getattr(first, "client", None), "platform_version", ""))
    return Devices(jax_device_type(first.platform, version), [d.id for d in accelerators])


def tensorflow_devices() -> Devices:
    """The GPUs TensorFlow computes on: its distribution strategy's, else the first visible one (the default
    strategy places ops there)."""
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        indices = [0] if tf.config.list_physical_devices("GPU") else []
    else:
        devices: Sequence[str] = tf.distribute.get_strategy().extended.worker_devices
        indices = sorted({int(d.rsplit(":", 1)[1]) for d in devices if "GPU:" in d.upper()})
    return Devices("cuda", indices) if indices else CPU


def _current(kind: str) -> int:
    """The framework's current device of ``kind`` (what an ordinal-less ``torch.device`` means)."""
    torch = sys.modules.get("torch")
    backend = {"cuda": "cuda", "rocm": "cuda", "xpu": "xpu"}.get(kind)
    if torch is None or backend is None:
        return 0
    try:
        return int(getattr(torch, backend).current_device())
    except Exception:  # no such device on this machine: its first
        return 0


def _cuda_uuids(indices: Sequence[int]) -> list[str] | None:
    """torch's UUIDs of the CUDA devices (unprefixed: GPU or MIG); ``None`` where torch cannot give them."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return [str(torch.cuda.get_device_properties(i).uuid) for i in indices]
    except Exception:
        return None

"""One factory for the accelerator ("gpu" component) sensor of every device type, and the framework → device-type
mapping the adapters use.

Device types (what the framework trains on, not the vendor library):

- ``"cpu"``: no accelerator in this run: ``unavailable`` (unless ``gpus=`` names NVIDIA GPUs to measure anyway);
- ``"cuda"`` (torch ``cuda`` on a CUDA build, JAX ``gpu`` on CUDA): NVML (:mod:`.nvml`);
- ``"rocm"`` (torch ``cuda`` with ``torch.version.hip``, JAX ``gpu`` on ROCm): amdsmi (:mod:`.amd`);
- ``"xpu"`` (torch ``xpu``): Level Zero Sysman (:mod:`.intel_gpu`);
- ``"mps"`` (torch ``mps``, JAX ``METAL``): IOReport (:mod:`.apple`);
- ``"tpu"`` (torch ``xla`` on TPU, JAX ``tpu``): duty-cycle estimate (:mod:`.tpu`).

Vendor libraries are optional extras, imported only by the branch that needs them; a missing one gives an
``unavailable`` reading whose note says which extra to install. Nothing here imports a framework: the helpers
take the framework's own objects (a ``torch.device``, a JAX platform string) and read only their attributes.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from green_callbacks.core.sensors.base import NullSensor, Sensor

__all__ = [
    "DEVICE_TYPES",
    "build_accelerator_sensor",
    "check_device_type",
    "jax_device_type",
    "torch_device_type",
]

DEVICE_TYPES = ("cpu", "cuda", "rocm", "xpu", "mps", "tpu")


def check_device_type(device_type: str) -> str:
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"device_type={device_type!r}; it must be one of {', '.join(map(repr, DEVICE_TYPES))}.")
    return device_type


def torch_device_type(device: Any) -> str:
    """The device type of a ``torch.device`` (or anything with ``.type``): ``cuda`` under a ROCm build of torch is
    ``rocm``; ``xla`` is ``tpu`` unless ``PJRT_DEVICE`` says the XLA device is a GPU or the CPU."""
    kind = str(getattr(device, "type", device))
    if kind == "cuda":
        torch = sys.modules.get("torch")
        hip = getattr(getattr(torch, "version", None), "hip", None)
        return "rocm" if hip else "cuda"
    if kind == "xla":
        pjrt = os.environ.get("PJRT_DEVICE", "TPU").strip().upper()
        return {"CPU": "cpu", "CUDA": "cuda", "GPU": "cuda", "ROCM": "rocm"}.get(pjrt, "tpu")
    if kind in ("xpu", "mps", "cpu"):
        return kind
    return "cpu" if kind == "meta" else kind


def jax_device_type(platform: str, platform_version: str = "") -> str:
    """The device type of a JAX device (``device.platform``, ``device.client.platform_version``)."""
    name = platform.lower()
    if name == "gpu":
        return "rocm" if "rocm" in platform_version.lower() else "cuda"
    if name in ("cuda", "rocm", "tpu", "cpu"):
        return name
    if name == "metal":
        return "mps"
    return name


def build_accelerator_sensor(
    device_type: str = "cuda",
    device_indices: Sequence[int] | None = None,
    device_uuids: Sequence[str] | None = None,
    *,
    gpus: Sequence[int] | None = None,
    device_bus_ids: Sequence[str] | None = None,
    device_kind: str | None = None,
) -> Sensor:
    """The sensor of the accelerators this process trains on (component ``"gpu"``), for any device type.

    Args:
        device_type: one of :data:`DEVICE_TYPES` (from :func:`torch_device_type` / :func:`jax_device_type`).
        device_indices: the framework's ordinals of the devices (``[]``: none; ``None``: every visible one).
        device_uuids: their UUIDs where the framework knows them (exact; preferred).
        gpus: NVML indices chosen by the user (``cuda`` and ``cpu`` runs; ignored with a warning elsewhere).
        device_bus_ids: PCI bus ids (``rocm``), exact.
        device_kind: the chip's name (``tpu``: ``"TPU v4"``), where the framework gives it.

    Raises ``ValueError`` for an unknown ``device_type`` or a bad ``gpus``; never for a missing library or device
    (that is an ``unavailable`` reading with the reason).
    """
    check_device_type(device_type)
    if device_type in ("cuda", "cpu"):
        from green_callbacks.core.sensors.nvml import build_gpu_sensor

        indices = [] if device_type == "cpu" else device_indices
        return build_gpu_sensor(gpus=gpus, device_indices=indices,
                                device_uuids=None if device_type == "cpu" else device_uuids)
    if gpus is not None:
        warnings.warn(f"gpus={list(gpus)!r} selects NVIDIA GPUs by NVML index; this run trains on {device_type!r}, "
                      "so it is ignored and the devices the framework uses are measured.", UserWarning, stacklevel=2)
    if device_type == "rocm":
        from green_callbacks.core.sensors.amd import build_amd_sensor

        return build_amd_sensor(device_indices, device_uuids=device_uuids, device_bus_ids=device_bus_ids)
    if device_type == "xpu":
        from green_callbacks.core.sensors.intel_gpu import build_intel_gpu_sensor

        return build_intel_gpu_sensor(device_indices, device_uuids=device_uuids)
    if device_type == "mps":
        from green_callbacks.core.sensors.apple import build_apple_gpu_sensor

        return build_apple_gpu_sensor(device_indices)
    if device_type == "tpu":
        from green_callbacks.core.sensors.tpu import build_tpu_sensor

        return build_tpu_sensor(device_indices, device_kind=device_kind)
    return NullSensor("gpu", f"no energy sensor for device type {device_type!r}", scope="device")  # pragma: no cover

"""Which physical GPUs does this process train on? CUDA device indices → NVML devices, by UUID.

A framework names its devices by *CUDA ordinal* (``cuda:0``, ``trainer.device_ids``, ``args.device``): an index
into the list that ``CUDA_VISIBLE_DEVICES`` selects, in the order ``CUDA_DEVICE_ORDER`` gives. NVML numbers the
whole machine in PCI-bus order and ignores both variables. This module turns the first into the second:

1. ``gpus=[...]`` (NVML indices, the user's explicit choice) wins over everything else.
2. ``device_uuids=[...]`` (e.g. ``"GPU-" + str(torch.cuda.get_device_properties(i).uuid)``) is exact whatever the
   environment says; prefixes are accepted, as CUDA accepts them.
3. Otherwise ``CUDA_VISIBLE_DEVICES`` is parsed the way CUDA does (integers, ``GPU-`` UUID prefixes or ``MIG-``
   entries; the first entry decides the form; the first invalid entry ends the list; a repeated entry makes the
   list empty; an empty string means no GPU), and ``device_indices`` pick from that list (``None``: all of it).

Integer entries (and an unset variable) are CUDA ordinals of the whole machine. They equal NVML indices only when
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or when all GPUs are the same model (CUDA's default ``FASTEST_FIRST`` puts the
fastest first); with different models and another order we warn that the mapping may be wrong.

A MIG instance has no energy counter or power reading of its own: it maps to its parent GPU (``mig_uuid`` keeps
the instance), and the sensor reports the parent's energy with a note.

All functions take the NVML module (``pynvml`` or a fake) as ``lib`` and are tested with a fake one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from green_callbacks.core.sensors._nvml_lib import nvml_library, nvml_text

__all__ = [
    "GpuId",
    "check_gpu_indices",
    "parse_cuda_visible_devices",
    "select_gpus",
]


@dataclass(frozen=True)
class GpuId:
    """One physical GPU this process is measured on.

    Attributes:
        nvml_index: NVML's index (PCI-bus order, whole machine or container).
        uuid: NVML UUID of the physical GPU (``"GPU-…"``); energy and power exist only at this level.
        name: product name from NVML.
        cuda_index: the CUDA ordinal this process uses for it, when known (``None`` when chosen by ``gpus=``).
        mig_uuid: the MIG instance this process was given on that GPU (``"MIG-…"``), else ``None``.
        mig_enabled: whether MIG mode is on for the physical GPU.
    """

    nvml_index: int
    uuid: str
    name: str
    cuda_index: int | None = None
    mig_uuid: str | None = None
    mig_enabled: bool = False

    def label(self) -> str:
        """``"GPU 1 (NVIDIA H100, GPU-8a3c…)"``: how notes and warnings name it."""
        return f"GPU {self.nvml_index} ({self.name}, {self.uuid})"


def parse_cuda_visible_devices(value: str | None) -> list[int] | list[str] | None:
    """CUDA's reading of ``CUDA_VISIBLE_DEVICES``, before matching entries to devices.

    Returns ``None`` when unset (every GPU visible), a list of integers (CUDA ordinals of the machine) or a list of
    UUID strings (``"GPU-…"`` / ``"MIG-…"``, possibly prefixes). ``""`` gives ``[]``: no GPU visible.
    Rules (as CUDA and ``torch.cuda._parse_visible_devices`` apply them): the first entry decides the form; an
    integer entry is read like ``strtoul`` (``"1gpu"`` → 1); a negative, empty or foreign entry ends the list; a
    repeated entry makes the whole list empty.
    """
    if value is None:
        return None
    entries = [e.strip() for e in value.split(",")]
    for prefix in ("GPU-", "MIG-"):
        if entries[0].startswith(prefix):
            uuids: list[str] = []
            for entry in entries:
                if not entry.startswith(prefix):
                    break
                if entry in uuids:
                    return []
                uuids.append(entry)
            return uuids
    ordinals: list[int] = []
    for entry in entries:
        ordinal = _leading_int(entry)
        if ordinal is None or ordinal < 0:
            break
        if ordinal in ordinals:
            return []
        ordinals.append(ordinal)
    return ordinals


def _leading_int(entry: str) -> int | None:
    """The integer an entry starts with (``"+2x"`` → 2, ``"-1"`` → -1), or ``None``."""
    end = 0
    while end < len(entry) and (entry[end].isdigit() or (end == 0 and entry[end] in "+-")):
        end += 1
    digits = entry[:end]
    if not digits or digits in "+-":
        return None
    return int(digits)


def check_gpu_indices(gpus: Sequence[int] | None, count: int | None = None) -> None:
    """Validate ``gpus=`` (NVML indices): a list of distinct non-negative ints, each below ``count`` if known.

    Raises ``ValueError`` saying what was received, what is allowed and what to do.
    """
    if gpus is None:
        return
    if isinstance(gpus, (str, bytes)) or not isinstance(gpus, Sequence):
        raise ValueError(
            f"gpus={gpus!r} is not a list of GPU indices; pass NVML indices such as gpus=[0, 1] "
            "(as `nvidia-smi -L` numbers them), or gpus=None to measure the GPUs this process trains on."
        )
    for index in gpus:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(
                f"gpus must be a list of non-negative NVML device indices such as [0, 1]: gpus={list(gpus)!r} "
                f"holds {index!r}; number GPUs as `nvidia-smi -L` does, e.g. gpus=[0]."
            )
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"gpus={list(gpus)!r} repeats an index; list each GPU once.")
    if count is not None:
        unknown = [i for i in gpus if i >= count]
        if unknown:
            allowed = f"{count} GPUs (0-{count - 1})" if count else "no GPU NVML can see"
            raise ValueError(
                f"gpus={list(gpus)!r} but this machine has {allowed}; index {unknown[0]} does not exist. "
                "Pass NVML indices as `nvidia-smi -L` lists them, or gpus=None to measure the GPUs this "
                "process trains on."
            )


def select_gpus(
    device_indices: Sequence[int] | None = None,
    gpus: Sequence[int] | None = None,
    *,
    device_uuids: Sequence[str] | None = None,
    lib: Any = None,
) -> list[GpuId]:
    """The physical GPUs to measure, by UUID, one entry per physical GPU (duplicates folded).

    Args:
        device_indices: CUDA ordinals this process trains on, as the framework sees them (after
            ``CUDA_VISIBLE_DEVICES``). ``None``: every visible GPU. ``[]``: training on CPU, no GPU.
        gpus: NVML indices chosen by the user; wins over everything else.
        device_uuids: UUIDs (or prefixes) of the devices this process trains on, e.g. from
            ``torch.cuda.get_device_properties(i).uuid``; exact, and preferred over ``device_indices``.
        lib: the NVML module; default: the process-wide initialised ``pynvml``
            (:func:`green_callbacks.core.sensors.nvml.nvml_library`).

    Raises:
        ValueError: an unknown ``gpus`` index, a ``device_indices`` entry that ``CUDA_VISIBLE_DEVICES`` does not
            make visible, or a UUID no GPU has.
    """
    if lib is None:
        lib = nvml_library()
    machine = _Machine(lib)
    check_gpu_indices(gpus, machine.count)
    if gpus is not None:
        return dedupe_physical([machine.gpu(i) for i in gpus])
    if device_uuids is not None:
        chosen = []
        for cuda_index, uuid in enumerate(device_uuids):
            found = machine.by_uuid(nvml_text(uuid))
            if found is None:
                raise ValueError(
                    f"device_uuids[{cuda_index}]={uuid!r} matches no GPU or MIG instance NVML can see "
                    f"(GPUs: {', '.join(machine.uuids) or 'none'}); pass gpus=[...] to choose by NVML index."
                )
            chosen.append(_with_cuda_index(found, cuda_index))
        return dedupe_physical(chosen)
    if device_indices is not None and len(device_indices) == 0:
        return []
    visible, by_ordinal = _visible_devices(machine)
    chosen = list(visible) if device_indices is None else [_pick(visible, i) for i in device_indices]
    if by_ordinal and len({g.uuid for g in chosen}) < machine.count:
        _warn_if_order_ambiguous(machine)
    return dedupe_physical(chosen)


def _pick(visible: Sequence[GpuId], cuda_index: int) -> GpuId:
    """The visible device with this CUDA ordinal, or a ValueError naming what is visible."""
    if isinstance(cuda_index, bool) or not isinstance(cuda_index, int) or not 0 <= cuda_index < len(visible):
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ValueError(
            f"device index {cuda_index!r} is not visible: CUDA_VISIBLE_DEVICES={cvd!r} makes "
            f"{len(visible)} GPU(s) visible to this process"
            + (f" (0-{len(visible) - 1})" if visible else "")
            + ". Pass gpus=[...] (NVML indices) to choose the GPUs to measure explicitly."
        )
    return visible[cuda_index]


def _with_cuda_index(gpu: GpuId, cuda_index: int) -> GpuId:
    return GpuId(gpu.nvml_index, gpu.uuid, gpu.name, cuda_index, gpu.mig_uuid, gpu.mig_enabled)


def dedupe_physical(chosen: Sequence[GpuId]) -> list[GpuId]:
    """One entry per physical GPU: two MIG instances of one GPU share its single energy counter."""
    seen: dict[str, GpuId] = {}
    for gpu in chosen:
        seen.setdefault(gpu.uuid, gpu)
    return list(seen.values())


def _visible_devices(machine: _Machine) -> tuple[list[GpuId], bool]:
    """The devices CUDA shows this process, in CUDA ordinal order, mapped to physical GPUs.

    The flag says whether they were chosen by integer ordinal (unset variable or an integer list), which is
    exact only in PCI-bus order.
    """
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    parsed = parse_cuda_visible_devices(raw)
    if parsed is None:
        return [_with_cuda_index(machine.gpu(i), i) for i in range(machine.count)], True
    visible: list[GpuId] = []
    for entry in parsed:
        if isinstance(entry, int):
            found = machine.gpu(entry) if entry < machine.count else None
        else:
            found = machine.by_uuid(entry)
        if found is None:
            warnings.warn(
                f"CUDA_VISIBLE_DEVICES={raw!r}: entry {entry!r} matches no GPU NVML can see "
                f"(GPUs: {', '.join(machine.uuids) or 'none'}); CUDA ignores it and every entry after it, "
                "and so does green_callbacks.",
                UserWarning,
                stacklevel=3,
            )
            break
        visible.append(_with_cuda_index(found, len(visible)))
    return visible, bool(parsed) and isinstance(parsed[0], int)


def _warn_if_order_ambiguous(machine: _Machine) -> None:
    """Integer CUDA ordinals equal NVML indices only in PCI-bus order or on a machine of identical GPUs."""
    order = os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper()
    names = sorted({machine.gpu(i).name for i in range(machine.count)})
    if order == "PCI_BUS_ID" or len(names) <= 1:
        return
    warnings.warn(
        f"This machine has different GPU models ({', '.join(names)}) and CUDA_DEVICE_ORDER is {order} "
        "(CUDA's default puts the fastest GPU first), but NVML numbers GPUs in PCI-bus order: CUDA device "
        "numbers may not be NVML's, so green_callbacks may measure the wrong GPU. Set "
        "CUDA_DEVICE_ORDER=PCI_BUS_ID, list GPU UUIDs in CUDA_VISIBLE_DEVICES, or pass gpus=[...] (NVML indices).",
        UserWarning,
        stacklevel=3,
    )


class _Machine:
    """What NVML sees, read lazily and cached: GPUs by index and UUID, MIG instances by UUID."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.count = int(lib.nvmlDeviceGetCount())
        self._gpus: dict[int, GpuId] = {}
        self._mig: dict[str, GpuId] | None = None

    def gpu(self, index: int) -> GpuId:
        if index not in self._gpus:
            handle = self.lib.nvmlDeviceGetHandleByIndex(index)
            self._gpus[index] = GpuId(
                nvml_index=index,
                uuid=nvml_text(self.lib.nvmlDeviceGetUUID(handle)),
                name=nvml_text(self.lib.nvmlDeviceGetName(handle)),
                mig_enabled=self._mig_enabled(handle),
            )
        return self._gpus[index]

    @property
    def uuids(self) -> list[str]:
        return [self.gpu(i).uuid for i in range(self.count)]

    def _mig_enabled(self, handle: Any) -> bool:
        try:
            current = self.lib.nvmlDeviceGetMigMode(handle)[0]
        except self.lib.NVMLError:  # NotSupported on GPUs without MIG, FunctionNotFound on old drivers
            return False
        return bool(current == getattr(self.lib, "NVML_DEVICE_MIG_ENABLE", 1))

    def by_uuid(self, uuid: str) -> GpuId | None:
        """The GPU whose UUID (or a MIG instance's UUID) starts with ``uuid``; ``None`` if none or ambiguous."""
        if not uuid.startswith(("GPU-", "MIG-")):  # torch's uuid has no prefix
            return self.by_uuid(f"GPU-{uuid}") or self.by_uuid(f"MIG-{uuid}")
        if uuid.startswith("MIG-GPU-"):  # legacy form MIG-GPU-<parent uuid>/<gi>/<ci>
            parent = self.by_uuid(uuid[4:].split("/", 1)[0])
            return None if parent is None else GpuId(
                parent.nvml_index, parent.uuid, parent.name, None, uuid, parent.mig_enabled
            )
        if uuid.startswith("GPU-"):
            matches = [self.gpu(i) for i in range(self.count) if self.gpu(i).uuid.startswith(uuid)]
        else:
            matches = [g for mig_uuid, g in self._mig_instances().items() if mig_uuid.startswith(uuid)]
        return matches[0] if len(matches) == 1 else None

    def _mig_instances(self) -> dict[str, GpuId]:
        """MIG UUID → parent GPU (with ``mig_uuid`` set), over every GPU with MIG mode on."""
        if self._mig is None:
            self._mig = {}
            for index in range(self.count):
                parent = self.gpu(index)
                if not parent.mig_enabled:
                    continue
                handle = self.lib.nvmlDeviceGetHandleByIndex(index)
                for slot in range(int(self.lib.nvmlDeviceGetMaxMigDeviceCount(handle))):
                    try:
                        mig_handle = self.lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                    except self.lib.NVMLError:  # NotFound: an empty slot
                        continue
                    mig_uuid = nvml_text(self.lib.nvmlDeviceGetUUID(mig_handle))
                    self._mig[mig_uuid] = GpuId(index, parent.uuid, parent.name, None, mig_uuid, True)
        return self._mig

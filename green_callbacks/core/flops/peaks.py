"""Dense peak FLOP/s per accelerator and compute dtype, for model FLOPs utilisation (MFU).

Every figure is a **dense** rate (vendors' headline tensor-core numbers are often "with 2:4 sparsity", 2x the
dense rate) with its source. A device is recognised from its name as NVML (``nvmlDeviceGetName``) or
``torch.cuda.get_device_name`` reports it; variants that share a marketing name are told apart by the markers
in that string (``HBM3``/``SXM`` vs ``PCIe`` vs ``NVL``; ``L4`` vs ``L40`` vs ``L40S``; ``A10`` vs ``A100``).
An unknown device, an ambiguous name or a dtype a device has no figure for gives ``None``: never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DTYPES", "PeakFlops", "mfu", "normalize_dtype", "peak_flops_per_s", "peak_spec"]

T = 1e12

DTYPES = ("bf16", "fp16", "tf32", "fp32")
"""Canonical compute dtypes of the table: 16-bit tensor-core rates, TF32 tensor-core, FP32 non-tensor."""

_DTYPE_ALIASES = {
    "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16", "bf16-mixed": "bf16", "bf16-true": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "torch.float16": "fp16", "16": "fp16",
    "16-mixed": "fp16", "16-true": "fp16", "mixed_float16": "fp16",
    "tf32": "tf32", "tfloat32": "tf32",
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "torch.float32": "fp32", "32": "fp32", "32-true": "fp32",
}


@dataclass(frozen=True)
class PeakFlops:
    """The dense peak used for an MFU figure, with where it comes from (log it next to the MFU)."""

    device: str
    dtype: str
    peak_flops_per_s: float
    source: str


@dataclass(frozen=True)
class _Row:
    device: str
    pattern: str  # regex searched in the normalised device name
    flops_per_s: dict[str, float]
    source: str


_LIGHTNING = "Lightning fabric/utilities/throughput.py _CUDA_FLOPS"
_NV = "NVIDIA datasheet"

# Order matters only where one pattern could match another's name; the patterns use word boundaries, so
# "l4" does not match "l40", "a10" not "a100"/"a10g", "h200" not "gh200", "v100" not "v100s".
_ROWS: tuple[_Row, ...] = (
    _Row("H100 NVL", r"\bh100\b.*\bnvl\b", {"bf16": 835.5 * T, "fp16": 835.5 * T, "fp32": 60 * T},
         f"{_LIGHTNING} (master, dense since PR #21743); {_NV} H100 NVL"),
    _Row("H100 PCIe", r"\bh100\b.*\bpcie\b", {"bf16": 756 * T, "fp16": 756 * T, "fp32": 51 * T},
         f"{_LIGHTNING}; torchtitan get_peak_flops; {_NV} H100 PCIe"),
    _Row("H100 SXM", r"\bh100\b.*\b(hbm3|sxm\d*)\b", {"bf16": 989.4 * T, "fp16": 989.4 * T, "fp32": 67 * T},
         f"{_LIGHTNING}; torchtitan (989); {_NV} H100 SXM5"),
    _Row("H200 NVL", r"\bh200\b.*\bnvl\d*\b", {"bf16": 835.5 * T, "fp16": 835.5 * T, "fp32": 60 * T},
         f"{_NV} H200 NVL (1,671 with sparsity / 2), verify"),
    # A plain "NVIDIA H200" is the SXM board (the NVL board's name says NVL); Composer makes the same call.
    _Row("H200 SXM", r"\bh200\b", {"bf16": 989.5 * T, "fp16": 989.5 * T, "fp32": 67 * T},
         f"{_LIGHTNING} (master, h200 sxm1 9.895e14); torchtitan (989); {_NV} H200 SC23"),
    _Row("B200", r"\bb200\b", {"bf16": 2250 * T, "fp16": 2250 * T}, "torchtitan get_peak_flops (dense)"),
    _Row("A100", r"\ba100\b", {"bf16": 312 * T, "fp16": 312 * T, "tf32": 156 * T, "fp32": 19.5 * T},
         f"{_LIGHTNING}; Composer GPU_AVAILABLE_FLOPS; torchtitan; {_NV} A100"),
    _Row("A10G", r"\ba10g\b", {"bf16": 125 * T, "fp16": 125 * T, "fp32": 31.2 * T}, f"{_LIGHTNING} (a10g)"),
    _Row("A10", r"\ba10\b", {"bf16": 125 * T, "fp16": 125 * T, "fp32": 31.2 * T},
         f"Composer GPU_AVAILABLE_FLOPS (a10); {_NV} A10"),
    _Row("L40S", r"\bl40s\b", {"bf16": 362 * T, "fp16": 362 * T, "fp32": 91.6 * T},
         f"torchtitan get_peak_flops (bf16); {_NV} L40S (fp32, recalled: verify)"),
    _Row("L40", r"\bl40\b", {"bf16": 181 * T, "fp16": 181 * T, "fp32": 90.5 * T}, f"{_LIGHTNING} (l40); {_NV} L40"),
    _Row("L4", r"\bl4\b", {"bf16": 121 * T, "fp16": 121 * T, "fp32": 30.3 * T}, f"{_LIGHTNING} (l4); {_NV} L4"),
    _Row("V100 SXM2", r"\bv100\b.*\bsxm2?\b", {"fp16": 125 * T, "fp32": 15.7 * T},
         f"{_LIGHTNING}; Composer; {_NV} V100 (no bf16 tensor cores)"),
    _Row("V100 PCIe", r"\bv100\b.*\bpcie\b", {"fp16": 112 * T, "fp32": 14 * T},
         f"{_LIGHTNING}; Composer; {_NV} V100 (no bf16 tensor cores)"),
    _Row("T4", r"\bt4\b", {"fp16": 65 * T, "fp32": 8.1 * T},
         f"{_LIGHTNING}; Composer; {_NV} T4 (no bf16 tensor cores)"),
    _Row("RTX A6000", r"^nvidia rtx a6000$", {"bf16": 154.8 * T, "fp16": 154.8 * T},
         "torchtitan get_peak_flops (154.85, dense tensor)"),
    _Row("GeForce RTX 4090", r"^nvidia geforce rtx 4090$", {"bf16": 165.2 * T, "fp16": 165.2 * T},
         "NVIDIA Ada whitepaper (dense tensor, FP32 accumulate; recalled: verify)"),
    _Row("MI300X", r"\bmi300x\b", {"bf16": 1307.4 * T, "fp16": 1307.4 * T},
         "AMD MI300X datasheet (dense); torchtitan rounds to 1300"),
    _Row("TPU v4", r"\btpu v4\b(?! lite)", {"bf16": 275 * T},
         "Lightning _TPU_FLOPS; torchtitan; Google Cloud TPU docs"),
    _Row("TPU v5e", r"\btpu v5(e| lite)\b", {"bf16": 197 * T},
         "Lightning _TPU_FLOPS (v5litepod); torchtitan; Google Cloud TPU docs"),
    _Row("TPU v5p", r"\btpu v5p\b", {"bf16": 459 * T}, "torchtitan; Google Cloud TPU docs"),
    _Row("TPU v6e", r"\btpu v6(e| lite)\b", {"bf16": 918 * T}, "torchtitan; Google Cloud TPU docs"),
)


def normalize_dtype(dtype: object) -> str:
    """``"bf16"``, ``"fp16"``, ``"tf32"`` or ``"fp32"`` from a dtype name, ``torch.dtype`` or precision string."""
    key = str(dtype).strip().lower()
    if key not in _DTYPE_ALIASES:
        raise ValueError(
            f"dtype={dtype!r} is not a known compute dtype; use one of {list(DTYPES)} (aliases such as "
            "'bfloat16', 'bf16-mixed', '16-mixed', 'float32' and torch dtypes are accepted)."
        )
    return _DTYPE_ALIASES[key]


def _normalize_name(device_name: str) -> str:
    return " ".join(re.sub(r"[-_/]", " ", device_name.lower()).split())


def peak_spec(device_name: str, dtype: object) -> PeakFlops | None:
    """The table's dense peak for ``device_name`` at ``dtype``, with its source; ``None`` when not known."""
    if not isinstance(device_name, str):
        raise ValueError(f"device_name must be a string such as 'NVIDIA H100 80GB HBM3', got {device_name!r}.")
    canonical = normalize_dtype(dtype)
    name = _normalize_name(device_name)
    for row in _ROWS:
        if re.search(row.pattern, name):
            value = row.flops_per_s.get(canonical)
            return None if value is None else PeakFlops(row.device, canonical, value, row.source)
    return None


def peak_flops_per_s(device_name: str, dtype: object, override: float | None = None) -> float | None:
    """Dense peak FLOP/s of one device at ``dtype``; ``override`` (FLOP/s) wins; ``None`` when unknown."""
    if override is not None:
        if not override > 0:
            raise ValueError(f"override={override!r} must be a positive peak in FLOP/s (e.g. 989.4e12).")
        normalize_dtype(dtype)
        return float(override)
    spec = peak_spec(device_name, dtype)
    return None if spec is None else spec.peak_flops_per_s


def mfu(flops: float, duration_s: float, peak_flops_per_s: float | None, num_devices: int = 1) -> float | None:
    """Model FLOPs utilisation: ``flops / (duration_s · peak_flops_per_s · num_devices)``; ``None`` without a peak.

    ``flops`` are the model FLOPs done in ``duration_s`` by ``num_devices`` devices of that peak together.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s={duration_s!r} must be positive.")
    if num_devices < 1:
        raise ValueError(f"num_devices={num_devices!r} must be at least 1.")
    if flops < 0:
        raise ValueError(f"flops={flops!r} must not be negative.")
    if peak_flops_per_s is None:
        return None
    if peak_flops_per_s <= 0:
        raise ValueError(f"peak_flops_per_s={peak_flops_per_s!r} must be positive (or None when unknown).")
    return float(flops) / (float(duration_s) * float(peak_flops_per_s) * num_devices)

"""Who am I in a distributed run, and how to sum numbers over all processes.

Reads the launchers' environment (torchrun, Lightning, Slurm, MPI) and, when ``torch.distributed`` is
initialised, its ranks. Node-level parts (CPU package, RAM) are measured by one *node leader* per node (local rank
0); per-process and per-device parts by every rank; totals are sums over ranks, and only global rank zero logs and
writes.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DistInfo",
    "Ranks",
    "Reducer",
    "default_reducer",
    "dist_info",
    "identity_reducer",
    "sum_with_missing",
    "torch_sum_reducer",
]

Reducer = Callable[[Sequence[float]], list[float]]
"""Sums a vector of floats element-wise over all ranks; every rank gets the result."""

_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")


@dataclass(frozen=True)
class DistInfo:
    """Rank, local rank and world size of this process."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    @property
    def is_node_leader(self) -> bool:
        """Measures node-level energy (CPU package, RAM) for the whole node."""
        return self.local_rank == 0


def _first_int(environ: Mapping[str, str], names: Sequence[str]) -> int | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def dist_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """This process's place in the run: from ``torch.distributed`` when initialised, else the environment."""
    env = os.environ if environ is None else environ
    rank = _first_int(env, _RANK_VARS)
    local_rank = _first_int(env, _LOCAL_RANK_VARS)
    world = _first_int(env, _WORLD_VARS)
    dist = _torch_dist()
    if dist is not None:
        rank = dist.get_rank()
        world = dist.get_world_size()
    rank = rank or 0
    return DistInfo(rank=rank, local_rank=rank if local_rank is None else local_rank, world_size=world or 1)


def _torch_dist():  # type: ignore[no-untyped-def]
    """``torch.distributed`` when torch is already imported and a process group is up, else ``None``."""
    if "torch" not in sys.modules:
        return None
    try:
        import torch.distributed as dist
    except Exception:
        return None
    if dist.is_available() and dist.is_initialized():
        return dist
    return None


def identity_reducer(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


def torch_sum_reducer(values: Sequence[float]) -> list[float]:
    """All-reduce (sum) over the default ``torch.distributed`` group, in float64, on the backend's device."""
    dist = _torch_dist()
    if dist is None:
        return identity_reducer(values)
    import torch

    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu().tolist()]


def default_reducer() -> Reducer:
    """``torch_sum_reducer`` when a process group is up, else the identity (single process)."""
    return torch_sum_reducer if _torch_dist() is not None else identity_reducer


class Ranks:
    """This process's ranks and the sum over ranks, each found when first needed (a process group may be set up
    after the object is made); given ones are kept. Every kind of run holds them in its run context
    (:class:`~green_callbacks.core.run_context.RunContext`)."""

    _dist: DistInfo | None = None
    _reducer: Reducer | None = None

    @property
    def dist(self) -> DistInfo:
        if self._dist is None:
            self._dist = dist_info()
        return self._dist

    @property
    def reducer(self) -> Reducer:
        if self._reducer is None:
            self._reducer = default_reducer()
        return self._reducer


def sum_with_missing(values: Sequence[float | None], reducer: Reducer) -> tuple[list[float | None], list[int]]:
    """Sum values that may be missing (``None`` or NaN) over ranks, in one collective call.

    Returns the sums and, for each entry, how many ranks lacked it. A sum that any rank lacked is ``None``: a
    partial sum would be silently low, so it is reported unavailable and the count says why.
    """
    missing = [v is None or math.isnan(v) for v in values]
    present = [0.0 if gone else float(v) for v, gone in zip(values, missing, strict=True)]  # type: ignore[arg-type]
    reduced = reducer(present + [1.0 if gone else 0.0 for gone in missing])
    n = len(values)
    lacks = [round(x) for x in reduced[n:]]
    return [None if lack else total for total, lack in zip(reduced[:n], lacks, strict=True)], lacks

"""The one save / restore of the random generators a counting run may draw from.

Where the callback has to run the user's model itself (a new input signature of a compiled model counted on a meta
copy, or one real step when a meta copy fails), every global generator is put back afterwards:

    state = rng.save()
    try:
        ...                     # a count that may draw random numbers
    finally:
        rng.restore(state)

or ``with rng.preserved(): ...``. Saved: torch's default CPU generator, every CUDA device's (when CUDA is
initialised), NumPy's global ``RandomState`` and Python's ``random``. A ``torch.Generator`` the user created
cannot be found from here: counting that runs user code cannot protect it, which is why phases and fits count by
observing the real step (nothing re-run) and run user code only for compiled models (docs/flops.md).

Nothing is imported at module import; a library that is not installed is skipped.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["RngState", "preserved", "restore", "save"]


@dataclass(frozen=True)
class RngState:
    """The global generators' states (``None``: that library was not loaded, or CUDA not initialised)."""

    torch_cpu: Any
    torch_cuda: Any
    numpy: Any
    python: Any


def save() -> RngState:
    """Every global generator's state: torch CPU, CUDA (when initialised), NumPy, Python."""
    torch = sys.modules.get("torch")
    torch_cpu = cuda = None
    if torch is not None:
        torch_cpu = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda = torch.cuda.get_rng_state_all()
    numpy = sys.modules.get("numpy")
    numpy_state = None if numpy is None else numpy.random.get_state()
    return RngState(torch_cpu, cuda, numpy_state, random.getstate())


def restore(state: RngState) -> None:
    """Put every generator saved in ``state`` back where it was."""
    if state.torch_cpu is not None:
        import torch

        torch.set_rng_state(state.torch_cpu)
        if state.torch_cuda is not None:
            torch.cuda.set_rng_state_all(state.torch_cuda)
    if state.numpy is not None:
        import numpy

        numpy.random.set_state(state.numpy)
    random.setstate(state.python)


@contextmanager
def preserved() -> Iterator[RngState]:
    """Run the ``with`` body and restore every global generator after it, however it ends."""
    state = save()
    try:
        yield state
    finally:
        restore(state)

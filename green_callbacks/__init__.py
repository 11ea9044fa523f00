"""Energy, emissions and FLOPs to convergence, logged where ML people already look.

Importing this package imports no ML framework. The adapters live in
``green_callbacks.lightning``, ``green_callbacks.keras`` and ``green_callbacks.transformers``
and import their framework lazily; ``green_callbacks.Tracker`` (``green_callbacks.loop``) measures any training
loop with the same engine.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0.dev0"

__all__ = ["Tracker", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Tracker":
        from green_callbacks.loop import Tracker

        return Tracker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

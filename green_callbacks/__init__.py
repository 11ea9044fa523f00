"""Energy, emissions and FLOPs to convergence, logged where ML people already look.

Importing this package imports no ML framework. The adapters live in
``green_callbacks.lightning``, ``green_callbacks.keras`` and ``green_callbacks.transformers``
and import their framework lazily; ``green_callbacks.loop.Tracker`` measures any training loop with the same
engine.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]

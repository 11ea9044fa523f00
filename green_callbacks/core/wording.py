"""How a message tells the user to set an option, in the words of the front end they use, and where it points.

Each front end supplies its :class:`FrontEnd` once (the callbacks' base class, the loop ``Tracker``, the ``measure``
command); the core builds every hint from it: ``GreenCallback(monitor=...)``, ``Tracker(monitor=...)``, or
``--country FR`` on the command line — never one front end's spelling in another's messages.

:func:`warn_user` gives a warning the location of the user's own line (their script, their test), not of this
package or of the framework calling it.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from types import FrameType

__all__ = ["CALLBACK", "MEASURE", "TRACKER", "FrontEnd", "user_stacklevel", "warn_user"]


@dataclass(frozen=True)
class FrontEnd:
    """One front end's way of setting an option.

    Attributes:
        name: what the user calls: ``"GreenCallback"``, ``"Tracker"``, ``"green-callbacks measure"``.
        flags: the options are command-line flags (``--country FR``), not keyword arguments (``country='FR'``).
        options: the options it has; ``None``: every setting of :class:`~green_callbacks.core.config.GreenConfig`.
    """

    name: str
    flags: bool = False
    options: frozenset[str] | None = None

    def has(self, option: str) -> bool:
        """Whether the user can set ``option`` here (``measure`` has no ``monitor``)."""
        return self.options is None or option in self.options

    def setting(self, option: str, value: object, *, literal: bool = False) -> str:
        """``option`` set to ``value``: ``country='FR'``, or ``--country FR``; ``literal``: ``value`` is a
        placeholder written as it is (``carbon_intensity=<gCO2e/kWh>``)."""
        if self.flags:
            return f"--{option.replace('_', '-')} {value}"
        return f"{option}={value if literal else repr(value)}"

    def passing(self, *settings: str) -> str:
        """Where the settings go: ``GreenCallback(monitor=...)``, or the flags alone (``--country FR``)."""
        return " ".join(settings) if self.flags else f"{self.name}({', '.join(settings)})"


CALLBACK = FrontEnd("GreenCallback")
"""The Lightning, Keras and transformers callbacks."""
TRACKER = FrontEnd("Tracker")
"""``green_callbacks.loop.Tracker``."""
MEASURE = FrontEnd("green-callbacks measure", flags=True,
                   options=frozenset({"country", "region", "carbon_intensity", "pue", "output_dir", "gpus"}))
"""The ``green-callbacks measure`` command: its flags; it has no metric to monitor."""

# Frames of these packages are not the user's line: this package, the frameworks that call it, and the standard
# library's plumbing between them (a ``with`` block's ``__exit__``, a decorator's wrapper).
_NOT_USER = frozenset({
    "green_callbacks", "lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities", "keras", "tf_keras",
    "tensorflow", "transformers", "accelerate", "torch", "jax", "contextlib", "functools", "threading",
})


def _is_user(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__")
    return not isinstance(module, str) or module.split(".", 1)[0] not in _NOT_USER


def user_stacklevel(start: FrameType | None = None) -> int:
    """The ``stacklevel`` that points ``warnings.warn``, called from the frame ``start`` (default: the caller of
    this function), at the first frame outside this package and the frameworks; the caller's own line where there
    is none (a background thread)."""
    frame = start if start is not None else sys._getframe(1)
    level = 1
    while frame is not None and not _is_user(frame):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 1


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` located at the user's line (see :func:`user_stacklevel`)."""
    warnings.warn(message, category, stacklevel=user_stacklevel(sys._getframe(1)) + 1)

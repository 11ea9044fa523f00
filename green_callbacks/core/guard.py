"""The never-break-the-training guard.

Adapters run every piece of their work through :class:`Guard`. A failure is caught, warned about once with what
was lost and what to do, and the failing part is switched off; the training goes on. With the environment variable
``GREEN_CALLBACKS_STRICT=1`` (set by the test suite) failures re-raise instead, so bugs cannot hide.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from green_callbacks.core.wording import warn_user

__all__ = ["STRICT_ENV", "Guard", "strict_mode"]

STRICT_ENV = "GREEN_CALLBACKS_STRICT"
T = TypeVar("T")


def strict_mode() -> bool:
    """True when ``GREEN_CALLBACKS_STRICT`` is set to a true value (``1``, ``true``, ``yes``)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class Guard:
    """Runs parts of the callback's work so that none of them can break the training.

    ``guard.call("flops", fn, ...)`` returns ``fn``'s result, or ``None`` when the part failed now or earlier.
    What failed is kept in :attr:`lost` (part → error text) for the run record.
    """

    def __init__(self, owner: str = "green_callbacks") -> None:
        self.owner = owner
        self.lost: dict[str, str] = {}

    def enabled(self, part: str) -> bool:
        return part not in self.lost

    def call(self, part: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T | None:
        if part in self.lost:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            self.absorb(part, err)
            return None

    def absorb(self, part: str, err: Exception) -> None:
        """What :meth:`call` does with an error of ``part``, for hot paths that catch it themselves (no extra call
        layer on every training step): raise it in strict mode, else switch ``part`` off and warn once."""
        if strict_mode():
            raise err
        self.fail(part, err)

    def fail(self, part: str, err: BaseException) -> None:
        """Switch ``part`` off and warn once."""
        if part in self.lost:
            return
        self.lost[part] = f"{type(err).__name__}: {err}"
        warn_user(
            f"{self.owner}: {part} failed and is switched off for the rest of this run "
            f"({self.lost[part]}). Training goes on; the run record lists what was lost. "
            f"Set {STRICT_ENV}=1 to raise instead, and please report this.", RuntimeWarning)

    def unavailable(self, part: str, reason: str) -> None:
        """Switch ``part`` off for a known limitation (not a failure): ``reason`` is kept in :attr:`lost` for the run
        record and said once, as it is."""
        if part in self.lost:
            return
        self.lost[part] = reason
        warn_user(f"{self.owner}: {reason}", UserWarning)

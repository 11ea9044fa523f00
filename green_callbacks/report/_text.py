"""Text safety shared by the report's outputs."""

from __future__ import annotations

import re

__all__ = ["strip_control"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_control(text: str) -> str:
    """``text`` without control characters (ESC, OSC, BEL, CR, C1, ...) except newline and tab: safe on a terminal."""
    return _CONTROL.sub("", text)

"""Text safety shared by the report's outputs: no control character reaches a terminal, no text fails to encode."""

from __future__ import annotations

import re

__all__ = ["encodable", "strip_control"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def strip_control(text: str) -> str:
    """``text`` without control characters (ESC, OSC, BEL, CR, C1, ...) except newline and tab: safe on a terminal."""
    return _CONTROL.sub("", text)


def _byte_or_replacement(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "\ufffd"


def encodable(text: str, encoding: str = "utf-8") -> str:
    """``text`` that ``encoding`` can encode, never an error.

    A lone surrogate — a file name that was not UTF-8, as ``os.fsdecode`` gives it (``'/data/caf\\udce9'``) — is
    written as the byte it stands for (``/data/caf\\xe9``), any other one as U+FFFD; a character ``encoding`` lacks
    (an ASCII terminal) is backslash-escaped.
    """
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        pass
    except LookupError:  # a stream that names no codec Python knows
        encoding = "utf-8"
    text = _SURROGATE.sub(_byte_or_replacement, text)
    return text.encode(encoding, "backslashreplace").decode(encoding)

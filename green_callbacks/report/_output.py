"""Where the report's text goes: a terminal stream, or a file replaced atomically. Never a half-written file, never
an encoding error: text is made encodable (:func:`~green_callbacks.report._text.encodable`) before anything is
opened."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from green_callbacks.core.record_writer import write_bytes_atomic
from green_callbacks.report._text import encodable, strip_control

__all__ = ["say", "show", "write_atomic", "write_text_atomic"]


def _encoding(stream: TextIO) -> str:
    return getattr(stream, "encoding", None) or "utf-8"


def show(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` (already free of control characters) to ``stream`` (default standard output)."""
    stream = sys.stdout if stream is None else stream
    stream.write(encodable(text, _encoding(stream)))


def say(message: str, stream: TextIO | None = None) -> None:
    """One message line on ``stream`` (default standard error), its control characters removed."""
    stream = sys.stderr if stream is None else stream
    print(encodable(strip_control(message), _encoding(stream)), file=stream)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it over ``path``
    (:func:`~green_callbacks.core.record_writer.write_bytes_atomic`, the record's own): a write that fails leaves the
    previous file whole and no temporary file. Raises ``OSError``."""
    return write_bytes_atomic(path, data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_atomic` of ``text`` in UTF-8, made encodable first (a lone surrogate never fails the write)."""
    return write_atomic(path, encodable(text).encode("utf-8"))

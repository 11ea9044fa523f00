"""Where the report's text goes: a terminal stream, or a file replaced atomically. Never a half-written file, never
an encoding error: text is made encodable (:func:`~green_callbacks.report._text.encodable`) before anything is
opened."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import TextIO

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
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename it over ``path``: a write
    that fails (a full disk, a quota) leaves the previous file whole and no temporary file. The folder is made if
    missing; the file gets the permissions the umask allows. Raises ``OSError``."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_atomic` of ``text`` in UTF-8, made encodable first (a lone surrogate never fails the write)."""
    return write_atomic(path, encodable(text).encode("utf-8"))

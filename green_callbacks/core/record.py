"""Run records: the versioned JSON file a run leaves behind, written atomically, and the reader for it.

A record is plain JSON (nothing is pickled or evaluated) named ``green-run-<UTC time>-<id>.json`` with a
top-level ``"schema": "green-callbacks/run/1"``. It is rewritten after every epoch by writing a temporary file
beside it and renaming it over the old one, so a crash leaves the last complete epoch on disk.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "STATUSES",
    "RecordError",
    "find_records",
    "new_record_path",
    "read_record",
    "write_record_atomic",
]

SCHEMA = "green-callbacks/run/1"
SCHEMA_PREFIX = "green-callbacks/run/"
STATUSES = ("running", "completed", "interrupted", "failed")
RECORD_GLOB = "green-run-*.json"


class RecordError(ValueError):
    """A file that is not a readable run record of a schema this version understands."""


def new_record_path(output_dir: str | os.PathLike[str]) -> Path:
    """A fresh, unique record path in ``output_dir`` (``~`` expanded, made absolute now, so that a later change of
    the working directory does not move the record); two runs never share one."""
    folder = Path(output_dir).expanduser().absolute()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"green-run-{stamp}-{uuid.uuid4().hex[:8]}.json"


def _jsonable(value: Any) -> Any:
    """Floats that are NaN or infinite become ``None`` (JSON has neither); containers are walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    # numpy / torch scalars and anything else: a number if it is one, else its text
    try:
        return _jsonable(float(value))
    except (TypeError, ValueError):
        return str(value)


def write_record_atomic(path: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    """Write ``record`` as JSON to ``path`` atomically (temporary file in the same folder, then rename)."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(record), indent=2, sort_keys=False, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=".green-run-", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.write("\n")
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


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check one run record; :class:`RecordError` says what is wrong with a bad one."""
    source = Path(path).expanduser()
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{source}: not a readable run record ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise RecordError(f"{source}: a run record is a JSON object, found {type(data).__name__}")
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise RecordError(f"{source}: schema {schema!r} is not a green-callbacks run record ({SCHEMA!r})")
    major = schema[len(SCHEMA_PREFIX):].split(".", 1)[0]
    if major != SCHEMA[len(SCHEMA_PREFIX):]:
        raise RecordError(
            f"{source}: schema {schema!r} is not the version this green_callbacks reads ({SCHEMA!r}); "
            "use the green_callbacks version that wrote it (a newer one: upgrade)"
        )
    for key, kind in (("status", str), ("epochs", list), ("totals", dict)):
        if not isinstance(data.get(key), kind):
            raise RecordError(f"{source}: field {key!r} missing or not a {kind.__name__}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{source}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    data["_path"] = str(source)
    return data


def find_records(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Record files among ``paths``: files as given, folders searched recursively for ``green-run-*.json``."""
    for entry in paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            yield from sorted(path.rglob(RECORD_GLOB))
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")

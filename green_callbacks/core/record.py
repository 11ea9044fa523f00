"""Run records: the versioned JSON file a run leaves behind, and the reader for it.

A record is plain JSON (nothing is pickled or evaluated) named ``green-run-<UTC time>-<id>.json`` with a
top-level ``"schema": "green-callbacks/run/1.1"`` (records of any ``green-callbacks/run/1.x`` read). While a run goes
on, the record is a header with ``"epochs": []`` and ``"epochs_log"`` naming a ``green-run-*.epochs.jsonl`` file
beside it, one JSON object per completed epoch; the reader joins them. The writer is
:mod:`green_callbacks.core.record_writer`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "STATUSES",
    "RecordError",
    "find_records",
    "read_record",
]

SCHEMA = "green-callbacks/run/1.1"
SCHEMA_PREFIX = "green-callbacks/run/"
STATUSES = ("running", "completed", "interrupted", "failed")
RECORD_GLOB = "green-run-*.json"
EPOCHS_LOG_SUFFIX = ".epochs.jsonl"
_EPOCHS_LOG_NAME = re.compile(r"^green-run-[^/\\]*\.epochs\.jsonl$")
MAX_RECORD_BYTES = 512 * 1024 * 1024


class RecordError(ValueError):
    """A file that is not a readable run record of a schema this version understands."""


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
    if major != SCHEMA[len(SCHEMA_PREFIX):].split(".", 1)[0]:
        raise RecordError(
            f"{source}: schema {schema!r} is not the version this green_callbacks reads ({SCHEMA!r}); "
            "use the green_callbacks version that wrote it (a newer one: upgrade)"
        )
    for key, kind in (("status", str), ("epochs", list), ("totals", dict)):
        if not isinstance(data.get(key), kind):
            raise RecordError(f"{source}: field {key!r} missing or not a {kind.__name__}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{source}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    log = data.get("epochs_log")
    if isinstance(log, str) and _EPOCHS_LOG_NAME.match(log):
        data["epochs"] = [*data["epochs"], *_read_epochs_log(source.with_name(log))]
        last = data["epochs"][-1].get("totals") if data["epochs"] else None
        if isinstance(last, dict) and isinstance(last.get("epochs"), int) and last["epochs"] > data["totals"].get(
            "epochs", 0
        ):  # killed between appending an epoch and replacing the header: the epoch's own running totals are newer
            data["totals"] = dict(last)
    data["_path"] = str(source)
    return data


def _read_epochs_log(path: Path) -> list[dict[str, Any]]:
    """The epochs appended to a running record's log; a torn last line (a kill mid-write) is left out."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_RECORD_BYTES:
            return []
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    epochs = []
    for line in text.split("\n")[:-1]:  # the part after the last newline is incomplete
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            epochs.append(entry)
    return epochs


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

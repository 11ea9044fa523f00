"""Writing a run record: a small header replaced atomically, one appended line per epoch, the full record at the end.

The format (read back by :mod:`green_callbacks.core.record`; described in docs/records.md):

* while the run goes on, ``green-run-<stamp>-<id>.json`` is the header — everything but the epochs — with
  ``"epochs": []`` and ``"epochs_log": "green-run-<stamp>-<id>.epochs.jsonl"``; every completed epoch is appended to
  that log once, as one newline-terminated JSON object. Nothing is rewritten in full per epoch, so an epoch costs the
  same at epoch 2,000 as at epoch 2, and a SIGKILL leaves every completed epoch readable;
* at the end (any status), the complete record with every epoch inline and ``"epochs_log": null`` is written
  atomically and the log deleted.

Header and epoch lines are written by one background thread (``RecordWriter``), off the training thread; the last
write (:meth:`RecordWriter.final`) is synchronous. A write that fails (a full disk) is kept and retried with the next
one, and reported once through :meth:`RecordWriter.take_error`. Temporary files are named for the machine and process
that writes them (:func:`temp_prefix`: host name, boot id, PID namespace, process id), so that a later run in the same
folder removes those a killed process *of the same machine* left behind and never touches another machine's (a
shared filesystem: cluster nodes, containers writing into one folder); files get the permissions the umask allows,
like any file the user's program writes.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from green_callbacks.core.record import EPOCHS_LOG_SUFFIX

__all__ = [
    "RecordWriter",
    "clean_stale_temp_files",
    "epochs_log_name",
    "jsonable",
    "new_record_path",
    "temp_prefix",
    "write_bytes_atomic",
    "write_json_atomic",
]

HEADER_INTERVAL_S = 5.0
"""While a run goes on, its session hands the writer a new header at most this often (the first at once, the newest
at a flush and the end): a header is rebuilt from the whole state and replaced for ~0.5 ms of CPU, which runs of
thousands of short epochs would otherwise pay per epoch, while what it adds to the epoch lines (convergence, methods,
lost parts) changes slowly. After a SIGKILL it is at most that much older than the last epoch line; the reader takes
the totals from that line."""
_TMP_PREFIX = ".green-run-tmp-"
# .green-run-tmp-<host>-<boot id>-<pid namespace>-<pid>-<mkstemp's random part>.tmp; the host may hold '-', the rest
# not (mkstemp's part is [a-z0-9_]), so the fields are read from the right. The name does not start with a digit
# after ".green-run-": earlier versions, which removed ".green-run-<pid>-*.tmp" of any process not alive *here*,
# leave these files alone.
_TMP_PATTERN = re.compile(r"^\.green-run-tmp-(?P<machine>.+-[0-9a-z]+-\d+)-(?P<pid>\d+)-[a-z0-9_]+\.tmp$")
_NO_BOOT_ID = "noboot"


def _safe(text: str) -> str:
    """``text`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced (a file-name part)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64] or "_"


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """``<host>-<boot id>-<pid namespace>``: what makes a process id meaningful.

    A process id names a process only on one running kernel and in one PID namespace: another host, the same host
    after a reboot, and another container may each have a live process under the same number. The boot id
    (``/proc/sys/kernel/random/boot_id``, first 12 hex digits) tells two boots and two machines of the same name
    apart; the PID namespace (the inode of ``/proc/self/ns/pid``) two containers of one boot. Where one is not
    readable (not Linux) it is ``noboot`` / ``0``: the host name alone then, as ``kill(pid, 0)`` could do no better.
    """
    try:
        namespace = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:
        namespace = "0"
    return f"{_safe(socket.gethostname())}-{_boot_id()}-{namespace}"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return re.sub(r"[^0-9a-f]", "", handle.read().lower())[:12] or _NO_BOOT_ID
    except OSError:
        return _NO_BOOT_ID


def temp_prefix() -> str:
    """The start of this process's temporary file names: ``.green-run-tmp-<host>-<boot id>-<pid namespace>-<pid>-``
    (the process id is read now: a forked child writes under its own)."""
    return f"{_TMP_PREFIX}{_machine()}-{os.getpid()}-"


def new_record_path(output_dir: str | os.PathLike[str]) -> Path:
    """A fresh, unique record path in ``output_dir`` (``~`` expanded, made absolute now, so that a later change of
    the working directory does not move the record); two runs never share one."""
    folder = Path(output_dir).expanduser().absolute()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return folder / f"green-run-{stamp}-{uuid.uuid4().hex[:8]}.json"


def epochs_log_name(record_path: str | os.PathLike[str]) -> str:
    """``green-run-<stamp>-<id>.epochs.jsonl`` for ``green-run-<stamp>-<id>.json``: a plain name, same folder."""
    name = Path(record_path).name
    return (name[: -len(".json")] if name.endswith(".json") else name) + EPOCHS_LOG_SUFFIX


def jsonable(value: Any) -> Any:
    """Plain JSON values: NaN/infinite floats become ``None``, containers are walked, numbers (NumPy, torch
    scalars) become floats, anything else its text — and an object whose text cannot be had a labelled string.
    Never raises: an odd hyperparameter must not cost the record."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_text(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    try:
        number = float(value)
    except Exception:
        return _text(value)
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception as err:  # e.g. a tensor on a device that cannot be read
        return f"<unserialisable {type(value).__name__}: {type(err).__name__}>"


def _umask() -> int:
    """The process's umask, read without changing it where ``/proc`` says it (else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_json(data: Mapping[str, Any]) -> str:
    """JSON of a plain ``data`` with one top-level key per line and one line per item of a top-level list of
    objects (a record's epochs): easy to read and diff, and encoded by the C encoder (an indented dump takes the
    pure-Python one: 61 against 27 ms for a record of 2,000 epochs on the development machine)."""
    dumps = functools.partial(json.dumps, allow_nan=False)
    lines = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = ",\n    ".join(map(dumps, value))
            lines.append(f"  {dumps(key)}: [\n    {items}\n  ]")
        else:
            lines.append(f"  {dumps(key)}: {dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}" if lines else "{}"


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any], *, compact: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (:func:`write_bytes_atomic`): :func:`readable_json`, or one
    line with ``compact``."""
    plain = jsonable(data)
    text = json.dumps(plain, allow_nan=False) if compact else readable_json(plain)
    return write_bytes_atomic(path, (text + "\n").encode("utf-8"))


_IN_FLIGHT: set[tuple[int, str]] = set()
"""The temporary files being written now, with the writing process's id (a forked child holds a copy of the set)."""


def abandon_in_flight() -> None:
    """Remove this process's temporary files still being written: called just before the process dies of a signal,
    whose default action would otherwise leave a write it interrupted half-done on disk (the final record is written
    first, through its own temporary file)."""
    pid = os.getpid()
    for owner, tmp in list(_IN_FLIGHT):
        if owner == pid:
            _IN_FLIGHT.discard((owner, tmp))
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder (named for this machine and process:
    :func:`temp_prefix`), fsync, then rename it over ``path``: a write that fails (a full disk, a quota) leaves the
    previous file whole and no temporary file. The folder is made if missing; the file gets the permissions the
    umask allows, like any file the user's program writes. Raises ``OSError``."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), suffix=".tmp", dir=target.parent)
    entry = (os.getpid(), tmp)
    _IN_FLIGHT.add(entry)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
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
    finally:
        _IN_FLIGHT.discard(entry)
    return target


def clean_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files in ``folder`` that a process of this machine left behind (a write cut by SIGKILL).

    Only files named for this host, this boot and this PID namespace (:func:`temp_prefix`) whose process is gone;
    another machine's or container's files (a shared folder), and files of an unknown form, are never touched: their
    process id means nothing here."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TMP_PATTERN.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group("pid"))
        if match.group("machine") != _machine() or pid == os.getpid() or _alive(pid):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process: not ours to judge
    return True


class RecordWriter:
    """Writes one run's record: each completed epoch appended to the epoch log at once (one short ``write``, so a
    SIGKILL right after the epoch still leaves it readable; its ``fsync`` and the header's atomic replacement happen
    in a background thread), the final record synchronously."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.log_path = self.path.with_name(epochs_log_name(self.path))
        self._cond = threading.Condition()
        self._header: Mapping[str, Any] | None = None
        self._lines: list[Mapping[str, Any] | str] = []
        self._busy = False
        self._sync = False  # an epoch line was appended by the training thread: the background thread fsyncs it
        self._thread: threading.Thread | None = None
        self._closed = False
        self._error: OSError | None = None
        self._reported = False
        self._pid = os.getpid()
        self._append_lock = threading.Lock()  # the log is appended by the training thread and by the retries
        self._first_header = True

    # -- called from the training thread ---------------------------------------------------------------------

    def header(self, record: Mapping[str, Any]) -> None:
        """Replace the header. The first one is written now (~1 ms at the run's start): the record exists before
        any epoch line does, so a kill or a full disk later never leaves an epoch log without its header. Later ones
        are written by the background thread (only the newest pending one); a failed first write goes there too,
        to be retried and reported once."""
        if self._first_header:
            self._first_header = False
            try:
                write_json_atomic(self.path, record, compact=True)
                return
            except OSError:
                pass
        self._submit(header=record)

    def epoch(self, entry: Mapping[str, Any]) -> None:
        """Append one completed epoch to the log now (in order, once): one ``write`` of one line, without
        ``fsync`` (the background thread syncs it); after a failed write the lines wait, in order, for the
        background thread's retry."""
        with self._cond:
            queued = bool(self._lines) or self._closed
        if not queued:
            try:
                self._append([entry], sync=False)
            except OSError:
                pass  # kept for the background thread, which retries and reports the error once
            else:
                self._submit(sync=True)
                return
        self._submit(line=entry)

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Wait until everything submitted so far was written (or failed); True when nothing is pending."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._busy or (self._thread is not None and self._thread.is_alive() and self._pending()):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def final(self, record: Mapping[str, Any]) -> Path:
        """The complete record, every epoch inline, written now (atomically); then the epoch log is deleted."""
        self.flush()
        with self._cond:
            self._closed = True
            self._header, self._lines = None, []
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread() and os.getpid() == self._pid:
            thread.join(timeout=30.0)  # no header replacement may land after (or beside) the final record
        written = write_json_atomic(self.path, {**record, "epochs_log": None})
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass
        except OSError:  # the complete record is written: a leftover log is harmless (epochs_log is null)
            pass
        return written

    def take_error(self) -> OSError | None:
        """The first write error since the last call (each error reported once), else ``None``."""
        with self._cond:
            err, self._error = self._error, None
        return err

    # -- the background thread -------------------------------------------------------------------------------

    def _pending(self) -> bool:
        return self._header is not None or bool(self._lines) or self._sync

    def _submit(
        self, *, header: Mapping[str, Any] | None = None, line: Mapping[str, Any] | None = None, sync: bool = False
    ) -> None:
        with self._cond:
            if self._closed:
                return
            if header is not None:
                self._header = header
            if line is not None:
                self._lines.append(line)
            self._sync = self._sync or sync
            if self._thread is None or not self._thread.is_alive() or os.getpid() != self._pid:
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="green-callbacks-record", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending() and not self._closed:
                    if not self._cond.wait(timeout=5.0) and not self._pending():  # idle: end; a submit restarts
                        self._thread = None
                        self._cond.notify_all()
                        return
                if self._closed and not self._pending():
                    self._cond.notify_all()
                    return
                header, lines, sync = self._header, list(self._lines), self._sync
                self._header, self._lines, self._sync = None, [], False
                self._busy = True
            failed = False
            try:
                if lines:
                    self._append(lines)
                    lines = []
                elif sync:
                    self._fsync_log()
                if header is not None:
                    write_json_atomic(self.path, header, compact=True)  # one line; the final is readable_json
                    header = None
            except OSError as err:
                failed = True
                with self._cond:
                    if self._error is None and not self._reported:
                        self._error = err
                        self._reported = True
            except Exception as err:  # a bug: keep it for the training thread to raise or warn about
                failed = True
                with self._cond:
                    self._error = OSError(f"{type(err).__name__}: {err}")
            finally:
                with self._cond:
                    if lines:  # not written: kept, in order, for the next attempt
                        self._lines[:0] = lines
                    if header is not None and self._header is None:
                        self._header = header
                    self._busy = False
                    if failed:  # retried with the next submission (the next epoch), not in a tight loop
                        self._thread = None
                    self._cond.notify_all()
            if failed:
                return

    def _fsync_log(self) -> None:
        try:
            fd = os.open(self.log_path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append(self, lines: list[Mapping[str, Any] | str], *, sync: bool = True) -> None:
        with self._append_lock:
            self._append_locked(lines, sync)

    def _append_locked(self, lines: list[Mapping[str, Any] | str], sync: bool) -> None:
        text = "".join(
            (line if isinstance(line, str) else json.dumps(jsonable(line), allow_nan=False)) + "\n" for line in lines
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        size = os.fstat(fd).st_size
        try:
            data = text.encode("utf-8")
            while data:  # one write() in practice; a short write goes on where it stopped
                written = os.write(fd, data)
                data = data[written:]
            if sync:
                os.fsync(fd)
        except OSError:
            try:  # no torn line in the middle of the log: the retry appends these lines whole
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)

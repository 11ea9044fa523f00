"""Where one run's record goes: the writer, the header's throttling, the final write, write errors, the machine.

Every kind of run (a fit, a test / predict / evaluate phase, the Tracker's fits) writes its record through one
:class:`RecordSink`, so that how a record reaches the disk is one edit:

* :meth:`RecordSink.write` appends the new epoch rows to the epoch log at once and hands a fresh header to the
  writer's thread at most every :data:`~green_callbacks.core.record_writer.HEADER_INTERVAL_S` (unless forced);
* :meth:`RecordSink.final` writes the whole record atomically with signals held (a handler that raises cannot cut
  it short), retried when one did;
* a failed write warns once per run (strict mode re-raises) and is retried with the next;
* the machine and versions (:meth:`RecordSink.capture_environment`) are read off the training thread.

Only the process that opened the sink writes (global rank zero; a forked DataLoader worker holds a stale copy).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from green_callbacks.core import record_writer
from green_callbacks.core.guard import strict_mode
from green_callbacks.core.record_writer import RecordWriter, clean_stale_temp_files
from green_callbacks.core.rows import EpochRow
from green_callbacks.core.signals import signals_held
from green_callbacks.core.wording import warn_user

__all__ = ["RecordSink", "environment_of"]

Build = Callable[[], dict[str, Any]]


def environment_of(sensors_info: dict[str, Any]) -> dict[str, Any]:
    """The machine and the versions for the record; a fact that cannot be read is said, never worth a run."""
    from green_callbacks.core.environment import hardware_info, software_info
    from green_callbacks.core.record_sections import to_json

    try:
        return {"hardware": to_json(hardware_info(sensors_info)), "software": to_json(software_info())}
    except Exception as err:
        return {"hardware": None, "software": None, "environment_error": f"{type(err).__name__}: {err}"}


class RecordSink:
    """One run's record on disk.

    Args:
        what: how messages name the record (``"run record"``, ``"test record"``).
        retried: a failed write is retried with the next one (a fit's epochs); else it is the only write.
    """

    def __init__(self, what: str = "run record", *, retried: bool = True) -> None:
        self.what = what
        self.retried = retried
        self.path: Path | None = None
        self.environment: dict[str, Any] = {}
        """The machine and versions once captured (merged into the record by its builder)."""
        self._writer: RecordWriter | None = None
        self._pid = os.getpid()
        self._logged = 0  # rows already appended to the epoch log
        self._header_at = -math.inf  # time.monotonic() when a header was last handed to the writer
        self._header_stale = False  # the state changed since then (a replacement was skipped)
        self._warned = False
        self._environment: threading.Thread | None = None

    # ------------------------------------------------------------------ set-up
    def open(self, path: Path, *, writes: bool, fresh_log: bool = False) -> None:
        """Write to ``path`` from now on where ``writes`` (global rank zero); ``fresh_log``: a resumed run's epoch
        log is written again from its restored rows."""
        self.path = path
        self._pid = os.getpid()
        self._logged = 0
        if not writes:
            self._writer = None
            return
        clean_stale_temp_files(path.parent)
        self._writer = RecordWriter(path)
        if fresh_log:
            self.reset_log()

    def reopen(self, path: Path, *, new_file: bool) -> None:
        """A resumed run continues its record: the epoch log is written afresh from the restored rows; with
        ``new_file`` the record is the checkpoint's file rather than the one this run opened."""
        self.path = path
        self._logged = 0
        if self._writer is not None:
            if new_file:
                self._writer = RecordWriter(path)
            self.reset_log()

    @property
    def writes_here(self) -> bool:
        return self._writer is not None and os.getpid() == self._pid

    def reset_log(self) -> None:
        """Remove the epoch log (its lines are written again from the rows the run holds)."""
        assert self._writer is not None
        self._writer.flush()
        self._logged = 0
        try:
            os.unlink(self._writer.log_path)
        except OSError:
            pass

    # ------------------------------------------------------------------ while the run goes on
    def write(self, rows: Sequence[EpochRow], header: Build, *, force: bool = False) -> None:
        """New rows to the epoch log at once; a fresh header when ``force`` or when the last one is old."""
        if not self.writes_here:
            return
        assert self._writer is not None
        while self._logged < len(rows):
            self._writer.epoch(rows[self._logged].to_record())
            self._logged += 1
        self.replace_header(header, force=force)
        self._check()

    def replace_header(self, header: Build, *, force: bool = False) -> None:
        """Hand ``header()`` to the writer when ``force`` or when the last one is ``HEADER_INTERVAL_S`` old; else
        note that the one on disk is stale (the caller holds the run's lock, or owns the run)."""
        now = time.monotonic()
        if not force and now - self._header_at < record_writer.HEADER_INTERVAL_S:
            self._header_stale = True
            return
        assert self._writer is not None
        self._header_at, self._header_stale = now, False
        self._writer.header(header())

    def replace_stale(self, header: Build) -> None:
        """Write the header now if one was skipped for its interval (the caller holds the run's lock)."""
        if self._header_stale and self.writes_here:
            self.replace_header(header, force=True)

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Wait until the disk holds everything handed over (and the machine and versions are captured)."""
        self.await_environment()
        if self._writer is None:
            return True
        done = self._writer.flush(timeout_s)
        self._check()
        return done

    def _check(self) -> None:
        assert self._writer is not None
        err = self._writer.take_error()
        if err is not None:
            self.report_error(err)

    # ------------------------------------------------------------------ the end
    def final(self, record: Build) -> None:
        """The run's last write, safe from other code's signal handlers.

        A handler that raises can cut a write short anywhere (PyTorch raises from SIGCHLD when a DataLoader worker
        is killed, e.g. by a scheduler's SIGTERM to the whole job). Signals are held back during the write (our
        own SIGTERM/SIGHUP handling is put off in the whole process: another thread may receive the signal), and a
        write cut short by one already pending is done again; that exception then goes on to the training loop.
        """
        if not self.writes_here:
            return
        error: BaseException | None = None
        with signals_held():
            for _ in range(3):
                try:
                    self._final_write(record)
                    break
                except BaseException as err:
                    error = error or err
        if error is not None and not isinstance(error, OSError):
            raise error

    def _final_write(self, record: Build) -> None:
        assert self._writer is not None
        self.await_environment()
        try:
            self._writer.final(record())
        except OSError as err:
            self.report_error(err)

    def report_error(self, err: OSError) -> None:
        """One warning per run (strict mode raises): a fit's record is retried after every epoch and at the end."""
        if strict_mode():
            raise err
        if self._warned:
            return
        self._warned = True
        again = "it is retried after every epoch and at the end (not warned again). " if self.retried else ""
        warn_user(f"green_callbacks: could not write the {self.what} {self.path} ({err}); {again}Set output_dir= "
                  "to a writable folder with free space.", RuntimeWarning)

    # ------------------------------------------------------------------ the machine
    def capture_environment(self, sensors_info: dict[str, Any], then: Callable[[], None] | None = None) -> None:
        """Read the machine and versions on a background thread (not the training thread's time); ``then`` runs
        on that thread once they are in :attr:`environment` (the fit replaces its header)."""

        def capture() -> None:
            self.environment = environment_of(sensors_info)
            if then is not None:
                then()

        self._environment = threading.Thread(target=capture, name="green-callbacks-env", daemon=True)
        self._environment.start()

    def await_environment(self) -> None:
        if self._environment is not None and self._environment is not threading.current_thread():
            self._environment.join(timeout=10.0)

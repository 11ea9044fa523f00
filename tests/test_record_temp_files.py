"""Temporary record files on a shared folder: a run removes only what a dead process of its own machine left.

A process id means something only on one kernel boot and in one PID namespace. Each writer below is a real process
that dies (or blocks) in the middle of an atomic write, leaving its temporary file, as a SIGKILL would; "another
host" and "another boot" are that process with its host name or boot id replaced (the only fakes: machine facts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from green_callbacks.core import record_writer
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.distributed import DistInfo
from green_callbacks.core.sensors.fake import StepEnergySensor
from green_callbacks.core.session import Session

ROOT = Path(__file__).resolve().parents[1]

# A writer cut in the middle of write_json_atomic: the temporary file is written and fsynced, then, where the rename
# would be, it either dies at once ("die") or says which file it holds and waits for stdin to close ("hold").
_WRITER = textwrap.dedent(
    """
    import os, socket, sys
    from green_callbacks.core import record_writer
    folder, how, host, boot = sys.argv[1:5]
    if host:
        socket.gethostname = lambda: host
    if boot:
        record_writer._boot_id = lambda: boot
    def cut(source, target):
        if how == "hold":
            print(os.path.basename(source), flush=True)
            sys.stdin.read()
        os._exit(0)
    os.replace = cut
    record_writer.write_json_atomic(os.path.join(folder, "green-run-x.json"), {"status": "running"})
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _left_by_dead_writer(folder: Path, *, host: str = "", boot: str = "") -> Path:
    subprocess.run([sys.executable, "-c", _WRITER, str(folder), "die", host, boot], check=True, env=_env(),
                   timeout=60)
    (left,) = folder.glob(".green-run-*.tmp")
    return left


def _start_a_run(folder: Path) -> None:
    session = Session(GreenConfig(output_dir=str(folder), carbon_intensity=100.0), framework="test",
                      sensors=[StepEnergySensor("cpu", [1.0, 2.0, 3.0, 4.0, 5.0])], dist=DistInfo(),
                      reducer=lambda v: list(v))
    session.start()
    session.finish("completed")


def test_another_hosts_temporary_file_survives_a_new_run(tmp_path: Path) -> None:
    """Host node-b's writer is gone from *this* machine's process table, as every process of another host is."""
    left = _left_by_dead_writer(tmp_path, host="node-b")
    _start_a_run(tmp_path)
    assert left.exists()
    assert "-node-b-" in left.name


def test_same_host_name_other_boot_temporary_file_survives(tmp_path: Path) -> None:
    """Same host name, another boot id: another machine of that name (or a boot before), never judged from here."""
    left = _left_by_dead_writer(tmp_path, boot="0123456789ab")
    _start_a_run(tmp_path)
    assert left.exists()


def test_this_machines_dead_writer_temporary_file_is_removed(tmp_path: Path) -> None:
    left = _left_by_dead_writer(tmp_path)
    _start_a_run(tmp_path)
    assert not left.exists()


def test_earlier_versions_files_and_unknown_forms_are_left_alone(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    legacy = tmp_path / f".green-run-{dead.pid}-abc123.tmp"  # an earlier version's name: no machine in it
    odd = tmp_path / f".green-run-tmp-{dead.pid}.tmp"
    for path in (legacy, odd):
        path.write_text("{")
    assert record_writer.clean_stale_temp_files(tmp_path) == []
    assert legacy.exists() and odd.exists()


def _unshare() -> list[str]:
    tool = shutil.which("unshare")
    if tool is None:
        pytest.skip("no unshare command on this machine: the two-PID-namespace test needs util-linux's unshare")
    command = [tool, "--pid", "--fork", "--mount-proc"]
    probe = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid is not permitted here (needs root or user namespaces): {probe.stderr.strip()}")
    return command


def test_a_run_in_another_pid_namespace_keeps_a_live_writers_file(tmp_path: Path) -> None:
    """Two containers of one host writing into one folder: each has its own PID namespace, same host name and boot.

    The writer is process 2 of its namespace (a shell is process 1) and is alive, in the middle of its write; the new
    run is process 1 of another namespace, where no process 2 exists: ``kill(2, 0)`` there says "gone"."""
    unshare = _unshare()
    writer = subprocess.Popen(
        [*unshare, "sh", "-c", 'exec 3<&0; "$0" -c "$1" "$2" hold "" "" <&3; true', sys.executable, _WRITER,
         str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        assert writer.stdout is not None
        held = writer.stdout.readline().strip()
        assert held and (tmp_path / held).exists()
        cleaner = subprocess.run(
            [*unshare, sys.executable, "-c",
             "import os, sys; from green_callbacks.core import record_writer as w; "
             "print(os.getpid(), [p.name for p in w.clean_stale_temp_files(sys.argv[1])])", str(tmp_path)],
            capture_output=True, text=True, env=_env(), timeout=60,
        )
        assert cleaner.returncode == 0, cleaner.stderr
        assert cleaner.stdout.split()[0] == "1"  # the new run is alone in its namespace: no process 2 there
        assert (tmp_path / held).exists(), cleaner.stdout
    finally:
        if writer.stdin is not None:
            writer.stdin.close()
        writer.wait(timeout=60)


_SIGTERM_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from green_callbacks.core import record_writer
    from green_callbacks.core.signals import ExitHandlers

    closed = []
    handlers = ExitHandlers(lambda status, reason: closed.append((status, reason)))
    handlers.install()
    real_fsync = os.fsync

    def fsync_then_signalled(fd):  # SIGTERM lands while the header write is between its fsync and its rename
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGTERM)

    os.fsync = fsync_then_signalled
    record_writer.write_bytes_atomic(os.path.join(sys.argv[1], "record.json"), b"{}")
    print("survived the signal", flush=True)
    """
)


def test_a_signal_that_kills_the_process_mid_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """SIGTERM's default action, taken after the run's final record is written, kills the process inside the write it
    interrupted: that write's temporary file is removed first (a scheduler's SIGTERM with DataLoader workers)."""
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_MID_WRITE, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -15, proc.stderr  # died of the signal, as without the handler
    assert "survived" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no record (the rename never ran), no temporary file


_SIGTERM_DURING_A_HELD_WRITE = textwrap.dedent(
    """
    import os, signal, sys, threading
    from pathlib import Path
    from green_callbacks.core.signals import ExitHandlers, signals_held

    folder = Path(sys.argv[1])
    handlers = ExitHandlers(lambda status, reason: (folder / "closed").write_text(
        f"{status}, {'after' if (folder / 'final').exists() else 'before'} the final write"))
    handlers.install()
    go = threading.Event()
    # a thread started before the write does not hold signals back (a torch or writer thread): a process-directed
    # SIGTERM reaches it, and Python then runs the handler in the main thread, inside the held write
    killer = threading.Thread(target=lambda: (go.wait(), os.kill(os.getpid(), signal.SIGTERM)))
    killer.start()
    with signals_held():
        go.set()
        killer.join()
        for _ in range(1000):  # bytecodes: where the handler would run
            pass
        (folder / "final").write_text("whole")
    print("survived the signal", flush=True)
    """
)


def test_a_signal_during_the_final_write_is_put_off_until_the_write_is_done(tmp_path: Path) -> None:
    """The final record's write is held: a SIGTERM that arrives meanwhile (through another thread) is handled when
    the write is done, so the record on disk is the whole final one, then the process dies of the signal."""
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_DURING_A_HELD_WRITE, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -15, proc.stderr
    assert "survived" not in proc.stdout
    assert (tmp_path / "final").read_text() == "whole"
    # handled once the write was done, by the same handler (before: inside it, where a thread that does not hold
    # the signal then took its default action and killed the process in the middle of the final record)
    assert (tmp_path / "closed").read_text() == "interrupted, after the final write"

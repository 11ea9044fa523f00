"""Process faults: an exception in a training step, KeyboardInterrupt, SIGTERM, SIGKILL, resume after a crash, and
forked DataLoader workers while a sampler thread runs.

"Ends as the user's code would have made it end": the same training is run without the callback, and the callback
must not change what escapes ``fit`` (the same exception, or Lightning's own ``SystemExit`` after a Ctrl-C) nor how
far the training got. Energy comes from step sensors unless the test is about a sensor's thread.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import StepEnergySensor
from tests.fakes.fake_pynvml import FakeGpu, FakePynvml, install
from tests.faults.harness import EPOCHS, STEPS_PER_EPOCH, epochs_of, train

SCRIPT = Path(__file__).parent / "scripts" / "train.py"


def sensors():
    return [StepEnergySensor("cpu", 2.0, scope="node"), StepEnergySensor("ram", 1.0, scope="node")]


def raising(error: BaseException, at: tuple[int, int] = (1, 2)):
    def action(epoch: int, step: int) -> None:
        if (epoch, step) == at:
            raise error

    return action


def same_outcome(with_green, without) -> None:
    """What escaped ``fit`` and how far the training got are those of the run without the callback."""
    assert type(with_green.error) is type(without.error)
    assert str(with_green.error) == str(without.error)
    assert with_green.probe.steps == without.probe.steps


# ------------------------------------------------------------------------------------ exceptions and interrupts


def test_exception_in_a_training_step(adapter, tmp_path):
    boom = RuntimeError("boom in epoch 1, step 2")
    run = train(adapter, tmp_path / "green", output_dir=str(tmp_path / "runs"), sensors=sensors(),
                action=raising(boom))
    baseline = train(adapter, tmp_path / "plain", with_callback=False, action=raising(RuntimeError(str(boom))))
    same_outcome(run, baseline)
    # the user's own exception object, not a wrapper of ours (Keras itself re-raises it with the layer's context)
    assert run.error is boom or (adapter == "keras" and str(boom) in str(run.error))
    record = run.record
    assert record["status"] == "failed"
    assert record["error"].startswith("RuntimeError: ") and str(boom) in record["error"]
    assert epochs_of(record) == [0]  # the last complete epoch
    assert record["partial_epoch"]["epoch"] == 1 and "incomplete" in record["partial_epoch"]["note"]
    assert record["totals"]["epochs"] == 1
    assert record["totals"]["energy_j"] == pytest.approx(record["epochs"][0]["energy_j"])
    assert run.green_warnings() == []  # the user's traceback is the message; nothing of ours on top
    assert run.callback.session.meter._started is False  # sensors closed


def test_keyboard_interrupt(adapter, tmp_path):
    run = train(adapter, tmp_path / "green", output_dir=str(tmp_path / "runs"), sensors=sensors(),
                action=raising(KeyboardInterrupt()))
    baseline = train(adapter, tmp_path / "plain", with_callback=False, action=raising(KeyboardInterrupt()))
    same_outcome(run, baseline)  # Lightning turns Ctrl-C into SystemExit(1) after its graceful shutdown
    record = run.record
    assert record["status"] == "interrupted"
    assert record["error"].startswith("KeyboardInterrupt")
    assert epochs_of(record) == [0]
    assert record["partial_epoch"]["epoch"] == 1
    assert run.green_warnings() == []


# ------------------------------------------------------------------------------------ signals, in a subprocess


def _start(adapter: str, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), adapter, str(out), "--epochs", "200", "--step-s", "0.03", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _start_and_wait(adapter: str, out: Path, epochs_on_disk: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Start a long training and return once its record on disk holds ``epochs_on_disk`` complete epochs."""
    proc = _start(adapter, out, *extra)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        found = list(out.glob("green-run-*.json"))
        if found and len(read_record(found[0])["epochs"]) >= epochs_on_disk:  # whole or absent: renamed in place
            return proc, found[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{adapter}: epoch {epochs_on_disk - 1} never reached the disk")


def _plain_exit_code(proc: subprocess.Popen, signum: int) -> int:
    """How the same training, started with ``--plain``, ends on ``signum`` (sent once its epoch 2 has begun)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("epoch 2"):
            break
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    return proc.returncode


# Lightning turns SIGTERM into its SIGTERMException (a SystemExit without a code: exit status 0) after running
# on_exception; the Keras and HF sessions write the record and let the process die of SIGTERM, as it would
# without a callback. The test checks both this table and the plain run.
SIGTERM_EXIT = {"lightning": 0, "keras": -signal.SIGTERM, "transformers": -signal.SIGTERM}


@pytest.mark.slow
def test_sigterm_leaves_the_last_complete_epoch_interrupted(adapter, tmp_path):
    plain = _start(adapter, tmp_path / "plain", "--plain")  # the baseline, trained alongside
    proc, path = _start_and_wait(adapter, tmp_path, epochs_on_disk=2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == SIGTERM_EXIT[adapter], err[-3000:]
    assert proc.returncode == _plain_exit_code(plain, signal.SIGTERM)
    record = read_record(path)
    assert record["status"] == "interrupted"
    assert record["error"] is not None and "SIGTERM" in record["error"]
    assert len(record["epochs"]) >= 2 and epochs_of(record) == list(range(len(record["epochs"])))
    assert record["totals"]["epochs"] == len(record["epochs"])
    assert not list(tmp_path.glob(".green-run-*.tmp"))


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_forked_workers(adapter, tmp_path):
    """A scheduler (Slurm's scancel, a container stop) signals every process of the job, DataLoader workers too.

    The workers are forked copies of the training process, with a copy of the session as it was when they were
    forked: they must not write that stale copy over the record.
    """
    proc, path = _start_and_wait(adapter, tmp_path, 2, "--workers", "2")
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    record = read_record(path)
    # Which comes first is a race: the SIGTERM itself (interrupted), or PyTorch's error for its killed workers
    # (failed), which it raises from its SIGCHLD handler ("killed by signal: Terminated") or, when the data queue
    # saw the dead worker first, from the fetch ("exited unexpectedly"). Never "running", never the workers' stale
    # copy of the record.
    assert record["status"] in ("interrupted", "failed"), err[-3000:]
    if record["status"] == "failed":
        error = record["error"]
        assert "killed by signal: Terminated" in error or (
            error.startswith("RuntimeError: DataLoader worker (pid(s) ") and error.endswith("exited unexpectedly")
        ), error
    assert len(record["epochs"]) >= 2 and record["totals"]["epochs"] == len(record["epochs"])
    assert not list(tmp_path.glob(".green-run-*.tmp"))


@pytest.mark.slow
def test_sigkill_leaves_the_last_complete_epoch_on_disk(adapter, tmp_path):
    proc, path = _start_and_wait(adapter, tmp_path, epochs_on_disk=2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    record = read_record(path)  # readable: written by rename, never torn
    assert record["status"] == "running"  # nothing could run after SIGKILL: the last write stays
    assert len(record["epochs"]) >= 2
    assert record["totals"]["epochs"] == len(record["epochs"])
    assert record["totals"]["energy_j"] == pytest.approx(sum(row["energy_j"] for row in record["epochs"]))


# ------------------------------------------------------------------------------------ resume


def _checkpoint(adapter: str, root: Path):
    if adapter == "lightning":
        return str(sorted((root / "ckpt").glob("*.ckpt"))[-1])
    if adapter == "transformers":
        return str(max((root / "hf").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])))
    return None  # Keras: BackupAndRestore in the same folder resumes by itself


def test_resume_after_a_crash_continues_the_totals(adapter, tmp_path):
    crash = RuntimeError("crash in epoch 2")
    first = train(adapter, tmp_path, checkpoint=True, output_dir=str(tmp_path / "runs"), sensors=sensors(),
                  action=raising(crash, at=(2, 1)))
    assert str(crash) in str(first.error)
    crashed = first.record
    assert crashed["status"] == "failed" and epochs_of(crashed) == [0, 1]

    second = train(adapter, tmp_path, checkpoint=True, resume=_checkpoint(adapter, tmp_path),
                   output_dir=str(tmp_path / "runs"), sensors=sensors())
    assert second.error is None
    assert second.probe.steps == STEPS_PER_EPOCH  # only epoch 2 was trained again
    record = second.record
    assert Path(second.callback.record_path) == Path(first.callback.record_path)  # the same record goes on
    assert record["status"] == "completed"
    assert epochs_of(record) == [0, 1, 2]
    assert record["resumed_from"]["epochs"] == 2
    assert record["totals"]["epochs"] == EPOCHS
    # totals continue: epochs 0 and 1 from before the crash plus epoch 2 of the resumed run
    assert record["epochs"][:2] == crashed["epochs"]
    assert record["totals"]["energy_j"] == pytest.approx(sum(row["energy_j"] for row in record["epochs"]))
    assert record["totals"]["train_flops"] == pytest.approx(sum(row["train_flops"] for row in record["epochs"]))


# ------------------------------------------------------------------------------------ fork while a thread samples


@pytest.mark.slow  # forks DataLoader workers (HF: 21 s on a loaded 2-core machine)
def test_forked_dataloader_workers_while_the_power_sampler_runs(adapter, tmp_path, monkeypatch):
    """NVML without an energy counter: a thread samples power every 0.1 s while 2 DataLoader workers are forked."""
    install(monkeypatch, FakePynvml([FakeGpu(counter=False, power_mw=150_000.0)]))
    faulthandler.dump_traceback_later(180, exit=True)  # a deadlock ends the session loudly instead of hanging
    try:
        run = train(adapter, tmp_path, gpus=[0], num_workers=2, output_dir=str(tmp_path / "runs"))
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert run.error is None, repr(run.error)
    assert run.probe.steps == EPOCHS * STEPS_PER_EPOCH
    record = run.record
    assert record["status"] == "completed" and epochs_of(record) == [0, 1, 2]
    for row in record["epochs"]:
        # 150 W integrated once over the epoch's window: not doubled by the forked workers
        assert row["component_energy_j"]["gpu"] == pytest.approx(150.0 * row["time_s"], rel=0.05, abs=150.0 * 0.01)
        # CPU-time estimate of the process tree (workers included): at most every core busy all epoch, at 12 W,
        # plus the counter's resolution: each process's user and system times advance in whole clock ticks, so a
        # window's difference can be up to one tick over per field and process (main + 2 train + 2 val workers).
        tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        resolution_j = 12.0 * 5 * 2 * tick_s
        assert 0 <= row["component_energy_j"]["cpu"] <= 12.0 * os.cpu_count() * row["time_s"] * 1.05 + resolution_j
    gpu = run.callback.session.meter.sensors["gpu"]
    assert not gpu.sampling  # the sampler thread stopped with the run
    # Letting go of the trainer releases the persistent workers at once, as without the callback: the callback
    # holds nothing in a reference cycle with the trainer (which left HF's workers to time out, 5 s each).
    del run, gpu
    started = time.monotonic()
    gc.collect()
    assert time.monotonic() - started < 4.0
    deadline = time.monotonic() + 4.0
    while psutil.Process().children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert psutil.Process().children() == []


def test_keras_resume_with_unreadable_saved_totals_starts_afresh(tmp_path):
    pytest.importorskip("keras")
    first = train("keras", tmp_path, checkpoint=True, output_dir=str(tmp_path / "runs"), sensors=sensors(),
                  action=raising(RuntimeError("crash"), at=(2, 1)))
    state = tmp_path / "backup" / "green_callbacks_state.json"
    assert first.error is not None and state.exists()
    state.write_text('{"totals": ')  # cut short
    second = train("keras", tmp_path, checkpoint=True, output_dir=str(tmp_path / "runs"), sensors=sensors())
    assert second.error is None and second.probe.steps == STEPS_PER_EPOCH  # Keras itself resumed at epoch 2
    record = second.record
    assert Path(second.callback.record_path) != Path(first.callback.record_path)
    assert record["status"] == "completed" and epochs_of(record) == [2] and record["resumed_from"] is None
    assert "could not be read" in " ".join(second.green_warnings())

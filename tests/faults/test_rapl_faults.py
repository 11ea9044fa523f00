"""RAPL faults in real trainings of each adapter: permission denied, a zone vanishing, a wrap inside an epoch, an
absurd jump.

A fake powercap tree (tests/fakes/powercap.py) is the machine's RAPL, reached the way a user reaches a bind-mounted
one: ``GREEN_CALLBACKS_RAPL_ROOT``. Two packages (``package-0`` with a ``dram`` subzone, and ``package-1``); the
probe in the model adds 5 J to each package and 2 J to the dram before every training step, so a complete epoch of
4 steps is, by hand, CPU 4 × (5 + 5) = 40 J and RAM 4 × 2 = 8 J. A healthy fake GPU (``gpus=[0]``) keeps the GPU
from adding a warning of its own. Hardware faults: strict mode stays on and nothing may raise.
"""

from __future__ import annotations

import pytest

from tests.fakes.fake_pynvml import FakeGpu, FakePynvml, install
from tests.fakes.powercap import FakePowercap
from tests.faults.harness import EPOCHS, STEPS_PER_EPOCH, epochs_of, only, train

PKG_J, DRAM_J = 5.0, 2.0
EPOCH_CPU_J = STEPS_PER_EPOCH * 2 * PKG_J  # 40 J: two packages
EPOCH_RAM_J = STEPS_PER_EPOCH * DRAM_J  # 8 J


@pytest.fixture
def powercap(tmp_path, monkeypatch) -> FakePowercap:
    tree = FakePowercap(tmp_path / "powercap")
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    tree.add_zone("intel-rapl:0:0", "dram", energy_uj=3_000_000)
    tree.add_zone("intel-rapl:1", "package-1", energy_uj=2_000_000)
    tree.install(monkeypatch)
    monkeypatch.setenv("GREEN_CALLBACKS_RAPL_ROOT", str(tree.root))
    install(monkeypatch, FakePynvml([FakeGpu()]))
    return tree


def heat(tree: FakePowercap, at: tuple[int, int] | None = None, fault=None):
    """The action: the fault (if any) at ``at = (epoch, step)``, then one step's energy into every live zone."""

    def action(epoch: int, step: int) -> None:
        if (epoch, step) == at:
            fault()
        for zone, joules in (("intel-rapl:0", PKG_J), ("intel-rapl:1", PKG_J), ("intel-rapl:0:0", DRAM_J)):
            if (tree.paths[zone] / "energy_uj").exists():
                tree.add_energy(zone, joules)

    return action


def rows(record, component):
    return [row["component_energy_j"][component] for row in record["epochs"]]


def completed(run) -> dict:
    assert run.error is None, repr(run.error)
    assert run.probe.steps == EPOCHS * STEPS_PER_EPOCH
    record = run.record
    assert record["status"] == "completed"
    assert epochs_of(record) == list(range(EPOCHS))
    return record


def test_rapl_permission_denied(adapter, tmp_path, powercap):
    powercap.deny("intel-rapl:1")  # one package's counter is root-only: the CPU sum would be low, so no RAPL CPU
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"), action=heat(powercap))
    record = completed(run)
    assert record["methods"]["cpu"] == ["estimate-cpu-time"]  # labelled estimate, not RAPL, not 0
    assert record["methods"]["ram"] == ["rapl"]  # the dram counter is readable: still measured
    assert rows(record, "ram") == [pytest.approx(EPOCH_RAM_J)] * EPOCHS
    assert "permission denied" in record["components"]["cpu"]["rapl_not_used_because"]
    message = only(run.green_warnings(), "cannot be read by this user")
    assert "udev" in message and "GREEN_CALLBACKS_RAPL_ROOT" in message
    assert len(run.green_warnings()) == 1


def test_rapl_zone_vanishing_mid_run(adapter, tmp_path, powercap):
    action = heat(powercap, at=(1, 2), fault=lambda: powercap.remove("intel-rapl:1"))
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"), action=action)
    record = completed(run)
    # epoch 0 complete: 40 J; package-1 gone in epoch 1: CPU unknown from then on (a partial sum would be low)
    assert rows(record, "cpu") == [pytest.approx(EPOCH_CPU_J), None, None]
    assert rows(record, "ram") == [pytest.approx(EPOCH_RAM_J)] * EPOCHS  # package-0's dram goes on
    assert record["methods"]["cpu"] == ["rapl", "unavailable"]
    assert record["totals"]["energy_j"] == pytest.approx(sum(row["energy_j"] for row in record["epochs"]))
    message = only(run.green_warnings(), "cpu energy could not be measured in epoch 1")
    assert "intel-rapl:1 (package-1) could not be read any more" in message
    assert len(run.green_warnings()) == 1


def test_rapl_wrap_inside_an_epoch(adapter, tmp_path, powercap):
    # package-0 starts 12 J below its range: it wraps during epoch 0's third step (5 J a step).
    top = powercap.ranges["intel-rapl:0"]
    powercap.set_energy("intel-rapl:0", top - 12_000_000)
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"), action=heat(powercap))
    record = completed(run)
    # the fake counter really wrapped: 12 steps × 5 J = 60 J after starting 12 J below the top -> 48 J
    assert powercap.energy_uj("intel-rapl:0") == (EPOCHS * STEPS_PER_EPOCH * PKG_J - 12) * 1_000_000
    assert rows(record, "cpu") == [pytest.approx(EPOCH_CPU_J)] * EPOCHS  # exact across the wrap
    zones = {z["zone"]: z for z in record["components"]["cpu"]["zones"]}
    assert zones["intel-rapl:0"]["wraps"] == 1
    assert run.green_warnings() == []  # a wrap is normal: nothing to warn about


def test_rapl_absurd_jump(adapter, tmp_path, powercap):
    # package-1 jumps by 100 kJ during epoch 1 (far above 5 kW for any epoch shorter than 20 s): a counter reset or
    # a bad read. Epoch 1's CPU energy is unknown (never the under-count of a dropped delta); epochs 0 and 2 exact.
    action = heat(powercap, at=(1, 1), fault=lambda: powercap.add_energy("intel-rapl:1", 100_000.0))
    run = train(adapter, tmp_path, gpus=[0], output_dir=str(tmp_path / "runs"), action=action)
    record = completed(run)
    assert rows(record, "cpu") == [pytest.approx(EPOCH_CPU_J), None, pytest.approx(EPOCH_CPU_J)]
    assert rows(record, "ram") == [pytest.approx(EPOCH_RAM_J)] * EPOCHS
    assert record["methods"]["cpu"] == ["rapl", "unavailable"]
    assert any("jumped by" in note for note in record["components"]["cpu"]["notes"])
    message = only(run.green_warnings(), "cpu energy could not be measured in epoch 1")
    assert "intel-rapl:1 (package-1) jumped by" in message
    assert len(run.green_warnings()) == 1

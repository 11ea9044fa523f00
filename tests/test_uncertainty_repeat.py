"""Repeated measurement of a phase (core/repeat.py, ``GreenCallback.repeat_phase``): warm-up rounds left out, the
median round with the order-statistic interval of the median, each figure by hand.

Energy: fake sensors of constant power driven by the fake clock; each round's batches last a chosen time, so each
round's energy, time and energy per sample are known exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from green_callbacks.core.config import GreenConfig
from green_callbacks.core.phase_session import PhaseTap
from green_callbacks.core.record import read_record
from green_callbacks.core.repeat import repeat_phase
from green_callbacks.core.sensors.fake import ConstantPowerSensor

BATCH_S = [1.0, 0.3, 0.5, 0.4, 0.6, 0.2]  # per round (the first a warm-up): each of its batches lasts this long


class _Batch:
    """A duck-typed batch of ``n`` samples of 4 features (shape only)."""

    def __init__(self, n: int) -> None:
        self.shape = (n, 4)
        self.dtype = "float32"


def test_core_rounds_by_hand(tmp_path: Path, fake_clock) -> None:
    tap = PhaseTap(GreenConfig(output_dir=str(tmp_path), carbon_intensity=400.0), framework="test",
                   sensors=[ConstantPowerSensor("gpu", 100.0, scope="device")], training=lambda: None)
    seconds = iter(BATCH_S)

    def run_once() -> str:
        batch_s = next(seconds)
        tap.begin("test", device_indices=[0], handle_signals=False)
        for n in (4, 4, 2):  # batches 1 and 3 are the first of their shape (warm-up), batch 2 the steady part
            tap.batch_start(_Batch(n))
            fake_clock.advance(batch_s)
            tap.batch_end()
        tap.end()
        return f"round at {batch_s} s"

    result = repeat_phase(run_once, lambda: tap.last, rounds=5, warmup_rounds=1)
    assert len(result.warmup) == 1 and result.warmup[0].duration_s == pytest.approx(3.0)
    # rounds: 3 batches of 0.3 0.5 0.4 0.6 0.2 s: 0.9 1.5 1.2 1.8 0.6 s, at 100 W
    assert [r.duration_s for r in result.rounds] == pytest.approx([0.9, 1.5, 1.2, 1.8, 0.6])
    time = result.median("duration_s")
    # 5 rounds: too few for 95 % (k = 1 covers 1 - 2/32 = 93.75 %): the range, said with its coverage
    assert (time.median, time.low, time.high) == pytest.approx((1.2, 0.6, 1.8))
    assert time.coverage == pytest.approx(1 - 2 / 32)
    energy = result.median("energy_j")
    assert (energy.median, energy.low, energy.high) == pytest.approx((120.0, 60.0, 180.0))
    per_sample = result.median("energy_per_sample_j")  # the steady batch: 100 W x its seconds / 4 samples
    assert (per_sample.median, per_sample.low, per_sample.high) == pytest.approx((10.0, 5.0, 15.0))
    assert result.output == "round at 0.2 s"
    line = result.summary()
    assert "5 round(s) after 1 warm-up round(s)" in line and "median energy 120 J (60–180 J)" in line
    assert "covers 93.8 %" in line
    records = sorted(tmp_path.glob("*.json"))
    assert len(records) == 6 and all(read_record(p)["kind"] == "test" for p in records)


def test_a_round_not_measured_leaves_the_median_unavailable() -> None:
    class Result:
        def __init__(self, energy_j: float) -> None:
            self.energy_j, self.duration_s, self.energy_per_sample_j = energy_j, 1.0, None

    results = iter([Result(10.0), Result(20.0)])
    last = [None]

    def run_once() -> None:
        nxt = next(results, None)
        if nxt is not None:  # the third round is not measured: read() gives the second round's result again
            last[0] = nxt

    result = repeat_phase(run_once, lambda: last[0], rounds=3, warmup_rounds=0)
    assert result.rounds[2] is None
    assert result.median("energy_j") is None and result.median("duration_s") is None
    assert "median energy unavailable" in result.summary()


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"rounds": 2.0}, {"warmup_rounds": -1}, {"confidence": 1.0}])
def test_bad_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        repeat_phase(lambda: None, lambda: None, **kwargs)


def test_lightning_test_repeated(tmp_path: Path, fake_clock) -> None:
    pytest.importorskip("lightning")
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from green_callbacks.lightning import GreenCallback

    seconds = iter(BATCH_S)
    current = [0.0]

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(4, 2)

        def on_test_start(self) -> None:
            current[0] = next(seconds)

        def on_test_batch_start(self, batch, batch_idx, dataloader_idx=0) -> None:
            fake_clock.advance(current[0])

        def test_step(self, batch, batch_idx):
            return None

    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x), batch_size=4)
    callback = GreenCallback(sensors=[ConstantPowerSensor("gpu", 100.0, scope="device"),
                                      ConstantPowerSensor("cpu", 25.0, scope="node")],
                             carbon_intensity=400.0, output_dir=str(tmp_path))
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path))
    module = Module()
    result = callback.repeat_phase(lambda: trainer.test(module, loader, verbose=False), rounds=5, warmup_rounds=1)
    # 125 W: rounds of 0.9 1.5 1.2 1.8 0.6 s -> median 150 J within 75-225 J; the steady batch (4 samples)
    assert result.median("energy_j").median == pytest.approx(125.0 * 1.2)
    assert (result.median("energy_j").low, result.median("energy_j").high) == pytest.approx((75.0, 225.0))
    assert result.median("energy_per_sample_j").median == pytest.approx(125.0 * 0.4 / 4)
    assert result.warmup[0].energy_j == pytest.approx(125.0 * 3.0)
    assert len(list(tmp_path.rglob("green-*.json"))) == 6

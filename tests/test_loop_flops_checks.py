"""The loop ``Tracker``'s FLOPs get the callbacks' later checks and hardware FLOPs (#25).

Its steps are counted by watching the model run (``core/flops/step_watch.py``): later steps of a signature are
watched again at the same bounded schedule (2nd, 4th, 8th, ... step), a differing one makes the signature
data-dependent (sampled, with a range); activation checkpointing's recompute is kept out of the model FLOPs and
recorded as hardware FLOPs (``green/hfu``). Truths: torch's own ``FlopCounterMode`` (with the engine's formulas)
around one real forward + backward of every batch, on a copy, summed in the test.
"""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from green_callbacks.core.flops import FlopCountWarning  # noqa: E402
from green_callbacks.core.flops.formulas import custom_flop_mapping  # noqa: E402
from green_callbacks.core.record import read_record  # noqa: E402
from green_callbacks.loop import Tracker  # noqa: E402
from tests.models import Blocks, Branch  # noqa: E402
from tests.test_loop import sensors  # noqa: E402


def _loss(model, x):
    return model(x).pow(2).sum()


def _truth(twin, model, x):
    """One real forward + backward of ``x`` on a copy of ``model`` (``twin``, its weights loaded), counted by torch's
    own counter."""
    twin.load_state_dict(model.state_dict())
    with FlopCounterMode(display=False, custom_mapping=custom_flop_mapping()) as counter:
        _loss(twin, x).backward()
    return counter.get_total_flops()


def _run(tmp_path, model, batches, fake_clock, epochs=1):
    """A hand-written loop with the Tracker; the truth of every batch summed on a copy before its real step."""
    twin = copy.deepcopy(model)  # before the tracker hooks the model
    tracker = Tracker(carbon_intensity=100.0, sensors=sensors(), output_dir=str(tmp_path), model=model,
                      monitor="val_loss")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    truths, greens = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tracker:
            for _ in range(epochs):
                truth = 0
                with tracker.epoch() as ep:
                    for x in batches:
                        truth += _truth(twin, model, x)
                        opt.zero_grad()
                        _loss(model, x).backward()
                        opt.step()
                        fake_clock.advance(1.0)
                        tracker.step((x,))
                    ep.metrics["val_loss"] = 1.0
                truths.append(truth)
                greens.append(ep.green)
    flop_warnings = [w for w in caught if issubclass(w.category, FlopCountWarning)]
    return read_record(tracker.record_path), truths, greens, flop_warnings


def test_a_data_dependent_model_in_a_loop_is_labelled_sampled_with_the_truth_in_its_range(tmp_path, fake_clock):
    torch.manual_seed(0)
    batches = [torch.randn(6, 8) for _ in range(40)]
    record, truths, _, flop_warnings = _run(tmp_path, Branch(), batches, fake_clock, epochs=2)
    flops = record["flops"]
    assert flops["epoch_methods"] == ["sampled", "sampled"]
    assert flops["data_dependent"] and flops["counts"]["checks_failed"] == 1
    for row, truth, (low, high) in zip(record["epochs"], truths, flops["epoch_train_flops_range"], strict=True):
        assert low <= truth <= high  # the truth lies in the stated range
        assert low <= row["train_flops"] <= high
    assert all("data-dependent" in note for note in flops["epoch_notes"])
    assert len(flop_warnings) == 1 and "depends on the data" in str(flop_warnings[0].message)
    # bounded: the first count, the check at the 2nd step, then 1 step in 8
    watched = sum(v["watched"] for v in flops["data_dependent"].values())
    assert watched <= 2 + 80 // 8


def test_a_shape_driven_model_in_a_loop_stays_counted_and_exact_with_its_checks(tmp_path, fake_clock):
    torch.manual_seed(0)
    batches = [torch.randn(6, 6) for _ in range(20)]
    record, truths, _, flop_warnings = _run(tmp_path, Blocks(None), batches, fake_clock)
    flops = record["flops"]
    assert [row["train_flops"] for row in record["epochs"]] == truths
    assert flops["epoch_methods"] == ["counted"] and not flop_warnings
    assert flops["counts"]["checks"] == 4 and flops["counts"]["checks_failed"] == 0  # steps 2, 4, 8 and 16


def test_activation_checkpointing_in_a_loop_gives_model_and_hardware_flops_apart(tmp_path, fake_clock):
    torch.manual_seed(0)
    plain_model = Blocks(None)
    ckpt_model = Blocks(False)
    ckpt_model.load_state_dict(plain_model.state_dict())
    batches = [torch.randn(8, 6) for _ in range(5)]
    plain, plain_truths, plain_green, _ = _run(tmp_path / "plain", plain_model, batches, fake_clock)
    ckpt, ckpt_truths, ckpt_green, _ = _run(tmp_path / "ckpt", ckpt_model, batches, fake_clock)
    assert ckpt_truths[0] > plain_truths[0]  # the recompute is real work
    [plain_row], [ckpt_row] = plain["epochs"], ckpt["epochs"]
    assert ckpt_row["train_flops"] == plain_row["train_flops"] == plain_truths[0]  # model FLOPs: no recompute
    assert ckpt_row["train_hardware_flops"] == ckpt_truths[0]  # hardware FLOPs: everything the device ran
    assert plain_row["train_hardware_flops"] == plain_truths[0]
    assert ckpt["flops"]["activation_checkpointing"] is True
    assert ckpt_green[0]["green/hfu"] > ckpt_green[0]["green/mfu"] > 0
    assert ckpt_green[0]["green/mfu"] == plain_green[0]["green/mfu"]
    assert plain_green[0]["green/hfu"] == plain_green[0]["green/mfu"]

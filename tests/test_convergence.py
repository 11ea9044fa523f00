"""Convergence on synthetic series: min/max modes, plateaus, ties, a target reached and never reached."""

from __future__ import annotations

import math

import pytest

from green_callbacks.core.convergence import ConvergenceTracker, Totals, infer_mode


def feed(tracker: ConvergenceTracker, values: list[float | None]) -> None:
    """Epoch i costs 10 J and 100 FLOPs: the totals after epoch i are (i + 1) × that."""
    for i, value in enumerate(values):
        n = i + 1
        tracker.update(i, value, Totals(epochs=n, time_s=2.0 * n, train_flops=100.0 * n, eval_flops=10.0 * n,
                                        energy_j=10.0 * n, emissions_gco2e=0.5 * n))


def test_min_mode_best_is_the_earliest_minimum_with_its_totals():
    tracker = ConvergenceTracker("val_loss")
    feed(tracker, [1.0, 0.6, 0.7, 0.4, 0.4, 0.5])  # best 0.4 first at epoch 3; the tie at epoch 4 does not move it
    assert tracker.mode == "min"
    assert tracker.best is not None
    assert (tracker.best.epoch, tracker.best.value) == (3, 0.4)
    assert tracker.best.totals.epochs == 4
    assert tracker.best.totals.train_flops == 400.0 and tracker.best.totals.energy_j == 40.0
    assert tracker.best.totals.emissions_gco2e == 2.0 and tracker.best.totals.time_s == 8.0


def test_max_mode_and_plateau():
    tracker = ConvergenceTracker("val_acc")
    feed(tracker, [0.5, 0.8, 0.8, 0.8, 0.79])  # plateau from epoch 1 on: converged at epoch 1
    assert tracker.mode == "max"
    assert tracker.best is not None and tracker.best.epoch == 1 and tracker.best.totals.epochs == 2


def test_missing_and_nan_values_are_skipped():
    tracker = ConvergenceTracker("val_loss", mode="min")
    feed(tracker, [None, float("nan"), 2.0, None])
    assert tracker.best is not None and tracker.best.epoch == 2


def test_target_reached_first_time_and_never():
    reached = ConvergenceTracker("val_acc", target=0.75)
    feed(reached, [0.5, 0.76, 0.9, 0.7])
    assert reached.at_target is not None
    assert reached.at_target.epoch == 1 and reached.at_target.totals.energy_j == 20.0
    assert reached.best is not None and reached.best.epoch == 2

    never = ConvergenceTracker("val_loss", target=0.1)
    feed(never, [1.0, 0.5, 0.2])
    assert never.at_target is None and never.best is not None and never.best.value == 0.2

    exactly = ConvergenceTracker("val_loss", target=0.5)
    feed(exactly, [1.0, 0.5])  # reaching means <= in min mode
    assert exactly.at_target is not None and exactly.at_target.epoch == 1


def test_state_round_trip():
    tracker = ConvergenceTracker("val_loss", target=0.5)
    feed(tracker, [1.0, 0.4, 0.6])
    again = ConvergenceTracker("val_loss", target=0.5)
    again.load_state_dict(tracker.state_dict())
    assert again.best == tracker.best and again.at_target == tracker.at_target


@pytest.mark.parametrize(("name", "mode"), [("val_loss", "min"), ("eval_loss", "min"), ("val_accuracy", "max"),
                                            ("eval_f1", "max"), ("val/mae", "min"), ("auc", "max")])
def test_infer_mode(name, mode):
    assert infer_mode(name) == mode


def test_uninferable_mode_and_bad_target_explain():
    with pytest.raises(ValueError, match="pass mode='min' or mode='max'"):
        ConvergenceTracker("val_wobble")
    with pytest.raises(ValueError, match="target must be a finite number"):
        ConvergenceTracker("val_loss", target=math.inf)


def test_the_ledger_returns_the_monitor_message_and_says_nothing_itself() -> None:
    import warnings

    from green_callbacks.core.ledger import RunLedger
    from green_callbacks.core.wording import CALLBACK

    ledger = RunLedger(None, CALLBACK)
    ledger.advance(time_s=1.0, train_flops=None, eval_flops=None, energy_j=1.0, emissions_gco2e=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no I/O in the ledger: a warning here would raise
        first = ledger.observe(0, {"loss": 1.0})
        second = ledger.observe(1, {"loss": 0.9})
        adopted = ledger.observe(2, {"loss": 0.8, "val_loss": 2.0})
    assert first is not None and "no validation metric was logged in epoch 0" in first
    assert second is None  # said once
    assert adopted is not None and "follows 'val_loss' (min)" in adopted
    assert ledger.monitor == "val_loss"

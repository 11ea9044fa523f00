"""The FLOP record's labels say what happened: how each count was made, one failure counted once, only compute ops
listed as uncounted."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from green_callbacks.core.flops import FlopCountWarning, FlopTracker  # noqa: E402
from tests.models import CappedLength  # noqa: E402


def _step(tracker, model, x, replay=None):
    tracker.begin("train", model, (x,), replay)
    if not tracker.replaying and replay is None:
        model(x).sum().backward()
    tracker.end()


def test_where_names_observed_and_meta_counts_as_they_were_made():
    model = nn.Linear(4, 2)
    tracker = FlopTracker()
    assert tracker.info()["where"] == "nothing counted yet"
    _step(tracker, model, torch.randn(3, 4))
    where = tracker.info()["where"]
    assert where.startswith("observed") and "1 counted" in where and "meta" not in where
    _step(tracker, model, torch.randn(5, 4), replay=lambda m, b: m(*b).sum())  # a compiled model's way: a meta copy
    counts = tracker.info()["counts"]
    assert (counts["observed"], counts["meta"]) == (1, 1)
    where = tracker.info()["where"]
    assert "observed" in where and "meta-device copy" in where


def test_one_failed_verification_is_counted_once_however_many_counts_follow():
    tracker = FlopTracker()
    model = CappedLength(6)  # every length past 6 is cut to 6 (a capped window)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seq in (2, 3, 4, 8, 9, 10, 11):  # 8 contradicts the fit through 2, 3, 4; 9, 10, 11 are counted after
            _step(tracker, model, torch.randn(2, seq, 4))
    assert tracker.info()["counts"]["verifications_failed"] == 1
    assert tracker.info()["lines_failed"] == 1
    assert sum(issubclass(w.category, FlopCountWarning) for w in caught) == 1


def test_integer_index_arithmetic_is_not_listed_as_uncounted_compute():
    class Route(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            idx = torch.arange(x.shape[0]) // 2  # floor_divide: token -> expert index maths
            return self.lin(x[idx])

    tracker = FlopTracker()
    _step(tracker, Route(), torch.randn(6, 4))
    assert tracker.info()["uncounted_ops"] == []
    assert tracker.info()["lower_bound"] is False


def test_counts_made_once_on_a_copy_are_labelled_counted_once_not_counted():
    """A compiled model's signature is counted on a meta copy (``replay=``): its later real steps cannot be watched,
    so nothing re-checks that count; the epoch says so instead of ``counted`` (#25)."""
    model = nn.Linear(4, 2)
    tracker = FlopTracker()
    replay = lambda m, b: m(*b).sum()  # noqa: E731
    for _ in range(4):
        _step(tracker, model, torch.randn(3, 4), replay=replay)
    epoch = tracker.take_epoch()
    # per step: fwd 2·3·4·2 = 48, bwd dW 48 (the input needs no gradient)
    assert epoch.train_flops == 4 * 96 and epoch.steps["counted-once"] == 4
    assert epoch.method == "counted-once" and "not re-checked" in epoch.note and "meta-device copy" in epoch.note
    info = tracker.info()
    assert info["counts"]["checks"] == 0 and "counted once" in info["verification"]
    for _ in range(3):  # an observed (eager) model in the same tracker is checked and keeps "counted"
        _step(tracker, model, torch.randn(5, 4))
    assert tracker.take_epoch().method == "counted" and tracker.info()["counts"]["checks"] == 1

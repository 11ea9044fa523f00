"""The one FLOP wrapper (core.flops.FlopTracker): observed counts, exact polynomial prediction, its fall-back."""

from __future__ import annotations

import random
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from green_callbacks.core.flops import FlopCountWarning, FlopTracker, TorchFlopCounter  # noqa: E402


def _run(tracker, model, lengths, *, batch=2, width=8):
    """Train-step every length through the tracker (real forward + backward); the per-step meta counts beside."""
    meta = TorchFlopCounter()
    expected = 0
    for seq in lengths:
        x = torch.randn(batch, seq, width)
        tracker.begin("train", model, (x,))
        model(x).sum().backward()
        tracker.end()
        expected += meta.count_train_step(model, lambda m, b: m(*b).sum(), (x,)).flops
    return tracker.take_epoch(), expected


class Attention(nn.Module):
    """Projections (linear in L) and scores (quadratic in L): a transformer's step, a polynomial of degree 2."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.q, self.k, self.out = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        scores = self.q(x) @ self.k(x).transpose(1, 2)
        return self.out(scores.softmax(-1) @ x)


def test_polynomial_lengths_are_predicted_exactly_with_a_bounded_number_of_counts():
    lengths = list(range(3, 83))
    random.Random(0).shuffle(lengths)
    tracker = FlopTracker()
    epoch, expected = _run(tracker, Attention(), lengths + lengths[:10])
    assert epoch.train_flops == expected  # exact, integer arithmetic
    assert epoch.method == "interpolated-verified"
    info = tracker.info()
    # 3 points fit + 1 verification (59, 47, 45, 53: all odd, so the first even length is counted too, off their
    # lattice), then spot checks at the 16th and 64th distinct value
    assert info["counts"]["observed"] == 4 + 1 + 2
    assert info["counts"]["interpolated"] == 80 - 7
    assert epoch.steps["interpolated-verified"] + epoch.steps["counted"] == 90  # repeats keep their method
    assert epoch.steps["interpolated-verified"] >= 71
    # hand count at one length: fwd q,k,out 3·2·B·L·W² + scores and P·x 2·2·B·L²·W; backward as executed
    one = FlopTracker(interpolate=False)
    got, _ = _run(one, Attention(), [10])
    b, seq, w = 2, 10, 8
    forward = 3 * 2 * b * seq * w * w + 2 * 2 * b * seq * seq * w
    backward = 3 * 2 * b * seq * w * w + 2 * b * seq * w * w + 2 * b * seq * seq * w * 3  # dW×3, dX of out, bmm dA/dB
    assert got.train_flops == forward + backward
    assert got.method == "counted"


class Cubic(nn.Module):
    """An ``L×L @ L×L`` product: FLOPs cubic in L, not a polynomial of degree 2."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.proj(x)
        s = h @ h.transpose(1, 2)
        return s @ s


class Strided(nn.Module):
    """A stride-2 convolution: ⌊(L − 1)/2⌋ + 1 outputs, linear on even lengths, off it on odd ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x.transpose(1, 2))


@pytest.mark.parametrize("model, lengths", [
    (Cubic(), [5, 9, 6, 12, 7, 10, 3, 11, 4, 8]),
    (Strided(), [8, 16, 24, 32, 40, 48, 9, 13, 56, 17, 64, 21]),  # even lengths first: a line; then odd ones
])
def test_flops_not_polynomial_fall_back_to_counting_every_length(model, lengths):
    tracker = FlopTracker()
    with pytest.warns(FlopCountWarning, match="not a polynomial"):
        epoch, expected = _run(tracker, model, lengths)
    assert epoch.train_flops == expected
    assert tracker.info()["counts"]["verifications_failed"] >= 1


def test_lengths_off_the_lattice_of_counted_ones_are_counted_not_predicted():
    """Lengths padded to multiples of 8 predict multiples of 8 only: an odd length is counted, then checked."""
    tracker = FlopTracker()
    model = Strided()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlopCountWarning)
        epoch, expected = _run(tracker, model, [8, 16, 24, 32, 40, 48, 56])
    assert epoch.train_flops == expected and epoch.method == "interpolated-verified"
    assert tracker.info()["counts"]["observed"] == 4
    with pytest.warns(FlopCountWarning, match="not a polynomial"):
        epoch, expected = _run(tracker, model, [9, 64, 13])
    assert epoch.train_flops == expected


def test_a_second_varying_dimension_is_counted_and_eval_is_separate():
    tracker = FlopTracker()
    model = Attention()
    epoch, expected = _run(tracker, model, [4, 5, 6, 7, 8], batch=2)
    partial, expected_partial = _run(tracker, model, [9], batch=1)  # batch and length both new: counted
    assert (epoch.train_flops, partial.train_flops) == (expected, expected_partial)
    assert partial.method == "counted"
    model.eval()
    with torch.no_grad():
        x = torch.randn(2, 4, 8)
        tracker.begin("eval", model, (x,))
        model(x)
        tracker.end()
    assert tracker.take_epoch().eval_flops == TorchFlopCounter().count_eval_step(model, lambda m, b: m(*b), (x,)).flops


def test_freezing_is_a_new_signature():
    tracker = FlopTracker()
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    for freeze in (False, True):
        model[1].weight.requires_grad_(not freeze)
        tracker.refresh(model)  # what the adapters do at epoch start (and the key does every 32 steps by itself)
        tracker.begin("train", model, (x,))
        model(x).sum().backward()
        tracker.end()
    # unfrozen: fwd 2·3·(4·8 + 8·2) = 288, bwd dW 288 + dX of layer 2 96; frozen: layer 2's dW (96) dropped
    assert tracker.take_epoch().train_flops == (288 + 288 + 96) + (288 + 288 + 96 - 96)


def test_a_step_that_raises_leaves_no_counter_behind():
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    tracker = FlopTracker()
    model = nn.Linear(4, 2)
    tracker.begin("train", model, (torch.randn(2, 4),))
    assert _get_current_dispatch_mode_stack()
    tracker.discard()
    assert not _get_current_dispatch_mode_stack() and not tracker.in_step
    assert tracker.take_epoch().method == "none"


def test_a_known_step_is_added_at_begin_and_taken_back_by_discard():
    tracker = FlopTracker()
    model = nn.Linear(4, 2)
    x = torch.randn(3, 4)
    for _ in range(2):  # observed, then a cache hit
        tracker.begin("train", model, (x,))
        model(x).sum().backward()
        tracker.end()
    tracker.begin("train", model, (x,))  # a third step that is then skipped (or raised)
    tracker.discard()
    epoch = tracker.take_epoch()
    # fwd 2·3·4·2 = 48, bwd dW 48 (no dX: the input needs no grad) = 96 per step; the discarded one not counted
    assert epoch.train_flops == 2 * 96 and epoch.steps["counted"] == 2


def test_info_names_engine_convention_and_lower_bound():
    tracker = FlopTracker()
    _run(tracker, Attention(), [4])
    info = tracker.info()
    assert "FlopCounterMode" in info["engine"] and "2 FLOPs per multiply-accumulate" in info["convention"]
    assert info["lower_bound"] is False and info["uncounted_ops"] == []
    assert info["epoch_methods"] == ["counted"]

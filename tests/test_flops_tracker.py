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


def test_a_known_step_counts_once_and_a_discarded_one_not_at_all():
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


def test_a_step_like_the_previous_one_gets_the_same_key_object_and_an_equal_key_otherwise():
    """The engine's memo: the same batch facts, model and flag state give the previous key object itself (the
    tracker then counts by identity); any difference in the signature gives a new key, equal to a full build's."""
    engine = TorchFlopCounter()
    model = nn.Linear(4, 2)

    def key(kind, batch, counter=engine):
        return counter.step_key(kind, model, batch)

    def fresh(kind, batch):  # built in full by an engine that has seen nothing
        return TorchFlopCounter().step_key(kind, model, batch)

    x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
    first = key("train", (x, y))
    again = key("train", (torch.randn(3, 4), torch.tensor([1, 0, 0])))  # new tensors, same facts
    assert again is first and first == fresh("train", (x, y))
    changed = [
        ("train", (torch.randn(5, 4), y)),  # a shape
        ("train", (x.double(), y)),  # a dtype
        ("train", (x.clone().requires_grad_(), y)),  # requires_grad
        ("train", [x, y]),  # the container
        ("eval", (x, y)),  # the kind
        ("train", {"x": x, "y": y}),
        ("train", {"y": y, "x": x}),  # a dict's key order
        ("train", ((x,), {"y": y})),  # args and kwargs (what the HF adapter hands over)
        ("train", ((x,), {"y": y.double()})),
        ("train", (x, y, None)),  # Keras: no sample weights
        ("train", (x, None, y)),
    ]
    keys = [key(kind, batch) for kind, batch in changed]
    for (kind, batch), got in zip(changed, keys, strict=True):
        assert got == fresh(kind, batch)
    assert len(set(keys)) == len(keys) and first not in keys
    nested = key("train", ((x,), {"y": y.double()}))
    assert key("train", ((torch.randn(3, 4),), {"y": y.double()})) is nested  # nested: the memo too
    keras = key("train", (x, y, None))
    assert key("train", (torch.randn(3, 4), y, None)) is keras
    odd = key("train", (x, 3))  # a non-tensor leaf: built in full every time, equal but not the same object
    assert key("train", (x, 3)) == odd and key("train", (x, 3)) is not odd and key("train", (x, 4)) != odd
    before = key("train", (x, y))
    model.eval()  # the root's mode: the flags are read again, a new key (flag states are numbered per engine)
    assert key("train", (x, y)) != before
    model.train()
    assert key("train", (x, y)) == before


def test_consecutive_steps_of_one_signature_count_as_a_run_with_exact_sums():
    tracker = FlopTracker(interpolate=False)
    model = nn.Linear(4, 2)

    def step(rows, keep=True):
        x = torch.randn(rows, 4)
        tracker.begin("train", model, (x,))
        model(x).sum().backward()
        tracker.end() if keep else tracker.discard()

    for _ in range(3):
        step(3)
    # a run in progress is in every figure read from the tracker
    assert tracker.info()["counts"]["steps"] == 3
    step(5)
    step(5, keep=False)  # skipped: taken back from its run
    step(3)
    epoch = tracker.take_epoch()
    # per step: rows·(fwd 2·4·2 + bwd dW 2·4·2) = 32·rows; 4 steps of 3 rows, 1 of 5 (the discarded one not)
    assert epoch.train_flops == 4 * 96 + 160 and epoch.steps["counted"] == 5
    # (the 3-row signature's 2nd and 4th steps are later checks, #25: watched, agreeing)
    assert tracker.info()["counts"] == {"observed": 2, "meta": 0, "interpolated": 0, "verifications_failed": 0,
                                        "steps": 5, "checks": 2, "checks_failed": 0}
    step(3)  # the run goes on in the next epoch: only its new steps are in it
    assert tracker.take_epoch().train_flops == 96


def test_info_names_engine_convention_and_lower_bound():
    tracker = FlopTracker()
    _run(tracker, Attention(), [4])
    info = tracker.info()
    assert "FlopCounterMode" in info["engine"] and "2 FLOPs per multiply-accumulate" in info["convention"]
    assert info["lower_bound"] is False and info["uncounted_ops"] == []
    assert info["epoch_methods"] == ["counted"]


def test_the_loop_entry_points_keep_the_check_schedule_and_a_missed_check_stays_due():
    """The loop Tracker's watch counts steps itself (lookup, add_observed, add_known, add_checked): the same schedule
    as begin/end (2nd step, then twice as far); a due check the watch could not take stays due at the next step."""
    tracker = FlopTracker(interpolate=False)
    model = nn.Linear(4, 2)
    x = torch.randn(3, 4)

    def known():
        key, found = tracker.lookup("train", model, (x,))
        return tracker.add_known("train", key, found)

    key, found = tracker.lookup("train", model, (x,))
    assert found is None
    assert tracker.add_observed("train", key, 96) is True  # its 2nd step is a check
    assert known() is True  # not watched (another forward took the window): still due
    assert tracker.add_checked("train", key, 96) is False  # the 3rd step, watched, agrees: next check at the 6th
    assert [known(), known(), known()] == [False, True, True]  # the 5th step says the 6th is due
    epoch = tracker.take_epoch()
    assert epoch.train_flops == 6 * 96 and epoch.method == "counted" and epoch.steps["counted"] == 6
    assert tracker.info()["counts"]["checks"] == 1

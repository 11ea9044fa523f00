"""The loop Tracker never changes training and counts exactly from several threads.

Parity: the same loop with and without a Tracker(model=...) calls the user's forward as often, leaves every random
generator (a dedicated torch.Generator, torch's default one, NumPy's, Python's) where it was and ends with
bit-identical weights. The forward draws from all four, and the optimizer runs a matmul of its own in its step.

FLOPs by hand (2·M·N·K per matmul), MLP 4 -> 8 -> 2: forward 2·4·8 + 2·8·2 = 96 per sample; backward dW₁ 64 + dW₂ 32
+ dX₂ 32 = 128 (no dX for the first layer: the data needs no gradient): 224 per training sample. 30 training samples
in batches of 4, 4, ..., 4, 2 (a new signature at the epoch's end) and 8 evaluation samples per epoch:
224·30 = 6720 training and 96·8 = 768 evaluation FLOPs. The optimizer's own matmul (2·3·5·7 = 210 per step) is not
a training step's work and is not counted.

Threads: one Linear 4 -> 2 shared by 4 threads, each running 150 steps on batches of 8: forward 2·8·4·2 = 128,
backward dW 128 (no dX) = 256 FLOPs per step; 600 steps: 4800 samples and 153,600 FLOPs.
"""

from __future__ import annotations

import random
import threading
import warnings

import pytest

from green_callbacks.core.record import read_record
from green_callbacks.core.sensors.fake import ConstantPowerSensor

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
from torch import nn  # noqa: E402

from green_callbacks.core.flops.result import FlopCountWarning  # noqa: E402
from green_callbacks.loop import Tracker  # noqa: E402

TRAIN_FLOPS, EVAL_FLOPS = 224 * 30, 96 * 8


class MatmulSGD(torch.optim.SGD):
    """SGD whose step also runs a matmul: optimizer work, not the step's."""

    def step(self, closure=None):
        loss = super().step(closure)
        torch.mm(torch.ones(3, 5), torch.ones(5, 7))
        return loss


class Noisy:
    """The user's forward: draws from its own generator, torch's default one (dropout), NumPy and Python."""

    def __init__(self) -> None:
        self.generator = torch.Generator().manual_seed(1)
        self.calls = 0

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        x = batch[0] + 0.1 * torch.randn(batch[0].shape, generator=self.generator)
        x = x * (1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random())
        return nn.functional.cross_entropy(model(x), batch[1])


def _run(form: str | None, tmp_path) -> dict:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.25), nn.Linear(8, 2))
    keys = list(model.state_dict())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(38, 4, generator=g)
    y = (x[:, 0] > 0).long()
    forward = Noisy()
    opt = MatmulSGD(model.parameters(), lr=0.1)
    tracker = None if form is None else Tracker(
        carbon_intensity=100.0, output_dir=str(tmp_path), model=model, forward=forward,
        sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    metrics = []
    if tracker is not None:
        tracker.start()
    for _ in range(2):
        if tracker is not None:
            tracker.epoch_start()
        model.train()
        for i in range(0, 30, 4):
            batch = (x[i:min(i + 4, 30)], y[i:min(i + 4, 30)])
            opt.zero_grad()
            if form == "around":
                with tracker.step(batch):
                    forward(model, batch).backward()
            else:
                forward(model, batch).backward()
            opt.step()
            if form == "after":
                tracker.step(batch)
        model.eval()
        if tracker is not None:
            tracker.eval_start()
        with torch.no_grad():
            for i in range(30, 38, 4):
                forward(model, (x[i:i + 4], y[i:i + 4]))
                if tracker is not None:
                    tracker.eval_step((x[i:i + 4], y[i:i + 4]))
        if tracker is not None:
            tracker.eval_end()
            metrics.append(tracker.epoch_end())
    if tracker is not None:
        tracker.finish()
    assert list(model.state_dict()) == keys
    assert not model._forward_pre_hooks and not _global_optimizer_pre_hooks()
    return {
        "calls": forward.calls,
        "weights": [p.detach().clone() for p in model.parameters()],
        "generator": forward.generator.get_state(),
        "default": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "metrics": metrics,
        "record": None if tracker is None else read_record(tracker.record_path),
    }


@pytest.mark.parametrize("form", ["after", "around"])
def test_the_tracker_runs_no_user_code_and_moves_no_generator(tmp_path, form):
    without = _run(None, tmp_path / "without")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracked = _run(form, tmp_path / "with")

    assert tracked["calls"] == without["calls"] == 2 * (8 + 2)  # 8 training + 2 evaluation forwards per epoch
    assert torch.equal(tracked["generator"], without["generator"])
    assert torch.equal(tracked["default"], without["default"])
    assert all(np.array_equal(a, b) for a, b in zip(tracked["numpy"], without["numpy"], strict=True))
    assert tracked["python"] == without["python"]
    for a, b in zip(tracked["weights"], without["weights"], strict=True):
        assert torch.equal(a, b)

    for metrics in tracked["metrics"]:
        assert metrics["green/epoch_train_flops"] == TRAIN_FLOPS
        assert metrics["green/epoch_eval_flops"] == EVAL_FLOPS
    flops = tracked["record"]["flops"]
    assert flops["lower_bound"] is False and flops["counts"]["meta"] == 0


def test_steps_whose_run_was_not_seen_are_a_labelled_lower_bound(tmp_path):
    """tracker.step(batch) with no forward of model= in the step: nothing to count, and the record says so."""
    model = nn.Linear(4, 2)
    tracker = Tracker(carbon_intensity=100.0, output_dir=str(tmp_path), model=model,
                      sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    batch = (torch.ones(8, 4), torch.ones(8, 2))
    with tracker, tracker.epoch():
        model(batch[0]).sum().backward()
        tracker.step(batch)  # watched: 256 FLOPs
        with pytest.warns(FlopCountWarning, match="lower bound"):
            for _ in range(3):
                tracker.step((torch.ones(3, 4), torch.ones(3, 2)))  # a new signature, never run: not counted
            tracker.epoch_end()
    record = read_record(tracker.record_path)
    assert record["epochs"][0]["train_flops"] == 256
    assert record["flops"]["lower_bound"] is True and record["flops"]["counts"]["unobserved_steps"] == 3


def test_evaluation_steps_outside_an_evaluation_window_are_counted(tmp_path):
    model = nn.Linear(4, 2)
    tracker = Tracker(carbon_intensity=100.0, output_dir=str(tmp_path), model=model,
                      sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    batch = (torch.ones(8, 4), torch.ones(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracker, tracker.epoch() as epoch, torch.no_grad():
            for _ in range(3):
                model(batch[0])
                tracker.eval_step(batch)
    assert epoch.green["green/epoch_eval_flops"] == 3 * 2 * 8 * 4 * 2  # forward only: 128 per step


def test_four_threads_count_every_sample_and_flop(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    tracker = Tracker(carbon_intensity=100.0, output_dir=str(tmp_path), model=model,
                      sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            for _ in range(150):
                model(x).sum().backward()
                tracker.step((x, x))
        except BaseException as err:  # surfaced below: a thread's exception is not the test's
            errors.append(err)

    with tracker, tracker.epoch() as epoch:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    assert epoch.green["green/epoch_train_flops"] == 600 * 256
    record = read_record(tracker.record_path)
    assert record["epochs"][0]["samples"] == 4800
    assert record["epochs"][0]["train_flops"] == 600 * 256


@pytest.mark.slow
def test_a_compiled_model_stays_compiled_and_its_flops_are_unavailable(tmp_path):
    """A counter around a compiled call makes dynamo run it uncompiled from then on: the tracker does not watch it."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    compiled = torch.compile(model)
    tracker = Tracker(carbon_intensity=100.0, output_dir=str(tmp_path), model=compiled,
                      sensors=[ConstantPowerSensor("cpu", 10.0, scope="node")])
    batch = (torch.ones(8, 4), torch.ones(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracker, tracker.epoch() as epoch:
            for _ in range(3):
                compiled(batch[0]).sum().backward()
                tracker.step(batch)
    assert counters["stats"]["unique_graphs"] >= 1  # compiled, not skipped
    assert epoch.green["green/epoch_train_flops"] != epoch.green["green/epoch_train_flops"]  # NaN
    assert "torch.compile" in read_record(tracker.record_path)["lost"]["flops"]


def _global_optimizer_pre_hooks() -> dict:
    from torch.optim import optimizer

    return optimizer._global_optimizer_pre_hooks

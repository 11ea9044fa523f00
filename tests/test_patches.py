"""core/patches.py: the one mechanism every adapter uses to replace a framework object's method for a fit or phase.

Plain Python objects stand for the framework's (a trainer, a model's step function); nothing is faked.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from green_callbacks.core.patches import MARKER, InstancePatches


class Trainer:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def train(self, n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        self.calls.append(n)
        return 2 * n


class Watcher:
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def before(self, name, n):
        self.seen.append(("before", name, n))
        return (n + 1,)  # replaces the arguments

    def after(self, name, result, n):
        self.seen.append(("after", name, result, n))

    def failed(self, name, err):
        self.seen.append(("failed", name, type(err).__name__))


def test_around_runs_the_hooks_and_restore_puts_the_class_method_back():
    trainer, watcher, patches = Trainer(), Watcher(), InstancePatches()
    assert patches.around(trainer, "train", before=watcher.before, after=watcher.after, failed=watcher.failed)
    assert getattr(trainer.train, MARKER) is True
    assert trainer.train(3) == 8 and trainer.calls == [4]  # before(3) -> (4,)
    with pytest.raises(ValueError):
        trainer.train(-5)
    assert watcher.seen == [("before", "train", 3), ("after", "train", 8, 4), ("before", "train", -5),
                            ("failed", "train", "ValueError")]
    patches.restore()
    assert "train" not in trainer.__dict__ and trainer.train(1) == 2


def test_a_method_is_replaced_once_and_a_framework_replacement_is_left_alone():
    trainer, patches = Trainer(), InstancePatches()
    assert patches.around(trainer, "train")
    assert not patches.around(trainer, "train")  # already ours: a second fit or callback does not stack
    own = trainer.train

    def theirs(n):
        return -n

    trainer.train = theirs  # the framework rebuilt its function during the fit
    patches.restore()
    assert trainer.train is theirs and own is not theirs


def test_the_replacement_holds_neither_the_object_nor_the_owner_alive():
    trainer, watcher, patches = Trainer(), Watcher(), InstancePatches()
    patches.around(trainer, "train", after=watcher.after, keep=True)  # kept across fits: never restored
    gone_trainer, gone_watcher = weakref.ref(trainer), weakref.ref(watcher)
    del watcher
    gc.collect()
    assert gone_watcher() is None and trainer.train(2) == 4  # its owner gone, the original runs alone
    gc.disable()  # freed by reference counting, not by the cycle collector
    try:
        del trainer
        assert gone_trainer() is None
    finally:
        gc.enable()

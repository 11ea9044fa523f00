"""Fixtures of the fault-injection suite: the adapter to train with, lenient (non-strict) mode, a clean machine."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

from tests.faults.harness import ADAPTERS


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """Each test that takes ``adapter`` runs once per framework."""
    name = request.param
    pytest.importorskip({"lightning": "lightning", "keras": "keras", "transformers": "transformers"}[name])
    if name == "keras":
        import keras

        if keras.backend.backend() != "torch":
            pytest.skip("the fault suite drives Keras on the torch backend")
    return name


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-strict mode, as users run: a failure inside the callback is warned about and switched off."""
    monkeypatch.delenv("GREEN_CALLBACKS_STRICT", raising=False)


@pytest.fixture(autouse=True)
def no_machine_rapl(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The machine's own RAPL counters never leak into a fault test: an empty powercap root unless a test sets one."""
    monkeypatch.setenv("GREEN_CALLBACKS_RAPL_ROOT", str(tmp_path_factory.mktemp("no-powercap")))

"""Shared test set-up: strict mode (guarded failures re-raise), a fake clock, fake sensors."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GREEN_CALLBACKS_STRICT", "1")
# No test may depend on the developer's own location settings.
for _name in ("GREEN_CALLBACKS_COUNTRY", "GREEN_CALLBACKS_REGION", "GREEN_CALLBACKS_CARBON_INTENSITY"):
    os.environ.pop(_name, None)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch):
    """A clock that moves only when the test advances it; installed as ``clock.now_s``."""
    from green_callbacks.core import clock

    fake = clock.FakeClock(1000.0)
    monkeypatch.setattr(clock, "now_s", fake)
    return fake

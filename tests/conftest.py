"""Shared test set-up: strict mode (guarded failures re-raise), a fake clock, fake sensors."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("GREEN_CALLBACKS_STRICT", "1")
# No test may depend on the developer's own location settings.
for _name in ("GREEN_CALLBACKS_COUNTRY", "GREEN_CALLBACKS_REGION", "GREEN_CALLBACKS_CARBON_INTENSITY"):
    os.environ.pop(_name, None)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module blocked in sys.modules, or a broken install
        return False


# The fault suite trains real models in every test: without torch it is left out of collection (and said so in the
# header) instead of failing it; every other torch-only file skips itself with pytest.importorskip.
collect_ignore = [] if _importable("torch") else ["faults"]


def pytest_report_header(config: pytest.Config) -> str | None:
    return None if _importable("torch") else "torch is not installed: tests/faults (real trainings) not collected"


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch):
    """A clock that moves only when the test advances it; installed as ``clock.now_s``."""
    from green_callbacks.core import clock

    fake = clock.FakeClock(1000.0)
    monkeypatch.setattr(clock, "now_s", fake)
    return fake

"""A fake ``libtpu.sdk`` with its ``tpumonitoring`` module, for tests.

Mirrors libtpu's monitoring SDK: ``tpumonitoring.list_supported_metrics()`` and
``tpumonitoring.get_metric(name)`` returning a metric with ``description()`` and ``data()``; ``duty_cycle_pct``'s
data is one string per chip, in percent (e.g. ``["41.50", "0.00"]``).

Usage::

    chips = FakeTpuChips([50.0, 0.0, 100.0, 25.0])
    install(monkeypatch, chips)
    chips.duty[0] = 80.0
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class FakeTpuChips:
    duty: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    error: Exception | None = None

    def module(self) -> SimpleNamespace:
        chips = self

        class _Metric:
            def __init__(self, name: str) -> None:
                self.name = name

            def description(self) -> str:
                return "duty cycle of each TPU chip, in percent"

            def data(self) -> list[str]:
                if chips.error is not None:
                    raise chips.error
                return [f"{d:.2f}" for d in chips.duty]

        def get_metric(name: str) -> _Metric:
            if name not in ("duty_cycle_pct", "tensorcore_util", "hbm_capacity_usage"):
                raise ValueError(f"unknown metric {name}")
            return _Metric(name)

        return SimpleNamespace(
            list_supported_metrics=lambda: ["duty_cycle_pct", "tensorcore_util", "hbm_capacity_usage"],
            get_metric=get_metric,
        )


def install(monkeypatch: Any, chips: FakeTpuChips | None) -> FakeTpuChips | None:
    """Put a fake ``libtpu.sdk`` in ``sys.modules`` (``None``: libtpu not installed)."""
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE", raising=False)
    sdk = None if chips is None else SimpleNamespace(tpumonitoring=chips.module())
    monkeypatch.setitem(sys.modules, "libtpu.sdk", sdk)
    return chips

"""A fake ``zeus_apple_silicon`` (zeus-apple-silicon 1.x) for tests.

Mirrors the real module: ``AppleEnergyMonitor()`` with ``get_cumulative_energy() -> AppleEnergyMetrics`` (also
``begin_window``/``end_window``, unused by green_callbacks), and ``AppleEnergyMetrics`` with cumulative
millijoule fields (``int`` or ``None`` where the chip does not report them): ``cpu_total_mj``,
``efficiency_cores_mj``/``performance_cores_mj`` (lists), ``efficiency_core_manager_mj``,
``performance_core_manager_mj``, ``dram_mj``, ``gpu_mj``, ``gpu_sram_mj``, ``ane_mj``.

Usage::

    soc = FakeSoc(cpu_total_mj=10_000, gpu_mj=5_000, dram_mj=None)   # an older chip without DRAM
    install(monkeypatch, FakeZeusAppleSilicon(soc))
    soc.gpu_mj += 42_000                                              # the GPU used 42 J
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class AppleEnergyMetrics:
    cpu_total_mj: int | None = None
    efficiency_cores_mj: list[int] | None = None
    performance_cores_mj: list[int] | None = None
    efficiency_core_manager_mj: int | None = None
    performance_core_manager_mj: int | None = None
    dram_mj: int | None = None
    gpu_mj: int | None = None
    gpu_sram_mj: int | None = None
    ane_mj: int | None = None


@dataclass
class FakeSoc(AppleEnergyMetrics):
    """The chip's running counters (a mutable AppleEnergyMetrics); ``error`` makes every read raise."""

    cpu_total_mj: int | None = 1_000_000
    dram_mj: int | None = 200_000
    gpu_mj: int | None = 300_000
    gpu_sram_mj: int | None = 1_000
    ane_mj: int | None = 0
    error: Exception | None = None
    reads: int = field(default=0)


class FakeZeusAppleSilicon:
    AppleEnergyMetrics = AppleEnergyMetrics

    def __init__(self, soc: FakeSoc | None = None, *, init_error: Exception | None = None) -> None:
        self.soc = soc if soc is not None else FakeSoc()
        self.init_error = init_error
        self.monitors = 0
        outer = self

        class AppleEnergyMonitor:
            def __init__(self) -> None:
                if outer.init_error is not None:
                    raise outer.init_error
                outer.monitors += 1
                self._windows: dict[str, AppleEnergyMetrics] = {}

            def get_cumulative_energy(self) -> AppleEnergyMetrics:
                soc = outer.soc
                soc.reads += 1
                if soc.error is not None:
                    raise soc.error
                return AppleEnergyMetrics(**{k: getattr(soc, k) for k in AppleEnergyMetrics.__dataclass_fields__})

            def begin_window(self, label: str, restart: bool = False) -> None:
                if label in self._windows and not restart:
                    raise RuntimeError(f"window {label!r} already active")
                self._windows[label] = self.get_cumulative_energy()

            def end_window(self, label: str) -> AppleEnergyMetrics:
                start, end = self._windows.pop(label), self.get_cumulative_energy()
                diff = {k: None if getattr(end, k) is None or isinstance(getattr(end, k), list)
                        else getattr(end, k) - getattr(start, k) for k in AppleEnergyMetrics.__dataclass_fields__}
                return replace(AppleEnergyMetrics(), **diff)

        self.AppleEnergyMonitor = AppleEnergyMonitor


def install(monkeypatch: Any, fake: FakeZeusAppleSilicon | None, *, apple_silicon: bool = True) -> Any:
    """Put ``fake`` in ``sys.modules`` as ``zeus_apple_silicon`` (``None``: not installed), reset the per-process
    monitor, and make this machine look like an Apple Silicon Mac (or not) to green_callbacks."""
    from green_callbacks.core.sensors import apple

    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", fake)
    monkeypatch.setattr(apple, "_monitor", None)
    monkeypatch.setattr(apple, "_monitor_lib", None)
    monkeypatch.setattr(apple, "_platform", lambda: ("darwin", "arm64") if apple_silicon else ("linux", "x86_64"))
    return fake

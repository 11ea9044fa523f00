"""The one constructor of all three adapters, validated at construction time.

``GreenConfig`` holds what the user passed to ``GreenCallback(...)``; every adapter builds one in its
``__init__`` so that bad input fails there, with a message that says what was received, what is allowed and what
to do.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from green_callbacks.core.carbon import validate_intensity, validate_pue
from green_callbacks.core.search import normalize_search
from green_callbacks.core.sensors.gpu_map import check_gpu_indices

__all__ = ["GreenConfig", "check_output_dir"]


def _finite_positive(name: str, value: Any, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        allowed = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def check_output_dir(value: Any) -> str:
    """``output_dir=`` as a path string, if it is a folder this process can create or write into.

    Raises ``ValueError`` at construction time (not a warning at the first write, and no record): an empty
    string (it would silently mean the current folder), a path that is a file, or a folder that cannot be
    created or written.
    """
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"output_dir must be a path (str or os.PathLike), got {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"output_dir={value!r} is empty; pass a folder for the run records, e.g. output_dir='green_runs' "
            "(or output_dir='.' for the current folder), or leave it unset for the framework's log folder."
        )
    path = Path(text).expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise ValueError(f"output_dir={text!r} is a file, not a folder; pass a folder for the run records.")
    if not existing.is_dir():
        raise ValueError(
            f"output_dir={text!r} cannot be created: {str(existing)!r} is a file, not a folder. Pass a folder "
            "for the run records."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "written" if existing == path else f"created (no write permission in {str(existing)!r})"
        raise ValueError(
            f"output_dir={text!r} cannot be {what}; pass a folder this user can write, e.g. under your home."
        )
    return str(path)


CONSOLE_CHOICES = ("compact", "all")
FLOPS_CHOICES = ("sampled", "every-step")


@dataclass(frozen=True)
class GreenConfig:
    """Validated settings shared by the Lightning, Keras and transformers adapters.

    Attributes:
        country: ISO 3166 alpha-2 or alpha-3 code of the grid the machine draws from (``"FR"``, ``"deu"``).
        region: a cloud region with a published intensity, e.g. ``"gcp:europe-west1"``.
        carbon_intensity: an explicit grid intensity in gCO2e/kWh (wins over country and region).
        pue: data-centre power usage effectiveness multiplying IT energy (1.0 = IT energy only), or a preset name
            such as ``"uptime-2023"`` (1.58).
        monitor, mode, target: the metric that defines convergence, ``"min"``/``"max"``, an optional target.
        budget_kwh, budget_gco2e: energy and emissions budgets for the whole run.
        gpus: NVML indices of the GPUs to measure (default: those the framework trains on).
        output_dir: where run records are written (default: the framework's log/output folder).
        cpu_watts_per_core, ram_watts_per_gb: constants of the CPU and RAM estimates where RAPL is missing.
        live_intensity: an opt-in live intensity provider (``green_callbacks.core.live``).
        budget_action: ``"stop"`` (stop the training at the end of the epoch) or ``"warn"``.
        console: what the framework's console shows of the ``green/`` keys every epoch: ``"compact"`` (the
            running totals in Wh and gCO2e) or ``"all"`` (every key). Loggers always receive every key.
        embodied_lifetime_years, embodied_utilisation, embodied_host_share: how the hardware's manufacturing
            emissions are amortised (default 6 years, 0.85, host share by accelerator count; docs/footprint.md).
        wue_l_per_kwh: on-site water usage effectiveness (default 0.49 L/kWh, Microsoft FY2021).
        search: the hyperparameter search this run belongs to: a name, or a mapping with ``name``, ``method``
            (grid, random, tpe, ...), ``trial``, ``state`` and ``space`` (each parameter's distribution); kept
            normalised as a dict (see :mod:`green_callbacks.core.search`).
        flops: how the steps of an input signature whose work varies with the data (found by later checks) are
            counted: ``"sampled"`` (1 step in 8 watched, the epoch an estimate with its range) or ``"every-step"``
            (every step of every signature watched: exact, a FLOP counter around each step; docs/flops.md).
    """

    country: str | None = None
    region: str | None = None
    carbon_intensity: float | None = None
    pue: float | str = 1.0
    monitor: str | None = None
    mode: str | None = None
    target: float | None = None
    budget_kwh: float | None = None
    budget_gco2e: float | None = None
    gpus: tuple[int, ...] | None = None
    output_dir: str | None = None
    cpu_watts_per_core: float | None = None
    ram_watts_per_gb: float | None = None
    live_intensity: Any = None
    budget_action: str = "stop"
    console: str = "compact"
    # footprint (#17): embodied emissions and water; None = the documented default
    embodied_lifetime_years: float | None = None
    embodied_utilisation: float | None = None
    embodied_host_share: float | None = None
    wue_l_per_kwh: float | None = None
    search: Any = None
    flops: str = "sampled"

    def __post_init__(self) -> None:
        for name in ("country", "region", "monitor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
        if self.mode is not None and self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None (inferred from the monitor's name), got {self.mode!r}")
        if self.mode is not None and self.monitor is None:
            raise ValueError(f"mode={self.mode!r} was given without monitor=; name the metric, e.g. monitor='val_loss'")
        if self.target is not None:
            if self.monitor is None:
                raise ValueError("target= needs monitor= (the metric that should reach the target)")
            if isinstance(self.target, bool) or not isinstance(self.target, (int, float)) or not math.isfinite(
                float(self.target)
            ):
                raise ValueError(f"target must be a finite number, got {self.target!r}")
        object.__setattr__(self, "pue", validate_pue(self.pue))
        if self.carbon_intensity is not None:
            object.__setattr__(self, "carbon_intensity", validate_intensity(self.carbon_intensity))
        object.__setattr__(self, "budget_kwh", _finite_positive("budget_kwh", self.budget_kwh))
        object.__setattr__(self, "budget_gco2e", _finite_positive("budget_gco2e", self.budget_gco2e))
        object.__setattr__(self, "cpu_watts_per_core", _finite_positive("cpu_watts_per_core", self.cpu_watts_per_core))
        object.__setattr__(self, "ram_watts_per_gb", _finite_positive("ram_watts_per_gb", self.ram_watts_per_gb))
        self._validate_footprint()
        object.__setattr__(self, "search", normalize_search(self.search))
        if self.budget_action not in ("stop", "warn"):
            raise ValueError(f"budget_action must be 'stop' or 'warn', got {self.budget_action!r}")
        if self.console not in CONSOLE_CHOICES:
            raise ValueError(
                f"console must be one of {', '.join(map(repr, CONSOLE_CHOICES))}, got {self.console!r}: 'compact' "
                "shows the running Wh and gCO2e on the console, 'all' every green/ key (loggers get every key)"
            )
        if self.flops not in FLOPS_CHOICES:
            raise ValueError(
                f"flops must be one of {', '.join(map(repr, FLOPS_CHOICES))}, got {self.flops!r}: 'sampled' watches "
                "1 step in 8 of a signature whose work varies with the data, 'every-step' counts every step"
            )
        if self.gpus is not None:  # the one check of the form of gpus= (the GPU count is checked by the factory)
            gpus = (self.gpus,) if isinstance(self.gpus, int) and not isinstance(self.gpus, bool) else self.gpus
            check_gpu_indices(gpus)
            object.__setattr__(self, "gpus", tuple(int(g) for g in gpus))
        if self.output_dir is not None:
            object.__setattr__(self, "output_dir", check_output_dir(self.output_dir))

    def _validate_footprint(self) -> None:
        from green_callbacks.core.embodied import validate_fraction, validate_lifetime_years
        from green_callbacks.core.water import validate_wue

        if self.embodied_lifetime_years is not None:
            object.__setattr__(self, "embodied_lifetime_years", validate_lifetime_years(self.embodied_lifetime_years))
        for name in ("embodied_utilisation", "embodied_host_share"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, validate_fraction(getattr(self, name), name))
        if self.wue_l_per_kwh is not None:
            object.__setattr__(self, "wue_l_per_kwh", validate_wue(self.wue_l_per_kwh))

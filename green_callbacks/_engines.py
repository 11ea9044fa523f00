"""The search engines a run can find itself in, registered with :mod:`green_callbacks.core.trial`.

Imported by the adapters' shared base; each engine's module (and the engine) is imported only when the process
already uses that engine: a trial object of Optuna's in the framework's hands, ``ray.tune``/``ray.train`` imported
(a Ray trainable), ``WANDB_SWEEP_ID`` set (a W&B sweep agent's run).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from green_callbacks.core.trial import TrialBinding, register_adapter, register_detector

__all__: list[str] = []


def _framework_trial(trial: Any) -> TrialBinding | None:
    if type(trial).__module__.split(".", 1)[0] == "optuna":
        from green_callbacks.optuna import binding_for

        return binding_for(trial)
    return None


def _running_trial() -> TrialBinding | None:
    if "ray.tune" in sys.modules or "ray.train" in sys.modules:
        try:
            from green_callbacks.ray import detect
        except ImportError:  # Ray without Tune (ray[train] alone): no trial to find
            detect = None
        found = None if detect is None else detect()
        if found is not None:
            return found
    if os.environ.get("WANDB_SWEEP_ID"):
        from green_callbacks.wandb import detect as detect_sweep

        return detect_sweep()
    return None


register_adapter(_framework_trial)
register_detector(_running_trial)

"""W&B sweeps: a run started by a sweep agent names its sweep (no network, no ``wandb`` import).

The agent sets ``WANDB_SWEEP_ID`` (and ``WANDB_RUN_ID``) in the run's environment; a run started there is bound to
the sweep (:mod:`green_callbacks.core.trial`): the record's search is ``{"name": <sweep id>, "engine": "wandb",
"trial": <run id>}``. The sweep's method and distributions are not in the run's environment (only W&B's API has
them, over the network): give them with ``GreenCallback(search={"name": ..., "method": "bayes", "space": ...})``,
which wins key by key. The totals reach W&B through the framework's W&B logger, as every epoch's ``green/`` keys.
"""

from __future__ import annotations

import os
from typing import Any

from green_callbacks.core.trial import TrialOutcome

__all__ = ["SweepRun", "detect"]


class SweepRun:
    """The :class:`~green_callbacks.core.trial.TrialBinding` of a W&B sweep agent's run."""

    def __init__(self, sweep_id: str, run_id: str | None) -> None:
        self.sweep_id = sweep_id
        self.run_id = run_id

    def identity(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.sweep_id, "engine": "wandb"}
        if self.run_id:
            out["trial"] = self.run_id
        return out

    def finished(self, outcome: TrialOutcome) -> None:
        """Nothing to hand over: the framework's W&B logger already carries the ``green/`` keys."""


def detect() -> SweepRun | None:
    """The sweep this process's run belongs to (``WANDB_SWEEP_ID``), or ``None``."""
    sweep = os.environ.get("WANDB_SWEEP_ID", "").strip()
    if not sweep:
        return None
    return SweepRun(sweep[:200], (os.environ.get("WANDB_RUN_ID", "").strip() or None))

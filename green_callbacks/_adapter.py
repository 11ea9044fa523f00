"""What the three adapters share: the one constructor, and the engine it builds.

``GreenCallback`` of each framework subclasses :class:`GreenCallbackBase` *first* and its framework's callback
class second, and defines no ``__init__`` of its own: the keyword arguments below are the constructor of all three,
declared once, seen as they are by ``help()`` and IDEs. They are validated at construction time (a clear
``ValueError``) into a :class:`~green_callbacks.core.config.GreenConfig` with the same fields (a test keeps the two
equal). All arithmetic happens in the :class:`~green_callbacks.core.engine.Engine` the base builds.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import green_callbacks._engines  # noqa: F401  (the search engines' trials: core/trial.py)
from green_callbacks.core.config import GreenConfig
from green_callbacks.core.engine import Engine
from green_callbacks.core.metric_keys import METRIC_KEYS, progress_bar_metrics
from green_callbacks.core.patches import InstancePatches
from green_callbacks.core.phase import PhaseResult
from green_callbacks.core.repeat import RepeatedPhase, repeat_phase
from green_callbacks.core.session import Session
from green_callbacks.core.wording import CALLBACK

__all__ = ["METRIC_KEYS", "GreenCallbackBase", "progress_bar_metrics"]


class GreenCallbackBase:
    """The shared constructor of ``GreenCallback`` for Lightning, Keras and transformers.

    Args:
        country: ISO 3166 alpha-2/alpha-3 code of the grid (``"FR"``, ``"usa"``); or set ``GREEN_CALLBACKS_COUNTRY``.
        region: a cloud region with a published intensity (``"gcp:europe-west1"``).
        carbon_intensity: explicit grid intensity in gCO2e/kWh (wins over ``country`` and ``region``).
        pue: data-centre PUE multiplying the measured IT energy (default 1.0; the 2023 industry average is 1.58).
        monitor: the metric that defines convergence (default: the framework's early-stopping/best-model metric).
        mode: ``"min"`` or ``"max"`` (default: inferred from the metric's name).
        target: a value of ``monitor`` whose first reaching is reported as "to target".
        budget_kwh, budget_gco2e: energy and emissions budgets of the run.
        gpus: NVML indices of the GPUs to measure (default: the ones the framework trains on).
        output_dir: folder for the run record (default: the framework's log/output folder).
        cpu_watts_per_core, ram_watts_per_gb: constants of the CPU/RAM estimates used where RAPL is unreadable.
        live_intensity: an opt-in live intensity provider, e.g.
            ``green_callbacks.core.live.ElectricityMapsProvider(zone="DE")``.
        budget_action: ``"stop"`` the training when a budget would be exceeded, or only ``"warn"``.
        console: ``"compact"`` (default): the console (Keras' progress line, the HF printed log, Lightning's
            progress bar) shows only the running ``Wh`` and ``gCO2e``; ``"all"``: every ``green/`` key there too.
            Loggers (TensorBoard, CSV, History, ``log_history``, ...) always receive every key.
        embodied_lifetime_years, embodied_utilisation, embodied_host_share: how the hardware's manufacturing
            emissions are amortised over the run (default 6 years, 0.85, the host's share by accelerator count;
            see docs/footprint.md).
        wue_l_per_kwh: on-site water usage effectiveness of the data centre (default 0.49 L/kWh, Microsoft FY2021).
        search: the hyperparameter search this run is a trial of: a name (``"lr-study"``) or a mapping with
            ``name``, ``method`` (``"grid"``, ``"random"``, ``"tpe"``, ...), ``trial``, ``state`` and ``space`` (each
            parameter's distribution: ``"log"``, ``"linear"`` or its choices); the report groups runs by it.
        flops: ``"sampled"`` (default) or ``"every-step"``: how the steps of an input signature whose work varies with
            the data are counted (1 step in 8 watched and the epoch estimated with its range, or every step watched;
            see docs/flops.md).
        sensors: advanced — energy sensors to use instead of the machine's (one per component).
    """

    framework = "unknown"
    front_end = CALLBACK
    """How messages tell the user to set an option (``GreenCallback(monitor=...)``); the loop ``Tracker`` has its
    own."""

    def __init__(
        self,
        *,
        country: str | None = None,
        region: str | None = None,
        carbon_intensity: float | None = None,
        pue: float | str = 1.0,
        monitor: str | None = None,
        mode: str | None = None,
        target: float | None = None,
        budget_kwh: float | None = None,
        budget_gco2e: float | None = None,
        gpus: Sequence[int] | None = None,
        output_dir: str | None = None,
        cpu_watts_per_core: float | None = None,
        ram_watts_per_gb: float | None = None,
        live_intensity: Any = None,
        budget_action: str = "stop",
        console: str = "compact",
        embodied_lifetime_years: float | None = None,
        embodied_utilisation: float | None = None,
        embodied_host_share: float | None = None,
        wue_l_per_kwh: float | None = None,
        search: Any = None,
        flops: str = "sampled",
        sensors: Sequence[Any] | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if k in _PARAMETERS}
        super().__init__()  # the framework's callback class, next in the MRO
        settings = {k: v for k, v in given.items() if k != "sensors"}
        self.config = GreenConfig(**settings)
        self._arguments = {k: v for k, v in settings.items() if v is not _PARAMETERS[k].default}
        """The arguments the user gave (what a framework that rebuilds callbacks from a checkpoint needs)."""
        if sensors is None:  # an unknown GPU index is the user's mistake: say so now, not at the first epoch
            from green_callbacks.core.sensors.nvml import check_gpus_on_this_machine

            check_gpus_on_this_machine(self.config.gpus)
        self._engine = Engine(self.config, framework=self.framework, sensors=sensors, front_end=self.front_end)
        self._patches = InstancePatches()  # framework objects changed for one fit (see core/patches.py)
        self._init_adapter()

    def _json_arguments(self) -> dict[str, Any]:
        """The arguments the user gave that JSON keeps (a framework that rebuilds callbacks from a checkpoint
        passes them back to the constructor; ``sensors`` and ``live_intensity`` objects are left out)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._arguments.items()
                if isinstance(v, _JSON_TYPES) or (isinstance(v, (list, tuple)) and all(isinstance(i, int) for i in v))}

    def _init_adapter(self) -> None:
        """The adapter's own per-instance state (framework objects it tracks), set up after the engine."""

    def _watch_backward(self, hook: str) -> None:
        """A watched training step (a new batch signature) is open: the framework's before-optimizer event ``hook``
        stops its count before the optimizer runs (:meth:`FlopTap.backward_done`). Only such a step gets that hook,
        as an instance attribute the framework finds by name (both frameworks look hooks up on every call); it
        removes itself once it ran, so a step whose FLOPs are known pays nothing for it."""

        def backward_done(*args: Any, **kwargs: Any) -> None:
            self.__dict__.pop(hook, None)
            self._engine.flops.backward_done()  # the optimizer's own work is not counted

        setattr(self, hook, backward_done)

    def __getattr__(self, name: str) -> Any:
        """Only for attributes this class lacks: when another framework asks for one of its hooks, the callback
        was given to the wrong framework; say which import is the right one instead of an ``AttributeError``."""
        if not name.startswith("_"):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            used = next((f for f, roots in _FRAMEWORK_MODULES.items() if caller.split(".", 1)[0] in roots), None)
            if used is not None and used != self.framework:
                raise TypeError(
                    f"green_callbacks.{self.framework}.GreenCallback is the {_TITLES[self.framework]} callback, but "
                    f"{_TITLES[used]} is using it (it asked for {name!r}). For {_TITLES[used]}, use: "
                    f"from green_callbacks.{used} import GreenCallback"
                )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def session(self) -> Session:
        """The session of the current (or last) fit: read its ``status``, ``rows``, ``record_path``."""
        return self._engine.session

    @property
    def record_path(self) -> Path | None:
        """Where the run record is (or will be) written."""
        return self._engine.record_path

    @property
    def last_metrics(self) -> dict[str, float]:
        """The ``green/...`` metrics of the last completed epoch."""
        return self._engine.last_metrics

    @property
    def last_phase(self) -> PhaseResult | None:
        """The last test / validate / predict / evaluate measured outside ``fit`` (``None`` before the first)."""
        return self._engine.phases.last

    @property
    def last_phase_metrics(self) -> dict[str, float]:
        """Its ``green/<kind>_...`` metrics, as logged where the framework logs that phase."""
        return self._engine.phases.last_metrics

    @property
    def last_phase_record_path(self) -> Path | None:
        """The run record of the last phase (``"kind": "test"``, ``"predict"``, …)."""
        return self._engine.phases.record_path

    def repeat_phase(self, run_once: Any, *, rounds: int = 5, warmup_rounds: int = 1,
                     confidence: float = 0.95) -> RepeatedPhase:
        """Run a test / validate / predict / evaluate workload (``run_once``, e.g. ``lambda: trainer.test(model,
        dl)``) ``warmup_rounds + rounds`` times with this callback measuring each as a phase; the median round's
        energy, time and energy per sample with the interval of the median (:mod:`green_callbacks.core.repeat`)."""
        return repeat_phase(run_once, lambda: self.last_phase, rounds=rounds, warmup_rounds=warmup_rounds,
                            confidence=confidence)


_JSON_TYPES = (str, int, float, bool, type(None))
_FRAMEWORK_MODULES = {
    "lightning": ("lightning", "pytorch_lightning"),
    "keras": ("keras", "tf_keras"),
    "transformers": ("transformers",),
}
_TITLES = {"lightning": "PyTorch Lightning", "keras": "Keras", "transformers": "HF transformers"}

_PARAMETERS = {
    name: p for name, p in inspect.signature(GreenCallbackBase.__init__).parameters.items() if name != "self"
}

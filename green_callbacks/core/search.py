"""A run's hyperparameter search: the ``search=`` keyword, validated, and the record's ``search`` section read back.

A search is what the user (or the search engine) says it is. ``search="lr-study"`` names one; a mapping says more::

    search={"name": "lr-study", "method": "random", "trial": 7, "state": "complete",
            "space": {"lr": {"distribution": "log", "low": 1e-5, "high": 1e-1},
                      "dropout": {"distribution": "linear", "low": 0.0, "high": 0.5},
                      "optimizer": {"choices": ["sgd", "adam"]}}}

``method`` (alias ``sampler``) is how the trials were drawn: ``grid``, ``random``, ``tpe``, ``gp``, ``cmaes``,
``bayes``, ``hyperband``, ``manual`` or another name (Optuna's sampler class names such as ``TPESampler`` are
understood). ``state`` is the trial's end: ``complete``, ``pruned`` or ``failed`` (default: from the run's status).
A space entry may be written short: ``"log"`` / ``"linear"`` (the range is then read from the runs) or a list of
choices. The record keeps the normalised mapping under ``"search"``; the report groups runs by ``name`` and reads
``method`` to decide which analyses hold (docs/report.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BAYESIAN_METHODS",
    "DISTRIBUTIONS",
    "METHODS",
    "STATES",
    "ParamSpace",
    "SearchInfo",
    "normalize_search",
    "parse_search",
]

METHODS = ("grid", "random", "tpe", "gp", "bayes", "cmaes", "qmc", "hyperband", "asha", "pbt", "manual")
"""Methods the report knows; any other name is kept and treated as an unknown adaptive method."""
BAYESIAN_METHODS = ("tpe", "gp", "bayes", "cmaes")
"""Adaptive samplers: each trial depends on the earlier results, so results are not independent draws."""
STATES = ("complete", "pruned", "failed")
DISTRIBUTIONS = ("log", "linear", "categorical")
_ALIASES = {
    "gridsampler": "grid", "grid_search": "grid", "randomsampler": "random", "basicvariantgenerator": "random",
    "random_search": "random", "tpesampler": "tpe", "hyperoptsearch": "tpe", "gpsampler": "gp",
    "bayesian": "bayes", "bayesoptsearch": "bayes", "cmaessampler": "cmaes", "qmcsampler": "qmc",
    "sobol": "qmc", "hyperbandscheduler": "hyperband", "ashascheduler": "asha",
}
_STATE_ALIASES = {"completed": "complete", "fail": "failed", "prune": "pruned", "trialstate.complete": "complete",
                  "trialstate.pruned": "pruned", "trialstate.fail": "failed"}
_KEYS = ("name", "method", "sampler", "engine", "trial", "state", "space")
_MAX_TEXT = 200


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"search {what} must be a non-empty string, got {value!r}")
    if len(value) > _MAX_TEXT:
        raise ValueError(f"search {what} must be at most {_MAX_TEXT} characters, got {len(value)}")
    return value.strip()


def _method(value: Any) -> str:
    text = _text(value, "method").lower()
    return _ALIASES.get(text, text)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"search space {what} must be a finite number, got {value!r}")
    return value


def _choice(value: Any, what: str) -> Any:
    if value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError(f"search space {what}: a choice must be a string, number, boolean or None, got {value!r}")


def _space_entry(name: str, entry: Any) -> dict[str, Any]:
    what = f"{name!r}"
    if isinstance(entry, str):
        entry = {"distribution": entry}
    elif isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)):
        entry = {"choices": list(entry)}
    if not isinstance(entry, Mapping):
        raise ValueError(f"search space {what} must be 'log', 'linear', a list of choices or a mapping "
                         f"(distribution, low, high, choices), got {entry!r}")
    unknown = sorted(set(entry) - {"distribution", "low", "high", "choices", "step", "log"})
    if unknown:
        raise ValueError(f"search space {what} has unknown key(s) {unknown}; use distribution, low, high, "
                         "choices, step")
    distribution = entry.get("distribution")
    if distribution is None:
        distribution = ("categorical" if "choices" in entry else "log" if entry.get("log") is True else "linear")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"search space {what}: distribution must be one of {', '.join(DISTRIBUTIONS)}, "
                         f"got {distribution!r}")
    out: dict[str, Any] = {"distribution": distribution}
    if distribution == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, Sequence) or isinstance(choices, (str, bytes)) or not choices:
            raise ValueError(f"search space {what}: a categorical parameter needs a non-empty list of choices, "
                             f"got {choices!r}")
        out["choices"] = [_choice(c, what) for c in choices]
        return out
    for key in ("low", "high", "step"):
        if entry.get(key) is not None:
            out[key] = _number(entry[key], f"{what} {key}")
    low, high = out.get("low"), out.get("high")
    if low is not None and high is not None and low > high:
        raise ValueError(f"search space {what}: low ({low!r}) is above high ({high!r})")
    if distribution == "log" and low is not None and low <= 0:
        raise ValueError(f"search space {what}: a log-scaled parameter needs low > 0, got {low!r}")
    return out


def normalize_search(value: Any) -> dict[str, Any] | None:
    """The ``search=`` keyword as the record keeps it; ``ValueError`` saying what is allowed when it is wrong."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"name": _text(value, "name")}
    if not isinstance(value, Mapping):
        raise ValueError(f"search must be a name (str) or a mapping with name, method, trial, state, space; "
                         f"got {value!r} ({type(value).__name__})")
    unknown = sorted(str(k) for k in value if k not in _KEYS)
    if unknown:
        raise ValueError(f"search has unknown key(s) {unknown}; allowed: {', '.join(_KEYS)}")
    if "name" not in value:
        raise ValueError("search needs a name (the study or sweep), e.g. search={'name': 'lr-study', ...}")
    out: dict[str, Any] = {"name": _text(value["name"], "name")}
    method = value.get("method", value.get("sampler"))
    if value.get("method") is not None and value.get("sampler") is not None and \
            _method(value["method"]) != _method(value["sampler"]):
        raise ValueError(f"search method {value['method']!r} and sampler {value['sampler']!r} disagree; give one")
    if method is not None:
        out["method"] = _method(method)
    if value.get("engine") is not None:
        out["engine"] = _text(value["engine"], "engine")
    trial = value.get("trial")
    if trial is not None:
        if isinstance(trial, bool) or not isinstance(trial, (int, str)) or (isinstance(trial, int) and trial < 0):
            raise ValueError(f"search trial must be a number >= 0 or a trial id (str), got {trial!r}")
        out["trial"] = trial if isinstance(trial, int) else _text(trial, "trial")
    state = value.get("state")
    if state is not None:
        text = _text(state, "state").lower()
        text = _STATE_ALIASES.get(text, text)
        if text not in STATES:
            raise ValueError(f"search state must be one of {', '.join(STATES)}, got {state!r}")
        out["state"] = text
    space = value.get("space")
    if space is not None:
        if not isinstance(space, Mapping):
            raise ValueError(f"search space must map each hyperparameter to its distribution, got {space!r}")
        out["space"] = {_text(str(k), "space name"): _space_entry(str(k), v) for k, v in space.items()}
    return out


# ---------------------------------------------------------------------------------------------- reading records
@dataclass(frozen=True)
class ParamSpace:
    """One hyperparameter's distribution as the search declared it."""

    distribution: str
    """``log``, ``linear`` or ``categorical``."""
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SearchInfo:
    """A record's ``search`` section."""

    name: str
    method: str | None = None
    engine: str | None = None
    trial: int | str | None = None
    state: str | None = None
    space: Mapping[str, ParamSpace] | None = None

    @property
    def independent(self) -> bool:
        """The trials are independent draws (random search, or a grid taken in any fixed order)."""
        return self.method in ("random", "grid", "qmc")


def parse_search(data: Any) -> SearchInfo | None:
    """The record's ``search`` section, or ``None`` when there is none or it is not one this version reads
    (a malformed section never makes a record unreadable: the run is then grouped as if it had no identity)."""
    if data is None:
        return None
    try:
        clean = normalize_search(data)
    except (ValueError, TypeError):
        return None
    if clean is None:
        return None
    space = None
    if "space" in clean:
        space = {name: ParamSpace(entry["distribution"], entry.get("low"), entry.get("high"),
                                  tuple(entry.get("choices", ())))
                 for name, entry in clean["space"].items()}
    return SearchInfo(name=clean["name"], method=clean.get("method"), engine=clean.get("engine"),
                      trial=clean.get("trial"), state=clean.get("state"), space=space)

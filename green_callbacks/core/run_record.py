"""The run record's content: the keys every kind of run shares (:func:`record_head`) and a fit's whole record
(:func:`fit_record`). The test / predict / evaluate record adds its own part to the same head
(:meth:`~green_callbacks.core.phase_session.PhaseSession.to_record`); :mod:`~green_callbacks.core.record` reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from green_callbacks.core import clock
from green_callbacks.core.record import SCHEMA
from green_callbacks.core.record_sections import to_json
from green_callbacks.core.record_writer import epochs_log_name
from green_callbacks.core.sensors.base import UNAVAILABLE

__all__ = ["fit_record", "methods_so_far", "record_head"]


def record_head(*, kind: str, run_id: str, framework: str, status: str, error: str | None,
                started_at: float | None, world_size: int, carbon: Mapping[str, Any] | None, pue: float,
                components: Mapping[str, Any], lost: Mapping[str, str]) -> dict[str, Any]:
    """The keys of every record: what ran, how it ended, where, on what, with which intensity, what was lost."""
    return {
        "schema": SCHEMA,
        "kind": kind,
        "run_id": run_id,
        "framework": framework,
        "status": status,
        "error": error,
        "started_at": started_at,
        "updated_at": clock.wall_time_s(),
        "world_size": world_size,
        "carbon": None if carbon is None else {**carbon, "pue": pue},
        "components": dict(components),
        "lost": dict(lost),
    }


def methods_so_far(used: Mapping[str, list[str]], components: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every method each component used in the run (a lost GPU shows both its method and ``unavailable``)."""
    out: dict[str, list[str]] = {name: list(used.get(name, ())) for name in components}
    for name, methods in used.items():
        out.setdefault(name, list(methods))
    for name, info in components.items():
        if not out[name]:
            out[name].append(str(info.get("method", UNAVAILABLE)))
    return out


def fit_record(session: Any, *, with_epochs: bool = True) -> dict[str, Any]:
    """A fit's record as a dict (``session``: the :class:`~green_callbacks.core.session.Session`).

    ``with_epochs=False``: the header of a running record, whose epochs are in the epoch log."""
    ledger = session.ledger
    conv = ledger.convergence
    best = None if conv is None else conv.best
    at_target = None if conv is None else conv.at_target
    components = session.meter.info() if session.meter is not None else {}
    path = session.record_path
    return {
        **record_head(kind="fit", run_id=session.run_id, framework=session.framework, status=session.status,
                      error=session.error, started_at=session.started_at, world_size=session.dist.world_size,
                      carbon=session.carbon_choice.to_record(), pue=session.config.pue, components=components,
                      lost=session.guard.lost),
        "stop_reason": ledger.stop_reason,
        "methods": methods_so_far(ledger.methods, components),
        "convergence": {
            "monitor": ledger.monitor,
            "mode": None if conv is None else conv.mode,
            "target": None if conv is None else conv.target,
            "best": None if best is None else best.to_record(),
            "at_target": None if at_target is None else at_target.to_record(),
        },
        "hyperparameters": session.hyperparameters,
        "search": session.search,
        "resumed_from": ledger.resumed_from,
        "budget": {
            "budget_kwh": session.config.budget_kwh,
            "budget_gco2e": session.config.budget_gco2e,
            "action": session.config.budget_action,
            "planned_epochs": ledger.planned_epochs,
            "projection": None if ledger.projection is None else {
                name: dict(vars(p)) for name, p in zip(("energy_j", "emissions_gco2e"), ledger.projection, strict=True)
            },
        },
        "totals": dict(vars(ledger.totals)),
        "epochs": [row.to_record() for row in ledger.rows] if with_epochs else [],
        "epochs_log": None if with_epochs or path is None else epochs_log_name(path),
        "partial_epoch": to_json(session.partial_epoch),
        "footprint": session.footprint.to_record(with_epochs=with_epochs),
        "phases": list(session.phases),
        **session.sink.environment,
        **{key: to_json(value) for key, value in session.info.items()},
    }

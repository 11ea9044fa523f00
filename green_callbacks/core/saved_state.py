"""The run's state kept as a file beside a framework's own backup, for a framework whose callbacks have no
checkpoint hook (Keras: ``BackupAndRestore``'s folder). The engine writes it at each epoch end and reads it when a
fit resumes from that backup (:meth:`~green_callbacks.core.engine.Engine.save_beside`,
:meth:`~green_callbacks.core.engine.Engine.resume_beside`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from green_callbacks.core.record_writer import write_json_atomic
from green_callbacks.core.wording import warn_user

__all__ = ["STATE_FILE", "read_state_beside", "write_state_beside"]

STATE_FILE = "green_callbacks_state.json"


def write_state_beside(folder: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    write_json_atomic(os.path.join(folder, STATE_FILE), dict(state))


def read_state_beside(folder: str | os.PathLike[str], epochs_done: int) -> dict[str, Any] | None:
    """The state saved in ``folder`` when the framework resumes after ``epochs_done`` completed epochs; ``None``
    when nothing was saved, nothing is resumed, or the state covers another number of epochs (the process died
    between the framework's save and ours: said once). Raises ``OSError``/``ValueError`` for an unreadable file."""
    path = os.path.join(folder, STATE_FILE)
    if epochs_done <= 0 or not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        state = json.load(handle)
    if state.get("epoch_index") != epochs_done:
        warn_user(f"green_callbacks: the saved totals cover {state.get('epoch_index')} epochs but the fit resumes "
                  f"after {epochs_done}; this fit starts new totals and a new run record.")
        return None
    return dict(state)

"""Run records: the versioned JSON file a run leaves behind, and the one reader of it (:class:`RunRecord`).

A record is plain JSON (nothing is pickled or evaluated) named ``green-run-<UTC time>-<id>.json`` with a
top-level ``"schema": "green-callbacks/run/1.<minor>"``. It is replaced atomically (a temporary file beside it, then a
rename), so a reader never sees half a file.

Schema 1.1 adds ``epochs_log``: while a run is going, the record holds ``"epochs": []`` and names a file
``green-run-<stamp>-<id>.epochs.jsonl`` in the same folder that gets one JSON object per completed epoch (one line
each, newline-terminated). At the end the complete record is written with every epoch inline and
``"epochs_log": null``. The reader joins the inline epochs and the log's; a last line without a newline or with
invalid JSON (cut short by a kill) is ignored. Records of schema 1.0 (no ``epochs_log``) read as before.

Reading is defensive, because a folder of records may hold anything: only regular files are opened (a FIFO or a
device is refused without blocking), at most :data:`DEFAULT_MAX_RECORD_MB` MiB (``GREEN_CALLBACKS_MAX_RECORD_MB``
or the ``max_bytes`` argument to change it), JSON without ``NaN``/``Infinity``, nesting at most
:data:`MAX_DEPTH` deep, and every field the report uses is checked for its type and range
(:func:`parse_record`). A record that fails any check raises :class:`RecordError` naming the field and the reason.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from green_callbacks.core.convergence import Totals
from green_callbacks.core.fingerprint import ModelInfo, parse_model_info
from green_callbacks.core.record_checks import MAX_MAGNITUDE, MAX_METRIC
from green_callbacks.core.record_checks import Invalid as _Invalid
from green_callbacks.core.record_checks import integer as _integer
from green_callbacks.core.record_checks import number as _number
from green_callbacks.core.record_checks import obj as _obj
from green_callbacks.core.record_checks import strings as _strings
from green_callbacks.core.record_checks import text as _text
from green_callbacks.core.record_checks import type_name as _type_name
from green_callbacks.core.record_sections import (
    FlopInfo,
    FootprintInfo,
    HardwareInfo,
    PartialEpoch,
    PhaseInfo,
    SoftwareInfo,
    ThroughputInfo,
    TrainingLink,
    parse_compute_dtype,
    parse_flops,
    parse_footprint,
    parse_hardware,
    parse_partial_epoch,
    parse_phase,
    parse_software,
    parse_throughput,
    parse_training,
)
from green_callbacks.core.rows import EpochRow
from green_callbacks.core.search import SearchInfo, parse_search
from green_callbacks.core.sensors.base import NOT_USED, UNAVAILABLE

__all__ = [
    "DEFAULT_MAX_RECORD_MB",
    "EPOCHS_LOG_GLOB",
    "MAX_DEPTH",
    "MAX_MAGNITUDE",
    "MAX_METRIC",
    "MAX_RECORD_MB_ENV",
    "METHOD_NOT_USED",
    "RECORD_GLOB",
    "SCHEMA",
    "STATUSES",
    "CarbonInfo",
    "ComponentInfo",
    "ConvergenceInfo",
    "Milestone",
    "RecordError",
    "RunRecord",
    "as_record",
    "find_records",
    "load_record",
    "max_record_bytes",
    "parse_record",
    "read_epochs_log",
    "read_json_file",
    "read_record",
    "record_kind",
]

SCHEMA = "green-callbacks/run/1.1"
"""The schema a record is written with. Readers accept every ``green-callbacks/run/1.x`` (and ``.../run/1``)."""
SCHEMA_PREFIX = "green-callbacks/run/"
SCHEMA_MAJOR = "1"
STATUSES = ("running", "completed", "interrupted", "failed")
RECORD_GLOB = "green-run-*.json"
EPOCHS_LOG_GLOB = "green-run-*.epochs.jsonl"
EPOCHS_LOG_SUFFIX = ".epochs.jsonl"
_EPOCHS_LOG_NAME = re.compile(r"green-run-[^/\\\x00]*\.epochs\.jsonl")

METHOD_NOT_USED = NOT_USED
"""A component's method when the run does not use it (a GPU on a CPU-only run): not measured, and not missing."""
METHOD_UNAVAILABLE = UNAVAILABLE
CPU_TRAINING_NOTE = "training on CPU"
"""Start of the GPU note of records written before ``not-used`` existed (``sensors.nvml.CPU_TRAINING_REASON``)."""

DEFAULT_MAX_RECORD_MB = 64.0
"""Largest record (and epochs log) read, in MiB. A 1,000-epoch record is about 2 MiB."""
MAX_RECORD_MB_ENV = "GREEN_CALLBACKS_MAX_RECORD_MB"
MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted in a record (the writer's own is below 10)."""
class RecordError(ValueError):
    """A file or object that is not a readable run record of a schema this version understands.

    ``str(err)`` is ``"<source>: <reason>"``; :attr:`source` and :attr:`reason` hold the two parts.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


# ---------------------------------------------------------------------------------------------------- file reading
def max_record_bytes(max_mb: float | None = None) -> int:
    """The size cap in bytes: ``max_mb``, else ``$GREEN_CALLBACKS_MAX_RECORD_MB``, else the default (64 MiB).

    Raises ``ValueError`` (saying what to set) for a cap that is not a positive number.
    """
    source = "max_record_mb"
    if max_mb is None:
        env = os.environ.get(MAX_RECORD_MB_ENV)
        if env is None or not env.strip():
            max_mb = DEFAULT_MAX_RECORD_MB
        else:
            source = MAX_RECORD_MB_ENV
            try:
                max_mb = float(env)
            except ValueError:
                raise ValueError(f"{MAX_RECORD_MB_ENV} must be a size in MiB such as 64, got {env!r}") from None
    if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not (0 < max_mb < 1e6):
        raise ValueError(f"{source} must be a size in MiB above 0 (e.g. 64), got {max_mb!r}")
    return int(max_mb * 1024 * 1024)


def _read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; never blocks on a FIFO, never reads a device."""
    source = str(path)
    try:
        info = os.stat(path)  # follows links: a link to /dev/zero is judged by what it points to
    except OSError as err:
        raise RecordError(source, f"cannot be read ({err.strerror or err})") from err
    if not stat.S_ISREG(info.st_mode):
        raise RecordError(source, f"not a regular file ({_kind(info.st_mode)}); only regular files are read")
    if info.st_size > max_bytes:
        raise RecordError(source, _too_big(info.st_size, max_bytes))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise RecordError(source, f"cannot be read ({err.strerror or err})") from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between the stat and the open
            raise RecordError(source, "not a regular file; only regular files are read")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise RecordError(source, _too_big(size, max_bytes))
    except OSError as err:
        raise RecordError(source, f"cannot be read ({err.strerror or err})") from err
    finally:
        os.close(fd)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def _too_big(size: int, max_bytes: int) -> str:
    return (f"larger than the {max_bytes / 1048576:g} MiB read at most ({size:,} bytes or more); if it is a real "
            f"record, raise the cap with --max-record-mb or {MAX_RECORD_MB_ENV}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _depth_ok(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests objects/arrays at most ``limit`` deep (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= limit:
        return True
    depth = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > limit:
                return False
        else:
            depth -= 1
    return True


def _loads(text: str, source: str) -> Any:
    if not _depth_ok(text):
        raise RecordError(source, f"not a readable run record (nested more than {MAX_DEPTH} levels deep)")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise RecordError(source, f"not a readable run record ({type(err).__name__}: {err})") from err


def read_json_file(path: str | os.PathLike[str], max_bytes: int | None = None) -> Any:
    """One JSON document from a regular file of at most ``max_bytes`` (default :func:`max_record_bytes`)."""
    source = Path(path).expanduser()
    raw = _read_regular(source, max_record_bytes() if max_bytes is None else max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(str(source), f"not a readable run record (UnicodeDecodeError: {err})") from err
    return _loads(text, str(source))


def read_epochs_log(path: str | os.PathLike[str], max_bytes: int | None = None) -> list[Any]:
    """The JSON objects of an epochs log, one a line; a last line without newline or not JSON is left out (torn)."""
    source = Path(path)
    raw = _read_regular(source, max_record_bytes() if max_bytes is None else max_bytes)
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: after the last newline (empty when the log ends with one)
    out = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            value = _loads(line.decode("utf-8"), f"{source} line {number}")
        except (RecordError, UnicodeDecodeError) as err:
            if number == len(complete) and not tail.strip():
                break  # the last line is torn (a kill during the append): ignore it
            reason = err.reason if isinstance(err, RecordError) else f"UnicodeDecodeError: {err}"
            raise RecordError(str(source), f"line {number} of the epochs log: {reason}") from err
        out.append(value)
    return out


# ---------------------------------------------------------------------------------------------------- the typed record
@dataclass(frozen=True)
class CarbonInfo:
    """The grid intensity and PUE the run's emissions were computed with."""

    intensity_gco2e_per_kwh: float | None = None
    source: str | None = None
    year: int | None = None
    location: str | None = None
    basis: str | None = None
    kind: str | None = None
    pue: float | None = None


@dataclass(frozen=True)
class ComponentInfo:
    """What the sensor of one component (``gpu``, ``cpu``, ``ram``) said about itself."""

    name: str
    method: str
    scope: str | None = None
    note: str = ""
    """Why it is unavailable, or the sensor's note (``reason``, ``note`` or ``lost`` of the record)."""
    device_names: tuple[str, ...] = ()

    @property
    def not_used(self) -> bool:
        """The run does not use this component (a GPU on a CPU-only run): ``not-used``, or the older CPU note."""
        return self.method == METHOD_NOT_USED or (
            self.name == "gpu" and self.method == METHOD_UNAVAILABLE and self.note.startswith(CPU_TRAINING_NOTE))


@dataclass(frozen=True)
class Milestone:
    """``convergence.best`` / ``at_target``: the epoch, the metric's value and the run's totals at its end."""

    epoch: int
    value: float | None
    epochs: int | None
    time_s: float | None
    train_flops: float | None
    eval_flops: float | None
    energy_j: float | None
    emissions_gco2e: float | None


@dataclass(frozen=True)
class ConvergenceInfo:
    monitor: str | None = None
    mode: str | None = None
    target: float | None = None
    best: Milestone | None = None
    at_target: Milestone | None = None


@dataclass(frozen=True)
class RunRecord(Mapping[str, Any]):
    """A validated run record: typed fields, and (as a read-only mapping) the record's JSON with the epochs joined.

    Build one with :func:`load_record` (a file) or :func:`parse_record` (an already-loaded dict).
    """

    schema: str
    run_id: str
    framework: str
    status: str
    error: str | None
    stop_reason: str | None
    world_size: int | None
    carbon: CarbonInfo
    components: Mapping[str, ComponentInfo]
    methods: Mapping[str, tuple[str, ...]]
    convergence: ConvergenceInfo
    hyperparameters: Mapping[str, Any]
    lost: Mapping[str, str]
    totals: Totals
    epochs: tuple[EpochRow, ...]
    partial_epoch: PartialEpoch | None
    epochs_log: str | None
    path: str = ""
    kind: str = "fit"
    """``fit``, or the phase a test / validate / predict / evaluate record measured (older records: ``fit``)."""
    started_at: float | None = None
    updated_at: float | None = None
    """Wall-clock times (seconds since the epoch) of the run's start and of this record's last write."""
    footprint: FootprintInfo | None = None
    phase: PhaseInfo | None = None
    training: TrainingLink | None = None
    """A phase record's link to the fit that trained the model (``None``: no fit ran with the callback)."""
    throughput: ThroughputInfo | None = None
    hardware: HardwareInfo | None = None
    software: SoftwareInfo | None = None
    flops: FlopInfo | None = None
    compute_dtype: str | None = None
    """The compute dtype the framework's section names (``lightning.precision`` and the like), normalised."""
    model: str | None = None
    """The model's name where the record gives one (a ``model`` section or a ``model`` hyperparameter)."""
    model_info: ModelInfo | None = None
    """The model's fingerprint, parameter count and data signature (the record's ``model`` section), if any."""
    search: SearchInfo | None = None
    """The hyperparameter search this run is a trial of (the record's ``search`` section), if it names one."""
    data: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The record's JSON object (epochs joined from the log, ``_path`` added), as read; the report reads the typed
    fields above, never this."""

    @property
    def is_phase(self) -> bool:
        """A test / validate / predict / evaluate record, not a fit."""
        return self.kind != "fit"

    # Mapping over ``data``: code that reads keys (``record["run_id"]``) keeps working
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__



# ---------------------------------------------------------------------------------------------------- validation
def _model_name(*places: Any) -> str | None:
    """The model's name from a ``model`` section or a ``model`` hyperparameter (the first that names one)."""
    for where in (places[0], places[1].get("model") if isinstance(places[1], Mapping) else None):
        if isinstance(where, str) and where:
            return where
        if isinstance(where, Mapping):
            for key in ("name", "class", "type"):
                if isinstance(where.get(key), str) and where[key]:
                    return str(where[key])
    return None


def _totals(value: Any, where: str) -> Totals:
    data = _obj(value, where)
    return Totals(
        epochs=_integer(data.get("epochs"), f"{where}.epochs"),
        time_s=_number(data.get("time_s"), f"{where}.time_s"),
        train_flops=_number(data.get("train_flops"), f"{where}.train_flops"),
        eval_flops=_number(data.get("eval_flops"), f"{where}.eval_flops"),
        energy_j=_number(data.get("energy_j"), f"{where}.energy_j"),
        emissions_gco2e=_number(data.get("emissions_gco2e"), f"{where}.emissions_gco2e"),
        **{name: _number(data.get(name), f"{where}.{name}") for name in _OPTIONAL_TOTALS},
    )


#: The totals' optional numbers (their intervals), read by name like the epoch's.
_OPTIONAL_TOTALS = tuple(f.name for f in fields(Totals) if f.default is None and f.type == "float | None")


def _energies(value: Any, where: str) -> dict[str, float | None]:
    return {str(k): _number(v, f"{where}.{k}") for k, v in _obj(value, where).items()}


_OPTIONAL_EPOCH_NUMBERS = tuple(f.name for f in fields(EpochRow) if f.default is None and f.type == "float | None")
"""The row's optional numbers (training time, samples, tokens, peak, and any added later): read by name, ``None``
where an older record lacks them; a new per-epoch number needs no edit here."""


def _epoch(value: Any, where: str) -> EpochRow:
    data = _obj(value, where, optional=False)
    metrics = {str(k): _number(v, f"{where}.metrics.{k}", minimum=None, limit=MAX_METRIC)
               for k, v in _obj(data.get("metrics"), f"{where}.metrics").items()}
    methods = {str(k): _text(v, f"{where}.component_method.{k}", optional=False) or ""
               for k, v in _obj(data.get("component_method"), f"{where}.component_method").items()}
    return EpochRow(
        epoch=_integer(data.get("epoch"), f"{where}.epoch", optional=False) or 0,
        time_s=_number(data.get("time_s"), f"{where}.time_s", optional=False) or 0.0,
        energy_j=_number(data.get("energy_j"), f"{where}.energy_j"),
        component_energy_j=_energies(data.get("component_energy_j"), f"{where}.component_energy_j"),
        component_method=methods,
        eval_energy_j=_number(data.get("eval_energy_j"), f"{where}.eval_energy_j"),
        train_flops=_number(data.get("train_flops"), f"{where}.train_flops"),
        eval_flops=_number(data.get("eval_flops"), f"{where}.eval_flops"),
        emissions_gco2e=_number(data.get("emissions_gco2e"), f"{where}.emissions_gco2e"),
        totals=None if data.get("totals") is None else _totals(data.get("totals"), f"{where}.totals"),
        metrics=metrics,
        missing_components=_strings(data.get("missing_components"), f"{where}.missing_components"),
        **{name: _number(data.get(name), f"{where}.{name}") for name in _OPTIONAL_EPOCH_NUMBERS},
    )


def _milestone(value: Any, where: str) -> Milestone | None:
    if value is None:
        return None
    data = _obj(value, where, optional=False)
    return Milestone(
        epoch=_integer(data.get("epoch"), f"{where}.epoch", optional=False) or 0,
        value=_number(data.get("value"), f"{where}.value", minimum=None, limit=MAX_METRIC),
        epochs=_integer(data.get("epochs"), f"{where}.epochs"),
        time_s=_number(data.get("time_s"), f"{where}.time_s"),
        train_flops=_number(data.get("train_flops"), f"{where}.train_flops"),
        eval_flops=_number(data.get("eval_flops"), f"{where}.eval_flops"),
        energy_j=_number(data.get("energy_j"), f"{where}.energy_j"),
        emissions_gco2e=_number(data.get("emissions_gco2e"), f"{where}.emissions_gco2e"),
    )


def _convergence(value: Any) -> ConvergenceInfo:
    data = _obj(value, "convergence")
    mode = _text(data.get("mode"), "convergence.mode")
    if mode not in (None, "min", "max"):
        raise _Invalid("convergence.mode", f"must be 'min' or 'max', found {mode[:40]!r}")
    return ConvergenceInfo(
        monitor=_text(data.get("monitor"), "convergence.monitor") or None,
        mode=mode,
        target=_number(data.get("target"), "convergence.target", minimum=None, limit=MAX_METRIC),
        best=_milestone(data.get("best"), "convergence.best"),
        at_target=_milestone(data.get("at_target"), "convergence.at_target"),
    )


def _component(name: str, value: Any) -> ComponentInfo:
    where = f"components.{name}"
    data = _obj(value, where, optional=False)
    note = ""
    for key in ("reason", "note", "lost"):
        if isinstance(data.get(key), str) and data[key]:
            note = data[key]
            break
    devices = data.get("devices")
    names: list[str] = []
    if devices is not None:
        if not isinstance(devices, list):
            raise _Invalid(f"{where}.devices", f"must be an array, found {_type_name(devices)}")
        for i, device in enumerate(devices):
            device_name = _text(_obj(device, f"{where}.devices[{i}]", optional=False).get("name"),
                                f"{where}.devices[{i}].name")
            if device_name:
                names.append(device_name)
    return ComponentInfo(
        name=name,
        method=_text(data.get("method"), f"{where}.method") or METHOD_UNAVAILABLE,
        scope=_text(data.get("scope"), f"{where}.scope"),
        note=note,
        device_names=tuple(names),
    )


def _schema(data: Mapping[str, Any]) -> str:
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise RecordError("", f"schema {str(schema)[:80]!r} is not a green-callbacks run record ({SCHEMA!r})")
    major = schema[len(SCHEMA_PREFIX):].split(".", 1)[0]
    if major != SCHEMA_MAJOR:
        raise RecordError("", f"schema {schema[:80]!r} is not the version this green_callbacks reads ({SCHEMA!r}); "
                              "use the green_callbacks version that wrote it (a newer one: upgrade)")
    return schema


def parse_record(data: Any, source: str = "<record>", *, log_folder: str | os.PathLike[str] | None = None,
                 max_bytes: int | None = None) -> RunRecord:
    """Validate ``data`` (a record's JSON object) and return the :class:`RunRecord`; :class:`RecordError` if bad.

    ``log_folder``: where to look for the ``epochs_log`` a running 1.1 record names (its file's folder); without it
    the log is not read and only the inline epochs count.
    """
    if not isinstance(data, dict):
        raise RecordError(source, f"a run record is a JSON object, found {_type_name(data)}")
    try:
        schema = _schema(data)
    except RecordError as err:
        raise RecordError(source, err.reason) from None
    try:
        status = _text(data.get("status"), "status", optional=False)
        if status not in STATUSES:
            raise _Invalid("status", f"must be one of {', '.join(STATUSES)}, found {str(status)[:40]!r}")
        if not isinstance(data.get("epochs"), list):
            raise _Invalid("epochs", f"missing or not an array (found {_type_name(data.get('epochs'))})")
        if not isinstance(data.get("totals"), dict):
            raise _Invalid("totals", f"missing or not an object (found {_type_name(data.get('totals'))})")
        rows = list(data["epochs"])
        log_name = _text(data.get("epochs_log"), "epochs_log")
        if log_name is not None:
            if not _EPOCHS_LOG_NAME.fullmatch(log_name):
                raise _Invalid("epochs_log", f"must be a plain file name {EPOCHS_LOG_GLOB!r}, found {log_name[:80]!r}")
            if log_folder is not None:
                log_path = Path(log_folder) / log_name
                if log_path.exists() or log_path.is_symlink():
                    rows += read_epochs_log(log_path, max_bytes)
        totals_data = data["totals"]
        last = rows[-1].get("totals") if rows and isinstance(rows[-1], dict) else None
        if (isinstance(last, dict) and isinstance(last.get("epochs"), int)
                and last["epochs"] > (totals_data.get("epochs") if isinstance(totals_data.get("epochs"), int) else 0)):
            totals_data = last  # killed between appending an epoch and replacing the header: the epoch's are newer
        epochs = tuple(_epoch(row, f"epochs[{i}]") for i, row in enumerate(rows))
        carbon_data = _obj(data.get("carbon"), "carbon")
        carbon = CarbonInfo(
            intensity_gco2e_per_kwh=_number(carbon_data.get("intensity_gco2e_per_kwh"),
                                            "carbon.intensity_gco2e_per_kwh"),
            source=_text(carbon_data.get("source"), "carbon.source"),
            year=_integer(carbon_data.get("year"), "carbon.year", maximum=9999),
            location=_text(carbon_data.get("location"), "carbon.location"),
            basis=_text(carbon_data.get("basis"), "carbon.basis"),
            kind=_text(carbon_data.get("kind"), "carbon.kind"),
            pue=_number(carbon_data.get("pue"), "carbon.pue", minimum=1.0),
        )
        components = {str(name): _component(str(name), info)
                      for name, info in _obj(data.get("components"), "components").items()}
        methods = {str(name): _strings(value, f"methods.{name}")
                   for name, value in _obj(data.get("methods"), "methods").items()}
        lost = {str(k): _text(v, f"lost.{k}", optional=False) or ""
                for k, v in _obj(data.get("lost"), "lost").items()}
        partial = parse_partial_epoch(data.get("partial_epoch"))
        _obj(data.get("resumed_from"), "resumed_from")
        record = RunRecord(
            schema=schema,
            run_id=_text(data.get("run_id"), "run_id") or "",
            framework=_text(data.get("framework"), "framework") or "?",
            status=status or "",
            error=_text(data.get("error"), "error"),
            stop_reason=_text(data.get("stop_reason"), "stop_reason"),
            world_size=_integer(data.get("world_size"), "world_size", minimum=1, maximum=10**7),
            carbon=carbon,
            components=components,
            methods=methods,
            convergence=_convergence(data.get("convergence")),
            hyperparameters=_obj(data.get("hyperparameters"), "hyperparameters"),
            lost=lost,
            totals=_totals(totals_data, "totals"),
            epochs=epochs,
            partial_epoch=partial,
            epochs_log=log_name,
            path=source if source != "<record>" else "",
            kind=_text(data.get("kind"), "kind") or "fit",
            started_at=_number(data.get("started_at"), "started_at"),
            updated_at=_number(data.get("updated_at"), "updated_at"),
            footprint=parse_footprint(data.get("footprint")),
            phase=parse_phase(data.get("phase")),
            training=parse_training(data.get("training")),
            throughput=parse_throughput(data.get("throughput")),
            hardware=parse_hardware(data.get("hardware")),
            software=parse_software(data.get("software")),
            flops=parse_flops(data.get("flops")),
            compute_dtype=parse_compute_dtype(data),
            model=_model_name(data.get("model"), data.get("hyperparameters")),
            model_info=parse_model_info(data.get("model")),
            search=parse_search(data.get("search")),
            data={**data, "epochs": rows, "totals": totals_data, **({"_path": source} if source != "<record>" else {})},
        )
    except _Invalid as err:
        raise RecordError(source, str(err)) from None
    except RecordError as err:
        raise RecordError(source, err.reason if err.source == source else str(err)) from None
    return record


def record_kind(record: RunRecord | Mapping[str, Any]) -> str:
    """``fit`` or the phase a record measured, without validating the rest (a record without ``kind`` is a fit)."""
    if isinstance(record, RunRecord):
        return record.kind
    kind = record.get("kind")
    return kind if isinstance(kind, str) and kind else "fit"


def as_record(record: RunRecord | Mapping[str, Any]) -> RunRecord:
    """``record`` itself when it is a :class:`RunRecord`, else a record's dict (as :func:`read_record` returns it)
    parsed and validated here (:class:`RecordError` if it is not a valid record)."""
    if isinstance(record, RunRecord):
        return record
    data = dict(record)
    path = data.get("_path")
    return parse_record(data, str(path) if isinstance(path, str) and path else "<record>")


def load_record(path: str | os.PathLike[str], max_bytes: int | None = None) -> RunRecord:
    """Read and validate one record file (regular files only, at most ``max_bytes``; epochs log joined)."""
    source = Path(path).expanduser()
    limit = max_record_bytes() if max_bytes is None else max_bytes
    data = read_json_file(source, limit)
    return parse_record(data, str(source), log_folder=source.parent, max_bytes=limit)


def read_record(path: str | os.PathLike[str], max_bytes: int | None = None) -> dict[str, Any]:
    """Load and check one run record as a plain dict (``_path`` added, epochs joined); :class:`RecordError` if bad.

    :func:`load_record` gives the typed :class:`RunRecord` instead.
    """
    return dict(load_record(path, max_bytes).data)


def find_records(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Record files among ``paths``: files as given, folders searched recursively for ``green-run-*.json``."""
    for entry in paths:
        path = Path(entry).expanduser()
        if path.is_dir():
            yield from sorted(path.rglob(RECORD_GLOB))
        elif path.exists() or path.is_symlink():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")

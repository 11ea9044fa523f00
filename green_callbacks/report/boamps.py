"""A run as a BoAmps report: the open JSON format of the Boavizta working group for the energy of an AI task
(``core/data/boamps/``: the published schemas, CC BY 4.0, copied unchanged; ``SOURCES.md`` there says from where).

One report per training run. What the record knows is mapped onto the schema's fields: the task (stage
``training``, the model, framework and epochs), one measure (green_callbacks, the tracking method of the CPU and
GPU, the IT energy in **kWh** before PUE, the duration in seconds), the infrastructure's components (the GPUs by
name, the CPU, the RAM), the software (Python) and the environment (country and grid carbon intensity in
gCO2eq/kWh). What the record does not know, and the schema requires (the task family, the data's type), is written
as the schema's catch-all (``unspecified``, ``other``) and said so in ``taskDescription`` — never invented.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from collections import Counter
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from green_callbacks.core.record_sections import HardwareInfo, SoftwareInfo
from green_callbacks.core.units import JOULES_PER_KWH
from green_callbacks.report.runs import RunSummary

__all__ = ["FORMAT_VERSION", "SCHEMA_URI", "boamps_report", "schemas"]

FORMAT_VERSION = "1.1.0"
SCHEMA_URI = ("https://raw.githubusercontent.com/Boavizta/BoAmps/3bfefec8446ee196d1723c0e35859eb7762da3c9/model/"
              "report_schema.json")
_NAMES = ("report", "algorithm", "dataset", "hardware", "measure")


@lru_cache(maxsize=1)
def schemas() -> Mapping[str, Mapping[str, Any]]:
    """The packaged BoAmps schemas by their ``id`` (the URL their ``$ref``s name): give them to a JSON-Schema
    validator's registry to validate offline. ``report`` is the one a report follows."""
    out = {}
    for name in _NAMES:
        text = (resources.files("green_callbacks.core") / "data" / "boamps" / f"{name}_schema.json").read_text(
            encoding="utf-8")
        schema = json.loads(text)
        out[schema["id"]] = schema
    return out


def report_schema() -> Mapping[str, Any]:
    return next(s for s in schemas().values() if s["id"].endswith("/report_schema.json"))


def _datetime(epoch_s: Any) -> str | None:
    if not isinstance(epoch_s, (int, float)):
        return None
    return _dt.datetime.fromtimestamp(float(epoch_s), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _report_id(run: RunSummary) -> str:
    try:
        return str(uuid.UUID(hex=run.run_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"green-callbacks-run:{run.run_id}:{run.path}"))


def _components(run: RunSummary) -> list[dict[str, Any]]:
    hardware = (run.record.hardware if run.record is not None else None) or HardwareInfo()
    out: list[dict[str, Any]] = []
    for name, count in Counter(run.gpu_names).items():
        out.append({"componentName": name, "componentType": "gpu", "nbComponent": count})
    for part in run.components:
        if part.status == "not used" or (part.name == "gpu" and run.gpu_names):
            continue
        item: dict[str, Any] = {"componentType": part.name, "nbComponent": 1}
        if part.name == "cpu" and hardware.cpu_model is not None:
            item["componentName"] = hardware.cpu_model
        if part.name == "ram" and hardware.ram_total_gb is not None:
            item["memorySize"] = hardware.ram_total_gb
        out.append(item)
    return out or [{"componentType": "other", "nbComponent": 1}]


def _location(run: RunSummary) -> tuple[str | None, str | None, str | None]:
    """(country, cloud provider, cloud region) from the record's grid location."""
    location = run.location
    if not location or location in ("user", "world"):
        return None, None, None
    if location.startswith("gcp:"):
        from green_callbacks.core.water import gcp_region_country

        return gcp_region_country(location[4:]), "google", location[4:]
    return location, None, None


def boamps_report(run: RunSummary) -> dict[str, Any]:
    """The BoAmps report of one training run. ``ValueError`` when its energy is unavailable (a report's
    ``powerConsumption`` is required; it is never written as 0)."""
    if run.energy_j is None:
        raise ValueError(f"run {run.label}: energy unavailable, so no BoAmps report (powerConsumption is required)")
    record = run.record
    software = (record.software if record is not None else None) or SoftwareInfo()
    packages = software.packages
    methods = {c.name: "/".join(c.methods) for c in run.components if c.status != "not used"}

    algorithm: dict[str, Any] = {"framework": run.framework, "epochsNumber": run.epochs}
    if run.model:
        algorithm["algorithmName"] = run.model
    version = packages.get({"lightning": "lightning", "keras": "keras", "transformers": "transformers"}.get(
        run.framework, "torch"))
    if isinstance(version, str):
        algorithm["frameworkVersion"] = version
    params = run.hyperparameters.get("num_parameters")
    if isinstance(params, (int, float)) and not isinstance(params, bool):
        algorithm["parametersNumber"] = params / 1e9

    measure: dict[str, Any] = {
        "measurementMethod": "green_callbacks",
        "powerConsumption": run.energy_j / JOULES_PER_KWH,
        "measurementDuration": run.time_s,
    }
    if software.green_callbacks is not None:
        measure["version"] = software.green_callbacks
    if "cpu" in methods:
        measure["cpuTrackingMode"] = methods["cpu"]
    if "gpu" in methods:
        measure["gpuTrackingMode"] = methods["gpu"]
    started = _datetime(None if record is None else record.started_at)
    if started:
        measure["measurementDateTime"] = started

    notes = [f"green_callbacks run {run.run_id} ({run.framework}), status {run.status}, {run.epochs} complete "
             "epoch(s)", "powerConsumption is IT energy before PUE"
             + (f" (PUE {run.pue:g}; emissions {run.emissions_gco2e:.6g} gCO2e after PUE)"
                if run.pue is not None and run.emissions_gco2e is not None else ""),
             "taskFamily and the dataset's type are not in the run record: written as 'unspecified' and 'other'"]
    if run.energy_partial:
        notes.append("partial: " + ", ".join(c.name for c in run.components if c.missing)
                     + " not measured in every epoch")
    if run.train_flops is not None:
        notes.append(f"training FLOPs {run.train_flops:.6g}")

    country, provider, region = _location(run)
    infrastructure: dict[str, Any] = {"infraType": "publicCloud" if provider else "other",
                                      "components": _components(run)}
    if provider:
        infrastructure["cloudProvider"] = provider
    report: dict[str, Any] = {
        "header": {
            "formatVersion": FORMAT_VERSION,
            "formatVersionSpecificationUri": SCHEMA_URI,
            "reportId": _report_id(run),
            "reportDatetime": _datetime(None if record is None else record.updated_at)
            or _datetime(_dt.datetime.now().timestamp()),
            "reportStatus": "final" if run.complete else "draft",
        },
        "task": {
            "taskStage": "training",
            "taskFamily": "unspecified",
            "algorithms": [algorithm],
            "dataset": [{"dataUsage": "input", "dataType": "other"}],
            "taskDescription": "; ".join(notes),
        },
        "measures": [measure],
        "infrastructure": infrastructure,
        "software": {"language": "python"},
    }
    if software.python is not None:
        report["software"]["version"] = software.python
    if software.platform is not None:
        report["system"] = {"os": software.platform}
    if country or run.intensity_gco2e_per_kwh is not None:
        environment: dict[str, Any] = {"country": country or "unknown"}
        if region:
            environment["location"] = f"gcp:{region}"
        if run.intensity_gco2e_per_kwh is not None:
            environment["powerSourceCarbonIntensity"] = run.intensity_gco2e_per_kwh
        report["environment"] = environment
    return report


def render_boamps(runs: tuple[RunSummary, ...]) -> tuple[list[tuple[RunSummary, dict[str, Any]]], list[str]]:
    """The reports of ``runs``, and a line for each run left out (no energy)."""
    out, left = [], []
    for run in runs:
        try:
            out.append((run, boamps_report(run)))
        except ValueError as err:
            left.append(str(err))
    return out, left

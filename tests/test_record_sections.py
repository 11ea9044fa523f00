"""The writer and the reader hold one model of each record section: the writer builds the section's type and
writes it with ``to_json``; the reader parses that JSON back into the same type, equal field by field, and keeps
every key (nothing the writer writes is dropped silently).

Each type is filled with a value in every field, generated from its annotations, so that a field added to a type
(written by the writer at once) without its line in the parser fails here.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from green_callbacks.core import record_sections as rs
from green_callbacks.core.record_sections import (
    EmbodiedInfo,
    FlopInfo,
    FootprintInfo,
    HardwareInfo,
    PartialEpoch,
    PhaseInfo,
    SoftwareInfo,
    ThroughputInfo,
    TrainingLink,
    to_json,
)

SECTIONS: dict[type, Callable[[Any], Any]] = {
    PartialEpoch: rs.parse_partial_epoch,
    ThroughputInfo: rs.parse_throughput,
    HardwareInfo: rs.parse_hardware,
    SoftwareInfo: rs.parse_software,
    FootprintInfo: rs.parse_footprint,
    PhaseInfo: rs.parse_phase,
    TrainingLink: rs.parse_training,
    FlopInfo: rs.parse_flops,
}


def _value(hint: Any, n: int) -> Any:
    """A value of type ``hint`` that is not the field's default (``n`` makes the fields' values differ)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _value(next(a for a in args if a is not type(None)), n)
    if hint is bool:
        return True
    if hint is int:
        return 3 + n
    if hint is float:
        return 1.25 + n
    if hint is str:
        return f"text {n}"
    if hint is Any:
        return {"scope": "device", "power_w": 100.0 + n}
    if origin is tuple:
        return (_value(args[0], n), _value(args[0], n + 1))
    if origin in (Mapping, dict):
        return {"gpu": _value(args[1], n), "cpu": _value(args[1], n + 1)}
    if dataclasses.is_dataclass(hint):
        return filled(hint, n)
    raise AssertionError(f"no sample value for {hint!r}: extend _value")


def filled(cls: type, n: int = 0) -> Any:
    """An instance of ``cls`` with every field set (none at its default)."""
    hints = typing.get_type_hints(cls, vars(rs))
    return cls(**{f.name: _value(hints[f.name], n + i) for i, f in enumerate(dataclasses.fields(cls))})


@pytest.mark.parametrize("cls", list(SECTIONS), ids=lambda c: c.__name__)
def test_a_section_reads_back_as_the_type_the_writer_wrote(cls: type) -> None:
    written = filled(cls)
    data = to_json(written)
    parsed = SECTIONS[cls](data)
    assert parsed == written
    assert to_json(parsed) == data
    assert list(to_json(parsed)) == list(data)  # the same keys in the same order


@pytest.mark.parametrize("cls", list(SECTIONS), ids=lambda c: c.__name__)
def test_no_field_is_left_at_its_default_by_the_sample(cls: type) -> None:
    """The round trip above is not vacuous: every field, nested ones too, holds a value other than its default."""
    def unset(value: Any, where: str) -> list[str]:
        out = []
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if item == default and default is not dataclasses.MISSING:
                out.append(where + f.name)
            if dataclasses.is_dataclass(item):
                out += unset(item, f"{where}{f.name}.")
            elif isinstance(item, tuple) and item and dataclasses.is_dataclass(item[0]):
                out += unset(item[0], f"{where}{f.name}[0].")
        return out

    assert unset(filled(cls), "") == []


def test_a_key_the_writer_adds_is_not_dropped_silently() -> None:
    """The check above would see a key the JSON has and the type lacks: parsing drops it, so the round trip differs."""
    data = to_json(filled(PartialEpoch))
    assert to_json(rs.parse_partial_epoch({**data, "added_later": 1.0})) != {**data, "added_later": 1.0}


def test_an_embodied_block_without_a_rate_writes_no_rate_keys_and_reads_back() -> None:
    """A run whose hardware gave no embodied rate writes the block without the rate's keys (as it always did)."""
    written = dataclasses.replace(filled(EmbodiedInfo), formula=None, lifetime_years=None, utilisation=None,
                                  rate_gco2e_per_h=None, parts=(), missing=(), assumptions=())
    data = to_json(written)
    assert list(data) == ["accelerators", "scope", "rate_all_ranks_gco2e_per_h", "total_gco2e", "total_low_gco2e",
                          "total_high_gco2e", "partial", "note"]
    parsed = rs.parse_footprint({"embodied": data, "water": to_json(filled(rs.WaterInfo))}).embodied
    assert parsed == written and to_json(parsed) == data


def test_the_writers_builders_give_the_readers_types() -> None:
    """The machine, the versions, the footprint and the phase are built by the writer as the reader's types."""
    from green_callbacks.core.environment import hardware_info, software_info
    from green_callbacks.core.footprint import FootprintTracker
    from green_callbacks.core.phase import PhaseInputs, summarize_phase

    hardware = hardware_info({"gpu": {"method": "nvml", "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}})
    software = software_info()
    tracker = FootprintTracker(location="DE", pue=1.2)
    tracker.configure({"gpu": {"method": "nvml", "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}},
                      device_indices=[0], is_node_leader=True, virtual_machine=False)
    tracker.add_epoch(0, 3600.0, 3.6e6, tracker.local_rate_gco2e_per_h)
    phase = summarize_phase(PhaseInputs(
        kind="test", duration_s=2.0, component_energy_j={"gpu": 200.0, "cpu": None},
        component_method={"gpu": "nvml", "cpu": "unavailable"}, intensity_gco2e_per_kwh=300.0, pue=1.2,
        batches=4, samples=40, flops=1e9, tokens_in=None, tokens_out=None, warmup_batches=1, warmup_samples=10,
        warmup_time_s=0.5, warmup_component_energy_j={"gpu": 50.0, "cpu": None}, latencies_s=(0.4, 0.5, 0.6),
        warmup_latencies_s=(0.5,)))
    for typed, parse in ((hardware, rs.parse_hardware), (software, rs.parse_software),
                         (tracker.info(), rs.parse_footprint), (phase, rs.parse_phase)):
        data = to_json(typed)
        assert isinstance(typed, type(parse(data)))
        assert to_json(parse(data)) == data
    assert to_json(tracker.info()) == tracker.to_record()
    assert tracker.info().embodied.lifetime_years is not None and tracker.info().epochs


def test_the_flop_section_is_built_by_the_tracker_and_keeps_each_writers_key_order() -> None:
    """The FLOP tracker describes its counting as the reader's ``FlopInfo``; Keras' own fields (backend, method,
    convention, figures per signature) come first in the record, as they always did, and the tracker's convention
    wins over the adapter's."""
    from green_callbacks.core.flops import FlopTracker

    tracker = FlopTracker().describe()
    data = to_json(tracker)
    assert isinstance(tracker, FlopInfo) and rs.parse_flops(data) == tracker
    assert list(data)[:3] == ["engine", "where", "convention"] and "backend" not in data and "per_step" not in data
    keras = FlopInfo(backend="tensorflow", method="tf-profiler", convention="all-ops",
                     per_step={"train [[2, 4]]": {"flops": 10.0, "matmul_flops": 8.0}})
    assert list(to_json(keras)) == ["backend", "method", "convention", "per_step"]  # (no tracker on TensorFlow)
    joined = tracker.beside(keras)
    assert list(to_json(joined)) == ["backend", "method", "convention", "per_step", *(k for k in data if
                                                                                     k != "convention")]
    assert joined.convention == tracker.convention and rs.parse_flops(to_json(joined)) == joined

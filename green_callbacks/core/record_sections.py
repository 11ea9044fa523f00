"""The record's sections beside its epochs and totals, typed: footprint, phase, training link, throughput, hardware,
software and how the FLOPs were counted.

The writer builds these types and writes them with :func:`to_json` (a section type's fields, in order, are the
section's keys); the reader (:func:`green_callbacks.core.record.parse_record`) parses each back into the same type
once, checking every field for its type and range (:mod:`green_callbacks.core.record_checks`); a section a record
lacks (written before it existed, or by a run that has none) is ``None``, and a field it lacks is ``None`` (``()``
for a list). The report reads these types, never the record's dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from green_callbacks.core.record_checks import Invalid, integer, number, obj, strings, text, type_name

__all__ = [
    "EMBODIED_FORMULA",
    "WATER_FORMULA",
    "DataDependentSignature",
    "EmbodiedInfo",
    "EmbodiedPart",
    "EmbodiedSource",
    "EpochFlopsLabel",
    "EpochFootprint",
    "FlopInfo",
    "FootprintInfo",
    "HardwareInfo",
    "PartialEpoch",
    "PhaseInfo",
    "SoftwareInfo",
    "ThroughputInfo",
    "TrainingLink",
    "WaterInfo",
    "WaterIntensity",
    "parse_compute_dtype",
    "parse_flops",
    "parse_footprint",
    "parse_hardware",
    "parse_partial_epoch",
    "parse_phase",
    "parse_software",
    "parse_throughput",
    "parse_training",
    "to_json",
]


def to_json(value: Any) -> Any:
    """A section (or any value in one) as the record's JSON: a dataclass as an object of its fields in their
    declared order, a tuple or list as an array, a mapping as an object; anything else as it is.

    A section type whose JSON is not its fields one to one (the footprint) has its own ``to_json`` method, used here.
    """
    if is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_json", None)
        return own() if own is not None else _fields_json(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def _fields_json(value: Any) -> dict[str, Any]:
    return {f.name: to_json(getattr(value, f.name)) for f in fields(value)}


# ---------------------------------------------------------------------------------------------------- footprint
EMBODIED_FORMULA = "g = kgco2e × 1000 × hours / (lifetime_years × 8760 × utilisation) × share"
WATER_FORMULA = "water_l = energy_kwh × (wue_l_per_kwh + pue × offsite_l_per_kwh) (Li et al. 2023)"


@dataclass(frozen=True)
class EmbodiedPart:
    """One piece of hardware the run holds: its figure, the share charged and the resulting rate (g per hour of
    wall time). ``rate_gco2e_per_h`` is ``None`` when the figure is unknown (``reason`` says why)."""

    name: str
    kind: str
    share: float
    kgco2e: float | None
    rate_gco2e_per_h: float | None
    method: str
    source: str
    year: int | None
    reason: str = ""


EmbodiedSource = EmbodiedPart
"""The former reader-only name of a part (name, figure, source)."""

_RATE_FIELDS = ("formula", "lifetime_years", "utilisation", "rate_gco2e_per_h", "parts", "missing", "assumptions")
"""The embodied section's keys that only a run with an embodied rate (its hardware known) writes."""


@dataclass(frozen=True)
class EmbodiedInfo:
    """The footprint's ``embodied`` block: the rate of this process's hardware (its parts, assumptions), and the
    run's total amortised over the epochs' wall time with its range."""

    formula: str | None = None
    lifetime_years: float | None = None
    """``None``: the run had no embodied rate (then the rate's fields, up to ``assumptions``, are not written)."""
    utilisation: float | None = None
    rate_gco2e_per_h: float | None = None
    parts: tuple[EmbodiedPart, ...] = ()
    missing: tuple[str, ...] = ()
    assumptions: tuple[str, ...] = ()
    accelerators: tuple[str, ...] = ()
    scope: str | None = None
    rate_all_ranks_gco2e_per_h: float | None = None
    total_gco2e: float | None = None
    total_low_gco2e: float | None = None
    total_high_gco2e: float | None = None
    partial: bool = False
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = _fields_json(self)
        if self.lifetime_years is None:
            for name in _RATE_FIELDS:
                del out[name]
        return out


@dataclass(frozen=True)
class WaterIntensity:
    """Off-site water intensity of a grid (L per kWh generated) and where it came from.

    ``kind`` is ``"table"`` (the country's derived value) or ``"default"`` (the world value, used when the run's
    grid has no country: an explicit intensity, a live zone not in the table).
    """

    offsite_l_per_kwh: float
    hydro_l_per_kwh: float
    location: str
    year: int | None
    method: str
    source: str
    kind: str

    def to_record(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True)
class WaterInfo:
    """The footprint's ``water`` block: the on-site WUE, the grid's off-site intensity and the run's litres."""

    formula: str | None = None
    wue_l_per_kwh: float | None = None
    wue_source: str = ""
    pue: float | None = None
    offsite: WaterIntensity | None = None
    total_l: float | None = None

    @property
    def offsite_l_per_kwh(self) -> float | None:
        return None if self.offsite is None else self.offsite.offsite_l_per_kwh

    @property
    def offsite_location(self) -> str:
        return "" if self.offsite is None else self.offsite.location

    @property
    def offsite_method(self) -> str:
        return "" if self.offsite is None else self.offsite.method

    @property
    def offsite_source(self) -> str:
        return "" if self.offsite is None else self.offsite.source


@dataclass(frozen=True)
class EpochFootprint:
    """One epoch: embodied grams over its wall time (all ranks), litres of water for its energy; ``None`` =
    unavailable."""

    epoch: int
    time_s: float
    embodied_gco2e: float | None
    water_l: float | None


@dataclass(frozen=True)
class FootprintInfo:
    """The record's ``footprint`` block: embodied emissions and water beside the operational figures, and each
    epoch's (empty in a running record's header: they follow from the epoch rows)."""

    embodied: EmbodiedInfo = field(default_factory=EmbodiedInfo)
    water: WaterInfo = field(default_factory=WaterInfo)
    epochs: tuple[EpochFootprint, ...] = ()


def _s(value: Any, where: str) -> str:
    return text(value, where) or ""


def _part(value: Any, where: str) -> EmbodiedPart:
    item = obj(value, where, optional=False)
    return EmbodiedPart(name=_s(item.get("name"), f"{where}.name"), kind=_s(item.get("kind"), f"{where}.kind"),
                        share=number(item.get("share"), f"{where}.share"),  # type: ignore[arg-type]
                        kgco2e=number(item.get("kgco2e"), f"{where}.kgco2e"),
                        rate_gco2e_per_h=number(item.get("rate_gco2e_per_h"), f"{where}.rate_gco2e_per_h"),
                        method=_s(item.get("method"), f"{where}.method"),
                        source=_s(item.get("source"), f"{where}.source"),
                        year=integer(item.get("year"), f"{where}.year", maximum=9999),
                        reason=_s(item.get("reason"), f"{where}.reason"))


def _offsite(value: Any, where: str) -> WaterIntensity | None:
    if value is None:
        return None
    data = obj(value, where, optional=False)
    return WaterIntensity(
        offsite_l_per_kwh=number(data.get("offsite_l_per_kwh"), f"{where}.offsite_l_per_kwh"),  # type: ignore[arg-type]
        hydro_l_per_kwh=number(data.get("hydro_l_per_kwh"), f"{where}.hydro_l_per_kwh"),  # type: ignore[arg-type]
        location=_s(data.get("location"), f"{where}.location"),
        year=integer(data.get("year"), f"{where}.year", maximum=9999),
        method=_s(data.get("method"), f"{where}.method"),
        source=_s(data.get("source"), f"{where}.source"),
        kind=_s(data.get("kind"), f"{where}.kind"),
    )


def _footprint_epoch(value: Any, where: str) -> EpochFootprint:
    data = obj(value, where, optional=False)
    return EpochFootprint(epoch=integer(data.get("epoch"), f"{where}.epoch", optional=False) or 0,
                          time_s=number(data.get("time_s"), f"{where}.time_s", optional=False) or 0.0,
                          embodied_gco2e=number(data.get("embodied_gco2e"), f"{where}.embodied_gco2e"),
                          water_l=number(data.get("water_l"), f"{where}.water_l"))


def parse_footprint(value: Any) -> FootprintInfo | None:
    if value is None:
        return None
    data = obj(value, "footprint", optional=False)
    emb = obj(data.get("embodied"), "footprint.embodied")
    partial = emb.get("partial")
    if partial is not None and not isinstance(partial, bool):
        raise Invalid("footprint.embodied.partial", f"must be a boolean, found {type_name(partial)}")
    water = obj(data.get("water"), "footprint.water")
    return FootprintInfo(
        embodied=EmbodiedInfo(
            formula=text(emb.get("formula"), "footprint.embodied.formula"),
            lifetime_years=number(emb.get("lifetime_years"), "footprint.embodied.lifetime_years"),
            utilisation=number(emb.get("utilisation"), "footprint.embodied.utilisation"),
            rate_gco2e_per_h=number(emb.get("rate_gco2e_per_h"), "footprint.embodied.rate_gco2e_per_h"),
            parts=tuple(_part(p, f"footprint.embodied.parts[{i}]")
                        for i, p in enumerate(_list(emb.get("parts"), "footprint.embodied.parts"))),
            missing=strings(emb.get("missing"), "footprint.embodied.missing"),
            assumptions=strings(emb.get("assumptions"), "footprint.embodied.assumptions"),
            accelerators=strings(emb.get("accelerators"), "footprint.embodied.accelerators"),
            scope=text(emb.get("scope"), "footprint.embodied.scope"),
            rate_all_ranks_gco2e_per_h=number(emb.get("rate_all_ranks_gco2e_per_h"),
                                              "footprint.embodied.rate_all_ranks_gco2e_per_h"),
            total_gco2e=number(emb.get("total_gco2e"), "footprint.embodied.total_gco2e"),
            total_low_gco2e=number(emb.get("total_low_gco2e"), "footprint.embodied.total_low_gco2e"),
            total_high_gco2e=number(emb.get("total_high_gco2e"), "footprint.embodied.total_high_gco2e"),
            partial=bool(partial),
            note=text(emb.get("note"), "footprint.embodied.note"),
        ),
        water=WaterInfo(
            formula=text(water.get("formula"), "footprint.water.formula"),
            wue_l_per_kwh=number(water.get("wue_l_per_kwh"), "footprint.water.wue_l_per_kwh"),
            wue_source=_s(water.get("wue_source"), "footprint.water.wue_source"),
            pue=number(water.get("pue"), "footprint.water.pue"),
            offsite=_offsite(water.get("offsite"), "footprint.water.offsite"),
            total_l=number(water.get("total_l"), "footprint.water.total_l"),
        ),
        epochs=tuple(_footprint_epoch(e, f"footprint.epochs[{i}]")
                     for i, e in enumerate(_list(data.get("epochs"), "footprint.epochs"))),
    )


# ---------------------------------------------------------------------------------------------------- partial epoch
@dataclass(frozen=True)
class PartialEpoch:
    """The epoch a run stopped in (killed, failed): this process's figures so far, not in the totals."""

    epoch: int | None = None
    time_s: float | None = None
    energy_j: float | None = None
    component_energy_j: Mapping[str, float | None] = field(default_factory=dict)
    component_method: Mapping[str, str] = field(default_factory=dict)
    train_flops: float | None = None
    eval_flops: float | None = None
    note: str | None = None


def parse_partial_epoch(value: Any) -> PartialEpoch | None:
    if value is None:
        return None
    data = obj(value, "partial_epoch", optional=False)
    return PartialEpoch(
        epoch=integer(data.get("epoch"), "partial_epoch.epoch"),
        time_s=number(data.get("time_s"), "partial_epoch.time_s"),
        energy_j=number(data.get("energy_j"), "partial_epoch.energy_j"),
        component_energy_j={str(k): number(v, f"partial_epoch.component_energy_j.{k}")
                            for k, v in obj(data.get("component_energy_j"),
                                            "partial_epoch.component_energy_j").items()},
        component_method={str(k): _s(v, f"partial_epoch.component_method.{k}")
                          for k, v in obj(data.get("component_method"), "partial_epoch.component_method").items()},
        train_flops=number(data.get("train_flops"), "partial_epoch.train_flops"),
        eval_flops=number(data.get("eval_flops"), "partial_epoch.eval_flops"),
        note=text(data.get("note"), "partial_epoch.note"),
    )


# ---------------------------------------------------------------------------------------------------- phases
@dataclass(frozen=True)
class PhaseInfo:
    """A test / validate / predict / evaluate record's ``phase`` section (``None`` = unavailable): totals, warm-up
    apart, per-sample rates over the steady part, and their quality. The writer's
    :class:`~green_callbacks.core.phase.PhaseResult` is this type with the figures' derivation beside it."""

    kind: str | None = None
    duration_s: float | None = None
    energy_j: float | None = None
    component_energy_j: Mapping[str, float | None] = field(default_factory=dict)
    component_method: Mapping[str, str] = field(default_factory=dict)
    missing_components: tuple[str, ...] = ()
    emissions_gco2e: float | None = None
    intensity_gco2e_per_kwh: float | None = None
    pue: float | None = None
    batches: int | None = None
    samples: int | None = None
    flops: float | None = None
    """Forward FLOPs of the whole phase."""
    tokens_in: float | None = None
    tokens_out: float | None = None
    warmup_batches: int | None = None
    warmup_samples: int | None = None
    warmup_time_s: float | None = None
    warmup_energy_j: float | None = None
    steady_time_s: float | None = None
    steady_energy_j: float | None = None
    steady_samples: int | None = None
    rates_include_warmup: bool = False
    energy_per_sample_j: float | None = None
    wh_per_1000_samples: float | None = None
    samples_per_joule: float | None = None
    emissions_per_sample_gco2e: float | None = None
    flops_per_sample: float | None = None
    mean_power_w: float | None = None
    energy_per_token_in_j: float | None = None
    energy_per_token_out_j: float | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    warmup_latencies_s: tuple[float, ...] = ()
    resolution_s: Mapping[str, float] = field(default_factory=dict)
    short_window_components: tuple[str, ...] = ()
    quality: str | None = None
    notes: tuple[str, ...] = ()
    energy_low_j: float | None = None
    energy_high_j: float | None = None
    """The range the phase's true energy lies in (95 %, docs/uncertainty.md); ``None``: no basis for an interval."""


_PHASE_INTEGERS = ("batches", "warmup_batches", "warmup_samples", "steady_samples")
_PHASE_TEXTS = ("kind", "quality")
_PHASE_LISTS = ("missing_components", "short_window_components", "notes")
_PHASE_OTHER = ("samples", "component_energy_j", "component_method", "rates_include_warmup", "warmup_latencies_s",
                "resolution_s", "steady_energy_j")
_PHASE_NUMBERS = tuple(f for f in PhaseInfo.__dataclass_fields__
                       if f not in (*_PHASE_INTEGERS, *_PHASE_TEXTS, *_PHASE_LISTS, *_PHASE_OTHER))


def parse_phase(value: Any) -> PhaseInfo | None:
    if value is None:
        return None
    data = obj(value, "phase", optional=False)
    samples = data.get("samples")

    def mapping(name: str, parse: Any) -> dict[str, Any]:
        return {str(k): parse(v, f"phase.{name}.{k}") for k, v in obj(data.get(name), f"phase.{name}").items()}

    return PhaseInfo(
        samples=integer(samples, "phase.samples", maximum=10**15) if isinstance(samples, int) else None,
        component_energy_j=mapping("component_energy_j", number),
        component_method=mapping("component_method", _s),
        rates_include_warmup=_bool(data.get("rates_include_warmup"), "phase.rates_include_warmup"),
        warmup_latencies_s=tuple(number(v, f"phase.warmup_latencies_s[{i}]") or 0.0
                                 for i, v in enumerate(_list(data.get("warmup_latencies_s"),
                                                             "phase.warmup_latencies_s"))),
        resolution_s=mapping("resolution_s", number),
        steady_energy_j=number(data.get("steady_energy_j"), "phase.steady_energy_j", minimum=None),
        **{name: integer(data.get(name), f"phase.{name}", maximum=10**15) for name in _PHASE_INTEGERS},
        **{name: text(data.get(name), f"phase.{name}") for name in _PHASE_TEXTS},
        **{name: strings(data.get(name), f"phase.{name}") for name in _PHASE_LISTS},
        **{name: number(data.get(name), f"phase.{name}") for name in _PHASE_NUMBERS},
    )


@dataclass(frozen=True)
class TrainingLink:
    """What a phase record keeps of the fit that trained the model (its ``training`` section)."""

    run_id: str | None = None
    record: str | None = None
    """The fit's record's file name (in the same folder)."""
    framework: str | None = None
    status: str | None = None
    epochs: int | None = None
    energy_j: float | None = None
    emissions_gco2e: float | None = None
    train_flops: float | None = None


def parse_training(value: Any) -> TrainingLink | None:
    if value is None:
        return None
    data = obj(value, "training", optional=False)
    return TrainingLink(
        run_id=text(data.get("run_id"), "training.run_id"),
        record=text(data.get("record"), "training.record"),
        framework=text(data.get("framework"), "training.framework"),
        status=text(data.get("status"), "training.status"),
        epochs=integer(data.get("epochs"), "training.epochs"),
        energy_j=number(data.get("energy_j"), "training.energy_j"),
        emissions_gco2e=number(data.get("emissions_gco2e"), "training.emissions_gco2e"),
        train_flops=number(data.get("train_flops"), "training.train_flops"),
    )


# ---------------------------------------------------------------------------------------------------- machine
@dataclass(frozen=True)
class ThroughputInfo:
    """The record's ``throughput`` section: the compute dtype and the devices' peak MFU is computed with."""

    compute_dtype: str | None = None
    devices: tuple[str, ...] = ()
    peak_flops_per_s: float | None = None
    mfu_unavailable: str | None = None


def parse_throughput(value: Any) -> ThroughputInfo | None:
    if value is None:
        return None
    data = obj(value, "throughput", optional=False)
    return ThroughputInfo(
        compute_dtype=text(data.get("compute_dtype"), "throughput.compute_dtype"),
        devices=strings(data.get("devices"), "throughput.devices"),
        peak_flops_per_s=number(data.get("peak_flops_per_s"), "throughput.peak_flops_per_s"),
        mfu_unavailable=text(data.get("mfu_unavailable"), "throughput.mfu_unavailable") or None,
    )


@dataclass(frozen=True)
class HardwareInfo:
    """The record's ``hardware`` section: the host, and what each sensor reports of its hardware."""

    cpu_model: str | None = None
    cpu_count: int | None = None
    machine: str | None = None
    sensors: Mapping[str, Any] = field(default_factory=dict)
    """Each component's sensor's own description (its ``info()``), as the sensor gave it."""
    ram_total_gb: float | None = None


def parse_hardware(value: Any) -> HardwareInfo | None:
    if value is None:
        return None
    data = obj(value, "hardware", optional=False)
    return HardwareInfo(
        cpu_model=text(data.get("cpu_model"), "hardware.cpu_model") or None,
        cpu_count=integer(data.get("cpu_count"), "hardware.cpu_count"),
        machine=text(data.get("machine"), "hardware.machine") or None,
        sensors=obj(data.get("sensors"), "hardware.sensors"),
        ram_total_gb=number(data.get("ram_total_gb"), "hardware.ram_total_gb"),
    )


@dataclass(frozen=True)
class SoftwareInfo:
    """The record's ``software`` section: this package's, Python's and the ML packages' versions."""

    green_callbacks: str | None = None
    python: str | None = None
    platform: str | None = None
    packages: Mapping[str, str] = field(default_factory=dict)


def parse_software(value: Any) -> SoftwareInfo | None:
    if value is None:
        return None
    data = obj(value, "software", optional=False)
    packages = {str(k): text(v, f"software.packages.{k}", optional=False) or ""
                for k, v in obj(data.get("packages"), "software.packages").items()}
    return SoftwareInfo(
        green_callbacks=text(data.get("green_callbacks"), "software.green_callbacks"),
        python=text(data.get("python"), "software.python"),
        platform=text(data.get("platform"), "software.platform"),
        packages=packages,
    )


# ---------------------------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class DataDependentSignature:
    """A batch signature whose work varied for one shape: the watched steps' count, mean and spread."""

    signature: str
    watched: int | None
    mean: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True)
class EpochFlopsLabel:
    """How one epoch's training FLOPs were obtained (``counted``, ``interpolated-verified``, ``sampled``,
    ``estimated``, ``none``), why where it is not exact, and its range for a ``sampled`` epoch."""

    method: str
    note: str | None = None
    low: float | None = None
    high: float | None = None

    @property
    def approximate(self) -> bool:
        """An estimate (``sampled`` / ``estimated``), not a count."""
        return self.method in ("sampled", "estimated")


_ADAPTER_KEYS = ("backend", "method", "convention", "per_step")
"""What an adapter that counts its own way (Keras) writes first: its backend, how, the convention, per signature."""


@dataclass(frozen=True)
class FlopInfo:
    """The record's ``flops`` section: how the FLOPs were counted, per epoch and for the run.

    The FLOP tracker builds it (:meth:`~green_callbacks.core.flops.FlopTracker.describe`), an adapter that counts
    its own way (Keras) adds its fields (:meth:`beside`), and the writer writes it with :func:`to_json`. A field is
    ``None`` when the writer did not write it (a Keras run on TensorFlow has no tracker's fields, a Lightning run no
    ``backend``): such a key is left out, so the record holds what it always held.
    """

    backend: str | None = None
    """Keras: the backend the FLOPs were counted on."""
    method: str | None = None
    """Keras: how that backend counts (``xla-cost-analysis``, ...; ``unavailable``)."""
    engine: str | None = None
    where: str | None = None
    """How the counts were made: observed on the training's own steps, on a meta copy, traced."""
    convention: str | None = None
    lower_bound: bool | None = None
    """Some ops or steps were not counted: the FLOPs are at least the figures."""
    uncounted_ops: tuple[str, ...] | None = None
    interpolation: str | None = None
    """How new lengths are predicted (the verified polynomial), or ``off``."""
    counts: Mapping[str, int] | None = None
    """How many signatures were observed, counted on a meta copy, interpolated, checked, ...; the steps."""
    activation_checkpointing: bool | None = None
    hardware_flops: str | None = None
    """What the hardware FLOPs (``green/hfu``) hold beside the model FLOPs, in words."""
    epoch_methods: tuple[str, ...] | None = None
    """One per epoch this process counted, in order (a resumed run's earlier epochs are not among them)."""
    epoch_notes: tuple[str | None, ...] | None = None
    epoch_train_flops_range: tuple[tuple[float, float] | None, ...] | None = None
    verification: str | None = None
    data_dependent: tuple[DataDependentSignature, ...] | None = None
    lines_failed: int | None = None
    counting_time_s: float | None = None
    per_step: Mapping[str, Mapping[str, float | str]] | None = None
    """``"<kind> <shapes>"`` -> that signature's FLOPs per step (and how, or its matmul part): Keras."""

    @property
    def epochs(self) -> tuple[EpochFlopsLabel, ...]:
        """Each epoch's label, note and range (``epoch_methods``, ``epoch_notes``, ``epoch_train_flops_range``)."""
        notes, ranges = self.epoch_notes or (), self.epoch_train_flops_range or ()
        return tuple(EpochFlopsLabel(method, (notes[i] if i < len(notes) else None) or None,
                                     *(ranges[i] or (None, None) if i < len(ranges) else (None, None)))
                     for i, method in enumerate(self.epoch_methods or ()))

    def epoch_label(self, index: int, epochs: int) -> EpochFlopsLabel | None:
        """The label of the record's ``index``-th of ``epochs`` epochs (aligned at the end: a resumed run counted
        only its last epochs); ``None`` when the record says nothing about it."""
        labels = self.epochs
        offset = index - (epochs - len(labels))
        return labels[offset] if 0 <= offset < len(labels) else None

    def beside(self, adapter: FlopInfo | None) -> FlopInfo:
        """These fields (the tracker's), with what ``adapter`` adds where these have none (Keras: its backend,
        method and figures per signature)."""
        if adapter is None:
            return self
        return FlopInfo(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                           else getattr(adapter, f.name) for f in fields(self)})

    def to_json(self) -> dict[str, Any]:
        """The fields that are set, in the order the writer always wrote them: an adapter's keys first (Keras),
        then the tracker's."""
        names = [f.name for f in fields(self)]
        if self.backend is not None:
            names = [*_ADAPTER_KEYS, *(n for n in names if n not in _ADAPTER_KEYS)]
        out: dict[str, Any] = {}
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "data_dependent":
                out[name] = {d.signature: {"watched": d.watched, "mean": d.mean, "min": d.min, "max": d.max}
                             for d in value}
            else:
                out[name] = to_json(value)
        return out


def _bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise Invalid(where, f"must be a boolean, found {type_name(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(where, f"must be an array, found {type_name(value)}")
    return value


def _flag(value: Any, where: str) -> bool | None:
    """A boolean the writer may have left out (``None``)."""
    return None if value is None else _bool(value, where)


def _array(value: Any, where: str) -> list[Any] | None:
    """An array the writer may have left out (``None``)."""
    return None if value is None else _list(value, where)


def _range(span: Any, where: str) -> tuple[float, float] | None:
    if span is None:
        return None
    if not isinstance(span, list) or len(span) != 2:
        raise Invalid(where, f"must be [low, high] or null, found {type_name(span)} {str(span)[:40]}")
    return number(span[0], where + "[0]", optional=False), number(span[1], where + "[1]", optional=False)


def _optional_strings(value: Any, where: str) -> tuple[str, ...] | None:
    return None if value is None else strings(value, where)


def _per_step(value: Any) -> dict[str, dict[str, float | str]] | None:
    if value is None:
        return None
    out: dict[str, dict[str, float | str]] = {}
    for signature, entry in obj(value, "flops.per_step", optional=False).items():
        where = f"flops.per_step.{signature}"
        out[str(signature)] = {
            str(k): (v if isinstance(v, str) else number(v, f"{where}.{k}", optional=False))
            for k, v in obj(entry, where, optional=False).items()}
    return out


def _counts(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    return {str(k): integer(v, f"flops.counts.{k}", optional=False, maximum=10**15)
            for k, v in obj(value, "flops.counts", optional=False).items()}


def _data_dependent(value: Any) -> tuple[DataDependentSignature, ...] | None:
    if value is None:
        return None
    dependent = []
    for signature, entry in obj(value, "flops.data_dependent", optional=False).items():
        where = f"flops.data_dependent.{signature}"
        item = obj(entry, where, optional=False)
        dependent.append(DataDependentSignature(
            signature=str(signature), watched=integer(item.get("watched"), f"{where}.watched", maximum=10**15),
            mean=number(item.get("mean"), f"{where}.mean"), min=number(item.get("min"), f"{where}.min"),
            max=number(item.get("max"), f"{where}.max")))
    return tuple(dependent)


def parse_flops(value: Any) -> FlopInfo | None:
    if value is None:
        return None
    data = obj(value, "flops", optional=False)
    notes = _array(data.get("epoch_notes"), "flops.epoch_notes")
    ranges = _array(data.get("epoch_train_flops_range"), "flops.epoch_train_flops_range")
    return FlopInfo(
        backend=text(data.get("backend"), "flops.backend"),
        method=text(data.get("method"), "flops.method"),
        engine=text(data.get("engine"), "flops.engine"),
        where=text(data.get("where"), "flops.where"),
        convention=text(data.get("convention"), "flops.convention"),
        lower_bound=_flag(data.get("lower_bound"), "flops.lower_bound"),
        uncounted_ops=_optional_strings(data.get("uncounted_ops"), "flops.uncounted_ops"),
        interpolation=text(data.get("interpolation"), "flops.interpolation"),
        counts=_counts(data.get("counts")),
        activation_checkpointing=_flag(data.get("activation_checkpointing"), "flops.activation_checkpointing"),
        hardware_flops=text(data.get("hardware_flops"), "flops.hardware_flops"),
        epoch_methods=_optional_strings(data.get("epoch_methods"), "flops.epoch_methods"),
        epoch_notes=None if notes is None else tuple(text(n, f"flops.epoch_notes[{i}]")
                                                     for i, n in enumerate(notes)),
        epoch_train_flops_range=None if ranges is None else tuple(
            _range(r, f"flops.epoch_train_flops_range[{i}]") for i, r in enumerate(ranges)),
        verification=text(data.get("verification"), "flops.verification"),
        data_dependent=_data_dependent(data.get("data_dependent")),
        lines_failed=integer(data.get("lines_failed"), "flops.lines_failed", maximum=10**15),
        counting_time_s=number(data.get("counting_time_s"), "flops.counting_time_s"),
        per_step=_per_step(data.get("per_step")),
    )


# ---------------------------------------------------------------------------------------------------- precision
_PRECISION_SECTIONS = ("lightning", "transformers", "keras", "training")
_PRECISION_KEYS = ("precision", "dtype", "compute_dtype")


def parse_compute_dtype(data: Mapping[str, Any]) -> str | None:
    """The compute dtype a record's framework section names (``lightning.precision`` and the like), normalised to
    ``bf16`` / ``fp16`` / ``tf32`` / ``fp32``; ``None`` if none names a known one."""
    from green_callbacks.core.flops.peaks import normalize_dtype

    for section in _PRECISION_SECTIONS:
        info = data.get(section)
        if not isinstance(info, Mapping):
            continue
        for key in _PRECISION_KEYS:
            if info.get(key) is not None:
                try:
                    return normalize_dtype(info[key])
                except ValueError:
                    continue
    return None

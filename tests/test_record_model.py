"""One model of a run, written and read: a real Lightning fit and its test phase write records with every section the
report uses, and the reader gives them back as the writer's own types (epoch rows, totals) and as typed sections
equal, field by field, to what the writer wrote; records without the sections (schema 1.0 / 1.1 before them) still
read, with the sections ``None``.

The fit's model does data-dependent work (a branch on a data value) under activation checkpointing, so the ``flops``
section holds sampled epochs with ranges, data-dependent signatures and the recompute (hardware FLOPs).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

from green_callbacks.core.record import RunRecord, load_record, parse_record, read_json_file  # noqa: E402
from green_callbacks.core.record_sections import (  # noqa: E402
    FlopInfo,
    FootprintInfo,
    HardwareInfo,
    PhaseInfo,
    SoftwareInfo,
    ThroughputInfo,
    TrainingLink,
    to_json,
)
from green_callbacks.core.sensors.fake import ConstantPowerSensor  # noqa: E402

pytestmark = pytest.mark.slow  # one 2-epoch Lightning fit and its test phase (a few seconds), shared by the module

NEW_SECTIONS = ("footprint", "phase", "training", "throughput", "hardware", "software", "flops")


class NamedGpu(ConstantPowerSensor):
    """A constant-power GPU that reports its board name, as NVML does (the hardware boundary)."""

    def info(self) -> dict[str, Any]:
        return {**super().info(), "devices": [{"name": "NVIDIA H100 80GB HBM3"}]}


class Branchy(nn.Module):
    """A checkpointed block, then the same shapes every batch but a further layer only where the batch sums above
    zero."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.c, self.d = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 8)
        self.b = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x):
        h = checkpoint(self.b, self.a(x), use_reentrant=False)
        if x.sum() > 0:
            h = self.d(h)
        return self.c(h)


class Module(pl.LightningModule):
    def __init__(self, lr: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = Branchy()

    def _loss(self, batch):
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)  # lr 0: the same work every epoch


@dataclasses.dataclass
class Written:
    fit: RunRecord
    phase: RunRecord
    fit_json: dict[str, Any]
    phase_json: dict[str, Any]
    rows: tuple[Any, ...]
    totals: Any


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Written:
    """A 2-epoch Lightning fit (40 batches of 4 an epoch) and its ``trainer.test``, with fake sensors."""
    folder = tmp_path_factory.mktemp("records")
    torch.manual_seed(0)
    x = torch.randn(160, 4)
    data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
    from green_callbacks.lightning import GreenCallback

    callback = GreenCallback(country="DE", output_dir=str(folder), search={"name": "grid-1", "method": "grid",
                                                                            "trial": 0},
                             sensors=[NamedGpu("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node"),
                                      ConstantPowerSensor("ram", 5.0, scope="process")])
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback], max_epochs=2,
                         default_root_dir=str(folder), enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    module = Module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4),
                    torch.utils.data.DataLoader(data, batch_size=40))
        session = callback._engine.session
        rows, totals, fit_path = tuple(session.ledger.rows), session.ledger.totals, Path(session.record_path)
        trainer.test(module, torch.utils.data.DataLoader(data, batch_size=40))
    phase_path = next(p for p in folder.glob("green-run-*.json") if p != fit_path)
    return Written(load_record(fit_path), load_record(phase_path), read_json_file(fit_path),
                   read_json_file(phase_path), rows, totals)


def _plain(value: Any) -> Any:
    """JSON's view of a typed value: tuples as lists, mappings and dataclasses as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(typed: Any, written: dict[str, Any], renames: dict[str, str] = (), skip: tuple[str, ...] = ()) -> None:
    """Every field of ``typed`` equals the writer's value under its key (``renames``: field -> key)."""
    renames = dict(renames)
    for f in dataclasses.fields(typed):
        if f.name in skip:
            continue
        key = renames.get(f.name, f.name)
        assert _plain(getattr(typed, f.name)) == written.get(key), (type(typed).__name__, f.name)


def _unset(value: Any, where: str = "") -> list[str]:
    """The fields left at ``None`` / empty anywhere in a typed value (what a record 'with every field' lacks)."""
    if not dataclasses.is_dataclass(value):
        return []
    out = []
    for f in dataclasses.fields(value):
        if f.name == "data":
            continue
        item = getattr(value, f.name)
        if item is None or (isinstance(item, (tuple, dict, str)) and not item):
            out.append(f"{where}{f.name}")
        elif dataclasses.is_dataclass(item):
            out += _unset(item, f"{where}{f.name}.")
        elif isinstance(item, tuple) and item and dataclasses.is_dataclass(item[0]):
            out += _unset(item[0], f"{where}{f.name}[0].")
    return out


def test_the_reader_gives_back_the_writers_rows_and_totals(written: Written) -> None:
    assert written.fit.epochs == written.rows and len(written.rows) == 2
    assert written.fit.totals == written.totals
    assert all(type(a) is type(b) for a, b in zip(written.fit.epochs, written.rows, strict=True))


def test_every_section_reads_back_equal_to_what_the_writer_wrote(written: Written) -> None:
    fit, data = written.fit, written.fit_json
    assert isinstance(fit.footprint, FootprintInfo) and isinstance(fit.throughput, ThroughputInfo)
    assert isinstance(fit.hardware, HardwareInfo) and isinstance(fit.software, SoftwareInfo)
    assert isinstance(fit.flops, FlopInfo)
    embodied, water = data["footprint"]["embodied"], data["footprint"]["water"]
    _same(fit.footprint.embodied, embodied)
    assert [(p.name, p.kgco2e, p.source) for p in fit.footprint.embodied.parts] == [
        (p["name"], p["kgco2e"], p["source"]) for p in embodied["parts"]]
    offsite = water["offsite"]
    _same(fit.footprint.water, water)
    assert (fit.footprint.water.offsite_l_per_kwh, fit.footprint.water.offsite_location,
            fit.footprint.water.offsite_method, fit.footprint.water.offsite_source) == (
        offsite["offsite_l_per_kwh"], offsite["location"], offsite["method"], offsite["source"])
    _same(fit.footprint, data["footprint"])
    _same(fit.throughput, data["throughput"])
    _same(fit.hardware, data["hardware"])
    _same(fit.software, data["software"])
    flops = data["flops"]
    _same(fit.flops, flops, skip=("data_dependent",))
    assert [(e.method, e.note, None if e.low is None else [e.low, e.high]) for e in fit.flops.epochs] == list(
        zip(flops["epoch_methods"], flops["epoch_notes"], flops["epoch_train_flops_range"], strict=True))
    assert {d.signature: {"watched": d.watched, "mean": d.mean, "min": d.min, "max": d.max}
            for d in fit.flops.data_dependent} == flops["data_dependent"]
    assert (fit.kind, fit.started_at, fit.updated_at) == ("fit", data["started_at"], data["updated_at"])
    assert fit.compute_dtype == "fp32" and fit.search is not None and fit.search.name == "grid-1"
    assert fit.model_info is not None and fit.model_info.fingerprint == data["model"]["fingerprint"]
    phase, pdata = written.phase, written.phase_json
    assert isinstance(phase.phase, PhaseInfo) and isinstance(phase.training, TrainingLink)
    assert phase.is_phase and phase.kind == "test" == pdata["kind"]
    _same(phase.phase, pdata["phase"])
    _same(phase.training, pdata["training"])
    assert phase.training.run_id == fit.run_id


def _keys(value: Any, where: str = "") -> list[str]:
    """Every key of a JSON value, nested ones included, in order."""
    if isinstance(value, dict):
        return [k for key, item in value.items() for k in (where + key, *_keys(item, f"{where}{key}."))]
    if isinstance(value, list):
        return [k for i, item in enumerate(value) for k in _keys(item, f"{where}[{i}].")]
    return []


def test_each_typed_section_holds_every_key_the_writer_wrote(written: Written) -> None:
    """The reader's type of each section the writer builds keeps all of it: the same keys, in order, and values."""
    for record, data in ((written.fit, written.fit_json), (written.phase, written.phase_json)):
        for name in ("footprint", "throughput", "hardware", "software", "phase", "training", "partial_epoch",
                     "flops"):
            typed = getattr(record, name)
            if data.get(name) is None:
                assert typed is None, name
                continue
            # (flops: a field the writer did not set is no key, and its data-dependent signatures are keyed by name)
            plain = to_json(typed) if name == "flops" else _plain(typed)
            assert _keys(plain) == _keys(data[name]), name
            assert plain == data[name], name


# what a run like this one cannot have: each with the reason
_NOT_IN_THIS_RUN = {
    "error", "stop_reason", "partial_epoch", "epochs_log", "lost", "convergence.target", "convergence.at_target",
    "totals.energy_low_j", "totals.energy_high_j", "totals.emissions_low_gco2e", "totals.emissions_high_gco2e",
    # ^ a completed run without errors, targets or intervals (fake sensors have no stated accuracy)
    "carbon.year",  # the packaged table's row for DE names its year only for some sources
    "footprint.embodied.total_low_gco2e", "footprint.embodied.total_high_gco2e", "footprint.embodied.missing",
    "footprint.embodied.parts[0].reason",  # the H100 has a figure: nothing to explain
    "throughput.mfu_unavailable",  # a peak is known (H100, fp32): nothing to explain
    "epochs[0].missing_components", "epochs[0].tokens",  # every component measured; tensors, not token ids
    "epochs[0].energy_low_j", "epochs[0].energy_high_j", "epochs[0].emissions_low_gco2e",
    "epochs[0].emissions_high_gco2e", "epochs[0].totals.energy_low_j", "epochs[0].totals.energy_high_j",
    "epochs[0].totals.emissions_low_gco2e", "epochs[0].totals.emissions_high_gco2e",
    "flops.method", "flops.backend", "flops.per_step",  # Keras only
    "flops.uncounted_ops",  # every op of this model has a formula
    "phase", "training", "model",  # a fit's record; the phase record holds these
    "search.engine", "search.state", "search.space", "model_info.name",
}

_NOT_IN_THIS_PHASE = {
    "missing_components", "energy_low_j", "energy_high_j",  # every component measured, by fake sensors (no accuracy)
    "tokens_in", "tokens_out", "energy_per_token_in_j", "energy_per_token_out_j",  # tensors, not token ids
    "short_window_components", "notes",  # a window long enough for every sensor: nothing to note
}


def test_the_records_have_every_field_the_report_reads(written: Written) -> None:
    """The fit and its phase together fill every field of the reader's model (nothing tested above is vacuous)."""
    unset = set(_unset(written.fit)) - _NOT_IN_THIS_RUN
    assert unset == set()
    assert set(_unset(written.phase.phase)) == _NOT_IN_THIS_PHASE and _unset(written.phase.training) == []
    assert written.fit.flops.activation_checkpointing and any(e.method == "sampled" for e in written.fit.flops.epochs)


@pytest.mark.parametrize("schema", ["green-callbacks/run/1", "green-callbacks/run/1.0", "green-callbacks/run/1.1"])
def test_records_without_the_sections_still_read(written: Written, schema: str) -> None:
    old = {k: v for k, v in json.loads(json.dumps(written.fit_json)).items()
           if k not in NEW_SECTIONS and k != "epochs_log"}
    old["schema"] = schema
    for row in old["epochs"]:
        for key in ("train_time_s", "samples", "tokens", "peak_flops_per_s", "train_hardware_flops"):
            row.pop(key, None)
    record = parse_record(old)
    assert all(getattr(record, name) is None for name in NEW_SECTIONS)
    assert record.epochs[0].train_time_s is None and record.totals == written.fit.totals


def test_a_flops_section_with_only_the_adapters_keys_reads_and_reports(written: Written) -> None:
    """Keras on TensorFlow (no FLOP tracker) and every Keras record before its first epoch's end write only the
    adapter's keys: read back whole, with no epoch labels and no data-dependent signatures, and summarised."""
    from green_callbacks.report.runs import summarize_run

    data = json.loads(json.dumps(written.fit_json))
    data["flops"] = {"backend": "tensorflow", "method": "tf-profiler", "convention": "all-ops",
                     "per_step": {"train [[10, 8], [10, 1]]": {"flops": 7000.0, "matmul_flops": 6080.0}}}
    record = parse_record(data)
    assert to_json(record.flops) == data["flops"] and list(to_json(record.flops)) == list(data["flops"])
    assert record.flops.epochs == () and record.flops.data_dependent is None
    run = summarize_run(record)
    assert run.data_dependent == () and run.epoch_flops == (None, None)


def test_a_section_of_the_wrong_type_names_the_field(written: Written) -> None:
    from green_callbacks.core.record import RecordError

    for section, value, field in (("throughput", {"peak_flops_per_s": "fast"}, "throughput.peak_flops_per_s"),
                                  ("flops", {"epoch_train_flops_range": [[1.0]]}, "flops.epoch_train_flops_range[0]"),
                                  ("phase", {"energy_j": -1.0}, "phase.energy_j"),
                                  ("footprint", [], "footprint")):
        with pytest.raises(RecordError, match=field.replace("[", r"\[").replace("]", r"\]")):
            parse_record({**written.fit_json, section: value})



class _Tripwire(Mapping):
    """A record's raw dict that fails on any read: what the report must never touch."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError(f"the report read the record's raw dict: [{key!r}]")

    def __iter__(self) -> Any:
        raise AssertionError("the report iterated over the record's raw dict")

    def __len__(self) -> int:
        raise AssertionError("the report measured the record's raw dict")


def test_every_format_reads_the_types_never_the_raw_dict(written: Written, monkeypatch, capsys, tmp_path) -> None:
    import green_callbacks.core.record as reader
    from green_callbacks.report.card import card_metadata, card_text
    from green_callbacks.report.command import EXPORTS, FORMATS, run_report
    from green_callbacks.report.runs import summarize_run

    parse = reader.parse_record
    monkeypatch.setattr(reader, "parse_record",
                        lambda *a, **k: dataclasses.replace(parse(*a, **k), data=_Tripwire()))
    record = reader.load_record(written.fit.path)
    with pytest.raises(AssertionError, match="raw dict"):  # the tripwire is armed
        record["run_id"]
    folder = str(Path(written.fit.path).parent)
    for fmt in (*FORMATS, *EXPORTS):
        assert run_report(paths=[folder], format=fmt, plots=str(tmp_path / fmt), alternative=["FR"],
                          local_pue=1.5, local_utilisation=0.3, local_country="DE",
                          cloud_region="gcp:europe-north1") == 0, fmt
        out = capsys.readouterr().out
        assert "Traceback" not in out and out.strip(), fmt
    from tests.records import RECORDS

    for folder in ("sweep", "single", "crashed"):  # a search (its analyses), an interrupted run
        for fmt in (*FORMATS, *EXPORTS):
            assert run_report(paths=[str(RECORDS / folder)], format=fmt) == 0, (folder, fmt)
            assert capsys.readouterr().out.strip(), (folder, fmt)
    from green_callbacks.report.compare import load_side

    assert load_side(str(RECORDS / "sweep")).epochs > 0
    run = summarize_run(record)
    assert card_metadata(run)["co2_eq_emissions"]["hardware_used"] == "1 x NVIDIA H100 80GB HBM3"
    assert "Training emissions" in card_text(run)




def _tex(value: float) -> str:
    mantissa, exponent = f"{value:.4g}".split("e")
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


def test_sampled_epochs_show_their_label_and_range_in_every_format(written: Written, capsys) -> None:
    """The data-dependent model's epochs are ``sampled``: the record's figure and range appear with the label in
    every format, the run's range is the epochs' summed, and hardware FLOPs / HFU stand beside model FLOPs / MFU."""
    from green_callbacks.report.command import run_report

    data = written.fit_json
    flops = data["flops"]
    assert flops["epoch_methods"] == ["sampled", "sampled"] and flops["data_dependent"]
    epochs = [(row["train_flops"], *span) for row, span in zip(data["epochs"], flops["epoch_train_flops_range"],
                                                                 strict=True)]
    cells = [f"{value:.4g} (sampled, {low:.4g}–{high:.4g})" for value, low, high in epochs]
    total, low, high = (sum(e[i] for e in epochs) for i in range(3))
    run_cell = f"{total:.4g} (sampled, {low:.4g}–{high:.4g})"
    hardware = sum(row["train_hardware_flops"] for row in data["epochs"])
    assert hardware > total  # the checkpointed block's recompute
    folder = str(Path(written.fit.path).parent)
    out = {}
    for fmt in ("text", "markdown", "html", "csv", "json", "latex"):
        assert run_report(paths=[folder], format=fmt) == 0
        out[fmt] = capsys.readouterr().out
    for fmt in ("text", "markdown", "html"):
        shown = html.unescape(out[fmt]) if fmt == "html" else out[fmt]
        assert all(cell in shown for cell in cells), fmt  # each epoch's row
        assert run_cell in shown and "data-dependent work" in shown, fmt
        assert f"{hardware:.4g} (model FLOPs plus activation checkpointing's recompute" in shown, fmt
        assert "HFU" in shown, fmt
    assert f"FLOPs: training {run_cell}, evaluation" in out["text"]
    fit_row = next(r for r in csv.DictReader(io.StringIO(out["csv"])) if r["kind"] == "fit")
    assert fit_row["train_flops_method"] == "sampled"
    assert float(fit_row["train_flops_low"]) == pytest.approx(low)
    assert float(fit_row["train_flops_high"]) == pytest.approx(high)
    assert float(fit_row["train_hardware_flops"]) == pytest.approx(hardware) and float(fit_row["hfu"]) > 0
    run = json.loads(out["json"])["runs"][0]
    assert [(e["method"], e["low"], e["high"]) for e in run["epoch_flops"]] == [
        ("sampled", lo, hi) for _, lo, hi in epochs]
    assert run["train_flops_method"] == "sampled" and run["train_hardware_flops"] == pytest.approx(hardware)
    assert run["mfu"]["hfu"] == pytest.approx(run["mfu"]["value"] * hardware / total)
    assert f"{_tex(total)} (sampled, {_tex(low)}--{_tex(high)})" in out["latex"]
    assert "training FLOPs sampled: data-dependent work" in out["latex"]

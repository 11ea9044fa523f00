"""A run's training emissions for a Hugging Face model card: the ``co2_eq_emissions`` metadata block the Hub shows
and filters on (``emissions`` in **grams** CO2e, ``source``, ``training_type``, ``geographical_location``,
``hardware_used``), and a short paragraph on energy, emissions and FLOPs for the card's text.

* :func:`card_metadata` / :func:`card_text`: what ``green-callbacks card RUN`` prints, for a run of any framework;
* :func:`add_to_model_card`: merges the block into a ``README.md``'s YAML front matter (other keys kept, an older
  block replaced) and puts the paragraph between markers (replaced, never repeated, on a second write);
* :func:`add_to_trainer_card`: the HF Trainer hook. ``Trainer.create_model_card`` rewrites ``README.md`` from
  scratch, and ``Trainer.push_to_hub`` calls it after ``on_push_begin`` and before the upload: the HF adapter patches
  it on the instance, so the block is added after every rewrite and before any upload.

Strings from a record are written as JSON-quoted YAML scalars (no line break, no quote can end them early) and,
in the paragraph, escaped as Markdown (no HTML, link or image can be made by a record).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from green_callbacks.core.units import JOULES_PER_KWH
from green_callbacks.core.wording import warn_user
from green_callbacks.report import format as fmt
from green_callbacks.report._text import strip_control
from green_callbacks.report.equivalents import equivalents, equivalents_sentence
from green_callbacks.report.runs import RunSummary

__all__ = [
    "KEY",
    "TRAINING_TYPES",
    "add_to_model_card",
    "add_to_trainer_card",
    "card_metadata",
    "card_paragraph",
    "card_text",
    "card_yaml",
    "merge_into_card",
    "training_type_of",
]

KEY = "co2_eq_emissions"
TRAINING_TYPES = ("pre-training", "fine-tuning")
"""The values the Hub's model-card documentation gives for ``training_type``."""
START = "<!-- green-callbacks: training emissions -->"
END = "<!-- /green-callbacks -->"


def _hardware(run: RunSummary) -> str | None:
    if run.gpu_names:
        counts = Counter(run.gpu_names)
        return ", ".join(f"{n} x {name}" for name, n in counts.items())
    hardware = None if run.record is None else run.record.hardware
    cpu = None if hardware is None else hardware.cpu_model
    return f"CPU ({cpu})" if cpu else None


def _source(run: RunSummary) -> str:
    methods = "; ".join(f"{c.name} {'/'.join(c.methods)}" for c in run.components if c.status != "not used")
    year = f" {run.intensity_year}" if run.intensity_year else ""
    intensity = "unknown" if run.intensity_gco2e_per_kwh is None else f"{run.intensity_gco2e_per_kwh:g}"
    text = (f"green_callbacks (energy: {methods or fmt.UNAVAILABLE}; grid {intensity} gCO2e/kWh, "
            f"{run.intensity_source}{year}; PUE {run.pue if run.pue is not None else 'unknown'})")
    if run.energy_partial:
        missing = ", ".join(c.name for c in run.components if c.missing)
        text += f"; partial: {missing} not measured in every epoch"
    if not run.complete:
        text += f"; run {run.status}: {run.epochs} complete epoch(s)"
    return text


def card_metadata(run: RunSummary, *, training_type: str | None = None, location: str | None = None,
                  hardware: str | None = None) -> dict[str, Any]:
    """``{"co2_eq_emissions": {...}}`` for ``run``: its emissions in grams with source, training type (when known),
    location (the record's grid: a country code or a cloud region; none for an explicit intensity or the world
    average) and hardware (from the record unless given). ``ValueError`` when the run's emissions are unavailable
    (a card gets no figure rather than a made-up one) or ``training_type`` is not one of :data:`TRAINING_TYPES`."""
    if run.emissions_gco2e is None or not math.isfinite(run.emissions_gco2e):
        raise ValueError(f"run {run.label} has no measured emissions (no complete epoch, or energy unavailable): "
                         "nothing to put in a model card")
    if training_type is not None and training_type not in TRAINING_TYPES:
        raise ValueError(f"training_type must be one of {', '.join(TRAINING_TYPES)}, got {training_type!r}")
    block: dict[str, Any] = {"emissions": float(run.emissions_gco2e), "source": _source(run)}
    if training_type:
        block["training_type"] = training_type
    where = location or (run.location if run.location not in ("user", "world") else None)
    if where:
        block["geographical_location"] = where
    what = hardware or _hardware(run)
    if what:
        block["hardware_used"] = what
    return {KEY: block}


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    # a YAML double-quoted scalar: one line (JSON escapes every line break and quote), no terminal control character
    return json.dumps(strip_control(str(value)), ensure_ascii=False)


def card_yaml(metadata: Mapping[str, Any]) -> str:
    """The metadata as YAML lines (mappings of scalars, two-space indent), without the ``---`` fences."""
    lines = []
    for key, value in metadata.items():
        if isinstance(value, Mapping):
            lines.append(f"{key}:")
            lines += [f"  {k}: {_scalar(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    from green_callbacks.report.render import md_escape

    return md_escape(text)


def _kwh(joules: float) -> str:
    return f"{joules / JOULES_PER_KWH:.4g} kWh"


def card_paragraph(run: RunSummary) -> str:
    """A short Markdown section: energy by component, emissions with the grid and PUE, FLOPs, comparisons."""
    parts = [f"Training ran {run.epochs} epoch(s) in {run.time_s:.4g} s"]
    if run.energy_j is not None:
        used = [f"{c.name} {_kwh(c.energy_j)}" for c in run.components if c.energy_j is not None]
        parts.append(f" and used {_kwh(run.energy_j)} of IT energy ({', '.join(used)}; before PUE"
                     + (", partial: not every component was measured in every epoch" if run.energy_partial else "")
                     + ")")
    else:
        parts.append(" (energy unavailable)")
    if run.emissions_gco2e is not None:
        year = f", {run.intensity_year}" if run.intensity_year else ""
        parts.append(f", emitting {fmt.grams(run.emissions_gco2e)} at {run.intensity_gco2e_per_kwh:g} gCO2e/kWh "
                     f"({run.location or 'world average'}; {run.intensity_source}{year}) and PUE "
                     f"{run.pue if run.pue is not None else 'unknown'}")
    flops = ("training FLOPs were not counted" if run.train_flops is None
             else f"It took {run.train_flops:.4g} training FLOPs (forward and backward)"
             + ("" if run.eval_flops is None else f" and {run.eval_flops:.4g} evaluation FLOPs"))
    text = "".join(parts) + ". " + (flops[0].upper() + flops[1:]) + "."
    conv = run.convergence
    if conv is not None and conv.best_value is not None and conv.energy_j is not None:
        text += (f" The best {conv.monitor} ({conv.best_value:.4g}) was reached after {conv.epochs} epoch(s), "
                 f"{_kwh(conv.energy_j)}.")
    facility = None if run.energy_j is None else run.energy_j / JOULES_PER_KWH * (run.pue or 1.0)
    items = equivalents(run.emissions_gco2e, facility)
    lines = ["## Training emissions", "", _md(text)]
    if items:
        lines += ["", _md(equivalents_sentence(items, "the emissions and the facility energy (IT x PUE)")), ""]
        lines += [f"- {_md(e.factor.comparison)}: {_md(e.cite())}" for e in items]
    lines += ["", "Measured with green\\_callbacks; the metadata block `co2_eq_emissions` gives the grams."]
    return "\n".join(lines) + "\n"


def card_text(run: RunSummary, **options: Any) -> str:
    """The front matter (``---`` fenced ``co2_eq_emissions`` block) and the paragraph: a ``README.md`` as is."""
    return strip_control(f"---\n{card_yaml(card_metadata(run, **options))}---\n\n{card_paragraph(run)}")


# ---------------------------------------------------------------- merging into an existing README.md
def _split_front_matter(text: str) -> tuple[list[str] | None, str]:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return None, text
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            return lines[1:i], "\n".join(lines[i + 1:])
    return None, text


def _without_key(lines: list[str], key: str) -> list[str]:
    out, skipping = [], False
    for line in lines:
        if skipping and (line[:1] in (" ", "\t") or not line.strip()):
            continue
        skipping = line.startswith(f"{key}:")
        if not skipping:
            out.append(line)
    return out


def _without_section(body: str) -> str:
    start = body.find(START)
    end = body.find(END, start + 1) if start >= 0 else -1
    if start < 0 or end < 0:
        return body
    return (body[:start].rstrip("\n") + "\n" + body[end + len(END):].lstrip("\n")).strip("\n") + "\n"


def merge_into_card(text: str, run: RunSummary, **options: Any) -> str:
    """``text`` (a model card) with the ``co2_eq_emissions`` block in its front matter (other keys kept, an older
    block replaced) and the paragraph between markers at the end (an older one replaced)."""
    block = card_yaml(card_metadata(run, **options)).rstrip("\n").split("\n")
    front, body = _split_front_matter(text)
    front = _without_key(list(front or []), KEY)
    while front and not front[-1].strip():
        front.pop()
    body = _without_section(body).strip("\n")
    section = f"{START}\n{card_paragraph(run).rstrip()}\n{END}\n"
    body = f"{body}\n\n{section}" if body else section
    return "---\n" + "\n".join([*front, *block]) + "\n---\n\n" + strip_control(body)


def add_to_model_card(readme: str | Path, record: str | Path | Any, **options: Any) -> Path:
    """Merge ``record``'s block and paragraph into the card ``readme`` (made if missing), written atomically.
    ``record``: a run record's path or a :class:`~green_callbacks.report.runs.RunSummary`."""
    from green_callbacks.core.record import load_record
    from green_callbacks.report._output import write_text_atomic
    from green_callbacks.report.runs import summarize_run

    run = record if isinstance(record, RunSummary) else summarize_run(load_record(record))
    path = Path(readme)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return write_text_atomic(path, merge_into_card(text, run, **options))


# ---------------------------------------------------------------- the HF Trainer hook
def training_type_of(model: Any) -> str | None:
    """``fine-tuning`` for a model loaded from pretrained weights (it has a ``name_or_path``), ``pre-training`` for
    one built from a config (its ``name_or_path`` is empty); ``None`` when the model says neither."""
    name = getattr(model, "name_or_path", None)
    if name is None:
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not isinstance(name, str):
        return None
    return "fine-tuning" if name else "pre-training"


def add_to_trainer_card(trainer: Any, record: Path | None) -> None:
    """After ``trainer.create_model_card`` (and so ``trainer.push_to_hub``, which calls it before uploading): add
    the training emissions of the run at ``record`` to the card it wrote. Without a record (no training yet, a run
    with no complete epoch) the card is left as the Trainer wrote it. A failure here warns and leaves the Trainer's
    card (strict mode re-raises). The HF adapter calls it from its patch of ``create_model_card``
    (:class:`~green_callbacks.core.patches.InstancePatches`)."""
    try:
        _after_card(trainer, record)
    except Exception as err:
        from green_callbacks.core.guard import strict_mode

        if strict_mode():
            raise
        warn_user(f"green_callbacks: could not add the training emissions to the model card "
                  f"({type(err).__name__}: {err}); the Trainer's card is unchanged", RuntimeWarning)


def _after_card(trainer: Any, record: Path | None) -> None:
    if trainer is None or record is None or not Path(record).is_file():
        return
    if hasattr(trainer, "is_world_process_zero") and not trainer.is_world_process_zero():
        return
    readme = Path(trainer.args.output_dir) / "README.md"
    if not readme.is_file():
        return
    from green_callbacks.core.record import load_record
    from green_callbacks.report.runs import summarize_run

    run = summarize_run(load_record(record))
    if run.emissions_gco2e is None:
        return
    add_to_model_card(readme, run, training_type=training_type_of(getattr(trainer, "model", None)))

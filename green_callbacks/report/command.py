"""``green-callbacks report PATH...``: the command's options and its one entry function.

Wiring (in ``green_callbacks/cli.py``)::

    add_report_arguments(sub.add_parser("report", help="..."))
    ...
    return run_report(args)

Exit status: 0 when at least one record was read, 1 when none was, 2 for bad options, a missing path or an output
that cannot be written (one line on standard error says what and how to fix it).

Every record read — fits, and test / predict / evaluate phases with or without fits beside them — goes through one
report (:func:`~green_callbacks.report.build.build_report`) and one emitter per format, which make record text
inert; this module only writes what they return: to standard output, or to a file replaced atomically, after making
it encodable (a non-UTF-8 file name in a record is written as its bytes, never an error).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from green_callbacks.report._output import say, show, write_atomic, write_text_atomic

__all__ = ["EXPORTS", "FORMATS", "add_card_arguments", "add_report_arguments", "run_card", "run_report"]

FORMATS = ("text", "markdown", "html", "csv", "json", "latex")
"""The formats that write one report document."""
EXPORTS = ("boamps",)
"""The formats that write one file per run (to standard output: one JSON object, or a list of them)."""
_PLOT_HINT = 'pip install "green-callbacks[plot]"'


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``report`` options to ``parser`` (a sub-parser of the ``green-callbacks`` command)."""
    from green_callbacks.report.offsets import DEFAULT_PRICE

    parser.add_argument("paths", nargs="*", metavar="PATH", help="run records (green-run-*.json) or folders of them")
    parser.add_argument("--max-record-mb", type=float, metavar="MB",
                        help="skip record files larger than MB MiB (default 64, or $GREEN_CALLBACKS_MAX_RECORD_MB); "
                             "only regular files are read")
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS + EXPORTS, default="text",
                     help="text (terminal, default), markdown (for a paper's appendix), html (one self-contained "
                          "page with the plots embedded), csv (one row per run), json or latex (a standalone, "
                          "compilable appendix: booktabs tables, sources and methods as footnotes) or boamps (one "
                          "BoAmps JSON report per run; with --out, a folder of boamps-<run id>.json files)")
    out.add_argument("--out", metavar="FILE", help="write the report to FILE instead of standard output")
    out.add_argument("--plots", metavar="DIR",
                     help=f"also write the figures as PNG files into DIR (needs matplotlib: {_PLOT_HINT})")
    out.add_argument("--all-run-plots", action="store_true",
                     help="draw per-run figures for every run of a large sweep (default: the best run only)")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--tolerance", default="1%",
                       help="how close to the best a random search must come: a percentage of the best value "
                            "('1%%', default) or an absolute amount in the metric's units ('0.005')")
    engine = parser.add_argument_group("search engine (its trials joined with the records; docs/search.md)")
    engine.add_argument("--optuna-storage", metavar="URL",
                        help="an Optuna study's storage (sqlite:///study.db, another RDB URL, or a journal file)")
    engine.add_argument("--study", metavar="NAME", help="the study's name in --optuna-storage")
    engine.add_argument("--ray-experiment", metavar="DIR",
                        help="a Ray Tune experiment folder (storage_path/name); its records are read when no PATH "
                             "is given")
    eff = parser.add_argument_group("efficiency")
    eff.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                     help="dense peak TFLOP/s of one GPU for MFU (default: the peak table, else MFU 'unknown')")
    eff.add_argument("--mfu-dtype", metavar="DTYPE",
                     help="compute dtype for the peak table (bf16, fp16, tf32, fp32) when a record names none "
                          "(default: bf16, reported as assumed)")
    where = parser.add_argument_group("where could the runs have been greener (counterfactual)")
    where.add_argument("--alternative", action="append", default=[], metavar="GRID",
                       help="a grid to compare each run with: an ISO country code (FR), a cloud region "
                            "(gcp:europe-west1) or an intensity in gCO2e/kWh; repeat for several")
    where.add_argument("--lowest", type=int, default=5, metavar="N",
                       help="list the N lowest-intensity countries and cloud regions (default 5; 0: none)")
    where.add_argument("--no-cloud-regions", action="store_true",
                       help="leave out the table of every packaged cloud region")
    where.add_argument("--local-pue", type=float, metavar="PUE",
                       help="a shared local machine: its PUE (with --local-utilisation and --local-country or "
                            "--local-intensity), compared with --cloud-region, embodied emissions included")
    where.add_argument("--local-utilisation", type=float, metavar="FRACTION",
                       help="the shared local machine's utilisation over its life (0-1)")
    where.add_argument("--local-country", metavar="CODE", help="the shared local machine's grid (ISO code)")
    where.add_argument("--local-intensity", type=float, metavar="G_PER_KWH",
                       help="the shared local machine's grid intensity, instead of --local-country")
    where.add_argument("--cloud-region", metavar="REGION",
                       help="the on-demand cloud region to compare with (gcp:<region>)")
    offset = parser.add_argument_group("offsets and badges")
    offset.add_argument("--offset-price", type=float, default=DEFAULT_PRICE.per_tonne, metavar="PRICE",
                        help=f"offset price per tonne CO2e (default {DEFAULT_PRICE.per_tonne:g}, "
                             f"{DEFAULT_PRICE.as_of.split(' ')[0]}; give your provider's current price)")
    offset.add_argument("--offset-currency", default=DEFAULT_PRICE.currency,
                        help=f"currency of --offset-price (default {DEFAULT_PRICE.currency})")
    offset.add_argument("--badges", metavar="DIR", help="write SVG badges into DIR and print the Markdown to paste")
    offset.add_argument("--pledge", action="store_true", help="include the Green AI pledge badge")
    offset.add_argument("--pledge-url", metavar="URL", help="page the pledge badge links to (implies --pledge)")
    offset.add_argument("--certificate-url", metavar="URL",
                        help="your offset certificate; only with it is a carbon-neutral badge made, linking to it")
    return parser


def _namespace(args: argparse.Namespace | Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> argparse.Namespace:
    defaults = vars(add_report_arguments(argparse.ArgumentParser()).parse_args(["-"]))
    defaults["paths"] = []
    given = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
    given.update(kwargs)
    unknown = set(given) - set(defaults) - {"command"}
    if unknown:
        raise TypeError(f"run_report got unknown option(s) {sorted(unknown)}; allowed: {sorted(defaults)}")
    return argparse.Namespace(**{**defaults, **given})


def _relative(path: Path, out: str | None) -> str:
    if not out:
        return path.as_posix()
    return Path(os.path.relpath(path.resolve(), Path(out).resolve().parent)).as_posix()


def _error(message: str) -> int:
    say(f"green-callbacks report: {message}")
    return 2


def _footprint_options(ns: argparse.Namespace) -> Any:
    """The footprint section's comparisons from the command line (a clear ``ValueError`` for bad ones)."""
    from green_callbacks.core.counterfactual import Infrastructure
    from green_callbacks.report.footprint import FootprintOptions

    alternatives: list[str | float] = []
    for given in getattr(ns, "alternative", None) or []:
        try:
            alternatives.append(float(given))
        except ValueError:
            alternatives.append(str(given))
    local_given = [getattr(ns, k, None) is not None for k in
                   ("local_pue", "local_utilisation", "local_country", "local_intensity", "cloud_region")]
    local = cloud = None
    if any(local_given):
        if getattr(ns, "local_pue", None) is None or getattr(ns, "local_utilisation", None) is None \
                or getattr(ns, "cloud_region", None) is None:
            raise ValueError("the shared-local vs cloud comparison needs --local-pue, --local-utilisation, "
                             "--local-country (or --local-intensity) and --cloud-region together")
        local = Infrastructure.local(pue=ns.local_pue, utilisation=ns.local_utilisation,
                                     country=getattr(ns, "local_country", None),
                                     carbon_intensity=getattr(ns, "local_intensity", None))
        cloud = Infrastructure.cloud(ns.cloud_region)
    lowest = getattr(ns, "lowest", 5)
    if lowest is None or lowest < 0:
        raise ValueError(f"--lowest must be 0 or more, got {lowest}")
    return FootprintOptions(alternatives=tuple(alternatives), cloud_regions=not getattr(ns, "no_cloud_regions", False),
                            lowest=int(lowest), local=local, cloud=cloud)


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing ancestor of ``folder`` (or ``folder`` itself) when it is not a folder."""
    for place in (folder, *folder.parents):
        if os.path.lexists(place):
            return None if place.is_dir() else place
    return None


def _write_error(what: str, target: Path, err: OSError, option: str, folder: Path) -> int:
    blocker = _file_in_the_way(folder)
    if blocker is not None:
        reason = f"{blocker} is not a folder"
    else:
        reason = err.strerror or type(err).__name__
        if err.filename and str(err.filename) != str(target) and not Path(str(err.filename)).name.startswith("."):
            reason += f" ({err.filename})"
    return _error(f"cannot write the {what} to {target}: {reason}; give {option} a writable place")


def run_report(args: argparse.Namespace | Mapping[str, Any] | None = None, **kwargs: Any) -> int:
    """Run ``green-callbacks report`` with parsed ``args`` (or keyword options); return the exit status."""
    from green_callbacks.core.record import max_record_bytes
    from green_callbacks.report.build import ReportOptions, build_report, make_figures
    from green_callbacks.report.offsets import DEFAULT_PRICE, OffsetPrice
    from green_callbacks.report.plots import PlotUnavailable
    from green_callbacks.report.render import render_csv, render_html, render_json, render_markdown, render_text
    from green_callbacks.report.runs import load_runs

    ns = _namespace(args, kwargs)
    if ns.format not in FORMATS + EXPORTS:
        return _error(f"--format must be one of {', '.join(FORMATS + EXPORTS)}, got {ns.format!r}")
    try:
        limit = max_record_bytes(ns.max_record_mb)
    except ValueError as err:
        return _error(str(err).replace("max_record_mb", "--max-record-mb"))
    paths = list(ns.paths) or ([ns.ray_experiment] if ns.ray_experiment else [])
    if not paths:
        return _error("give PATH: run records (green-run-*.json) or folders of them")
    searches: list[Any] = []
    if ns.optuna_storage or ns.study or ns.ray_experiment:
        from green_callbacks.report.engines import EngineError, read_engines

        try:
            searches = read_engines(ns.optuna_storage, ns.study, ns.ray_experiment)
        except EngineError as err:
            return _error(str(err))
    try:
        loaded = load_runs(paths, max_bytes=limit)
    except FileNotFoundError as err:
        return _error(str(err))
    joins: tuple[Any, ...] = ()
    if searches:
        from green_callbacks.report.engines import join_engines

        loaded, joins = join_engines(loaded, searches)
    for path, reason in loaded.skipped:
        say(f"skipped {path}: {reason}")
    if not loaded.runs and not loaded.phases:
        say("green-callbacks report: no readable run record (green-run-*.json) found")
        return 1
    price = DEFAULT_PRICE
    if (ns.offset_price, ns.offset_currency) != (DEFAULT_PRICE.per_tonne, DEFAULT_PRICE.currency):
        price = OffsetPrice(float(ns.offset_price), str(ns.offset_currency), "given by the user", "as given")
    try:
        footprint = _footprint_options(ns)
    except ValueError as err:
        return _error(str(err))
    try:
        report = build_report(loaded, ReportOptions(
            footprint=footprint,
            tolerance=ns.tolerance,
            offset_price=price,
            peak_flops_per_s=None if ns.peak_tflops is None else ns.peak_tflops * 1e12,
            mfu_dtype=ns.mfu_dtype,
            pledge=bool(ns.pledge),
            pledge_url=ns.pledge_url,
            certificate_url=ns.certificate_url,
            engines=joins,
        ))
    except ValueError as err:
        return _error(str(err))

    figures: dict[str, bytes] = {}
    note = ""
    if ns.plots or ns.format == "html":
        try:
            figures = make_figures(report, all_runs=bool(ns.all_run_plots))
        except PlotUnavailable as err:
            if ns.plots:
                return _error(str(err))
            note = f"No plots: matplotlib is not installed ({_PLOT_HINT})."
            say(f"green-callbacks report: {note}")
    images: dict[str, str] = {}
    if ns.plots:
        folder = Path(ns.plots).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, png in figures.items():
                write_atomic(folder / name, png)
                images[name] = _relative(folder / name, ns.out)
        except OSError as err:
            return _write_error("figures", folder, err, "--plots", folder)
        say(f"wrote {len(figures)} figure(s) to {folder}")

    snippets: list[str] = []
    if ns.badges:
        folder = Path(ns.badges).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for badge in report.badges:
                target = folder / f"{badge.name}.svg"
                write_text_atomic(target, badge.svg)
                snippets.append(badge.markdown(_relative(target, ns.out)))
        except OSError as err:
            return _write_error("badges", folder, err, "--badges", folder)
    if ns.format == "boamps":
        return _write_boamps(report, ns.out)
    if ns.format == "text":
        text = render_text(report, snippets)
    elif ns.format == "markdown":
        text = render_markdown(report, images, snippets)
    elif ns.format == "html":
        text = render_html(report, figures, note, snippets)
    elif ns.format == "csv":
        text = render_csv(report)
        if snippets:
            say("Badges (Markdown to paste):\n" + "\n".join(snippets))
    elif ns.format == "latex":
        from green_callbacks.report.latex import render_latex

        text = render_latex(report)
    else:
        text = render_json(report, snippets)
    if ns.out:
        target = Path(ns.out).expanduser()
        try:
            write_text_atomic(target, text)
        except OSError as err:
            return _write_error(f"{ns.format} report", target, err, "--out", target.parent)
        say(f"wrote {ns.format} report to {target}")
        if snippets and ns.format != "csv":
            say("Badges (Markdown to paste):\n" + "\n".join(snippets))
    else:
        show(text)
    return 0


def _write_boamps(report: Any, out: str | None) -> int:
    """One BoAmps report per run: to standard output (one object, or a list of them), or one file per run in the
    folder ``out`` (``boamps-<run id>.json``, the id made a safe file name)."""
    import json

    from green_callbacks.report.boamps import render_boamps
    from green_callbacks.report.build import _slug

    reports, left_out = render_boamps(report.runs)
    for line in left_out:
        say(f"green-callbacks report: {line}")
    if not reports:
        return 1
    if not out:
        body = reports[0][1] if len(reports) == 1 else [r for _, r in reports]
        show(json.dumps(body, indent=2) + "\n")
        return 0
    folder = Path(out).expanduser()
    names: set[str] = set()
    try:
        for run, body in reports:
            name = f"boamps-{_slug(run.run_id or run.label)}"
            while name in names:
                name += "-1"
            names.add(name)
            write_text_atomic(folder / f"{name}.json", json.dumps(body, indent=2) + "\n")
    except OSError as err:
        return _write_error("BoAmps reports", folder, err, "--out", folder)
    say(f"wrote {len(reports)} BoAmps report(s) to {folder}")
    return 0


# ---------------------------------------------------------------- green-callbacks card RUN
def add_card_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``card`` options to ``parser`` (a sub-parser of the ``green-callbacks`` command)."""
    from green_callbacks.report.card import TRAINING_TYPES

    parser.add_argument("run", metavar="RUN", help="a run record (green-run-*.json), or a folder: its newest record")
    parser.add_argument("--training-type", choices=TRAINING_TYPES,
                        help="the Hub's training_type (left out of the block when not given)")
    parser.add_argument("--location", help="geographical_location (default: the record's grid location)")
    parser.add_argument("--hardware", help="hardware_used (default: the record's GPUs, else its CPU)")
    parser.add_argument("--into", metavar="README",
                        help="merge the block and paragraph into this model card (other metadata kept; an earlier "
                             "block replaced) instead of printing them")
    return parser


def run_card(args: argparse.Namespace) -> int:
    """Print (or merge into ``--into``) the ``co2_eq_emissions`` block and paragraph of one run."""
    from green_callbacks.report.card import add_to_model_card, card_text
    from green_callbacks.report.runs import load_runs

    try:
        loaded = load_runs([args.run])
    except FileNotFoundError as err:
        say(f"green-callbacks card: {err}")
        return 2
    for path, reason in loaded.skipped:
        say(f"skipped {path}: {reason}")
    if not loaded.runs:
        say(f"green-callbacks card: no training run record (green-run-*.json) in {args.run}")
        return 1
    runs = sorted(loaded.runs, key=lambda r: (r.record.updated_at or 0, r.path))
    run = runs[-1]
    if len(runs) > 1:
        say(f"green-callbacks card: {len(runs)} run records in {args.run}; using the newest, {run.path} "
            "(give the file to choose another)")
    options = {"training_type": args.training_type, "location": args.location, "hardware": args.hardware}
    try:
        if args.into:
            target = add_to_model_card(Path(args.into).expanduser(), run, **options)
            say(f"added the training emissions of run {run.label} to {target}")
        else:
            show(card_text(run, **options))
    except ValueError as err:
        say(f"green-callbacks card: {err}")
        return 1
    except OSError as err:
        say(f"green-callbacks card: cannot write {args.into}: {err.strerror or err}")
        return 2
    return 0

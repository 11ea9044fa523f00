"""The ``green-callbacks`` command.

- ``green-callbacks measure [options] -- CMD ARGS...``: measure any command, print a summary, write a run record,
  exit with the command's own exit code.
- ``green-callbacks demo [--epochs N] [--country CC]``: train a small model with the Lightning callback on
  synthetic data and print the report (needs the ``lightning`` extra).
- ``green-callbacks report PATH...``: summarise run records.
- ``green-callbacks card RUN``: a run's ``co2_eq_emissions`` block and paragraph for a Hugging Face model card.
- ``green-callbacks compare BASE NEW``: energy per sample, per FLOP and per epoch of two runs (or folders, or
  searches) with bootstrap intervals; says whether NEW costs more beyond the noise (``--fail-above PCT``: exit 1).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main"]


def _add_location_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("carbon")
    group.add_argument("--country", help="ISO 3166 code of the grid, e.g. FR or DEU")
    group.add_argument("--region", help="cloud region, e.g. gcp:europe-west1")
    group.add_argument("--carbon-intensity", type=float, help="explicit grid intensity in gCO2e/kWh")
    group.add_argument("--pue", type=float, default=1.0, help="data-centre PUE (default 1.0: IT energy only)")
    parser.add_argument("--output-dir", default="green_runs", help="folder for the run record (default ./green_runs)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="green-callbacks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    measure = sub.add_parser("measure", help="measure the energy and emissions of any command")
    _add_location_options(measure)
    measure.add_argument("--interval", type=float, default=60.0,
                         help="seconds between record rows (each row is written to disk; default 60)")
    measure.add_argument("--gpus", help="comma-separated NVML indices of the GPUs to measure (default: all)")
    measure.add_argument("--rounds", type=int, default=1,
                         help="run the command this many times, each round one row of the record, and report the "
                              "median round with its interval (default 1)")
    measure.add_argument("--warmup-rounds", type=int, default=0,
                         help="run the command this many times first, measured but left out of the median")
    measure.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command and its arguments")

    sub.add_parser("demo", help="train a small model with the Lightning callback and print the report "
                                "(options: green-callbacks demo --help)", add_help=False)

    from green_callbacks.report.command import add_card_arguments, add_report_arguments

    add_report_arguments(sub.add_parser("report", help="summarise run records: tables, Markdown/HTML, plots, "
                                                       "sweeps, badges"))
    add_card_arguments(sub.add_parser("card", help="a run's training emissions for a Hugging Face model card"))
    from green_callbacks.report.compare import add_compare_arguments

    add_compare_arguments(sub.add_parser("compare", help="does NEW cost more energy than BASE, beyond the noise? "
                                                         "(exit 1 with --fail-above PCT when it does)"))
    return parser


def _demo_country_error(rest: Sequence[str]) -> str | None:
    """Why the demo's ``--country`` names no grid in the packaged table, or ``None`` (absent or known)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--country")
    known, _ = early.parse_known_args(list(rest))
    if known.country is None:
        return None
    from green_callbacks.core.carbon import lookup_country

    try:
        lookup_country(known.country)
    except ValueError as err:
        return str(err)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "measure":
        return _measure(args)
    if args.command == "demo":
        country_error = _demo_country_error(rest)
        if country_error is not None:  # said at once, before torch and Lightning take seconds to import
            print(f"green-callbacks demo: --country: {country_error}", file=sys.stderr)
            return 2
        try:
            from green_callbacks.demo import main as demo_main
        except ImportError as err:  # torch or Lightning missing: say what to install, not a traceback
            missing = getattr(err, "name", None) or str(err)
            print(f"green-callbacks demo: it trains a small model with PyTorch Lightning, and {missing!r} is not "
                  f'installed. Install it with: pip install "green-callbacks[lightning]"', file=sys.stderr)
            return 1
        return demo_main(rest, prog="green-callbacks demo")
    if args.command == "report":
        from green_callbacks.report.command import run_report

        return run_report(args)
    if args.command == "compare":
        from green_callbacks.report.compare import run_compare

        return run_compare(args)
    if args.command == "card":
        from green_callbacks.report.command import run_card

        return run_card(args)
    raise AssertionError(args.command)


def _measure(args: argparse.Namespace) -> int:
    from green_callbacks.core.config import GreenConfig
    from green_callbacks.core.distributed import DistInfo, identity_reducer
    from green_callbacks.core.record import read_record
    from green_callbacks.core.session import Session
    from green_callbacks.core.wording import MEASURE
    from green_callbacks.report.summary import format_epoch_table, format_run_summary

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("green-callbacks measure: give the command after --, e.g. "
              "green-callbacks measure -- python train.py", file=sys.stderr)
        return 2
    if not args.interval > 0:
        print(f"green-callbacks measure: --interval must be > 0 seconds, got {args.interval}", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.warmup_rounds < 0:
        print(f"green-callbacks measure: --rounds must be at least 1 and --warmup-rounds at least 0, got "
              f"{args.rounds} and {args.warmup_rounds}", file=sys.stderr)
        return 2
    repeated = args.rounds > 1 or args.warmup_rounds > 0
    try:
        gpus = None if args.gpus is None else [int(g) for g in args.gpus.split(",") if g.strip()]
        config = GreenConfig(country=args.country, region=args.region, carbon_intensity=args.carbon_intensity,
                             pue=args.pue, output_dir=args.output_dir, gpus=gpus)
        from green_callbacks.core.sensors.nvml import check_gpus_on_this_machine

        check_gpus_on_this_machine(config.gpus)
        session = Session(config, framework="measure", dist=DistInfo(), reducer=identity_reducer, front_end=MEASURE)
    except ValueError as err:
        print(f"green-callbacks measure: {err}", file=sys.stderr)
        return 2

    rounds = {"rounds": args.rounds, "warmup_rounds": args.warmup_rounds} if repeated else {}
    session.start(hyperparameters={"command": cmd, **rounds}, device_indices=None, handle_signals=False)
    try:
        children = [subprocess.Popen(cmd)]
    except OSError as err:
        session.finish("failed", err)
        print(f"green-callbacks measure: cannot run {cmd[0]!r}: {err}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: object) -> None:
        if children[-1].poll() is None:
            children[-1].send_signal(signum)
        raise _Interrupted(signum)

    forwarded = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, forward) for s in forwarded}
    status, code, reason = "completed", 0, None
    try:
        for index in range(args.warmup_rounds + args.rounds):
            if index:
                children.append(subprocess.Popen(cmd))
            session.epoch_start()
            while True:
                try:
                    code = children[-1].wait(timeout=None if repeated else args.interval)
                    break
                except subprocess.TimeoutExpired:  # one row per --interval (a single round only)
                    session.epoch_end()
                    session.epoch_start()
            session.epoch_end()
            if code != 0:
                break
        status = "completed" if code == 0 else "failed"
        reason = None if code == 0 else f"exit code {code}"
    except OSError as err:  # a later round could not start
        status, code, reason = "failed", 127, f"cannot run {cmd[0]!r}: {err}"
    except (KeyboardInterrupt, _Interrupted) as err:
        status = "interrupted"
        code = _wait_after_signal(children[-1])
        reason = type(err).__name__ if isinstance(err, KeyboardInterrupt) else signal.Signals(err.signum).name
        if session.in_epoch:
            session.epoch_end()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        path = session.finish(status, reason)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = read_record(path) if path else session.to_record()
    print(format_epoch_table(record), file=sys.stderr)
    print(format_run_summary(record), file=sys.stderr)
    if repeated:
        from green_callbacks.report.summary import format_rounds

        print(format_rounds(record, args.warmup_rounds), file=sys.stderr)
    return code if code >= 0 else 128 - code


class _Interrupted(BaseException):  # like KeyboardInterrupt: no `except Exception` on the way may swallow it
    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _wait_after_signal(child: subprocess.Popen[bytes]) -> int:
    """Let the command end on the signal it got too (a terminal's Ctrl-C reaches both); make sure it ends."""
    for action, grace_s in ((None, 1.0), (signal.SIGINT, 30.0), (signal.SIGKILL, None)):
        if action is not None and child.poll() is None:
            child.send_signal(action)
        try:
            return child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
    return child.wait()


if __name__ == "__main__":
    raise SystemExit(main())

"""Time of ``green-callbacks report`` over a large random search: 5,000 synthetic run records by default.

Run: python benchmarks/report_scale.py [--runs 5000] [--epochs 5] [--format text] [--keep DIR]

The records are written into a temporary folder (schema green-callbacks/run/1, the shape ``Session`` writes: GPU,
CPU and RAM energy per epoch, FLOPs, val_acc as the monitored metric; hyperparameters lr (log-uniform), batch size
and dropout drawn at random with a fixed seed). The script then times, in one process, each stage of the report:
finding and reading the records, building the report (summaries, the sweep statistics: expected best of n random
trials and the trials needed to reach the best), and rendering it. Plots are not drawn (``--plots`` is a separate
cost, per figure). It prints the seconds of each stage; run it on two versions to compare them as a ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

JOULES_PER_KWH = 3.6e6


def synthetic_record(index: int, rng: random.Random, epochs: int) -> dict:
    lr = 10 ** rng.uniform(-4, -1)
    batch = rng.choice([16, 32, 64, 128])
    dropout = round(rng.uniform(0.0, 0.5), 3)
    final = 0.9 - 0.08 * abs(math.log10(lr) + 2.5) - 0.1 * abs(dropout - 0.2) + rng.gauss(0.0, 0.01)
    intensity, pue = 400.0, 1.2
    rows, totals = [], {"epochs": 0, "time_s": 0.0, "train_flops": 0.0, "eval_flops": 0.0, "energy_j": 0.0,
                        "emissions_gco2e": 0.0}
    best = None
    for epoch in range(epochs):
        parts = {"gpu": 100.0 * 64 / batch + rng.uniform(0, 5), "cpu": 20.0 + rng.uniform(0, 2), "ram": 2.0}
        energy = sum(parts.values())
        grams = energy / JOULES_PER_KWH * pue * intensity
        totals = {"epochs": epoch + 1, "time_s": totals["time_s"] + 10.0,
                  "train_flops": totals["train_flops"] + 1e12, "eval_flops": totals["eval_flops"] + 1e11,
                  "energy_j": totals["energy_j"] + energy, "emissions_gco2e": totals["emissions_gco2e"] + grams}
        value = round(final - 0.05 * (epochs - 1 - epoch), 6)
        rows.append({"epoch": epoch, "time_s": 10.0, "energy_j": energy, "component_energy_j": parts,
                     "component_method": {"gpu": "nvml-energy-counter", "cpu": "rapl", "ram": "estimate-ram-per-gb"},
                     "eval_energy_j": 5.0, "train_flops": 1e12, "eval_flops": 1e11, "emissions_gco2e": grams,
                     "totals": dict(totals), "metrics": {"val_acc": value, "train_loss": 1.0 - value},
                     "missing_components": []})
        if best is None or value > best["value"]:
            best = {"epoch": epoch, "value": value, **totals}
    return {
        "schema": "green-callbacks/run/1", "run_id": f"{index:08d}" + "0" * 24, "framework": "lightning",
        "status": "completed", "error": None, "stop_reason": None, "started_at": 1.79e9, "updated_at": 1.79e9 + 60,
        "world_size": 1,
        "carbon": {"intensity_gco2e_per_kwh": intensity, "source": "synthetic", "year": 2023, "location": "DEU",
                   "basis": "lifecycle", "kind": "country", "pue": pue},
        "components": {"gpu": {"scope": "device", "method": "nvml-energy-counter",
                               "devices": [{"nvml_index": 0, "cuda_index": 0, "name": "NVIDIA A100-SXM4-80GB",
                                            "method": "nvml-energy-counter"}]},
                       "cpu": {"scope": "node", "method": "rapl"},
                       "ram": {"scope": "node", "method": "estimate-ram-per-gb"}},
        "methods": {"gpu": ["nvml-energy-counter"], "cpu": ["rapl"], "ram": ["estimate-ram-per-gb"]},
        "convergence": {"monitor": "val_acc", "mode": "max", "target": None, "best": best, "at_target": None},
        "hyperparameters": {"lr": lr, "batch_size": batch, "dropout": dropout},
        "lost": {}, "resumed_from": None, "totals": totals, "epochs": rows, "partial_epoch": None,
    }


def write_records(folder: Path, runs: int, epochs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for index in range(runs):
        data = synthetic_record(index, rng, epochs)
        (folder / f"green-run-bench-{index:05d}.json").write_text(json.dumps(data), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--format", default="text", choices=("text", "markdown", "html", "csv", "json"))
    parser.add_argument("--keep", metavar="DIR", help="write the records into DIR (kept) instead of a temp folder")
    args = parser.parse_args()

    from green_callbacks.report import render
    from green_callbacks.report.build import build_report
    from green_callbacks.report.runs import load_runs

    with tempfile.TemporaryDirectory(prefix="green-report-bench-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_records(folder, args.runs, args.epochs)
        t1 = time.perf_counter()
        loaded = load_runs([folder])
        t2 = time.perf_counter()
        report = build_report(loaded)
        t3 = time.perf_counter()
        if args.format == "html":
            text = render.render_html(report, {})
        else:
            text = getattr(render, f"render_{args.format}")(report)
        t4 = time.perf_counter()
    sweeps = getattr(report, "sweeps", None) or ([report.sweep] if report.sweep is not None else [])
    curve = sum(len(s.curve) for s in sweeps)
    needed = [s.efficiency.trials_needed for s in sweeps if s.efficiency is not None]
    print(f"records: {len(loaded.runs)} read, {len(loaded.skipped)} skipped; {args.epochs} epochs each; "
          f"expected-best curve points: {curve}; trials needed: {needed}; output: {len(text):,} characters")
    print(f"write records  {t1 - t0:8.2f} s (setup, not the report)")
    print(f"load records   {t2 - t1:8.2f} s")
    print(f"build report   {t3 - t2:8.2f} s  (summaries, sweep statistics, MFU, badges)")
    print(f"render {args.format:<7} {t4 - t3:8.2f} s")
    print(f"report total   {t4 - t1:8.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

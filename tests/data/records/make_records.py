"""Writes the fixture run records of tests/test_report*.py with known, hand-checkable numbers.

Run from the repository root: ``python tests/data/records/make_records.py``. The records follow the shape of
``Session.to_record`` (schema green-callbacks/run/1); every number below is chosen, not measured.

* ``sweep/``: a 3 x 3 grid over lr x batch_size, 3 epochs a run, val_acc (max). The best val_acc of a run is
  ``LR_EFFECT[lr] + BS_EFFECT[bs]``; per epoch the GPU draws ``GPU_J[bs]`` J and the CPU 20 J.
* ``single/``: one completed run with GPU (NVML), CPU (RAPL) and RAM, FLOPs counted, val_loss best at epoch 1 of 3.
* ``crashed/``: an interrupted run whose GPU was lost after epoch 0, FLOPs not counted, an incomplete epoch.
* ``bad/``: a corrupt file and a record of a newer schema.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
JOULES_PER_KWH = 3.6e6

LR_EFFECT = {0.1: 0.70, 0.01: 0.80, 0.001: 0.75}
BS_EFFECT = {16: 0.00, 32: 0.03, 64: 0.06}
GPU_J = {16: 100.0, 32: 80.0, 64: 60.0}
CPU_J = 20.0


def emissions(energy_j, intensity, pue):
    return None if energy_j is None else energy_j / JOULES_PER_KWH * pue * intensity


def record(*, run_id, status, carbon, components, epochs_spec, monitor, mode, hyperparameters, flops=True,
           error=None, lost=None, partial_epoch=None, framework="lightning"):
    """epochs_spec: list of (time_s, {component: J or None}, eval_energy_j, train_flops, eval_flops, metrics)."""
    rows, methods = [], {name: [] for name in components}
    totals = {"epochs": 0, "time_s": 0.0, "train_flops": 0.0, "eval_flops": 0.0, "energy_j": 0.0,
              "emissions_gco2e": 0.0}
    best = None
    for index, (time_s, parts, eval_j, train_f, eval_f, metrics) in enumerate(epochs_spec):
        known = [v for v in parts.values() if v is not None]
        energy = sum(known) if known else None
        grams = emissions(energy, carbon["intensity_gco2e_per_kwh"], carbon["pue"])
        part_methods = {n: (components[n]["method"] if parts[n] is not None else "unavailable") for n in parts}
        for n, m in part_methods.items():
            if m not in methods[n]:
                methods[n].append(m)
        totals = {
            "epochs": totals["epochs"] + 1,
            "time_s": totals["time_s"] + time_s,
            # like the session: a FLOP total is unavailable (None) once an epoch was not counted
            "train_flops": None if not flops or totals["train_flops"] is None else totals["train_flops"] + train_f,
            "eval_flops": None if not flops or totals["eval_flops"] is None else totals["eval_flops"] + eval_f,
            "energy_j": None if totals["energy_j"] is None or energy is None else totals["energy_j"] + energy,
            "emissions_gco2e": None if totals["emissions_gco2e"] is None or grams is None
            else totals["emissions_gco2e"] + grams,
        }
        rows.append({"epoch": index, "time_s": time_s, "energy_j": energy, "component_energy_j": dict(parts),
                     "component_method": part_methods, "eval_energy_j": eval_j,
                     "train_flops": train_f if flops else None, "eval_flops": eval_f if flops else None,
                     "emissions_gco2e": grams, "totals": dict(totals), "metrics": metrics,
                     "missing_components": [n for n, v in parts.items() if v is None]})
        value = metrics.get(monitor)
        if value is not None and (best is None or (value > best["value"] if mode == "max" else value < best["value"])):
            best = {"epoch": index, "value": value, **totals}
    return {
        "schema": "green-callbacks/run/1",
        "run_id": run_id,
        "framework": framework,
        "status": status,
        "error": error,
        "stop_reason": None,
        "started_at": 1_790_000_000.0,
        "updated_at": 1_790_000_100.0,
        "world_size": 1,
        "carbon": carbon,
        "components": components,
        "methods": methods,
        "convergence": {"monitor": monitor, "mode": mode, "target": None, "best": best, "at_target": None},
        "hyperparameters": hyperparameters,
        "lost": lost or {},
        "resumed_from": None,
        "totals": totals,
        "epochs": rows,
        "partial_epoch": partial_epoch,
        "hardware": {"cpu_model": "Fixture CPU", "cpu_count": 2, "machine": "x86_64", "sensors": components},
        "software": {"green_callbacks": "0.1.0.dev0", "python": "3.11.7"},
    }


SWEEP_CARBON = {"intensity_gco2e_per_kwh": 400.0, "source": "Ember via Our World in Data", "year": 2023,
                "location": "DEU", "basis": "lifecycle", "kind": "country", "pue": 1.5}


def sweep_records():
    out = {}
    for i, lr in enumerate(LR_EFFECT):
        for j, bs in enumerate(BS_EFFECT):
            final = round(LR_EFFECT[lr] + BS_EFFECT[bs], 6)
            epochs = [(10.0, {"gpu": GPU_J[bs], "cpu": CPU_J}, 10.0, 1e12, 1e11,
                       {"val_acc": round(final - delta, 6), "train_loss": 1.0 - delta})
                      for delta in (0.10, 0.05, 0.0)]
            components = {"gpu": {"scope": "device", "method": "nvml-energy-counter",
                                  "devices": [{"nvml_index": 0, "cuda_index": 0, "name": "NVIDIA A100-SXM4-80GB",
                                               "method": "nvml-energy-counter"}]},
                          "cpu": {"scope": "node", "method": "rapl"}}
            out[f"sweep/green-run-sweep-{i}{j}.json"] = record(
                run_id=f"sweep{i}{j}" + "0" * 24, status="completed", carbon=SWEEP_CARBON, components=components,
                epochs_spec=epochs, monitor="val_acc", mode="max",
                hyperparameters={"lr": lr, "batch_size": bs, "optimizer": "sgd"})
    return out


def single_record():
    carbon = {"intensity_gco2e_per_kwh": 56.0, "source": "Ember via Our World in Data", "year": 2023,
              "location": "FRA", "basis": "lifecycle", "kind": "country", "pue": 1.2}
    components = {
        "gpu": {"scope": "device", "method": "nvml-energy-counter",
                "devices": [{"nvml_index": 0, "cuda_index": 0, "name": "NVIDIA H100 80GB HBM3",
                             "method": "nvml-energy-counter"}]},
        "cpu": {"scope": "node", "method": "rapl"},
        "ram": {"scope": "node", "method": "estimate-ram-per-gb"},
    }
    epochs = [(2.0, {"gpu": 600.0, "cpu": 30.0, "ram": 10.0}, 40.0, 4e14, 1e13, {"val_loss": loss})
              for loss in (1.0, 0.5, 0.6)]
    return {"single/green-run-single.json": record(
        run_id="single" + "0" * 26, status="completed", carbon=carbon, components=components, epochs_spec=epochs,
        monitor="val_loss", mode="min", hyperparameters={"lr": 0.001, "model": {"layers": 2, "width": 64}})}


def crashed_record():
    carbon = {"intensity_gco2e_per_kwh": 481.0, "source": "Ember via Our World in Data (world)", "year": 2023,
              "location": "world", "basis": "lifecycle", "kind": "world-average", "pue": 1.0}
    components = {"gpu": {"scope": "device", "method": "nvml-power", "lost": "NVMLError_GpuIsLost after epoch 0"},
                  "cpu": {"scope": "node", "method": "rapl"}}
    epochs = [(5.0, {"gpu": 100.0, "cpu": 25.0}, 0.0, None, None, {"val_acc": 0.5}),
              (5.0, {"gpu": None, "cpu": 25.0}, 0.0, None, None, {"val_acc": 0.6})]
    partial = {"epoch": 2, "time_s": 0.7, "energy_j": 10.0, "component_energy_j": {"gpu": None, "cpu": 10.0},
               "component_method": {"gpu": "unavailable", "cpu": "rapl"}, "train_flops": 0.0, "eval_flops": 0.0,
               "note": "incomplete epoch, this process only"}
    return {"crashed/green-run-interrupted.json": record(
        run_id="crashed" + "0" * 25, status="interrupted", carbon=carbon, components=components,
        epochs_spec=epochs, monitor="val_acc", mode="max", hyperparameters={}, flops=False,
        error="KeyboardInterrupt", lost={"gpu": "NVMLError_GpuIsLost"}, partial_epoch=partial)}


def main():
    files = {**sweep_records(), **single_record(), **crashed_record()}
    for name, data in files.items():
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (HERE / "bad").mkdir(exist_ok=True)
    (HERE / "bad/green-run-corrupt.json").write_text('{"schema": "green-callbacks/run/1", "status": "comp',
                                                     encoding="utf-8")
    future = dict(files["single/green-run-single.json"], schema="green-callbacks/run/2")
    (HERE / "bad/green-run-future.json").write_text(json.dumps(future, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

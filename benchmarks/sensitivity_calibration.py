"""How often the report's sensitivity verdicts are right on simulated random searches (docs/report.md).

Each search: ``runs`` trials with ``lr`` log-uniform in 1e-5 .. 1e-1, ``weight_decay`` log-uniform in 1e-6 .. 1e-2
and ``dropout`` uniform in 0 .. 0.5; best metric ``0.9 + noise(sd 0.01)``, minus ``0.05 (log10 lr + 3)^2`` when the
learning rate matters. Prints, over ``searches`` seeds, how often ``lr`` was found to matter (when it does) and how
often a parameter without effect was called "matters", "negligible" or "unclear".

    python benchmarks/sensitivity_calibration.py [runs] [searches]
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter

from green_callbacks.core.search import ParamSpace
from green_callbacks.report.sensitivity import importances

SPACE = {"lr": ParamSpace("log"), "weight_decay": ParamSpace("log"), "dropout": ParamSpace("linear")}


def search(seed: int, runs: int, lr_matters: bool) -> dict:
    rng = random.Random(seed)
    columns: dict[str, list[float]] = {"lr": [], "weight_decay": [], "dropout": []}
    metric = []
    for _ in range(runs):
        lr, wd, dropout = 10 ** rng.uniform(-5, -1), 10 ** rng.uniform(-6, -2), rng.uniform(0.0, 0.5)
        columns["lr"].append(lr)
        columns["weight_decay"].append(wd)
        columns["dropout"].append(dropout)
        metric.append(0.9 + rng.gauss(0.0, 0.01) - (0.05 * (math.log10(lr) + 3) ** 2 if lr_matters else 0.0))
    return importances(columns, metric, "max", space=SPACE)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    searches = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    found, null = Counter(), Counter()
    for seed in range(searches):
        result = search(seed, runs, lr_matters=True)
        found[result["lr"].verdict.split(" (")[0]] += 1
        null.update(result[name].verdict.split(" (")[0] for name in ("weight_decay", "dropout"))
        result = search(10_000 + seed, runs, lr_matters=False)
        null.update(imp.verdict.split(" (")[0] for imp in result.values())
    print(f"{searches} searches of {runs} runs")
    print(f"lr (matters): {dict(found)}")
    print(f"parameters without effect ({sum(null.values())}): {dict(null)}")


if __name__ == "__main__":
    main()

"""Cost of an epoch boundary on the training thread as a run grows: ``epoch_start`` + ``epoch_end`` of a Session.

Drives one :class:`~green_callbacks.core.session.Session` (this machine's sensors, or ``--fake`` step sensors) for
``--epochs`` epochs with a few user metrics, and reports the time of each boundary at the start of the run and near
its end, plus the time of ``start`` and ``finish``. Before the append-only record, every epoch rewrote the whole
record (O(epochs) per epoch); now an epoch hands one line to a background writer.

    python benchmarks/epoch_cost.py [--epochs 2000] [--fake]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--fake", action="store_true", help="step sensors instead of this machine's")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from green_callbacks.core.config import GreenConfig
    from green_callbacks.core.distributed import DistInfo, identity_reducer
    from green_callbacks.core.sensors.fake import StepEnergySensor
    from green_callbacks.core.session import Session

    sensors = None
    if args.fake:
        sensors = [StepEnergySensor("gpu", 1.0), StepEnergySensor("cpu", 2.0, scope="node"),
                   StepEnergySensor("ram", 0.5, scope="node")]
    with tempfile.TemporaryDirectory() as root:
        session = Session(GreenConfig(country="FR", output_dir=root, monitor="val_loss"), framework="bench",
                          sensors=sensors, dist=DistInfo(), reducer=identity_reducer)
        t0 = time.perf_counter()
        session.start(hyperparameters={"lr": 1e-3, "batch_size": 128}, device_indices=[])
        start_ms = (time.perf_counter() - t0) * 1e3
        costs = []
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            session.epoch_start(epoch)
            session.eval_start()
            session.eval_end()
            session.epoch_end({"loss": 1.0 / (epoch + 1), "val_loss": 1.0 / (epoch + 1), "val_acc": 0.5})
            costs.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        session.finish("completed")
        finish_ms = (time.perf_counter() - t0) * 1e3

    def med(part: list[float]) -> str:
        return f"{statistics.median(part):.2f}"

    n = len(costs)
    print(f"sensors: {'fake step sensors' if args.fake else 'this machine'}; epochs: {n}")
    print("| start ms | epochs 1-20 ms (median) | epochs "
          f"{max(n // 2 - 10, 1)}-{n // 2 + 10} | epochs {max(n - 20, 1)}-{n} | finish ms |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {start_ms:.2f} | {med(costs[:20])} | {med(costs[n // 2 - 10:n // 2 + 10] or costs)} | "
          f"{med(costs[-20:])} | {finish_ms:.1f} |")


if __name__ == "__main__":
    main()

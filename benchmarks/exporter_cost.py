"""Cost of the Prometheus exporter per epoch: the same Tracker loop with and without an exporter being scraped.

The exporter adds nothing to the training thread (a collector reads the session's rows when scraped); what it
can cost is the scraping thread competing for the interpreter while an epoch runs. To make that visible this
scrapes far more often than Prometheus would (``--scrape-every 0.05`` s against Prometheus' default 15 s) and
reports: the median epoch time without the exporter, with it, their difference per epoch, and the time of one
scrape (collect + text exposition + HTTP on loopback).

    python benchmarks/exporter_cost.py [--epochs 20] [--steps 200] [--scrape-every 0.05] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import urllib.request
import warnings


def _epoch_times(steps: int, epochs: int, scrape_every: float | None) -> tuple[list[float], list[float]]:
    import torch
    from torch import nn

    from green_callbacks.core.sensors.fake import ConstantPowerSensor
    from green_callbacks.loop import Tracker
    from green_callbacks.prometheus import serve

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    scrapes: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        tracker = Tracker(carbon_intensity=100.0, output_dir=root, sensors=[
            ConstantPowerSensor("gpu", 100.0), ConstantPowerSensor("cpu", 20.0, scope="node")])
        exporter = serve(tracker, job="bench", port=0) if scrape_every else None
        stop = threading.Event()

        def scrape() -> None:
            while not stop.wait(scrape_every or 1.0):
                t0 = time.perf_counter()
                urllib.request.urlopen(exporter.url, timeout=10).read()  # type: ignore[union-attr]
                scrapes.append(time.perf_counter() - t0)

        scraper = threading.Thread(target=scrape, daemon=True)
        if exporter is not None:
            scraper.start()
        times = []
        with tracker:
            for _ in range(epochs):
                t0 = time.perf_counter()
                with tracker.epoch():
                    for _ in range(steps):
                        opt.zero_grad()
                        nn.functional.cross_entropy(model(x), y).backward()
                        opt.step()
                        tracker.step((x, y))
                times.append(time.perf_counter() - t0)
        stop.set()
        if exporter is not None:
            scraper.join()
            exporter.close()
    return times, scrapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--scrape-every", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    base: list[float] = []
    served: list[float] = []
    scrapes: list[float] = []
    for _ in range(args.repeats):  # interleaved A/B, so drift of the machine hits both
        base += _epoch_times(args.steps, args.epochs, None)[0][1:]
        times, taken = _epoch_times(args.steps, args.epochs, args.scrape_every)
        served += times[1:]
        scrapes += taken
    a, b = statistics.median(base), statistics.median(served)
    print(f"epochs of {args.steps} steps, {len(base)} per arm, scrape every {args.scrape_every} s")
    print(f"median epoch without exporter: {a * 1e3:.2f} ms")
    print(f"median epoch with exporter:    {b * 1e3:.2f} ms  (difference {1e3 * (b - a):+.2f} ms, "
          f"{100 * (b - a) / a:+.2f} %)")
    print(f"scrapes: {len(scrapes)}, median {1e3 * statistics.median(scrapes):.2f} ms, "
          f"max {1e3 * max(scrapes):.2f} ms")


if __name__ == "__main__":
    main()

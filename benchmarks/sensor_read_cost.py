"""Cost of one all-sensor read at an epoch boundary, for each sensor path, on this machine.

Run: python benchmarks/sensor_read_cost.py [--reads 2000]

An epoch boundary reads every sensor once (``Meter.read``). This script times that read for:
- the machine's own sensors as ``Session`` builds them (here: NVML unavailable, CPU-time and RSS estimates);
- a fake NVML with 8 GPUs on the energy-counter path (the Python and pynvml-binding overhead, not the driver's);
- a fake powercap tree with two sockets (package + dram), read from a temporary folder.
Prints the median and 90th percentile per read in microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from green_callbacks.core.meter import Meter


def time_reads(meter: Meter, reads: int) -> tuple[float, float]:
    meter.start()
    samples = []
    for _ in range(reads):
        t0 = time.perf_counter()
        meter.read()
        samples.append((time.perf_counter() - t0) * 1e6)
    meter.close()
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * len(samples))]


def machine_sensors():
    from green_callbacks.core.sensors.host import build_host_sensors
    from green_callbacks.core.sensors.nvml import build_gpu_sensor

    return [build_gpu_sensor(), *build_host_sensors()]


def fake_nvml_sensor(n_gpus: int):
    from green_callbacks.core.sensors import _nvml_lib as lib
    from green_callbacks.core.sensors.nvml import build_gpu_sensor
    from tests.fakes import fake_pynvml

    fake = fake_pynvml.FakePynvml([fake_pynvml.FakeGpu() for _ in range(n_gpus)])
    lib._load_pynvml = lambda: fake  # type: ignore[assignment]
    lib._init_lib = None
    lib._init_error = None
    return build_gpu_sensor(gpus=list(range(n_gpus)))


def fake_rapl_sensors(root: Path):
    from green_callbacks.core.sensors.host import build_host_sensors
    from tests.fakes.powercap import FakePowercap

    tree = FakePowercap(root)
    for socket in (0, 1):
        tree.add_zone(f"intel-rapl:{socket}", f"package-{socket}", energy_uj=1_000_000)
        tree.add_zone(f"intel-rapl:{socket}:0", "dram", energy_uj=500_000)
    return list(build_host_sensors(rapl_root=tree.root))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    rows = [("machine sensors (NVML absent, estimates)", Meter(machine_sensors()))]
    try:
        gpu = fake_nvml_sensor(8)
        if gpu is not None:
            rows.append(("fake NVML, 8 GPUs, energy counter", Meter([gpu])))
    except Exception as err:  # the fake's API is a test detail; say so rather than fail
        print(f"(fake NVML path skipped: {err})")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rows.append(("fake RAPL, 2 sockets (package + dram)", Meter(fake_rapl_sensors(Path(tmp)))))
        except Exception as err:
            print(f"(fake RAPL path skipped: {err})")
        print(f"{'sensors':45}  {'median µs':>10}  {'p90 µs':>8}   ({args.reads} reads each)")
        for name, meter in rows:
            median, p90 = time_reads(meter, args.reads)
            print(f"{name:45}  {median:10.1f}  {p90:8.1f}")


if __name__ == "__main__":
    main()

"""The CPU estimates where RAPL is unreadable, side by side on the same workload: 12 W/core vs the model's TDP.

Run: python benchmarks/cpu_estimate.py [--seconds 20] [--model "AMD EPYC 9654"] [--threads-per-package 192]

Both sensors read the same CPU seconds of this process (a busy matrix-multiply loop in torch, one thread), so
their ratio is the ratio of their watts per busy logical CPU; what the run shows is the absolute figures and which
row of the TDP table this machine matches. Without ``--model`` the machine's own ``/proc/cpuinfo`` is used, and a
virtual machine or an unknown model falls back to 12 W/core (the TDP column then says why). With ``--model`` the
TDP estimate is computed *as if* on bare metal with that CPU (an assumption, printed). If RAPL is readable the
measured package energy is printed too (on this project's CI machine it is not: no powercap in the VM).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from green_callbacks.core.sensors.cpu_tdp import CpuInfo, match_cpu_model, read_cpuinfo
from green_callbacks.core.sensors.estimate import CpuTdpEstimateSensor, CpuTimeEstimateSensor
from green_callbacks.core.sensors.host import build_host_sensors


def busy(seconds: float) -> int:
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", help="CPU model to assume for the TDP estimate (default: this machine's)")
    parser.add_argument("--threads-per-package", type=int, help="logical CPUs per package of --model")
    args = parser.parse_args()

    here = read_cpuinfo()
    print(f"this machine: model {here.model!r}, {here.threads_per_package} logical CPU(s) per package, "
          f"virtual machine: {here.virtual_machine}")
    if args.model:
        if not args.threads_per_package:
            parser.error("--model needs --threads-per-package")
        info = CpuInfo(args.model, args.threads_per_package, 1, False)
        print(f"assumed for the TDP estimate: {args.model!r} on bare metal, {args.threads_per_package} logical CPUs")
    else:
        info = here
    match = match_cpu_model(info.model)
    time_sensor = CpuTimeEstimateSensor()
    if match is not None and info.threads_per_package and not info.virtual_machine:
        tdp_sensor = CpuTdpEstimateSensor(match, info.threads_per_package)
    else:
        tdp_sensor = build_host_sensors(cpuinfo=info)[0]
    rapl_cpu, rapl_ram = build_host_sensors()
    import torch  # noqa: F401  (imported before the window opens)

    for sensor in (time_sensor, tdp_sensor, rapl_cpu):
        sensor.start()
    t0 = time.perf_counter()
    steps = busy(args.seconds)
    wall = time.perf_counter() - t0
    readings = {"12 W/core (estimate-cpu-time)": time_sensor.read(), "TDP": tdp_sensor.read(),
                "host builder (RAPL if readable)": rapl_cpu.read()}
    rapl_ram.close()
    print(f"workload: {steps} steps of tanh(A @ A), 256×256, one thread, {wall:.1f} s wall, "
          f"{time_sensor._last_s - (time_sensor._base_s or 0.0):.1f} CPU-s of this process")
    for name, reading in readings.items():
        joules = "unavailable" if reading.energy_j is None else f"{reading.energy_j:.1f} J"
        print(f"  {name:34s} {joules:>12s}  [{reading.method}] {reading.note}")
    a, b = readings["TDP"].energy_j, readings["12 W/core (estimate-cpu-time)"].energy_j
    if a is not None and b:
        print(f"  ratio TDP / 12 W-per-core: {a / b:.3f}")


if __name__ == "__main__":
    main()

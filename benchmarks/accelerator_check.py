"""First check of an accelerator sensor on real hardware (AMD ROCm, Intel XPU, Apple MPS, TPU, or NVIDIA).

Not run yet on any of them: no such device was available. Run it on the machine, then compare its numbers with
the vendor's own tool running at the same time (`amd-smi metric -p -w 1`, `xpu-smi stats -d 0`,
`sudo powermetrics --samplers gpu_power -i 1000`, `tpu-info`, `nvidia-smi -l 1`).

    python benchmarks/accelerator_check.py            # the device type torch trains on here
    python benchmarks/accelerator_check.py --type rocm --seconds 20

It builds the sensor through the same factory the adapters use, idles 5 s, then runs matmuls for ``--seconds`` on
device 0, and prints: the method, the sensor's info (device mapping), the idle and loaded mean power (energy / time),
and a plausibility verdict (loaded above idle, both below the 2 kW bound). Needs torch built for the device, plus
the extra: ``pip install "green-callbacks[amd|intel|apple|tpu]"``.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    import torch

    from green_callbacks.core.sensors.accelerators import build_accelerator_sensor, torch_device_type

    parser = argparse.ArgumentParser()
    parser.add_argument("--type", default=None, help="cuda, rocm, xpu, mps or tpu (default: what torch has)")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    if args.type in (None, "cuda", "rocm") and torch.cuda.is_available():
        device = torch.device("cuda", 0)
    elif args.type in (None, "xpu") and hasattr(torch, "xpu") and torch.xpu.is_available():
        device = torch.device("xpu", 0)
    elif args.type in (None, "mps") and torch.backends.mps.is_available():
        device = torch.device("mps")
    elif args.type == "tpu":
        import torch_xla.core.xla_model as xm  # type: ignore[import-not-found]

        device = xm.xla_device()
    else:
        raise SystemExit(f"no {args.type or 'accelerator'} device for torch here")
    device_type = args.type or torch_device_type(device)
    sensor = build_accelerator_sensor(device_type, [0])
    print("device type:", device_type, "| sensor:", type(sensor).__name__)
    print(json.dumps(sensor.info(), indent=2, default=str))

    def window(seconds: float, load: bool) -> tuple[float | None, float]:
        first = sensor.read()
        t0 = time.perf_counter()
        if load:
            a = torch.randn(4096, 4096, device=device)
            while time.perf_counter() - t0 < seconds:
                a = (a @ a).clamp_(-1, 1)
            if device.type == "xla":
                import torch_xla.core.xla_model as xm  # type: ignore[import-not-found]

                xm.mark_step()
            float(a.sum())  # wait for the device
        else:
            time.sleep(seconds)
        last = sensor.read()
        elapsed = time.perf_counter() - t0
        print(f"  {'load' if load else 'idle'}: {last}")
        if first.energy_j is None or last.energy_j is None:
            return None, elapsed
        return (last.energy_j - first.energy_j) / elapsed, elapsed

    sensor.start()
    try:
        idle_w, _ = window(5.0, load=False)
        load_w, seconds = window(args.seconds, load=True)
    finally:
        sensor.close()
    print(f"idle mean power: {idle_w} W; loaded mean power over {seconds:.1f} s: {load_w} W")
    if idle_w is None or load_w is None:
        print("VERDICT: unavailable; the reading's note says why")
    else:
        ok = 0 <= idle_w < load_w < 2000
        print("VERDICT:", "plausible" if ok else "IMPLAUSIBLE", "- compare with the vendor tool's power meanwhile")


if __name__ == "__main__":
    main()

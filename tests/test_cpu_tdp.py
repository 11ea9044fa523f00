"""The per-model CPU estimate from the TDP table: name matching on real model strings, the sensor, the builder."""

from __future__ import annotations

import pytest

from green_callbacks.core.sensors.cpu_tdp import CpuInfo, match_cpu_model, normalise_cpu_model, read_cpuinfo
from green_callbacks.core.sensors.estimate import CpuTdpEstimateSensor, CpuTimeEstimateSensor
from green_callbacks.core.sensors.host import build_host_sensors

# real /proc/cpuinfo "model name" strings (and macOS brand strings) → the table row and its TDP (W)
REAL = [
    ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "Intel Xeon Platinum 8375C", 300.0),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "Intel Xeon E5-2686 v4", 145.0),
    ("Intel(R) Xeon(R) CPU E5-2620 v3 @ 2.40GHz", "Intel Xeon E5-2620 v3", 85.0),
    ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "Intel Xeon Gold 6248", 150.0),
    ("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", "Intel Core i7-8700K", 95.0),
    ("13th Gen Intel(R) Core(TM) i9-13900K", "Intel Core i9-13900K", 125.0),
    ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763", 280.0),
    ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654", 360.0),
    ("AMD Ryzen 9 5950X 16-Core Processor", "AMD Ryzen 9 5950X", 105.0),
    ("AMD Ryzen 7 PRO 4750U with Radeon Graphics", "AMD Ryzen 7 PRO 4750U", 15.0),
    ("AMD Ryzen Threadripper PRO 5995WX 64-Cores", "AMD Ryzen Threadripper PRO 5995WX", 280.0),
    ("Apple M1", "Apple M1", 10.0),
]


@pytest.mark.parametrize(("name", "row", "tdp"), REAL)
def test_real_model_strings_find_their_row(name, row, tdp):
    match = match_cpu_model(name)
    assert match is not None and (match.row_name, match.tdp_w) == (row, tdp)
    assert match.query == name and "cpu_power.csv" in match.source


def test_normalisation_drops_marks_frequency_and_core_counts():
    assert normalise_cpu_model("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz") == "intel xeon e5-2686 v4"
    assert normalise_cpu_model("AMD EPYC 7763 64-Core Processor") == "amd epyc 7763"
    assert normalise_cpu_model("12th Gen Intel® Core™ i7-12700H") == "intel core i7-12700h"


@pytest.mark.parametrize("name", [
    "AMD EPYC",                        # a VM hiding the model number (this project's CI machine)
    "Intel(R) Xeon(R) CPU @ 2.20GHz",  # Google Cloud's masked Xeon
    "Apple M1 Pro",                    # a different chip from the M1, not in the table
    "AMD EPYC 7B13",                   # a cloud-only part, not in the table
    "Intel Xeon Platinum 8375",        # not an 8375C
    "", None,
])
def test_no_model_number_or_unknown_model_never_matches(name):
    assert match_cpu_model(name) is None


def test_model_number_match_without_vendor_word():
    match = match_cpu_model("Xeon Platinum 8375C")
    assert match is not None and match.how == "model-number" and match.tdp_w == 300.0


def _match_over_the_whole_table(name):
    """The matching rules applied to every row of the table (no prefilter): the reference for match_cpu_model."""
    from green_callbacks.core.sensors.cpu_tdp import cpu_tdp_table

    def split(norm):
        words = norm.split()
        model = frozenset(w for w in words if any(c.isdigit() for c in w))
        return model, frozenset(words) - model

    vendors = {"intel", "amd", "apple", "arm"}
    query = normalise_cpu_model(name)
    rows = [(row, tdp, normalise_cpu_model(row)) for row, tdp in cpu_tdp_table()]
    hits = [(row, tdp) for row, tdp, norm in rows if norm == query]
    if hits and len({tdp for _, tdp in hits}) == 1:
        return hits[0][0], hits[0][1], "exact"
    model, words = split(query)
    if not model:
        return None
    found = [(row, tdp) for row, tdp, norm in rows
             if split(norm)[0] == model and split(norm)[1] - vendors == words - vendors]
    if not found or len({tdp for _, tdp in found}) != 1:
        return None
    return (*min(found), "model-number")


@pytest.mark.slow  # a scan of the whole CPU table per query: 13 s
def test_the_prefiltered_match_equals_the_rules_over_the_whole_table():
    """match_cpu_model normalises only the rows that can match; it must find what a scan of every row finds."""
    from green_callbacks.core.sensors.cpu_tdp import cpu_tdp_table

    names = [row for row, _ in cpu_tdp_table()[::97]]
    queries = names + [f"Intel(R) {n} CPU @ 2.20GHz" for n in names] + [n.split()[-1] for n in names] + [
        "AMD EPYC", "AMD EPYC 7B13", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "Apple M1 Pro", "Apple M1",
        "AMD Ryzen 7 5800X 8-Core Processor", "12th Gen Intel(R) Core(TM) i7-1260P", "Common KVM processor",
    ]
    for query in queries:
        found = match_cpu_model(query)
        assert (None if found is None else (found.row_name, found.tdp_w, found.how)) == \
            _match_over_the_whole_table(query), query


def test_read_cpuinfo(tmp_path):
    text = ("processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 0\nsiblings\t: 128\n"
            "flags\t\t: fpu vme sse\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n"
            "physical id\t: 1\nsiblings\t: 128\nflags\t\t: fpu vme sse\n")
    (tmp_path / "cpuinfo").write_text(text)
    assert read_cpuinfo(str(tmp_path / "cpuinfo")) == CpuInfo("AMD EPYC 7763 64-Core Processor", 128, 2, False)
    (tmp_path / "vm").write_text("model name\t: AMD EPYC\nsiblings\t: 2\nflags\t: fpu hypervisor sse\n")
    assert read_cpuinfo(str(tmp_path / "vm")).virtual_machine is True
    assert read_cpuinfo(str(tmp_path / "absent")) == CpuInfo(None, None, None, False)


def test_tdp_estimate_is_cpu_seconds_times_tdp_per_logical_cpu():
    seconds = iter([100.0, 110.0])
    sensor = CpuTdpEstimateSensor(match_cpu_model("AMD EPYC 7763 64-Core Processor"), 128,
                                  cpu_seconds=lambda: next(seconds), reason="no powercap")
    sensor.start()
    reading = sensor.read()
    # 10 CPU-seconds × 280 W / 128 logical CPUs = 21.875 J
    assert reading.energy_j == pytest.approx(21.875) and reading.method == "estimate-cpu-tdp"
    info = sensor.info()
    assert info["matched_row"] == "AMD EPYC 7763" and info["tdp_w"] == 280.0 and info["threads_per_package"] == 128
    assert "AMD EPYC 7763" in reading.note and "no powercap" in reading.note


def test_builder_picks_tdp_on_bare_metal_and_falls_back_elsewhere(tmp_path):
    absent = tmp_path / "absent"
    metal = CpuInfo("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", 40, 2, False)
    cpu, ram = build_host_sensors(absent, cpuinfo=metal)
    assert isinstance(cpu, CpuTdpEstimateSensor) and cpu.watts_per_core == pytest.approx(150.0 / 40)
    ram.close()

    cpu, ram = build_host_sensors(absent, cpuinfo=CpuInfo(metal.model, 4, 1, True))
    assert type(cpu) is CpuTimeEstimateSensor and cpu.watts_per_core == 12.0
    assert "virtual machine" in cpu.info()["tdp_not_used_because"]
    ram.close()

    cpu, ram = build_host_sensors(absent, cpuinfo=CpuInfo("AMD EPYC", 2, 1, False))
    assert type(cpu) is CpuTimeEstimateSensor and "not in the TDP table" in cpu.info()["tdp_not_used_because"]
    assert cpu.read().method == "estimate-cpu-time"
    ram.close()

    cpu, ram = build_host_sensors(absent, cpu_watts_per_core=8.0, cpuinfo=metal)  # the user's constant wins
    assert type(cpu) is CpuTimeEstimateSensor and cpu.info()["tdp_not_used_because"] == "cpu_watts_per_core was given"
    ram.close()

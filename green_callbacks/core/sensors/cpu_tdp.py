"""The CPU model of this machine and its TDP from a packaged table, for the CPU estimate where RAPL is unreadable.

The table ``data/cpu_power.csv`` (4,903 models, ``Name,TDP`` in watts) is CodeCarbon's ``cpu_power.csv``, MIT
(see ``core/data/SOURCES.md``). Matching is done here, on normalised names:

1. the name is normalised: lower case; ``(R)``, ``(TM)``, ``®``, ``™`` dropped; the words ``CPU``,
   ``Processor``, ``@ 2.20GHz``, ``N-Core``, ``Nth Gen``, ``with Radeon Graphics`` dropped; spaces collapsed;
2. an identical normalised name wins;
3. otherwise a row matches when its *model tokens* (the words holding a digit: ``i7-8700k``, ``8375c``, ``v4``)
   are exactly the name's and its other words are the same apart from vendor names (``Xeon 8375`` never
   matches ``Xeon 8375C``; ``Apple M1 Pro`` never matches ``Apple M1``); rows that agree on the TDP count as one;
4. no match — or several rows with different TDPs — is no match: the caller falls back to the per-core estimate.
   A name without a model number (``AMD EPYC``, as some virtual machines show) never matches.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["CpuInfo", "CpuMatch", "cpu_tdp_table", "machine_cpuinfo", "match_cpu_model", "normalise_cpu_model",
           "read_cpuinfo"]

TABLE_SOURCE = "CodeCarbon cpu_power.csv (mlco2/codecarbon b05965e, MIT), green_callbacks/core/data/cpu_power.csv"

_DROP = [
    r"\((?:r|tm)\)", "®", "™",
    r"@\s*[\d.]+\s*[gm]hz",               # "@ 2.20GHz"
    r"\b\d+(?:st|nd|rd|th)\s+gen\b",      # "12th Gen"
    r"\b\d+-cores?\b", r"\b(?:eight|six|quad|dual|octa|hexa)-core\b",
    r"\bwith radeon(?: \w+)* graphics\b", r"\bw/ radeon(?: \w+)* graphics\b",
    r"\bcpu\b", r"\bprocessors?\b", r"\bapu\b",
]


def normalise_cpu_model(name: str) -> str:
    """``"Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz"`` → ``"intel xeon e5-2686 v4"``."""
    text = name.lower()
    for pattern in _DROP:
        text = re.sub(pattern, " ", text)
    text = re.sub(r"[,;]", " ", text)
    return " ".join(text.split())


def _split(normalised: str) -> tuple[frozenset[str], frozenset[str]]:
    words = normalised.split()
    model = frozenset(w for w in words if any(c.isdigit() for c in w))
    return model, frozenset(words) - model


@dataclass(frozen=True)
class CpuMatch:
    """The table row used for a CPU model name: ``row_name`` as written in the table, its TDP, and how it matched
    (``"exact"`` or ``"model-number"``)."""

    query: str
    row_name: str
    tdp_w: float
    how: str
    source: str = TABLE_SOURCE


@lru_cache(maxsize=1)
def cpu_tdp_table() -> tuple[tuple[str, float], ...]:
    """``(name, tdp_w)`` for every row of the packaged table."""
    text = (resources.files("green_callbacks.core") / "data" / "cpu_power.csv").read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    if "Name" not in header or "TDP" not in header:
        return ()
    at_name, at_tdp = header.index("Name"), header.index("TDP")
    rows = []
    for row in reader:
        try:
            rows.append((row[at_name].strip(), float(row[at_tdp])))
        except (IndexError, ValueError):
            continue
    return tuple(rows)


@lru_cache(maxsize=1)
def _lowered() -> tuple[tuple[str, str, float], ...]:
    """``(lower-case name, name, tdp_w)`` per row: what :func:`match_cpu_model` scans."""
    return tuple((name.lower(), name, tdp) for name, tdp in cpu_tdp_table())


def _rows_containing(needles: frozenset[str]) -> list[tuple[str, float]]:
    """The rows whose lower-case name contains every needle, in table order. Each word of a normalised name is a
    piece of the lower-case name (normalising only blanks parts out), so a row whose normalised name holds all the
    needles as words is among these: the few of them are normalised, not the whole table (~50 ms at a run's start)."""
    return [(name, tdp) for low, name, tdp in _lowered() if all(n in low for n in needles)]


_VENDORS = frozenset({"intel", "amd", "apple", "arm"})


def _same_words(row_words: frozenset[str], words: frozenset[str]) -> bool:
    """Equal apart from vendor names (a row may lack ``intel``; an ``M1 Pro`` is not an ``M1``)."""
    return row_words - _VENDORS == words - _VENDORS


@lru_cache(maxsize=64)
def match_cpu_model(name: str | None) -> CpuMatch | None:
    """The table row for a CPU model name (``/proc/cpuinfo``'s ``model name``), or ``None`` (see module doc).
    Kept per name: a later fit in the same process does not scan the table again."""
    if not name or not name.strip():
        return None
    query = normalise_cpu_model(name)
    model, words = _split(query)
    # an exact match holds every word of the query, a model-number match every model token
    rows = [(row, tdp, normalise_cpu_model(row)) for row, tdp in _rows_containing(model or words)]
    hits = [(row, tdp) for row, tdp, norm in rows if norm == query]
    if hits and len({tdp for _, tdp in hits}) == 1:
        return CpuMatch(name, hits[0][0], hits[0][1], "exact")
    if not model:
        return None
    split = [(row, tdp, _split(norm)) for row, tdp, norm in rows]
    candidates = [(row, tdp) for row, tdp, (row_model, row_words) in split
                  if row_model == model and _same_words(row_words, words)]
    if not candidates or len({tdp for _, tdp in candidates}) != 1:
        return None
    best = min(candidates)
    return CpuMatch(name, best[0], best[1], "model-number")


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says: the model name, logical CPUs per package (``siblings``), packages, and whether
    the kernel runs under a hypervisor (the ``hypervisor`` flag)."""

    model: str | None
    threads_per_package: int | None
    packages: int | None
    virtual_machine: bool


@lru_cache(maxsize=1)
def machine_cpuinfo() -> CpuInfo:
    """This machine's :func:`read_cpuinfo`, read once per process (it does not change while the process runs)."""
    return read_cpuinfo()


def read_cpuinfo(path: str = "/proc/cpuinfo") -> CpuInfo:
    """Parse ``path`` (Linux); an empty :class:`CpuInfo` where it cannot be read."""
    model: str | None = None
    siblings: int | None = None
    packages: set[str] = set()
    vm = False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if not sep:
                    continue
                key, value = key.strip().lower(), value.strip()
                if key == "model name" and model is None:
                    model = value or None
                elif key == "siblings" and siblings is None and value.isdigit():
                    siblings = int(value)
                elif key == "physical id":
                    packages.add(value)
                elif key == "flags" and not vm:
                    vm = "hypervisor" in value.split()
    except OSError:
        return CpuInfo(None, None, None, False)
    return CpuInfo(model, siblings, len(packages) or None, vm)

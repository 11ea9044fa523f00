"""Every ``green/...`` key the documentation names is one the code emits.

Keys are read from README.md and docs/*.md. A brace list (``green/epoch_{gpu,cpu,ram}_energy_kwh``) stands for each of
its names, ``<kind>`` / ``<phase>`` for each phase kind, and ``*`` for any run of characters: such a pattern must match
at least one key. ``green/...`` (any key) is not checked.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from pathlib import Path

from green_callbacks.core.metric_keys import METRIC_KEYS
from green_callbacks.core.phase import PHASE_KINDS, phase_metric_keys

ROOT = Path(__file__).resolve().parents[1]
HF_TOTAL_FLOS_KEY = "green/hf_total_flos"  # green_callbacks.transformers.HF_TOTAL_FLOS_KEY (imports transformers)
KNOWN = {*METRIC_KEYS, HF_TOTAL_FLOS_KEY, *(k for kind in PHASE_KINDS for k in phase_metric_keys(kind))}
_KEY = re.compile(r"green/[A-Za-z0-9_{}<>*,]+")


def _expand(pattern: str) -> list[str]:
    """The patterns a documented key stands for: brace lists and ``<kind>`` / ``<phase>`` spelled out."""
    pattern = pattern.replace("<phase>", "<kind>").replace("<kind>", "{" + ",".join(PHASE_KINDS) + "}")
    parts = re.split(r"\{([^{}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def documented_keys() -> dict[str, list[str]]:
    """Each key pattern named in the docs, with the files naming it."""
    found: dict[str, list[str]] = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in _KEY.findall(path.read_text(encoding="utf-8")):
            key = match.rstrip(",.")
            if key.endswith("_<what>") or key == "green/":
                continue  # the naming scheme, not a key
            found.setdefault(key, []).append(path.name)
    return found


def test_documented_keys_exist() -> None:
    keys = documented_keys()
    assert len(keys) > 30  # the scan finds the docs' keys (a broken pattern would find none and pass)
    missing = {}
    for key, files in keys.items():
        for pattern in _expand(key):
            if not fnmatch.filter(KNOWN, pattern):
                missing[pattern] = sorted(set(files))
    assert not missing, f"documented keys the code does not emit: {missing}"


def test_expansion() -> None:
    assert _expand("green/epoch_{gpu,cpu}_energy_kwh") == ["green/epoch_gpu_energy_kwh", "green/epoch_cpu_energy_kwh"]
    assert "green/predict_energy_kwh" in _expand("green/<kind>_energy_kwh")
    assert not fnmatch.filter(KNOWN, "green/test_energy_kwhX")

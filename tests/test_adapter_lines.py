"""Every function of the four adapters is classified in ``benchmarks/adapter_lines.py`` (a new or grown function
without its classification fails here, not in a later measurement), and the logic a fifth framework would write again
stays at most 10 % of each adapter's code lines (issue "One model of a run")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("adapter_lines", ROOT / "benchmarks" / "adapter_lines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_adapter_function_is_classified_and_rewritten_logic_stays_under_a_tenth():
    script = _script()
    assert set(script.ADAPTERS) == {"lightning", "keras", "transformers", "loop"}
    for adapter in script.ADAPTERS:
        counts = script.per_function(script.source(adapter, None))
        assert sum(counts.values()) > 100  # the adapter's code was read
        mapping, framework, rewritten = (sum(part) for part in zip(
            *(script.split(name, lines, script.AFTER[adapter]) for name, lines in counts.items()), strict=True))
        assert mapping + framework + rewritten == sum(counts.values())
        assert rewritten <= 0.10 * sum(counts.values()), adapter


def test_an_unclassified_function_is_an_error():
    script = _script()
    try:
        script.split("GreenCallback._something_new", 3, script.AFTER["keras"])
    except SystemExit as err:
        assert "not classified" in str(err)
    else:
        raise AssertionError("an unclassified function passed")

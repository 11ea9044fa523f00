"""No module in ``report/`` reads a record's raw dict: the report reads the reader's types
(:class:`~green_callbacks.core.record.RunRecord` and its sections), so the writer's and the reader's model of a run
cannot drift apart unseen.

An AST scan of every report module finds any subscript or ``.get`` of a record (``record["x"]``,
``run.record.get("x")``, ``record.data``, a chain on them), any unpacking of one (``dict(record)``, ``{**record}``)
and any use of the raw readers (``read_record``, ``read_json_file``); the scan is shown to catch planted examples of
each, and to pass typed reads. The run-time check (``test_record_model.py``) renders every format with the records'
raw dicts replaced by one that fails on any read.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import green_callbacks.report

REPORT = Path(green_callbacks.report.__file__).parent
RAW_READERS = {"read_record", "read_json_file", "read_epochs_log"}
_RECORD = re.compile(r"(^|\.)record(\.data)?$")
"""An expression naming a record or its raw dict: ``record``, ``run.record``, ``x.record.data``."""


def _is_record(node: ast.AST) -> bool:
    """Whether ``node`` is a record, its raw dict, or a value read from one (a chain of subscripts and gets)."""
    if isinstance(node, ast.BoolOp):  # (record.get("a") or {}).get("b")
        return any(_is_record(v) for v in node.values)
    if _raw_read(node):
        return True
    return bool(_RECORD.search(ast.unparse(node)))


def _raw_read(node: ast.AST) -> bool:
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return _is_record(node.value)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "items",
                                                                                                  "keys", "values")):
        return _is_record(node.func.value)
    return False


def raw_reads(source: str) -> list[str]:
    """Every raw read of a record in ``source``, as ``"<line>: <code>"``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        hit = _raw_read(node)
        if isinstance(node, ast.Attribute) and node.attr == "data" and re.search(r"(^|\.)record$",
                                                                                   ast.unparse(node.value)):
            hit = True  # record.data: the raw dict itself
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("dict", "list") \
                and node.args and _is_record(node.args[0]):
            hit = True
        if isinstance(node, ast.Dict) and any(k is None and _is_record(v) for k, v in zip(node.keys, node.values,
                                                                                       strict=True)):
            hit = True  # {**record}
        if isinstance(node, ast.Name) and node.id in RAW_READERS:
            hit = True
        if isinstance(node, ast.alias) and node.name in RAW_READERS:
            hit = True
        if hit:
            code = node.name if isinstance(node, ast.alias) else ast.unparse(node)
            found.append(f"{getattr(node, 'lineno', '?')}: {code}")
    return found


PLANTED = (
    'record.get("footprint")',
    'run.record["epochs"]',
    'run.record.data.get("hardware")',
    '(record.get("phase") or {}).get("samples")',
    'record["flops"]["epoch_methods"][0]',
    'info = run.record.data',
    'dict(record)',
    '{**run.record, "x": 1}',
    'from green_callbacks.core.record import read_record',
    'rows = read_json_file(path)',
    'for key in record.keys(): pass',
)
TYPED = (
    "run.record.footprint.embodied.total_gco2e",
    "record.flops.epochs[0].method",
    "run.record.epochs[-1].peak_flops_per_s",
    "record.components.get('gpu')",
    "parts.get('gpu')",
    "row['per']",
    "run.hyperparameters.get('num_parameters')",
    "as_record(record).is_phase",
)


def test_the_scan_catches_every_planted_raw_read() -> None:
    for code in PLANTED:
        assert raw_reads(code), code


def test_the_scan_passes_typed_reads() -> None:
    for code in TYPED:
        assert raw_reads(code) == [], code


def test_no_report_module_reads_a_records_raw_dict() -> None:
    modules = sorted(REPORT.glob("*.py"))
    names = {m.name for m in modules}
    # the scan sees the report's modules (not an empty or wrong folder)
    assert {"runs.py", "render.py", "footprint.py", "inference.py", "efficiency.py", "plots.py", "boamps.py",
            "card.py", "sweep.py", "summary.py", "latex.py"} <= names and len(modules) >= 15
    found = {m.name: raw_reads(m.read_text(encoding="utf-8")) for m in modules}
    assert {name: hits for name, hits in found.items() if hits} == {}

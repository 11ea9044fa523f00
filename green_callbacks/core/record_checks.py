"""The checks the record reader applies to each field: its type and range, or :class:`Invalid` naming the field.

One set of checks for every part of a record (:mod:`green_callbacks.core.record` and
:mod:`green_callbacks.core.record_sections`), so a wrong type reads the same way wherever it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_MAGNITUDE", "MAX_METRIC", "Invalid", "integer", "number", "obj", "strings", "text", "type_name"]

MAX_MAGNITUDE = 1e30
"""Largest magnitude of a measured quantity (J, s, FLOPs, gCO2e, gCO2e/kWh): far above any real run (the largest
training runs are ~1e26 FLOPs; the world's yearly energy use is ~6e20 J), far below float overflow."""
MAX_METRIC = 1e100
"""Largest magnitude of a metric's value (a diverged loss included): its square, used by the sweep statistics,
stays finite."""


class Invalid(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"field {where!r} {message}")


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def obj(value: Any, where: str, *, optional: bool = True) -> Mapping[str, Any]:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise Invalid(where, f"must be an object, found {type_name(value)}")
    return value


def text(value: Any, where: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Invalid(where, f"must be a string, found {type_name(value)}")
    return value


def number(value: Any, where: str, *, optional: bool = True, minimum: float | None = 0.0,
            limit: float | None = MAX_MAGNITUDE) -> float | None:
    """A finite number (not a boolean), ``>= minimum`` and at most ``limit`` in magnitude; ``None`` if optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(where, f"must be a number, found {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise Invalid(where, f"is out of range (an integer of {len(str(abs(value)))} digits)") from None
    if not math.isfinite(number) or (limit is not None and abs(number) > limit):
        raise Invalid(where, f"is out of range ({number:.4g}; at most {limit:g} in magnitude)")
    if minimum is not None and number < minimum:
        raise Invalid(where, f"must be >= {minimum:g}, found {number:.6g}")
    return number


def integer(value: Any, where: str, *, optional: bool = True, minimum: int = 0,
             maximum: int = 10**9) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(where, f"must be an integer, found {type_name(value)}")
    if not minimum <= value <= maximum:
        raise Invalid(where, f"must be an integer from {minimum} to {maximum:,}, found {str(value)[:20]}")
    return value


def strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Invalid(where, f"must be an array of strings, found {type_name(value)}")
    return tuple(text(v, f"{where}[{i}]", optional=False) or "" for i, v in enumerate(value))

"""Records written the way the engine writes them, for report tests: ``make_records`` (tests/data/records/
make_records.py, loaded once) and the grid intensity most report tests use."""

from __future__ import annotations

import importlib.util
from pathlib import Path

RECORDS = Path(__file__).parent / "data" / "records"
_spec = importlib.util.spec_from_file_location("make_records", RECORDS / "make_records.py")
assert _spec is not None and _spec.loader is not None
make_records = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_records)

CARBON = {"intensity_gco2e_per_kwh": 400.0, "source": "Ember via Our World in Data", "year": 2023,
          "location": "DEU", "basis": "lifecycle", "kind": "country", "pue": 1.0}
"""Germany's 2023 lifecycle intensity, PUE 1: what the search and interval tests' records carry."""

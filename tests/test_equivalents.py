"""Sourced equivalents: the packaged table (source, year, region per factor), the figures by hand, and the label
"for comparison, not an offset" wherever they are printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from green_callbacks.report.command import run_report
from green_callbacks.report.equivalents import equivalents, factors

DATA = Path(__file__).parent / "data" / "records"


def test_every_factor_has_its_source_year_and_region() -> None:
    table = {f.key: f for f in factors()}
    assert set(table) == {"air", "car", "household"}
    for f in table.values():
        assert f.value > 0 and f.per in ("gco2e", "kwh") and 2015 <= f.year <= 2026
        assert f.source and f.region and f.comparison
    assert table["car"].value == pytest.approx(400 / 1.609344, abs=0.05)  # EPA: ~400 g CO2 per mile
    assert table["household"].value == pytest.approx(10715 / 365, abs=0.005)  # EIA: 10,715 kWh a year


def test_by_hand_and_never_for_what_was_not_measured() -> None:
    found = {e.factor.key: e.amount for e in equivalents(300.0, 58.72)}
    assert found == pytest.approx({"air": 300 / 150, "car": 300 / 248.5, "household": 58.72 / 29.36})
    assert equivalents(None, None) == ()
    assert {e.factor.key for e in equivalents(300.0, None)} == {"air", "car"}


@pytest.mark.parametrize("fmt", ["text", "markdown", "html", "latex"])
def test_the_report_gives_them_labelled_as_comparisons(fmt, capsys) -> None:
    assert run_report(paths=[str(DATA / "sweep")], format=fmt) == 0
    out = capsys.readouterr().out
    assert "not offset" in out or "not an offset" in out
    assert "DESNZ" in out and "EPA-420-F-23-014" in out and "EIA" in out
    # 9 runs: 0.45 gCO2e; 2700 J of IT energy x PUE 1.5 = 4050 J of facility energy
    for figure in (f"{0.45 / 150:.3g}", f"{0.45 / 248.5:.3g}"):
        assert figure in out
    household = 2700 * 1.5 / 3.6e6 / 29.36
    assert f"{household:.3g}" in out or f"{household:.3g}".replace("e-05", "\\times10^{-5}") in out

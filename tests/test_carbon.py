"""Tests for green_callbacks.core.carbon: tables, selection precedence, validation, no network."""

from __future__ import annotations

import csv
import math
import socket
import warnings
from importlib import resources

import pytest

from green_callbacks.core import carbon
from green_callbacks.core.carbon import (
    CarbonIntensity,
    country_table,
    gcp_region_table,
    lookup_country,
    lookup_region,
    resolve_carbon,
    validate_intensity,
    validate_pue,
)
from green_callbacks.core.units import emissions_gco2e

NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _fresh_world_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a fresh process with respect to the once-per-process world warning."""
    monkeypatch.setattr(carbon, "_world_warned", False)


def _raw_rows(name: str) -> list[list[str]]:
    text = (resources.files("green_callbacks.core") / "data" / name).read_text(encoding="utf-8")
    return list(csv.reader(text.splitlines()))


# --- packaged tables ----------------------------------------------------------------------------------------


def test_country_rows_have_source_year_and_plausible_value() -> None:
    rows = country_table()
    # every country of the OWID/CodeCarbon energy-mix file (213) + the world row
    assert len(rows) == 214
    for row in rows:
        assert row.source.strip(), row
        assert 2009 <= row.year <= 2025, row
        assert 0 < row.intensity_gco2e_per_kwh < 1500, row
        assert row.name
        assert row.method in ("published", "derived from generation mix"), row
    # the one old value is labelled with its year: Western Sahara's latest data are for 2009
    assert [(r.iso2, r.year) for r in rows if r.year < 2015] == [("EH", 2009)]
    codes = [row.iso2 for row in rows if row.iso2]
    assert len(codes) == len(set(codes)) == 213
    assert all(len(r.iso2) == 2 and len(r.iso3) == 3 for r in rows if r.iso2)
    assert sum(1 for r in rows if not r.iso2) == 1  # exactly one world row


def test_country_csv_has_no_empty_cells_except_world_codes() -> None:
    header, *body = _raw_rows("countries.csv")
    assert header == ["iso2", "iso3", "name", "gco2e_per_kwh", "year", "source", "method"]
    for cells in body:
        assert len(cells) == len(header)
        filled = cells[2:] if cells[2] == "World" else cells
        assert all(c.strip() for c in filled), cells


def test_gcp_rows_have_source_year_cfe_and_plausible_value() -> None:
    table = gcp_region_table()
    assert len(table) == 44
    for name, row in table.items():
        assert name == row.region and ":" not in name
        assert row.source.strip() and row.year == 2024, row  # one vintage for the whole table
        assert 0 < row.intensity_gco2e_per_kwh < 1500, row
        assert row.cfe_percent is not None and 0 <= row.cfe_percent <= 100, row
        assert row.location


def test_tables_are_cached() -> None:
    assert country_table() is country_table()
    assert gcp_region_table() is gcp_region_table()


# --- country look-up ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["FR", "fr", "Fr", "FRA", "fra", "fRa", " fr "])
def test_country_alpha2_alpha3_any_case(code: str) -> None:
    value = lookup_country(code)
    assert value.intensity_gco2e_per_kwh == 56.0  # France 2023, Ember/OWID (research note A1)
    assert value.year == 2023
    assert value.location == "FR"
    assert value.kind == "table"
    assert value.basis == "lifecycle, annual average, production-based"
    assert "Ember" in value.source and "CC BY 4.0" in value.source


def test_country_with_2022_data_reports_2022() -> None:
    value = lookup_country("ISL")
    assert (value.intensity_gco2e_per_kwh, value.year, value.location) == (27.7, 2022, "IS")


def test_uk_alias_is_gb() -> None:
    assert lookup_country("uk") == lookup_country("GB")
    assert lookup_country("GB").intensity_gco2e_per_kwh == 237.6


def test_world_chosen_explicitly_is_a_table_value_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = resolve_carbon(country="world", environ=NO_ENV)
    assert (value.intensity_gco2e_per_kwh, value.kind, value.location, value.year) == (481.0, "table", "world", 2023)


def test_unknown_country_lists_close_matches_and_the_explicit_way_out() -> None:
    with pytest.raises(ValueError) as info:
        lookup_country("GER")
    text = str(info.value)
    assert "'GER'" in text
    assert "DE/DEU (Germany)" in text
    assert "carbon_intensity=" in text


def test_close_match_on_misspelt_alpha3() -> None:
    with pytest.raises(ValueError, match=r"FR/FRA \(France\)"):
        lookup_country("FRX")


@pytest.mark.parametrize("bad", ["", "   ", None, 33])
def test_country_must_be_a_code(bad: object) -> None:
    with pytest.raises(ValueError, match="ISO 3166"):
        lookup_country(bad)  # type: ignore[arg-type]


# --- region look-up -----------------------------------------------------------------------------------------


def test_gcp_region_lookup() -> None:
    value = lookup_region("gcp:europe-west1")
    assert value.intensity_gco2e_per_kwh == 103.37  # Belgium, Google 2024
    assert value.year == 2024
    assert value.location == "gcp:europe-west1"
    assert value.kind == "table"
    assert "Google" in value.source
    assert value.basis != carbon.COUNTRY_BASIS  # its own basis, never mixed with Ember's


def test_region_any_case() -> None:
    assert lookup_region("GCP:Europe-West9") == lookup_region("gcp:europe-west9")


def test_region_without_prefix_suggests_the_prefix() -> None:
    with pytest.raises(ValueError, match=r"Did you mean region='gcp:us-central1'"):
        lookup_region("us-central1")


def test_unknown_gcp_region_lists_close_matches() -> None:
    with pytest.raises(ValueError) as info:
        lookup_region("gcp:europe-west7")
    text = str(info.value)
    assert "gcp:europe-west" in text and "Close matches" in text and "carbon_intensity=" in text


@pytest.mark.parametrize("region", ["aws:eu-west-1", "azure:westeurope"])
def test_aws_and_azure_say_to_pass_country(region: str) -> None:
    with pytest.raises(ValueError, match=r"only Google Cloud \('gcp:'\) regions.*country="):
        lookup_region(region)


def test_unknown_provider() -> None:
    with pytest.raises(ValueError, match="unknown provider 'ovh'"):
        lookup_region("ovh:gra")


# --- resolve_carbon: precedence, env, default ---------------------------------------------------------------


def test_explicit_value() -> None:
    value = resolve_carbon(carbon_intensity=123.5, environ=NO_ENV)
    assert value == CarbonIntensity(
        intensity_gco2e_per_kwh=123.5,
        source="user (carbon_intensity argument)",
        year=None,
        location="user",
        basis="user-supplied value",
        kind="explicit",
    )


def test_zero_is_allowed_as_an_explicit_value() -> None:
    assert resolve_carbon(carbon_intensity=0, environ=NO_ENV).intensity_gco2e_per_kwh == 0.0


def test_sub_one_value_warns_about_kg() -> None:
    with pytest.warns(UserWarning, match="kg/kWh"):
        resolve_carbon(carbon_intensity=0.4, environ=NO_ENV)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"country": "FR", "region": "gcp:europe-west1"},
        {"country": "FR", "carbon_intensity": 50},
        {"region": "gcp:europe-west1", "carbon_intensity": 50},
    ],
)
def test_two_choices_at_once_is_an_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="give only one of country, region, carbon_intensity"):
        resolve_carbon(environ=NO_ENV, **kwargs)  # type: ignore[arg-type]


def test_env_country() -> None:
    value = resolve_carbon(environ={"GREEN_CALLBACKS_COUNTRY": "deu"})
    assert (value.intensity_gco2e_per_kwh, value.location, value.kind) == (380.9, "DE", "table")


def test_env_region() -> None:
    value = resolve_carbon(environ={"GREEN_CALLBACKS_REGION": "gcp:us-west1"})
    assert (value.intensity_gco2e_per_kwh, value.location) == (79.23, "gcp:us-west1")


def test_env_carbon_intensity() -> None:
    value = resolve_carbon(environ={"GREEN_CALLBACKS_CARBON_INTENSITY": " 250.5 "})
    assert (value.intensity_gco2e_per_kwh, value.kind) == (250.5, "explicit")
    assert "GREEN_CALLBACKS_CARBON_INTENSITY" in value.source


def test_env_carbon_intensity_not_a_number() -> None:
    with pytest.raises(ValueError, match="GREEN_CALLBACKS_CARBON_INTENSITY='abc' is not a number"):
        resolve_carbon(environ={"GREEN_CALLBACKS_CARBON_INTENSITY": "abc"})


def test_env_two_at_once_is_an_error() -> None:
    env = {"GREEN_CALLBACKS_COUNTRY": "FR", "GREEN_CALLBACKS_REGION": "gcp:europe-west1"}
    with pytest.raises(ValueError, match="in the environment"):
        resolve_carbon(environ=env)


def test_empty_env_values_count_as_unset() -> None:
    env = {"GREEN_CALLBACKS_COUNTRY": "", "GREEN_CALLBACKS_REGION": "  ", "GREEN_CALLBACKS_CARBON_INTENSITY": ""}
    with pytest.warns(UserWarning, match="world average"):
        value = resolve_carbon(environ=env)
    assert value.kind == "default"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"carbon_intensity": 10.0}, 10.0),  # explicit value beats env
        ({"region": "gcp:europe-west9"}, 16.3),  # region beats env
        ({"country": "NO"}, 30.1),  # country beats env
    ],
)
def test_arguments_beat_environment(kwargs: dict[str, object], expected: float) -> None:
    env = {"GREEN_CALLBACKS_COUNTRY": "PL", "GREEN_CALLBACKS_REGION": "gcp:asia-south1"}  # would be an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = resolve_carbon(environ=env, **kwargs)  # type: ignore[arg-type]
    assert value.intensity_gco2e_per_kwh == expected


def test_explicit_intensity_precedes_region_and_country_in_env() -> None:
    env = {"GREEN_CALLBACKS_CARBON_INTENSITY": "77"}
    assert resolve_carbon(environ=env).intensity_gco2e_per_kwh == 77.0


def test_world_default_warns_once_per_process() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = resolve_carbon(environ=NO_ENV)
        second = resolve_carbon(environ=NO_ENV)
    relevant = [w for w in caught if "world average" in str(w.message)]
    assert len(relevant) == 1
    assert relevant[0].category is UserWarning
    text = str(relevant[0].message)
    for how in ("country=", "region=", "carbon_intensity=", "GREEN_CALLBACKS_COUNTRY"):
        assert how in text
    assert first == second
    assert (first.intensity_gco2e_per_kwh, first.kind, first.location, first.year) == (481.0, "default", "world", 2023)


def test_to_record_is_plain_and_complete() -> None:
    record = lookup_region("gcp:europe-west1").to_record()
    assert record == {
        "intensity_gco2e_per_kwh": 103.37,
        "source": "Google Cloud region-carbon-info data/yearly/2024.csv (Apache-2.0)",
        "year": 2024,
        "location": "gcp:europe-west1",
        "basis": "operational grid average (location-based), annual average",
        "kind": "table",
        "method": "published",
    }


def test_reuses_units_emissions_formula() -> None:
    # 2 kWh of IT energy in France at PUE 1.58: 2 × 1.58 × 56.0 = 176.96 g
    value = resolve_carbon(country="FR", environ=NO_ENV)
    assert emissions_gco2e(2.0, value.intensity_gco2e_per_kwh, validate_pue("uptime-2023")) == pytest.approx(176.96)


def test_resolve_makes_no_network_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("resolve_carbon opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    carbon._country_rows.cache_clear()
    carbon._country_index.cache_clear()
    carbon.gcp_region_table.cache_clear()
    resolve_carbon(country="FR", environ=NO_ENV)
    resolve_carbon(region="gcp:europe-west1", environ=NO_ENV)
    resolve_carbon(carbon_intensity=100, environ=NO_ENV)
    resolve_carbon(environ={"GREEN_CALLBACKS_COUNTRY": "SE"})
    with pytest.warns(UserWarning):
        resolve_carbon(environ=NO_ENV)


def test_live_must_have_fetch() -> None:
    with pytest.raises(ValueError, match="fetch"):
        resolve_carbon(live=object(), environ=NO_ENV)  # type: ignore[arg-type]


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, math.inf, -math.inf, 2000.5, 1e9])
def test_bad_intensity_is_rejected_naming_the_allowed_range(bad: float) -> None:
    with pytest.raises(ValueError, match=r"0 to 2000"):
        resolve_carbon(carbon_intensity=bad, environ=NO_ENV)


@pytest.mark.parametrize("bad", ["300", True, None, [1]])
def test_intensity_must_be_a_number(bad: object) -> None:
    with pytest.raises(ValueError, match="must be a number"):
        validate_intensity(bad)


def test_carbon_intensity_dataclass_validates() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        CarbonIntensity(-5.0, "x", None, "user", "b", "explicit")
    with pytest.raises(ValueError, match="kind must be"):
        CarbonIntensity(5.0, "x", None, "user", "b", "guess")


@pytest.mark.parametrize(("given", "expected"), [(1.0, 1.0), (1, 1.0), (1.58, 1.58), (2.5, 2.5)])
def test_pue_accepts_numbers_from_one(given: float, expected: float) -> None:
    assert validate_pue(given) == expected


def test_pue_default_and_presets() -> None:
    assert validate_pue() == 1.0
    assert validate_pue("uptime-2023") == 1.58
    assert validate_pue("Google-2023") == 1.10
    with pytest.raises(ValueError, match=r"'uptime-2023' \(1.58\)"):
        validate_pue("typical")


@pytest.mark.parametrize("bad", [0.99, 0.0, -1.0])
def test_pue_below_one_is_physically_impossible(bad: float) -> None:
    with pytest.raises(ValueError, match=r"physically impossible.*at least 1\.0"):
        validate_pue(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, None, True])
def test_pue_must_be_finite_number(bad: object) -> None:
    with pytest.raises(ValueError, match="pue must be a"):
        validate_pue(bad)


@pytest.mark.parametrize("bad", [3.01, 158.0, 1e308])
def test_pue_above_three_is_implausible(bad: float) -> None:
    with pytest.raises(ValueError, match=r"implausible.*1\.0 to 3") as info:
        validate_pue(bad)
    assert "1.58" in str(info.value)


def test_pue_upper_bound_is_inclusive() -> None:
    assert validate_pue(3.0) == 3.0

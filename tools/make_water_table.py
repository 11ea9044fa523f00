"""Regenerate ``green_callbacks/core/data/water_countries.csv`` (off-site water intensity of each country's grid).

    python tools/make_water_table.py /work/shared/data/codecarbon-global_energy_mix.json \
        /usr/share/iso-codes/json/iso_3166-1.json > green_callbacks/core/data/water_countries.csv

Method: for each country, the generation-weighted mean of per-technology operational water-consumption factors,
``L/kWh = Σ_source TWh_source × factor_source / Σ TWh``. Generation by source: CodeCarbon's
``global_energy_mix.json`` (MIT). Factors: :data:`FACTORS_GAL_PER_MWH` (Macknick et al. 2012 medians). ISO 3166
alpha-2 codes: the Debian ``iso-codes`` package (codes are facts). The world row is weighted over all countries.
"""

from __future__ import annotations

import json
import sys

GAL_PER_MWH_TO_L_PER_KWH = 3.785411784 / 1000.0  # 1 US gallon = 3.785411784 L; 1 MWh = 1000 kWh

#: Operational water consumption (gal/MWh), medians of Macknick, Newmark, Heath & Hallett, Environ. Res. Lett. 7
#: (2012) 045802, Table 1, recirculating (cooling-tower) cooling for thermal plants. Oil has no row of its own
#: there: the natural-gas steam-turbine factor stands in for oil-fired steam plants. Wind has no operational use.
FACTORS_GAL_PER_MWH = {
    "coal_TWh": (687.0, "coal, generic, cooling tower"),
    "gas_TWh": (205.0, "natural gas combined cycle, cooling tower"),
    "oil_TWh": (826.0, "proxy: natural gas steam turbine, cooling tower"),
    "nuclear_TWh": (672.0, "nuclear, generic, cooling tower"),
    "hydroelectricity_TWh": (4491.0, "hydropower, in-stream and reservoir evaporation"),
    "solar_TWh": (1.0, "photovoltaic, utility scale (panel washing)"),
    "wind_TWh": (0.0, "wind"),
    "biofuel_TWh": (553.0, "biopower, steam, cooling tower"),
    "other_renewable_exc_biofuel_TWh": (15.0, "geothermal, flash, cooling tower"),
}


def factor_l_per_kwh(source: str) -> float:
    return FACTORS_GAL_PER_MWH[source][0] * GAL_PER_MWH_TO_L_PER_KWH


def water_l_per_kwh(mix: dict[str, float]) -> tuple[float | None, float | None]:
    """(all sources, hydropower's part) in L/kWh for one generation mix; ``None`` when it has no generation."""
    total = sum(float(mix.get(s) or 0.0) for s in FACTORS_GAL_PER_MWH)
    if total <= 0:
        return None, None
    water = sum(float(mix.get(s) or 0.0) * factor_l_per_kwh(s) for s in FACTORS_GAL_PER_MWH) / total
    hydro = float(mix.get("hydroelectricity_TWh") or 0.0) * factor_l_per_kwh("hydroelectricity_TWh") / total
    return water, hydro


def main(mix_path: str, iso_path: str) -> None:
    with open(mix_path, encoding="utf-8") as handle:
        mixes = json.load(handle)
    with open(iso_path, encoding="utf-8") as handle:
        iso = {c["alpha_3"]: c["alpha_2"] for c in json.load(handle)["3166-1"]}
    out = sys.stdout
    out.write("iso2,iso3,name,water_l_per_kwh,hydro_l_per_kwh,year,method,source\n")
    source = ("derived: generation mix (CodeCarbon global_energy_mix.json, MIT) x Macknick et al. 2012 "
              "median consumption factors")
    world = dict.fromkeys(FACTORS_GAL_PER_MWH, 0.0)
    rows = []
    for iso3, mix in sorted(mixes.items()):
        water, hydro = water_l_per_kwh(mix)
        if water is None:
            continue
        for s in FACTORS_GAL_PER_MWH:
            world[s] += float(mix.get(s) or 0.0)
        name = str(mix["country_name"]).replace(",", "")
        rows.append(f"{iso.get(iso3, '')},{iso3},{name},{water:.3f},{hydro:.3f},{mix['year']},mix x factors,{source}\n")
    water, hydro = water_l_per_kwh(world)
    out.write(f",,World,{water:.3f},{hydro:.3f},2022,mix x factors (all countries summed),{source}\n")
    out.writelines(rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

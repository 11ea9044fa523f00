"""Rebuild ``green_callbacks/core/data/countries.csv`` from CodeCarbon's copy of the OWID per-country data.

Usage: ``python tools/build_country_table.py PATH/TO/codecarbon-global_energy_mix.json [PATH/TO/countries.csv]``

Rules (see green_callbacks/core/data/SOURCES.md):

* rows already in the table (Ember via OWID, cross-checked) are kept unchanged, and must agree with the JSON file's
  value to 0.1 gCO2e/kWh and in year, or the script stops;
* every other country gets the file's own ``carbon_intensity`` (OWID's ``carbon_intensity_elec``) with the file's
  ``year``, method ``published``;
* a country whose file value is missing or zero (a grid has no zero lifecycle intensity) gets the intensity
  derived from the file's generation mix and per-source lifecycle factors
  (:func:`green_callbacks.core.carbon.intensity_from_mix`), method ``derived from generation mix``.

ISO 3166-1 alpha-2 codes are written out below (the file is keyed by alpha-3).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from green_callbacks.core.carbon import (
    METHOD_DERIVED,
    METHOD_PUBLISHED,
    MIX_SOURCES,
    intensity_from_mix,
)

PUBLISHED_SOURCE = (
    "Our World in Data carbon_intensity_elec (Ember; Energy Institute) as copied in CodeCarbon "
    "global_energy_mix.json (CC BY 4.0)"
)
DERIVED_SOURCE = (
    "derived from generation mix: CodeCarbon global_energy_mix.json (OWID generation by source) x CodeCarbon "
    "per-source lifecycle factors (MIT)"
)

# ISO 3166-1 alpha-3 -> alpha-2, for every code in the file
_ALPHA2_TEXT = """
ABW:AW AFG:AF AGO:AO ALB:AL ARE:AE ARG:AR ARM:AM ASM:AS ATG:AG AUS:AU AUT:AT AZE:AZ BDI:BI BEL:BE BEN:BJ BFA:BF
BGD:BD BGR:BG BHR:BH BHS:BS BIH:BA BLR:BY BLZ:BZ BMU:BM BOL:BO BRA:BR BRB:BB BRN:BN BTN:BT BWA:BW CAF:CF CAN:CA
CHE:CH CHL:CL CHN:CN CIV:CI CMR:CM COD:CD COG:CG COK:CK COL:CO COM:KM CPV:CV CRI:CR CUB:CU CYM:KY CYP:CY CZE:CZ
DEU:DE DJI:DJ DMA:DM DNK:DK DOM:DO DZA:DZ ECU:EC EGY:EG ERI:ER ESH:EH ESP:ES EST:EE ETH:ET FIN:FI FJI:FJ FLK:FK
FRA:FR FRO:FO GAB:GA GBR:GB GEO:GE GHA:GH GIB:GI GIN:GN GLP:GP GMB:GM GNB:GW GNQ:GQ GRC:GR GRD:GD GRL:GL GTM:GT
GUF:GF GUM:GU GUY:GY HKG:HK HND:HN HRV:HR HTI:HT HUN:HU IDN:ID IND:IN IRL:IE IRN:IR IRQ:IQ ISL:IS ISR:IL ITA:IT
JAM:JM JOR:JO JPN:JP KAZ:KZ KEN:KE KGZ:KG KHM:KH KIR:KI KNA:KN KOR:KR KWT:KW LAO:LA LBN:LB LBR:LR LBY:LY LCA:LC
LKA:LK LSO:LS LTU:LT LUX:LU LVA:LV MAC:MO MAR:MA MDA:MD MDG:MG MDV:MV MEX:MX MKD:MK MLI:ML MLT:MT MMR:MM MNE:ME
MNG:MN MOZ:MZ MRT:MR MSR:MS MTQ:MQ MUS:MU MWI:MW MYS:MY NAM:NA NCL:NC NER:NE NGA:NG NIC:NI NLD:NL NOR:NO NPL:NP
NRU:NR NZL:NZ OMN:OM PAK:PK PAN:PA PER:PE PHL:PH PNG:PG POL:PL PRI:PR PRK:KP PRT:PT PRY:PY PSE:PS PYF:PF QAT:QA
REU:RE ROU:RO RUS:RU RWA:RW SAU:SA SDN:SD SEN:SN SGP:SG SHN:SH SLB:SB SLE:SL SLV:SV SOM:SO SPM:PM SRB:RS SSD:SS
STP:ST SUR:SR SVK:SK SVN:SI SWE:SE SWZ:SZ SYC:SC SYR:SY TCA:TC TCD:TD TGO:TG THA:TH TJK:TJ TKM:TM TLS:TL TON:TO
TTO:TT TUN:TN TUR:TR TWN:TW TZA:TZ UGA:UG UKR:UA URY:UY USA:US UZB:UZ VCT:VC VEN:VE VGB:VG VIR:VI VNM:VN VUT:VU
WSM:WS YEM:YE ZAF:ZA ZMB:ZM ZWE:ZW
"""
ALPHA2 = dict(pair.split(":") for pair in _ALPHA2_TEXT.split())

HEADER = ["iso2", "iso3", "name", "gco2e_per_kwh", "year", "source", "method"]


def build(mix_path: Path, table_path: Path) -> str:
    mix = json.loads(mix_path.read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO(table_path.read_text(encoding="utf-8"))))
    [world] = [row for row in rows if not row["iso3"]]
    # the cross-checked Ember rows are kept as they are; everything else is rebuilt from the file
    kept = {row["iso3"]: row for row in rows if row["source"].startswith("Ember Yearly Electricity Data")}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerow(["", "", world["name"], world["gco2e_per_kwh"], world["year"], world["source"], METHOD_PUBLISHED])
    for iso3 in sorted(mix):
        entry = mix[iso3]
        iso2 = ALPHA2[iso3]
        year = int(entry["year"])
        published = float(entry.get("carbon_intensity") or 0.0)
        if iso3 in kept:
            row = kept[iso3]
            value = float(row["gco2e_per_kwh"])
            if abs(value - published) > 0.0501 or int(row["year"]) != year or row["iso2"] != iso2:
                raise SystemExit(f"{iso3}: table row {row} disagrees with the file ({published}, {year})")
            cells = [iso2, iso3, row["name"], row["gco2e_per_kwh"], row["year"], row["source"], METHOD_PUBLISHED]
            writer.writerow(cells)
        elif published > 0:
            name = entry["country_name"]
            writer.writerow([iso2, iso3, name, f"{published:.1f}", year, PUBLISHED_SOURCE, METHOD_PUBLISHED])
        else:
            derived = intensity_from_mix({name: float(entry[f"{name}_TWh"]) for name in MIX_SOURCES})
            name = entry["country_name"]
            writer.writerow([iso2, iso3, name, f"{derived:.1f}", year, DERIVED_SOURCE, METHOD_DERIVED])
    missing = set(kept) - set(mix)
    if missing:
        raise SystemExit(f"rows not in the file: {sorted(missing)}")
    return out.getvalue()


def main(argv: list[str]) -> int:
    mix_path = Path(argv[1])
    table_path = Path(argv[2]) if len(argv) > 2 else Path(__file__).resolve().parents[1] / (
        "green_callbacks/core/data/countries.csv"
    )
    text = build(mix_path, table_path)
    table_path.write_text(text, encoding="utf-8")
    print(f"wrote {table_path} ({text.count(chr(10)) - 1} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

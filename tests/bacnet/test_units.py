"""The unit table and the object maps as data: conversions, refusals, the built-in maps."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.bacnet.maps import MapError, load_maps
from collectors.bacnet.units import UnitError, load_units


def test_conversions_from_the_table() -> None:
    units = load_units()
    # 212 F = 100 C; 300 K = 26.85 C; 3600 kJ = 1 kWh; 1 ton = 12,000 BTU/h = 3516.8528 W
    assert units.conversion("degrees-fahrenheit", quantity="temperature_c").apply(
        212.0
    ) == pytest.approx(100.0)
    assert units.conversion("degrees-kelvin", quantity="temperature_c").apply(
        300.0
    ) == pytest.approx(26.85)
    assert units.conversion("kilojoules", quantity="energy_kwh").apply(3600.0) == pytest.approx(1.0)
    assert units.conversion("tons-refrigeration", quantity="heat_kw").apply(1.0) == pytest.approx(
        3.5168528
    )
    # 1 US gal/min = 3.785411784 L / 60 s = 6.30902e-5 m3/s
    assert units.conversion("us-gallons-per-minute", dimension="flow").apply(1.0) == pytest.approx(
        6.30901964e-5
    )
    assert units.default_quantity("kilowatts") == "power_w"
    assert units.default_quantity("liters-per-second") is None


def test_refusals_name_the_unit() -> None:
    units = load_units()
    with pytest.raises(UnitError, match="unknown BACnet unit 'furlongs'"):
        units.conversion("furlongs", quantity="power_w")
    with pytest.raises(UnitError, match="'percent' is a percent unit, 'power_w' needs power"):
        units.conversion("percent", quantity="power_w")


def test_builtin_maps_load_and_state_their_sources() -> None:
    maps = load_maps()
    assert {"chiller", "cooling-tower", "crah"} <= set(maps)
    assert all(m.written_from for m in maps.values())
    [cooling] = maps["chiller"].derived
    assert (cooling.quantity, cooling.flow, cooling.hot, cooling.cold) == (
        "heat_kw",
        "chw.flow",
        "chw.return",
        "chw.supply",
    )


def test_bad_map_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        'name = "bad"\ntitle = "t"\nwritten_from = "w"\n'
        '[[points]]\npoint = "p"\nobject = "analog-input,1"\nquantity = "watts"\n'
    )
    with pytest.raises(MapError, match=r"bad\.toml: points\.0\.quantity: unknown quantity 'watts'"):
        load_maps([tmp_path])
    (tmp_path / "bad.toml").write_text(
        'name = "bad"\ntitle = "t"\nwritten_from = "w"\n'
        '[[points]]\npoint = "p"\nobject = "analog-input,1"\nquantity = "power_w"\n'
        '[[derived]]\npoint = "c"\nquantity = "heat_kw"\nkind = "flow_delta_t"\nflow = "p"\n'
        'hot = "p"\ncold = "p"\nvolumetric_heat_capacity_kj_per_m3_k = 4190.7\n'
    )
    with pytest.raises(MapError, match="flow 'p' must be a flow"):
        load_maps([tmp_path])

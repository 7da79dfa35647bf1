"""Every built-in map against a pymodbus server serving its registers, and map validation.

Each case writes raw register values in the document's encoding (type, word order,
unit) and states the arithmetic from raw value to reading. Values are chosen exactly
representable in float32 where the meter sends floats, so the arithmetic is exact.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.readings import Quality
from agent.settings import ConfigError
from collectors.modbus.maps import DeviceMap, MapError, load_maps
from collectors.modbus.plan import MAX_REGISTERS, DevicePlan, PollResult, decode_block
from collectors.sim.devices.modbus_meter import encode
from tests.modbus.conftest import make, poll_all_once, tcp_options, value_of
from tests.paths import ROOT
from tests.servers.modbus import ModbusServer, Unit, map_registers

MAPS = load_maps()

#: map -> {point: (raw value as the meter sends it, expected reading)}.
CASES: dict[str, dict[str, tuple[float, float]]] = {
    # Eastron: float32 in V, A, W, Hz, kWh (no scaling).
    "eastron-sdm630": {
        "l1.voltage": (230.25, 230.25),
        "l3.current": (12.5, 12.5),
        "total.power": (8123.5, 8123.5),
        "frequency": (50.0, 50.0),
        "import.energy": (12345.75, 12345.75),
        "total.energy": (12400.5, 12400.5),
    },
    "eastron-sdm120": {
        "voltage": (229.75, 229.75),
        "power": (512.5, 512.5),
        "total.energy": (100.75, 100.75),
    },
    # CHINT DTSU666: float32 in 0.1 V, 0.001 A, 0.1 W, 0.01 Hz; kWh.
    "chint-dtsu666": {
        "l1.voltage": (2302.0, 2302 / 10),  # 230.2 V
        "l2.current": (15250.0, 15250 / 1000),  # 15.25 A
        "total.power": (123450.0, 123450 / 10),  # 12345 W
        "frequency": (5000.0, 5000 / 100),  # 50 Hz
        "import.energy": (1520.5, 1520.5),
    },
    # CHINT DDSU666: float32; power in kW (x 1000 -> W).
    "chint-ddsu666": {
        "voltage": (229.5, 229.5),
        "power": (1.25, 1.25 * 1000),  # 1250 W
        "import.energy": (88.5, 88.5),
    },
    # Acrel ADW300: integers in 0.1 V, 0.01 A, W, 0.01 kWh.
    "acrel-adw300": {
        "l1.voltage": (2305, 2305 / 10),  # 230.5 V
        "l2.current": (1525, 1525 / 100),  # 15.25 A
        "total.power": (-1500, -1500.0),  # int32, exporting
        "import.energy": (1234567, 1234567 / 100),  # 12345.67 kWh
    },
    # Peacefair PZEM-016: 32-bit values low word first; 0.1 V, 0.001 A, 0.1 W, Wh.
    "peacefair-pzem016": {
        "voltage": (2301, 2301 / 10),  # 230.1 V
        "current": (1234, 1234 / 1000),  # registers [0x04D2, 0x0000] -> 1.234 A
        "power": (2839, 2839 / 10),  # 283.9 W
        "energy": (70000, 70000 / 1000),  # registers [0x1170, 0x0001] -> 70 kWh
        "frequency": (500, 500 / 10),  # 50 Hz
    },
    # Schneider iEM3255: float32 kW (x 1000 -> W); energy float32 in kWh (register 45099).
    "schneider-iem3255": {
        "l1.voltage": (231.0, 231.0),
        "total.power": (12.5, 12.5 * 1000),  # 12500 W
        "import.energy": (98765.5, 98765.5),  # kWh as sent
    },
    # Janitza UMG 96RM: float32 in V, W; energy in Wh (/ 1000 -> kWh).
    "janitza-umg96rm": {
        "l1.voltage": (230.0, 230.0),
        "total.power": (5120.5, 5120.5),
        "import.energy": (1234567.0, 1234567 / 1000),  # 1234.567 kWh
        "export.energy": (2048.0, 2048 / 1000),  # 2.048 kWh
    },
    # ABB B23: uint64 energy in 0.01 kWh, uint32 0.1 V, int32 0.01 W, uint16 0.01 Hz.
    "abb-b23": {
        "import.energy": (123456789, 123456789 / 100),  # 1234567.89 kWh
        "l1.voltage": (2301, 2301 / 10),  # 230.1 V
        "total.power": (-250000, -250000 / 100),  # -2500 W
        "frequency": (4998, 4998 / 100),  # 49.98 Hz
    },
    # Socomec DIRIS A-40: 0.01 V, 10 W units, 0.001 PF, kWh.
    "socomec-diris-a40": {
        "l1.voltage": (23010, 23010 / 100),  # 230.1 V
        "total.power": (1234, 1234 * 10.0),  # 12340 W
        "total.power_factor": (950, 950 / 1000),  # 0.95
        "import.energy": (456789, 456789.0),
    },
    # Carlo Gavazzi EM24: int32 low word first, 0.1 V, 0.1 W, 0.1 kWh; int16 0.1 Hz.
    "carlo-gavazzi-em24": {
        "l1.voltage": (2305, 2305 / 10),  # 230.5 V
        "total.power": (123456, 123456 / 10),  # 12345.6 W
        "frequency": (500, 500 / 10),  # 50 Hz
        "import.energy": (987654, 987654 / 10),  # 98765.4 kWh
    },
    # Delixi DTSU6606: int16 in 0.1 V, 0.01 kW (x 10 -> W), 0.001 PF, 0.01 Hz; no energy.
    "delixi-dtsu6606": {
        "l1.voltage": (2301, 2301 / 10),  # 230.1 V
        "total.power": (-1234, -1234 * 10.0),  # -12.34 kW = -12340 W (exporting)
        "total.power_factor": (950, 950 / 1000),  # 0.95
        "frequency": (5001, 5001 / 100),  # 50.01 Hz
    },
    # Siemens PAC3200: float32 V, W; float64 energy in Wh (/ 1000 -> kWh).
    "siemens-pac3200": {
        "l1.voltage": (230.5, 230.5),
        "total.power": (4321.5, 4321.5),
        "import.energy": (12345678.5, 12345678.5 / 1000),  # 12345.6785 kWh
    },
}
UNITS = {name: i + 1 for i, name in enumerate(sorted(CASES))}


@pytest.fixture(scope="module")
def server() -> Iterator[ModbusServer]:
    units = {
        UNITS[name]: Unit(
            map_registers(MAPS[name], {p: raw for p, (raw, _) in CASES[name].items()})
        )
        for name in CASES
    }
    with ModbusServer(units) as s:
        yield s


def test_every_register_of_every_built_in_map_is_cross_checked() -> None:
    """Each map names, per independent public source, the points that source confirms;
    a register no source confirms is not shipped."""
    for name, m in MAPS.items():
        assert m.cross_checked, f"{name}: no cross_checked source"
        confirmed = {p for c in m.cross_checked for p in c.points}
        unconfirmed = sorted({r.point for r in m.registers} - confirmed)
        assert not unconfirmed, f"{name}: {unconfirmed} confirmed by no source"
        assert all(c.source.strip() for c in m.cross_checked)


def test_at_least_twelve_maps_four_chinese_brands_each_with_its_document() -> None:
    assert len(MAPS) >= 12
    chinese = {"Eastron", "CHINT", "Acrel", "Peacefair", "Delixi"}
    assert chinese <= {m.vendor for m in MAPS.values()}
    for name, m in MAPS.items():
        assert name == name.lower() and name.count("-") >= 1
        assert m.document.title and m.document.version
    assert set(CASES) == set(MAPS), "every map has a case"


async def test_every_map_reads_the_documented_values(server: ModbusServer) -> None:
    devices = [{"name": name, "unit": UNITS[name], "map": name} for name in CASES]
    collector = make(tcp_options(server.port, devices))
    frame = await poll_all_once(collector)
    for name, points in CASES.items():
        state = collector.states[name]
        assert not state.failures, f"{name}: {state.failures}"
        for point, (_, expected) in points.items():
            assert value_of(frame, name, point) == expected, f"{name} {point}"
    # Unwritten registers read 0: real readings, so every register of every map is there.
    for name in CASES:
        assert frame.filter(pl.col("device") == name).height == len(MAPS[name].registers)
    assert set(frame["quality"].unique()) <= {
        int(Quality.RECEIVE_TIME),
        int(Quality.RECEIVE_TIME | Quality.DEVICE_SUSPECT),  # 0 Hz / 0 V are out of range
    }
    # Coalesced: the SDM630's 16 values in 3 requests (0-17, 52-73 with holes, 342-343).
    assert [(b.address, b.count) for b in collector.states["eastron-sdm630"].plan.blocks] == [
        (0, 18),
        (52, 22),
        (342, 2),
    ]


def test_coalescing_respects_the_gap_and_the_125_register_limit() -> None:
    janitza = MAPS["janitza-umg96rm"]  # holes of 14 (19028..19041) and 16 registers split
    assert [(b.address, b.count) for b in DevicePlan(janitza).blocks] == [
        (19000, 28),  # 19000..19027, holes 19006..19011 and 19018..19019 read through
        (19042, 10),  # 19042..19051
        (19068, 10),  # 19068..19077 (the energy counters and the per-phase values between)
    ]
    # Without read-through every hole splits: 19000-19005, 19012-19017, 19020-19027, …
    exact = DevicePlan(janitza, max_gap=0)
    assert len(exact.blocks) == 7
    assert exact.registers_read == 2 * len(janitza.registers)
    small = DevicePlan(janitza, max_registers=20)
    assert all(b.count <= 20 for b in small.blocks)
    assert all(b.count <= MAX_REGISTERS for m in MAPS.values() for b in DevicePlan(m).blocks)


def write_map(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\nvendor = "X"\nmodel = "Y"\n'
        'document = { title = "T", version = "1" }\n' + body,
        encoding="utf-8",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[[registers]]\npoint = "p"\nquantity = "watts"\naddress = 0\n',
            "registers.0.quantity",
        ),
        (
            '[[registers]]\npoint = "a"\nquantity = "power_w"\naddress = 0\n'
            '[[registers]]\npoint = "b"\nquantity = "power_w"\naddress = 1\n',
            "b overlaps a at register 1",
        ),
        (
            '[[registers]]\npoint = "p"\nquantity = "energy_kwh"\naddress = 0\n'
            'type = "int32"\nwrap_bits = 32\n',
            "wrap_bits is for unsigned counter registers",
        ),
        (
            '[[registers]]\npoint = "p"\nquantity = "power_w"\naddress = 0\ntype = "int24"\n',
            "registers.0.type",
        ),
        (
            '[[cross_checked]]\nsource = "s"\npoints = ["p", "q"]\n'
            '[[registers]]\npoint = "p"\nquantity = "power_w"\naddress = 0\n',
            r"cross_checked names points the map does not have: \['q'\]",
        ),
    ],
)
def test_a_bad_map_is_refused_naming_file_and_field(
    tmp_path: Path, body: str, message: str
) -> None:
    write_map(tmp_path, "acme-m1", body)
    with pytest.raises(MapError, match=message) as info:
        load_maps([tmp_path])
    assert "acme-m1.toml" in str(info.value)


def test_an_operator_map_folder_adds_maps_and_unknown_names_are_config_errors(
    tmp_path: Path,
) -> None:
    write_map(
        tmp_path, "acme-m1", '[[registers]]\npoint = "p"\nquantity = "power_w"\naddress = 0\n'
    )
    assert "acme-m1" in load_maps([tmp_path])
    options = tcp_options(502, [{"name": "m", "map": "acme-m2"}])
    with pytest.raises(ConfigError, match=r"collectors\.modbus\.devices\.0\.map: unknown map"):
        make(options)
    options = tcp_options(502, [{"name": "m", "map": "eastron-sdm630", "bus": "nope"}])
    with pytest.raises(ConfigError, match="bus 'nope' is not one of"):
        make(options)
    options = tcp_options(502, [{"name": "m-[1-2]", "unit": 1, "map": "eastron-sdm630"}])
    with pytest.raises(ConfigError, match="unit 1 is already on bus"):
        make(options)


def test_word_and_byte_orders_types_and_sentinels_decode_as_the_encoder_wrote() -> None:
    """Each order and type round-trips through the server-side encoder (struct-based)."""
    specs = [
        ("a", "float32", "big", "little", 230.25),  # byte-swapped registers (CDAB-style)
        ("b", "float32", "little", "little", -12.5),  # fully little-endian (DCBA)
        ("c", "int64", "little", "big", -(2**40) - 3),
        ("d", "uint64", "big", "big", 2**63 + 5),
        ("e", "float64", "little", "big", 12345678.125),
        ("f", "int16", "big", "little", -2),
    ]
    registers: list[int] = []
    entries = []
    for point, kind, word, byte, raw in specs:
        entries.append(
            {
                "point": point,
                "quantity": "power_w",
                "address": len(registers),
                "type": kind,
                "word_order": word,
                "byte_order": byte,
            }
        )
        registers += encode(kind, raw, word, byte)
    entries.append(
        {
            "point": "g",
            "quantity": "power_w",
            "address": len(registers),
            "type": "uint16",
            "sentinels": [0x8000],
        }
    )
    registers.append(0x8000)
    device_map = DeviceMap.model_validate(
        {
            "name": "test-orders",
            "vendor": "t",
            "model": "t",
            "document": {"title": "t", "version": "1"},
            "registers": entries,
        }
    )
    [block] = DevicePlan(device_map).blocks
    out: list = []
    result = PollResult()
    decode_block(block, registers, out, result)
    assert {i.point: v for i, v, _ in out} == {p: float(r) for p, *_, r in specs}
    assert result.sentinels == 1


def test_a_counter_beyond_its_wrap_width_is_not_a_reading() -> None:
    """A uint32 register declared to wrap at 2^16 (``wrap_bits = 16``): 70000 cannot be a
    reading of it, so it is dropped and counted; 65535 x 0.01 = 655.35 kWh is kept."""
    device_map = DeviceMap.model_validate(
        {
            "name": "test-wrap",
            "vendor": "t",
            "model": "t",
            "document": {"title": "t", "version": "1"},
            "all_ones_is_sentinel": False,
            "registers": [
                {
                    "point": "e",
                    "quantity": "energy_kwh",
                    "address": 0,
                    "type": "uint32",
                    "scale": 0.01,
                    "wrap_bits": 16,
                },
            ],
        }
    )
    [block] = DevicePlan(device_map).blocks
    out: list = []
    result = PollResult()
    decode_block(block, encode("uint32", 70000), out, result)
    assert (out, result.bad_values) == ([], 1)
    decode_block(block, encode("uint32", 65535), out, result)
    assert [v for _, v, _ in out] == [65535 / 100]


def test_the_sample_configuration_builds() -> None:
    sample = tomllib.loads((ROOT / "collectors/modbus/sample.toml").read_text(encoding="utf-8"))
    [table] = sample["collectors"]
    options = {k: v for k, v in table.items() if k not in ("kind", "name")}
    collector = make(options)
    assert collector.polled_devices()[:3] == ["incomer-1", "feeder-1", "feeder-2"]
    assert [d.unit for d in collector.options.devices][1:7] == [11, 12, 13, 14, 15, 16]


@given(
    kind=st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32"]),
    word=st.sampled_from(["big", "little"]),
    byte=st.sampled_from(["big", "little"]),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_any_value_round_trips_through_encoder_and_decoder(
    kind: str, word: str, byte: str, data: st.DataObject
) -> None:
    bits = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
    if kind == "float32":
        raw: float = data.draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
    elif kind.startswith("u"):
        raw = data.draw(st.integers(0, 2 ** bits[kind] - 2))  # all ones is the sentinel
    else:
        n = bits[kind]
        raw = data.draw(st.integers(-(2 ** (n - 1)), 2 ** (n - 1) - 1).filter(lambda v: v != -1))
    device_map = DeviceMap.model_validate(
        {
            "name": "test-any",
            "vendor": "t",
            "model": "t",
            "document": {"title": "t", "version": "1"},
            "registers": [
                {
                    "point": "v",
                    "quantity": "power_w",
                    "address": 0,
                    "type": kind,
                    "word_order": word,
                    "byte_order": byte,
                },
            ],
        }
    )
    [block] = DevicePlan(device_map).blocks
    out: list = []
    decode_block(block, encode(kind, raw, word, byte), out, PollResult())
    assert [v for _, v, _ in out] == [float(raw)]


@pytest.mark.parametrize(
    ("bus", "message"),
    [
        ({"name": "b", "transport": "rtu"}, "transport rtu needs serial_port"),
        ({"name": "b", "transport": "tcp"}, "transport tcp needs host"),
        ({"name": "b", "host": "h", "parity": "X"}, r"buses\.0\.parity"),
    ],
)
def test_a_bad_bus_is_a_config_error_naming_the_field(bus: dict, message: str) -> None:
    options = {"buses": [bus], "devices": [{"name": "m", "map": "eastron-sdm630"}]}
    with pytest.raises(ConfigError, match=message):
        make(options)

"""RTU framing: on a serial line (a socat pty pair) and over TCP; a unit stopping mid-frame."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from agent.cli import app
from collectors.modbus.maps import load_maps
from tests.modbus.conftest import make, poll_all_once, run_until, tcp_options, value_of
from tests.servers.modbus import ModbusServer, PtyPair, Unit, map_registers, pty_pair

SDM120 = load_maps()["eastron-sdm120"]
# Eastron SDM120: float32 V, W, kWh (input registers).
RAWS = {"voltage": 229.75, "power": 512.5, "total.energy": 100.75}


def units() -> dict[int, Unit]:
    # Unit 3 sends the first 5 bytes of each answer (unit, function, byte count and two
    # data bytes) and then nothing: the CRC never comes.
    return {
        1: Unit(map_registers(SDM120, RAWS)),
        2: Unit(map_registers(SDM120, {**RAWS, "power": 1024.25})),
        3: Unit(map_registers(SDM120, RAWS), truncate_to=5),
    }


@pytest.fixture(scope="module")
def serial_line() -> Iterator[tuple[PtyPair, ModbusServer]]:
    with pty_pair() as pair, ModbusServer(units(), serial_port=pair.b) as server:
        yield pair, server


def serial_options(port: str, devices: list[dict[str, object]], **defaults: object) -> dict:
    return {
        "flush_s": 0.05,
        "buses": [{"name": "rs485-1", "transport": "rtu", "serial_port": port, "baudrate": 19200}],
        "defaults": {"interval_s": 60.0, "jitter_s": 0.0, "timeout_s": 0.5, **defaults},
        "devices": devices,
    }


async def test_rtu_on_a_serial_line(serial_line) -> None:
    pair, _ = serial_line
    devices = [
        {"name": "m1", "unit": 1, "map": "eastron-sdm120"},
        {"name": "m2", "unit": 2, "map": "eastron-sdm120"},
    ]
    frame = await poll_all_once(make(serial_options(pair.a, devices)))
    assert value_of(frame, "m1", "voltage") == 229.75
    assert value_of(frame, "m2", "power") == 1024.25
    assert value_of(frame, "m1", "total.energy") == 100.75


async def test_a_unit_stopping_mid_frame_times_out_and_the_line_recovers(serial_line) -> None:
    """Unit 3's answer stops after 5 bytes. Chosen: a timeout for unit 3 (its partial frame
    is never taken as data), and unit 1 on the same line reads correctly right after."""
    pair, _ = serial_line
    devices = [
        {"name": "cut", "unit": 3, "map": "eastron-sdm120"},
        {"name": "m1", "unit": 1, "map": "eastron-sdm120"},
    ]
    collector = make(
        serial_options(pair.a, devices, timeout_s=0.3, interval_s=0.1, backoff_max_s=0.1)
    )
    capture = await run_until(
        collector,
        lambda c: c.states["cut"].finished >= 2 and c.states["m1"].finished >= 3,
    )
    assert collector.states["cut"].failures["timeout"] >= 2
    assert not collector.states["m1"].failures
    frame = capture.frame()
    assert frame.filter(frame["device"] == "cut").is_empty()
    assert set(frame.filter(frame["point"] == "voltage")["value"]) == {229.75}


async def test_rtu_over_tcp() -> None:
    """A transparent serial server: RTU frames (with CRC) carried over a TCP connection."""
    with ModbusServer(units(), framer="rtu") as server:
        devices = [{"name": "m2", "unit": 2, "map": "eastron-sdm120"}]
        frame = await poll_all_once(
            make(tcp_options(server.port, devices, transport="rtu-over-tcp"))
        )
    assert value_of(frame, "m2", "power") == 1024.25


def test_probe_on_a_serial_port(serial_line) -> None:
    """``pue-agent probe modbus --serial PORT`` reads one unit of an RTU line."""
    pair, _ = serial_line
    result = CliRunner().invoke(
        app,
        [
            "probe",
            "modbus",
            "--serial",
            pair.a,
            "--baudrate",
            "19200",
            "--unit",
            "2",
            "--map",
            "eastron-sdm120",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    rows = {r["point"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["power"]["value"] == 1024.25
    assert rows["power"]["device"] == "a#2"

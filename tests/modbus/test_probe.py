"""``pue-agent probe modbus`` as an operator runs it (a real process against a real server)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.probe import EXIT_NO_PROFILE, EXIT_PROTOCOL, EXIT_UNREACHABLE
from collectors.modbus.maps import load_maps
from tests.servers.modbus import ModbusServer, Unit, map_registers

EXE = str(Path(sys.executable).with_name("pue-agent"))
DTSU666 = load_maps()["chint-dtsu666"]


@pytest.fixture(scope="module")
def server() -> Iterator[ModbusServer]:
    # CHINT DTSU666: float32 in 0.1 W and 0.1 V; import energy in kWh.
    registers = map_registers(
        DTSU666, {"total.power": 123450.0, "l1.voltage": 2302.0, "import.energy": 1520.5}
    )
    with ModbusServer({3: Unit(registers), 4: Unit(registers, exception=2)}) as s:
        yield s


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, "probe", "modbus", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_json_lines_with_the_keys_of_every_probe(server) -> None:
    result = probe(f"127.0.0.1:{server.port}", "--unit", "3", "--map", "chint-dtsu666", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == len(DTSU666.registers)
    assert all(
        set(r) == {"device", "point", "quantity", "value", "unit", "ts", "profile"} for r in rows
    )
    by_point = {r["point"]: r for r in rows}
    assert by_point["total.power"]["value"] == 123450 / 10  # 12345 W
    assert by_point["total.power"]["unit"] == "W"
    assert by_point["l1.voltage"]["value"] == 2302 / 10  # 230.2 V
    assert by_point["import.energy"]["value"] == 1520.5
    assert {r["device"] for r in rows} == {f"127.0.0.1:{server.port}#3"}


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def probe_in_process(*args: str) -> _Result:
    """The same command in this process (each ``pue-agent`` start costs seconds here)."""
    result = CliRunner().invoke(app, ["probe", "modbus", *args])
    return _Result(result.exit_code, result.stdout, result.stderr)


def test_list_maps_and_errors(server) -> None:
    listed = probe_in_process("--list-maps", "--json")
    assert listed.returncode == 0, listed.stderr
    maps = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {m["map"] for m in maps} == set(load_maps())
    assert all(m["document"]["title"] and m["document"]["version"] for m in maps)

    refused = probe_in_process(
        f"127.0.0.1:{server.port}", "--unit", "4", "--map", "chint-dtsu666", "--json"
    )
    assert refused.returncode == EXIT_PROTOCOL
    error = json.loads(refused.stdout)
    assert "exception 0x02 (illegal_data_address)" in error["error"]

    silent = probe_in_process(
        f"127.0.0.1:{server.port}", "--unit", "9", "--map", "chint-dtsu666", "--timeout", "0.3"
    )
    assert silent.returncode == EXIT_UNREACHABLE
    assert "timeout" in silent.stderr

    unknown = probe_in_process(f"127.0.0.1:{server.port}", "--map", "acme-x", "--json")
    assert unknown.returncode == EXIT_NO_PROFILE
    assert "chint-dtsu666" in json.loads(unknown.stdout)["error"]

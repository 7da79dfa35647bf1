"""``pue-agent probe bacnet``: readings through a map or all analog objects, --discover, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from agent.probe import EXIT_PROTOCOL, EXIT_UNREACHABLE, EXIT_UNRESOLVED, EXIT_USAGE
from collectors.bacnet.probe import register
from tests.bacnet.conftest import FULL, MAPS, PLAIN
from tests.paths import ROOT
from tests.servers.bacnet import BacnetServer, silent_port

KEYS = {"device", "point", "quantity", "value", "unit", "ts", "profile", "quality"}


def probe_app() -> typer.Typer:
    app = typer.Typer()
    group = typer.Typer()
    register(group)
    app.add_typer(group, name="probe")
    return app


def invoke(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    result = CliRunner().invoke(
        probe_app(), ["probe", "bacnet", *args, "--local-address", "127.0.0.1:0", "--json"]
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.output


def test_probe_with_map_prints_the_shared_keys(server: BacnetServer) -> None:
    code, lines, output = invoke(server.address(PLAIN), "--device-id", "1002", "--map", "chiller")
    assert code == 0, output
    assert all(set(line) == KEYS for line in lines)
    by_point = {line["point"]: line for line in lines}
    assert by_point["power"]["value"] == 350_000.0 and by_point["power"]["unit"] == "W"
    # 123.4567 MWh = 123,456.7 kWh, as far as a BACnet REAL (float32, 7 digits) carries it
    assert by_point["energy"]["value"] == pytest.approx(123_456.7, rel=1e-7)
    assert by_point["energy"]["unit"] == "kWh"
    assert by_point["cooling"]["quality"] == 4  # DERIVED
    assert {line["profile"] for line in lines} == {"chiller"}
    assert {line["device"] for line in lines} == {"device-1002"}


def test_probe_without_map_reads_every_analog_object_with_known_units(
    server: BacnetServer,
) -> None:
    code, lines, output = invoke(server.address(FULL), "--device-id", "1001")
    assert code == 0, output
    by_point = {line["point"]: line for line in lines}
    assert by_point["analog-input.1"]["quantity"] == "power_w"
    assert by_point["analog-input.10"]["value"] == 12.5  # 54.5 F
    assert by_point["analog-input.11"]["quality"] == 8  # out of service: DEVICE_SUSPECT
    assert "analog-input.4" not in by_point  # flow: no agent quantity
    assert "analog-input.14" not in by_point  # NaN: dropped
    assert {line["profile"] for line in lines} == {"auto"}


def test_discover_lists_the_device_and_its_objects(server: BacnetServer) -> None:
    code, lines, output = invoke(server.address(FULL), "--discover")
    assert code == 0, output
    [device] = lines
    assert device["device_id"] == 1001 and device["name"] == FULL
    objects = {o["object"]: o for o in device["objects"]}
    assert objects["analog-input,1"] == {
        "object": "analog-input,1",
        "name": "CH-1 kW",
        "units": "kilowatts",
        "present_value": 350.0,
    }
    assert objects["analog-input,14"]["present_value"] == "nan"


def test_probe_errors_have_codes(server: BacnetServer) -> None:
    with silent_port() as port:
        code, lines, _ = invoke(
            f"127.0.0.1:{port}", "--device-id", "7", "--timeout", "0.2", "--retries", "0"
        )
        assert code == EXIT_UNREACHABLE and lines[0]["code"] == EXIT_UNREACHABLE
        code, lines, _ = invoke(f"127.0.0.1:{port}", "--discover", "--timeout", "0.2")
        assert code == EXIT_UNREACHABLE and "no device answered" in str(lines[0]["error"])
    code, lines, _ = invoke(server.address(FULL), "--device-id", "1001", "--map", "nope")
    assert code == EXIT_USAGE and "unknown map 'nope'" in str(lines[0]["error"])
    code, lines, _ = invoke(server.address(FULL), "--device-id", "1001", "--map", "chiller-test")
    assert code == EXIT_USAGE  # not built in: needs --maps-dir
    code, lines, _ = invoke(
        server.address(FULL),
        "--device-id",
        "1001",
        "--map",
        "chiller-test",
        "--maps-dir",
        str(MAPS),
    )
    assert code == 0 and len(lines) == 10
    # Only objects the device does not have: it answered, but nothing is readable.
    code, lines, _ = invoke(server.address(FULL), "--device-id", "1001", "--map", "crah")
    assert code == 0  # the CRAH map's analog-input 1-3 exist on the test chiller
    code, lines, _ = invoke("no-such-host.invalid", "--device-id", "1")
    assert code == EXIT_UNRESOLVED
    code, lines, _ = invoke(server.address(FULL))
    assert code == EXIT_USAGE and "--device-id" in str(lines[0]["error"])
    assert EXIT_PROTOCOL not in (EXIT_USAGE, EXIT_UNREACHABLE)


def test_probe_through_the_installed_cli(server: BacnetServer) -> None:
    # The real command as an operator runs it: the probe group wires `bacnet` in.
    result = subprocess.run(
        [sys.executable, "-m", "agent", "probe", "bacnet", server.address(PLAIN),
         "--device-id", "1002", "--map", "chiller", "--local-address", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "chw.return" in result.stdout and "profile: chiller" in result.stdout

"""``deploy/modbus-gateway``: a Modbus TCP gateway with RS-485 meters passes ``pue-agent check``."""

from __future__ import annotations

from typer.testing import CliRunner

from agent.cli import app
from tests.paths import ROOT


def test_the_modbus_gateway_example_passes_check() -> None:
    config = ROOT / "deploy" / "modbus-gateway" / "agent.toml"
    result = CliRunner().invoke(app, ["check", "--config", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("OK")
    assert "modbus: 9 device(s) on 3 bus(es)" in result.stdout
    assert "PUE category 1" in result.stdout

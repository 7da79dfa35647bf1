"""``deploy/bacnet-chiller-plant``: the BACnet chiller plant example passes ``pue-agent check``."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app
from tests.paths import ROOT


def test_the_chiller_plant_example_passes_check(tmp_path: Path) -> None:
    for name in ("snmp_auth_key", "snmp_priv_key"):
        (tmp_path / name).write_text(f"placeholder-{name}\n", encoding="utf-8")
    config = ROOT / "deploy" / "bacnet-chiller-plant" / "agent.toml"
    result = CliRunner().invoke(
        app,
        ["check", "--config", str(config)],
        env={"COLUMNS": "200", "CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("OK")
    # 2 chillers + 2 towers + 6 CRAHs from range entries.
    assert "bacnet: 10 device(s) every 15 s" in result.stdout
    assert "(maps chiller, cooling-tower, crah)" in result.stdout
    assert "PUE category 1" in result.stdout
    assert "placeholder-" not in result.stdout

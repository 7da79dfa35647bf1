"""``pue-agent probe redfish``: discovery notes and readings, table or JSON lines with source."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from collectors.redfish.probe import register
from tests.paths import ROOT
from tests.servers import free_port
from tests.servers.redfish import make_tls, redfish_server, tree


def probe_app() -> typer.Typer:
    app = typer.Typer()
    group = typer.Typer()
    register(group)
    app.add_typer(group, name="probe")
    return app


def test_probe_json_lines_with_source(tmp_path: Path) -> None:
    tls = make_tls(tmp_path, "bmc")
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw\n")
    with redfish_server(tree("real/nvidia_viking"), auth="session", tls=tls) as server:
        result = CliRunner().invoke(
            probe_app(),
            [
                "probe",
                "redfish",
                server.url,
                "--user",
                "admin",
                "--password-file",
                str(pw),
                "--ca-file",
                str(tls.ca),
                "--json",
            ],
        )
        assert server.logouts == 1
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_point = {r["point"]: r for r in lines}
    total = by_point["input.power.sum_psu_input_sensors"]
    # real/nvidia_viking Chassis/DGX/Sensors/PWR_PSU0..5: 351+351+312+312+351+312 W.
    assert total["value"] == 1989.0 and total["unit"] == "W" and total["device"] == "127.0.0.1"
    assert total["source"].startswith("/redfish/v1/Chassis/DGX/Sensors/PWR_PSU0 + ")
    gpu = by_point["gpu.HGX_GPU_SXM_1.energy"]
    assert gpu["source"] == "/redfish/v1/Chassis/HGX_GPU_SXM_1/EnvironmentMetrics"
    assert gpu["quantity"] == "energy_kwh" and gpu["value"] == 15.577367869129
    assert set(total) >= {"device", "point", "quantity", "value", "unit", "ts", "source"}
    assert "s3cret-pw" not in result.output


def test_probe_wrong_ca_exits_with_tls_error(tmp_path: Path) -> None:
    tls = make_tls(tmp_path, "bmc")
    other = make_tls(tmp_path / "o", "other")
    with redfish_server(tree("real/supermicro"), tls=tls) as server:
        result = CliRunner().invoke(
            probe_app(), ["probe", "redfish", server.url, "--ca-file", str(other.ca)]
        )
    assert result.exit_code == 6  # EXIT_PROTOCOL: the BMC answered, its certificate refused
    assert "TLS handshake failed" in result.output and "127.0.0.1" in result.output


def test_cli_wiring_table_output() -> None:
    # Through the installed console script: PROBE_MODULES lists collectors.redfish.probe.
    with redfish_server(tree("dmtf/public-pdu")) as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from agent.cli import main; main()",
                "probe",
                "redfish",
                server.url,
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
        )
    assert proc.returncode == 0, proc.stderr
    assert "RackPDUs 1:" in proc.stdout  # what discovery found
    # dmtf/public-pdu RackPDUs/1/Metrics PowerWatts 6438 W, read from that path.
    row = next(line for line in proc.stdout.splitlines() if " pdu.1.power " in line)
    assert "6438" in row and "/redfish/v1/PowerEquipment/RackPDUs/1/Metrics" in row


def _json_error(result) -> str:  # type: ignore[no-untyped-def]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
    error = json.loads(line)
    assert set(error) == {"error", "code"} and error["code"] == result.exit_code
    return str(error["error"])


def test_probe_json_exit_codes_auth_unreachable_unresolvable(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("not-the-password-5d5d\n")
    with redfish_server(tree("dmtf/public-pdu"), auth="session") as server:
        args = ["probe", "redfish", server.url, "--user", "admin", "--password-file", str(pw)]
        auth = CliRunner().invoke(probe_app(), [*args, "--json"])
    assert auth.exit_code == 4, auth.output
    assert "not-the-password-5d5d" not in auth.output + _json_error(auth)
    closed = CliRunner().invoke(
        probe_app(), ["probe", "redfish", f"http://127.0.0.1:{free_port()}", "--json"]
    )
    assert closed.exit_code == 3, closed.output
    assert "127.0.0.1" in _json_error(closed)
    dns = CliRunner().invoke(probe_app(), ["probe", "redfish", "https://bmc.invalid", "--json"])
    assert dns.exit_code == 7
    assert "cannot resolve host name 'bmc.invalid'" in _json_error(dns)

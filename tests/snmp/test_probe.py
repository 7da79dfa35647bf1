"""``pue-agent probe snmp`` as an operator runs it (a real process against real agents)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers.snmp import black_hole
from tests.snmp.conftest import SIM_USER

EXE = str(Path(sys.executable).with_name("pue-agent"))


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, "probe", "snmp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_json_lines(sim) -> None:
    result = probe(f"127.0.0.1:{sim.port}", "--community", "sentry4", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and all(
        set(r) == {"device", "point", "quantity", "value", "unit", "ts", "profile"} for r in rows
    )
    assert {r["profile"] for r in rows} == {"sentry4"}
    by_point = {r["point"]: r for r in rows}
    # Sentry4-MIB st4InputCordActivePower.1.1 = 1701 W
    assert by_point["unit.1.cord.1.power"]["value"] == 1701.0
    assert by_point["unit.1.cord.1.power"]["unit"] == "W"
    assert by_point["unit.1.cord.1.energy"]["value"] == 8937 / 10  # st4InputCordEnergy, 0.1 kWh
    assert rows[0]["ts"].endswith("Z")


def test_named_profile_and_table(sim) -> None:
    result = probe(f"127.0.0.1:{sim.port}", "-c", "apc-7902b", "--profile", "apc-rpdu")
    assert result.returncode == 0, result.stderr
    assert "load.1.current" in result.stdout and "profile: apc-rpdu" in result.stdout


def test_timeout_exit_code() -> None:
    with black_hole() as port:
        result = probe(f"127.0.0.1:{port}", "-c", "public", "--timeout", "0.3", "--retries", "0")
    assert result.returncode == 3
    assert "timeout" in result.stderr and "no answer" in result.stderr


def test_no_profile_exit_code(sim) -> None:
    result = probe(f"127.0.0.1:{sim.port}", "-c", "stulz_wib8000")
    assert result.returncode == 5
    assert "no profile matches" in result.stderr and "1.3.6.1.4.1.29462.10" in result.stderr


def test_auth_failure_names_user_not_key(sim) -> None:
    wrong = "probe-wrong-auth-key-9a9a"
    result = probe(
        f"127.0.0.1:{sim.port}",
        "--v3-user",
        SIM_USER.name,
        "--v3-auth-key-env",
        "AK",
        "--v3-priv-key-env",
        "PK",
        "--v3-priv-protocol",
        "AES256",
        "--v3-context",
        "apc-8641",
        env={"AK": wrong, "PK": SIM_USER.priv_key},
    )
    assert result.returncode == 4
    assert SIM_USER.name in result.stderr and "authentication key" in result.stderr
    out = result.stdout + result.stderr
    assert wrong not in out and SIM_USER.priv_key not in out


def test_v3_authpriv_ok(sim) -> None:
    result = probe(
        f"127.0.0.1:{sim.port}",
        "--v3-user",
        SIM_USER.name,
        "--v3-auth-key-env",
        "AK",
        "--v3-priv-key-env",
        "PK",
        "--v3-priv-protocol",
        "AES256",
        "--v3-context",
        "janitza-umg96_umg96",
        "--json",
        env={"AK": SIM_USER.auth_key, "PK": SIM_USER.priv_key},
    )
    assert result.returncode == 0, result.stderr
    rows = {r["point"]: r["value"] for r in map(json.loads, result.stdout.splitlines())}
    assert rows["total.power"] == 10041.0  # JANITZA-MIB-UMG96 p3, W


def test_bad_target() -> None:
    result = probe("host:notaport", "-c", "x")
    assert result.returncode == 2
    assert "HOST:PORT" in result.stderr


def _json_error(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The one JSON object a failed ``--json`` probe prints on stdout."""
    (line,) = result.stdout.splitlines()
    error = json.loads(line)
    assert set(error) == {"error", "code"} and error["code"] == result.returncode
    return error


def test_json_errors_timeout_and_unresolvable_host_are_distinct() -> None:
    with black_hole() as port:
        timeout = probe(
            f"127.0.0.1:{port}", "-c", "public", "--timeout", "0.3", "--retries", "0", "--json"
        )
    assert timeout.returncode == 3 and "no answer" in _json_error(timeout)["error"]
    # RFC 2606: .invalid never resolves. DNS failure is its own code, never a timeout.
    dns = probe("no-such-pdu.invalid", "-c", "public", "--timeout", "0.3", "--json")
    assert dns.returncode == 7
    error = str(_json_error(dns)["error"])
    assert "cannot resolve" in error and "no-such-pdu.invalid" in error and "timeout" not in error


def test_forced_wrong_profile_without_readings_exits_5(sim) -> None:
    # The sentry4 walk has no janitza-umg96 OIDs: the forced profile reads nothing.
    result = probe(f"127.0.0.1:{sim.port}", "-c", "sentry4", "--profile", "janitza-umg96")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "janitza-umg96" in result.stderr and "no readings" in result.stderr
    as_json = probe(
        f"127.0.0.1:{sim.port}", "-c", "sentry4", "--profile", "janitza-umg96", "--json"
    )
    assert as_json.returncode == 5 and "janitza-umg96" in _json_error(as_json)["error"]


def test_auth_failure_json_names_user_not_key(sim) -> None:
    wrong = "probe-wrong-auth-key-7b7b"
    result = probe(
        f"127.0.0.1:{sim.port}",
        "--v3-user",
        SIM_USER.name,
        "--v3-auth-key-env",
        "AK",
        "--v3-priv-key-env",
        "PK",
        "--v3-priv-protocol",
        "AES256",
        "--v3-context",
        "apc-8641",
        "--json",
        env={"AK": wrong, "PK": SIM_USER.priv_key},
    )
    assert result.returncode == 4
    assert SIM_USER.name in str(_json_error(result)["error"])
    assert wrong not in result.stdout + result.stderr


def test_usage_error_with_json_is_json() -> None:
    result = probe("127.0.0.1:99999", "-c", "public", "--json")
    assert result.returncode == 2
    assert "HOST:PORT" in str(_json_error(result)["error"])

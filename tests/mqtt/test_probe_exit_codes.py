"""``pue-agent probe mqtt --json``: each failure a distinct exit code, as JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.mqtt.conftest import BROKER_USER
from tests.paths import ROOT
from tests.servers import free_port
from tests.servers.mosquitto import start_mosquitto


def probe(
    broker: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "probe",
            "mqtt",
            broker,
            "#",
            "--mapping",
            "shelly_gen2",
            "--seconds",
            "0.2",
            "--json",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def json_error(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = result.stdout.splitlines()
    error = json.loads(line)
    assert set(error) == {"error", "code"} and error["code"] == result.returncode
    return str(error["error"])


def test_unreachable_and_unresolvable_are_distinct() -> None:
    refused = probe(f"127.0.0.1:{free_port()}")  # nothing listens there
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "cannot read from 127.0.0.1" in json_error(refused)
    dns = probe("no-such-broker.invalid:1883")
    assert dns.returncode == 7
    assert "cannot resolve host name 'no-such-broker.invalid'" in json_error(dns)


def test_credentials_refused_is_exit_4_and_the_password_is_never_printed(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "broker", users={BROKER_USER: "right-Pa55word-3c3c"})
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "mqtt-password").write_text("wrong-Pa55word-8e8e\n")
    try:
        result = probe(
            f"{broker.host}:{broker.port}",
            "--username",
            BROKER_USER,
            "--password-secret",
            "mqtt-password",
            env={"CREDENTIALS_DIRECTORY": str(secrets)},
        )
    finally:
        broker.stop()
    assert result.returncode == 4, result.stdout + result.stderr
    json_error(result)
    assert "wrong-Pa55word-8e8e" not in result.stdout + result.stderr

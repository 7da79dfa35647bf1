"""The agent as a process: SIGTERM stops it cleanly; the demo command works."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.journal import Journal
from tests.paths import ROOT


def test_sigterm_flushes_and_exits_zero(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\nack_file = "{tmp_path}/acks.txt"\n'
        '[[collectors]]\nkind = "sim"\nname = "s"\npdus = 500\ninterval_s = 0.05\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    acks = tmp_path / "acks.txt"
    deadline = time.monotonic() + 60
    while not (acks.exists() and acks.stat().st_size > 0):
        assert proc.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    assert time.monotonic() - sent < 10
    log = stderr.decode()
    assert '"event": "stopped"' in log
    lines = acks.read_text(encoding="utf-8").splitlines()
    journal = Journal(tmp_path / "state" / "journal" / "journal.sqlite")
    assert journal.verify().ok
    assert journal.head[0] == int(lines[-1].split()[0])
    committed = int(log.split('"committed_readings": ')[1].split("}")[0].split(",")[0])
    assert committed == journal.stats()["readings"]


def test_demo_command_runs_on_the_embedded_default(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "demo",
            "--minutes",
            "0.1",
            "--no-protocols",
            "--no-report",
            "--state-dir",
            str(tmp_path / "demo"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PUE (realtime, power ratio)" in result.stdout
    assert "journal verified OK" in result.stdout
    # The simulated site's real-time PUE lies in the designed 1.2-1.4 band.
    value = float(result.stdout.split("PUE (realtime, power ratio)")[1].split("│")[1].strip())
    assert 1.2 <= value <= 1.4

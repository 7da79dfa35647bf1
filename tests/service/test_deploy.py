"""systemd units (verify, exposure score, timer), deploy examples (`check`), MDWE tolerance."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.journal import Journal
from tests.paths import ROOT
from tests.servers import free_port, require_binary

UNITS = ROOT / "systemd"
INSTALLED_BINARY = "/opt/pue-agent/bin/pue-agent"
#: The exposure score the agent's unit must stay at or below (issue 10).
MAX_EXPOSURE = 2.0


def _units_for_verify(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at this checkout's pue-agent (verify checks it exists)."""
    binary = Path(sys.executable).parent / "pue-agent"
    if not binary.exists():
        binary = Path(shutil.which("pue-agent") or "")
    assert binary.is_file(), "pue-agent console script not installed: run scripts/setup.sh"
    folder = tmp_path / "units"
    folder.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text(encoding="utf-8")
        (folder / unit.name).write_text(text.replace(INSTALLED_BINARY, str(binary)))
    return folder


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    folder = _units_for_verify(tmp_path)
    units = sorted(str(p) for p in folder.iterdir())
    assert [Path(u).name for u in units] == [
        "pue-agent-report.service",
        "pue-agent-report.timer",
        "pue-agent.service",
    ]
    result = subprocess.run(
        [analyze, "verify", *units], capture_output=True, text=True, cwd=folder, check=False
    )
    assert result.returncode == 0, result.stderr
    # verify reports unknown keys and bad values as warnings with exit code 0: none allowed.
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("unit", ["pue-agent.service", "pue-agent-report.service"])
def test_exposure_score(tmp_path: Path, unit: str) -> None:
    analyze = require_binary("systemd-analyze")
    folder = _units_for_verify(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(folder / unit)],
        capture_output=True,
        text=True,
        cwd=folder,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    assert score <= MAX_EXPOSURE, result.stdout
    print(f"{unit}: exposure {score}")


def test_agent_unit_contract() -> None:
    text = (UNITS / "pue-agent.service").read_text(encoding="utf-8")
    for line in (
        "Type=notify",
        "WatchdogSec=60s",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=pue-agent",
        "LoadCredential=api_token_ops",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "Environment=POLARS_SKIP_CPU_CHECK=1 PYTHONDONTWRITEBYTECODE=1",
        "LimitNOFILE=16384",  # issue 22: never the default 1,024 (idle clients starved us)
    ):
        assert line in text.splitlines(), line


def test_report_timer_fires_on_the_first_at_two(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    timer = (UNITS / "pue-agent-report.timer").read_text(encoding="utf-8")
    calendar = re.search(r"^OnCalendar=(.+)$", timer, re.MULTILINE)
    assert calendar
    result = subprocess.run(
        [analyze, "calendar", "--iterations=3", calendar.group(1)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapses = re.findall(
        r"(?:Next elapse|Iter\. #\d): \w+ (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})", result.stdout
    )
    assert len(elapses) == 3, result.stdout
    assert all(day.endswith("-01") and clock == "02:00:00" for day, clock in elapses)
    # The month the report service asks for is the previous one, also across a year end.
    service = (UNITS / "pue-agent-report.service").read_text(encoding="utf-8")
    expression = re.search(r'--month "\$\((.+?)\)" --out', service)
    assert expression
    shell = expression.group(1).replace("%%", "%").replace("$(date +%Y-%m-15)", "2027-01-15")
    month = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True)
    assert month.stdout.strip() == "2026-12"


@pytest.mark.parametrize("example", ["edge-room", "hall-1000"])
def test_deploy_examples_pass_check(tmp_path: Path, example: str) -> None:
    config = ROOT / "deploy" / example / "agent.toml"
    credentials = tmp_path / "credstore"
    credentials.mkdir()
    names = set(re.findall(r'_secret = "([a-z0-9_]+)"', config.read_text(encoding="utf-8")))
    for name in names:
        (credentials / name).write_text(f"placeholder-{name}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().endswith("OK")
    assert "placeholder-" not in result.stdout + result.stderr
    if example == "hall-1000":
        assert "PUE category 1" in result.stdout
        assert "72 meters" in result.stdout


def test_agent_runs_with_memory_deny_write_execute(tmp_path: Path) -> None:
    # MemoryDenyWriteExecute= as the kernel's PR_SET_MDWE (inherited across exec), with the
    # unit's environment: proves Python, Polars, pyarrow and aiohttp work without W+X pages.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3): measured on 6.18 instead")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path}/state"\n[api]\nenabled = true\nport = {free_port()}\n'
        '[[collectors]]\nkind = "sim"\nname = "s"\npdus = 20\ninterval_s = 10\nspeed = 100\n',
        encoding="utf-8",
    )
    launcher = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.prctl(65, 1, 0, 0, 0) == 0\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "os.execv(sys.executable, [sys.executable, '-m', 'agent', *sys.argv[1:]])\n"
    )
    env = {**os.environ, "POLARS_SKIP_CPU_CHECK": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, "run", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    journal_file = tmp_path / "state" / "journal" / "journal.sqlite"
    deadline = time.monotonic() + 30
    while not journal_file.exists() or Journal(journal_file).head[0] < 5:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr.decode()
    assert Journal(journal_file).verify().ok

"""One agent per state directory, with real processes (issue 22).

Before: two agents started on one state dir both ran, and the interval store got
rows written twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from agent.journal import Journal
from tests.faults.agentproc import sim_collector, start_agent, wait_for
from tests.paths import ROOT
from tests.service.conftest import Tokens


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_second_agent_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    tokens = Tokens()
    first = start_agent(tmp_path, tokens, sim_collector("sim-a"))
    try:
        wait_for(
            lambda: httpx.get(first.url + "/readyz", timeout=1).status_code == 200,
            first,
            "first agent ready",
        )
        second = _cli("run", "--config", str(first.config))
        assert second.returncode == 2  # EXIT_USAGE, like any refused configuration
        message = second.stdout + second.stderr
        assert f"state directory {first.state} is in use by another pue-agent" in message
        assert f"pid {first.proc.pid}" in message
        assert "Traceback" not in message
        # The first one is untouched and still collecting.
        rows = first.journal_rows()
        wait_for(lambda: first.journal_rows() > rows, first, "first agent still ingesting")
        assert httpx.get(first.url + "/healthz", timeout=2).status_code == 200

        # `pue-agent import` hands its readings to the running agent through the journal
        # (multi-process safe: appends continue the chain under SQLite's write lock).
        csv = tmp_path / "history.csv"
        csv.write_text(
            "ts,device,point,quantity,value\n"
            "2026-10-01T00:00:00Z,meter-9,energy,energy_kwh,1.5\n"
            "2026-10-01T00:15:00Z,meter-9,energy,energy_kwh,2.5\n",
            encoding="utf-8",
        )
        imported = _cli("import", str(csv), "--config", str(first.config))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        assert "imported 2 readings" in imported.stdout
        assert httpx.get(first.url + "/healthz", timeout=2).status_code == 200
    finally:
        # SIGKILL: the kernel drops the flock with the process, so no stale lock remains.
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
    journal = Journal(first.state / "journal" / "journal.sqlite")
    try:
        assert journal.verify().ok  # the import and the agent continued one chain
    finally:
        journal.close()
    again = start_agent(tmp_path / "again", tokens, sim_collector("sim-a"), state=first.state)
    try:
        wait_for(
            lambda: httpx.get(again.url + "/readyz", timeout=1).status_code == 200,
            again,
            "agent restarted after SIGKILL",
        )
    finally:
        assert again.stop() == 0

"""One agent for the console tests: the sim collector, a year of stated energy, a report.

Built once per package (the browser and the HTTP tests share it):

* the store holds :mod:`tests.console.sitedata`'s intervals, and ``pue-agent kpi --period
  <this month> --json`` has computed and stored the KPIs (its output is kept: the page
  must show the same figures);
* the aggregator entry is disabled, so nothing rewrites those KPIs while the tests run;
  a cursor named ``bms-feed`` is registered and never advanced, so the console has a
  consumer whose lag grows;
* ``pue-agent report`` writes last month's signed bundle (zh + en) into
  ``state/reports`` in a subprocess, in parallel with the agent's start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agent import keys
from agent.cli import app
from agent.journal import Journal
from agent.periods import shift_month
from agent.settings import load_settings
from agent.store import IntervalStore
from tests.console.sitedata import SITE_ID, current_month, fill_intervals
from tests.console.sitedata import console_site as site_table
from tests.faults.agentproc import AgentProcess, sim_collector, start_agent, toml_text, wait_for
from tests.paths import ROOT
from tests.service.conftest import Tokens

#: A consumer cursor that is registered and never advanced (its lag is shown).
IDLE_CONSUMER = "bms-feed"


@dataclass
class ConsoleSite:
    """The running agent and what the tests compare the page with."""

    agent: AgentProcess
    tokens: Tokens
    month: str
    report_month: str
    kpi_json: dict[str, Any]
    n_before: int
    n_month: int
    fingerprint: str
    report: subprocess.Popen[bytes]
    tmp: Path

    @property
    def bundle(self) -> Path:
        """The report bundle ``pue-agent report`` wrote (wait with :meth:`report_ready`)."""
        return self.agent.state / "reports" / f"{SITE_ID}-{self.report_month}.zip"

    def report_ready(self) -> Path:
        """Wait for the report subprocess; fail with its output if it failed."""
        out, _ = self.report.communicate(timeout=120)
        assert self.report.returncode == 0, out.decode(errors="replace")
        return self.bundle

    def client(self) -> httpx.Client:
        """An HTTP client for the agent's API (no credentials)."""
        return httpx.Client(base_url=self.agent.url, timeout=30)


@pytest.fixture(scope="package")
def console_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSite]:
    tmp = tmp_path_factory.mktemp("console")
    tokens = Tokens()
    (tmp / "site.toml").write_text(toml_text({"site": site_table()}), encoding="utf-8")
    head = f'site_file = "site.toml"\npolicies_dir = "{tmp / "no-operator-packs"}"\n'
    body = (
        sim_collector("sim", pdus=4, interval_s=1)
        # Disabled: no live aggregation rewrites the stated intervals and KPIs.
        + '[[sinks]]\nkind = "aggregator"\nname = "store"\nenabled = false\n'
    )
    # The config start_agent writes, first written here so the CLI can read it.
    config = tmp / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp / "state"}"\n{head}[api]\nenabled = false\n{body}', encoding="utf-8"
    )
    settings = load_settings(config)
    month = current_month()
    frame, n_before, n_month = fill_intervals(month)
    IntervalStore(settings.store_path()).write_intervals(frame, tag="000000000001")
    signing = keys.init_key(settings)
    result = CliRunner().invoke(app, ["kpi", "--period", month, "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    kpi_json = json.loads(result.stdout)
    journal = Journal(settings.journal_path)
    journal.register_cursor(IDLE_CONSUMER)
    journal.close()
    report_month = shift_month(month, -1)
    report = subprocess.Popen(
        [sys.executable, "-m", "agent", "report", "--month", report_month, "--lang", "both",
         "--no-csv", "--out", str(tmp / "state" / "reports"), "--config", str(config)],
        cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    agent = start_agent(tmp, tokens, body, head=head)
    try:
        wait_for(lambda: httpx.get(f"{agent.url}/readyz").status_code == 200, agent, "ready")
        yield ConsoleSite(
            agent, tokens, month, report_month, kpi_json, n_before, n_month,
            signing.fingerprint, report, tmp,
        )  # fmt: skip
    finally:
        if report.poll() is None:
            report.kill()
            report.wait()
        assert agent.stop() == 0, agent.log_text()[-3000:]
        # No token ever reaches the log.
        log = agent.log_text()
        assert tokens.ops not in log and tokens.auditor not in log

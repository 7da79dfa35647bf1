"""History is usable at once after `pue-agent import` (issue 15, item 2).

A month of 15-minute register readings (Asia/Shanghai October 2026: 2,976 quarter-hours,
2,977 readings per meter): the grid register advances 1.15 kWh and the IT register 1.0 kWh
per quarter-hour, so the month's E_DC is 2,976 x 1.15 = 3,422.4 kWh, E_IT 2,976 kWh and
its PUE 1.15 — whoever aggregates the batch, and however often the aggregator runs.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent import keys
from agent.aggregator import Aggregator, catch_up, site_aggregator
from agent.cli import app
from agent.journal import Journal
from agent.plugins import ConsumerContext
from agent.settings import AgentSettings, load_settings
from agent.site import Site, load_site_for
from agent.store import IntervalStore
from tests.rules.helpers import SITE_TOML

MONTH = "2026-10"
QUARTERS = 31 * 96
E_DC = QUARTERS * 1.15
E_IT = QUARTERS * 1.0


def _csv(path: Path) -> Path:
    start = datetime(2026, 9, 30, 16, tzinfo=UTC)  # 2026-10-01 00:00 +08:00
    lines = ["ts,device,point,quantity,value"]
    for i in range(QUARTERS + 1):
        ts = (start + timedelta(minutes=15 * i)).isoformat()
        lines.append(f"{ts},meter-1,energy,energy_kwh,{10_000 + 1.15 * i!r}")
        lines.append(f"{ts},pdu-1,energy,energy_kwh,{500 + 1.0 * i!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(root: Path) -> Path:
    (root / "site.toml").write_text(SITE_TOML)
    config = root / "agent.toml"
    config.write_text(
        f'state_dir = "{root / "state"}"\nsite_file = "site.toml"\n'
        f'policies_dir = "{root / "no-operator-packs"}"\n'
    )
    return config


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _month(config: Path, name: str) -> float:
    data = json.loads(_invoke("kpi", "--period", MONTH, "--json", "--config", str(config)).stdout)
    row = next(r for r in data["kpis"] if r["metric"] == name and r["period_kind"] == "month")
    assert row["status"] == "ok", row
    return float(row["value"])


def _stored_month_kwh(settings: AgentSettings, meter: str) -> float:
    rows = IntervalStore(settings.store_path()).read_intervals().collect()
    return float(rows.filter(rows["meter"] == meter)["energy_kwh"].sum())


async def _run_aggregator(
    aggregator: Aggregator, journal: Journal, site: Site, stopping: asyncio.Event
) -> None:
    """The aggregator as `pue-agent run` runs it (until ``stopping`` and caught up)."""
    journal.register_cursor(aggregator.name)
    ctx = ConsumerContext(journal=journal, settings=AgentSettings(), site=site, stopping=stopping)
    await aggregator.run(ctx)


def test_kpi_rules_and_report_work_right_after_import(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = _invoke("import", str(_csv(tmp_path / "history.csv")), "--config", str(config))
    assert "aggregated journal up to batch 1 with aggregator 'aggregator'" in result.stdout
    assert "2026-10" in result.stdout
    assert _month(config, "e_dc_kwh") == pytest.approx(E_DC, rel=1e-9)
    assert _month(config, "pue") == pytest.approx(1.15, rel=1e-9)
    rules = json.loads(
        _invoke("rules", "evaluate", "--period", MONTH, "--json", "--config", str(config)).stdout
    )
    assert rules["findings"]
    settings = load_settings(config)
    keys.init_key(settings)
    _invoke(
        "report",
        "--month",
        MONTH,
        "--lang",
        "en",
        "--no-csv",
        "--out",
        str(tmp_path / "r"),
        "--config",
        str(config),
    )
    bundle = tmp_path / "r" / f"dc-1-{MONTH}"
    assert "bundle VALID" in _invoke("verify", str(bundle)).stdout
    kpis = json.loads((bundle / "data" / "kpis.json").read_text())["kpis"]
    month_pue = next(r for r in kpis if r["metric"] == "pue" and r["period_kind"] == "month")
    assert month_pue["value"] == pytest.approx(1.15, rel=1e-9)

    # A later `pue-agent run` starts after the import: nothing is counted twice.
    journal = Journal(settings.journal_path)
    site = load_site_for(settings)
    assert site is not None
    assert journal.cursor("aggregator") == journal.head[0] == 1
    aggregator = site_aggregator(settings)
    assert aggregator is not None
    stopping = asyncio.Event()
    stopping.set()
    asyncio.run(_run_aggregator(aggregator, journal, site, stopping))
    journal.close()
    assert aggregator.intervals_written == 0
    assert _stored_month_kwh(settings, "grid-1") == pytest.approx(E_DC, rel=1e-9)
    assert _month(config, "e_dc_kwh") == pytest.approx(E_DC, rel=1e-9)


def test_import_while_the_agent_runs_is_handed_to_it(tmp_path: Path) -> None:
    config = _config(tmp_path)
    settings = load_settings(config)
    site = load_site_for(settings)
    assert site is not None
    csv = _csv(tmp_path / "history.csv")

    async def scenario() -> str:
        journal = Journal(settings.journal_path)
        running = site_aggregator(settings)
        assert running is not None
        stopping = asyncio.Event()
        task = asyncio.create_task(_run_aggregator(running, journal, site, stopping))
        for _ in range(100):  # until the running aggregator holds its lock
            await asyncio.sleep(0.05)
            if running._lock is not None:
                break
        assert running._lock is not None
        # `pue-agent import` in another thread (its own Journal and aggregator objects).
        output = await asyncio.to_thread(
            lambda: _invoke("import", str(csv), "--config", str(config)).stdout
        )
        reader = Journal(settings.journal_path)  # the head the import wrote
        head = reader.head[0]
        reader.close()
        assert head == 1
        for _ in range(200):  # the running agent picks the batch up (1 s idle poll)
            if journal.cursor(running.name) == head:
                break
            await asyncio.sleep(0.05)
        # Aggregated by the running agent, before it was asked to stop.
        assert journal.cursor(running.name) == head
        assert running.intervals_written > 0
        stopping.set()
        await task
        journal.close()
        return output

    output = asyncio.run(scenario())
    assert "a running agent holds aggregator 'aggregator'" in output
    assert _stored_month_kwh(settings, "grid-1") == pytest.approx(E_DC, rel=1e-9)
    assert _stored_month_kwh(settings, "pdu-1") == pytest.approx(E_IT, rel=1e-9)
    # The import CLI aggregated nothing itself; a second catch-up finds nothing to do.
    journal = Journal(settings.journal_path)
    aggregator = site_aggregator(settings)
    assert aggregator is not None
    again = catch_up(aggregator, site, journal)
    journal.close()
    assert (again.busy, again.batches, again.intervals) == (False, 0, 0)
    assert _month(config, "e_dc_kwh") == pytest.approx(E_DC, rel=1e-9)

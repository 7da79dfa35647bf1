"""Derived data end to end: a running agent's intervals, KPIs and findings reach the sinks.

An agent (``build_agent``: ``sim`` collector on an accelerated clock over the last two
hours, the site model of the simulator, the aggregator and the sinks) runs until the
simulated window is over and stops; then InfluxDB 1.x and mosquitto must hold what the
local store holds.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agent.aggregator.feed import DerivedFeed
from agent.journal import Journal
from agent.pipeline import Agent, build_agent
from agent.settings import AgentSettings
from agent.sinks import influxdb
from agent.store import IntervalStore
from collectors.sim.simulator import SiteSimulator, site_table
from tests.servers.influxdb import start_influxdb
from tests.servers.mosquitto import start_mosquitto
from tests.sinks.helpers import drain
from tests.sinks.test_mqtt_sink import _retained

PDUS = 8
DB = "pue"


def _settings(tmp_path: Path, sinks: list[dict[str, Any]]) -> AgentSettings:
    end = datetime.now(UTC).replace(microsecond=0)
    end -= timedelta(seconds=end.second % 10)
    start = end - timedelta(hours=2)
    sim = {
        "kind": "sim",
        "name": "sim",
        "pdus": PDUS,
        "interval_s": 10,
        "speed": 2400,
        "ticks_per_batch": 6,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
    aggregator = {
        "kind": "local_store",
        "name": "local_store",
        # Two hours of a day: ask for values anyway (the coverage is still recorded).
        "kpi_coverage_threshold": 0.0,
        "kpi_refresh_s": 1.0,
    }
    return AgentSettings(
        state_dir=tmp_path / "state",
        site=site_table(SiteSimulator(pdus=PDUS)),
        collectors=[sim],
        sinks=[*sinks, aggregator],
    )


async def _run_until_simulated_end(agent: Agent) -> None:
    running = asyncio.create_task(agent.run(install_signals=False))
    try:
        async with asyncio.timeout(60):
            while not agent.collector_tasks or not all(
                t.done() for t in agent.collector_tasks.values()
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # live refreshes and sends while running
    finally:
        agent.stop()
        await asyncio.wait_for(running, timeout=90)


def _by_key(rows: list[dict[str, Any]], key: str, value: str) -> dict[str, float]:
    return {r[key]: r[value] for r in rows}


async def test_agent_writes_intervals_kpis_and_findings_to_influxdb(tmp_path: Path) -> None:
    server = start_influxdb(tmp_path / "influx")
    try:
        server.create_database(DB)
        sink = {"kind": "influxdb", "name": "influx", "api": "v1", "url": server.url}
        settings = _settings(tmp_path, [sink | {"database": DB, "readings": False}])
        agent = build_agent(settings)
        await _run_until_simulated_end(agent)

        store = IntervalStore(settings.state_dir / "store")
        intervals = store.read_intervals().collect()
        assert intervals.height > PDUS * 100
        expected = intervals.group_by("meter").agg(
            pl.len().alias("count"), pl.col("energy_kwh").sum().alias("sum")
        )
        rows = server.rows(
            "SELECT count(energy_kwh), sum(energy_kwh) FROM pue_interval GROUP BY meter", db=DB
        )
        assert len(rows) == expected.height
        counts, sums = _by_key(rows, "meter", "count"), _by_key(rows, "meter", "sum")
        for meter, count, total in expected.iter_rows():
            assert counts[meter] == count, meter
            assert sums[meter] == pytest.approx(total, rel=1e-9), meter

        kpis = store.read_kpis(metric="pue").filter(pl.col("period_kind").is_in(["day", "month"]))
        assert kpis.filter(pl.col("period_kind") == "day").height >= 1
        assert kpis["value"].null_count() == 0
        written = server.rows(
            "SELECT value, period FROM pue_kpi WHERE metric = 'pue' GROUP BY period_kind", db=DB
        )
        got = {(r["period_kind"], r["period"]): r["value"] for r in written}
        for kind, period, value in kpis.select("period_kind", "period", "value").iter_rows():
            assert got[(kind, period)] == pytest.approx(value, rel=1e-12), (kind, period)

        # Hourly matching (docs/green-hourly.md): live day/month rows, same measurement.
        hourly = store.read_kpis(metric="hourly_matched_green_share")
        assert hourly.filter(pl.col("period_kind") == "month").height == 1
        written = server.rows(
            "SELECT count(status) FROM pue_kpi WHERE metric = 'hourly_matched_green_share'", db=DB
        )
        assert written and written[0]["count"] == hourly.height

        findings = store.read_findings()
        assert findings.height > 0
        found = server.rows("SELECT count(result) FROM pue_finding", db=DB)
        assert found and found[0]["count"] == findings.height
    finally:
        server.stop()


async def test_sink_that_was_down_catches_up_derived_data(tmp_path: Path) -> None:
    """Store written while InfluxDB is unreachable; a later sink run sends it all, then nothing."""
    server = start_influxdb(tmp_path / "influx")
    try:
        server.create_database(DB)
        options = {"api": "v1", "url": server.url, "database": DB, "readings": False}
        settings = _settings(tmp_path, [])  # no influx sink while the agent runs
        await _run_until_simulated_end(build_agent(settings))
        store = IntervalStore(settings.state_dir / "store")
        kpis, intervals = store.read_kpis(), store.read_intervals().collect()

        sink = influxdb.build("influx", options, settings)
        sink.site = build_agent(settings).site
        journal = Journal(settings.journal_path)
        await drain(sink, journal, settings, sink.site)
        rows = server.rows("SELECT count(energy_kwh) FROM pue_interval", db=DB)
        assert rows[0]["count"] == intervals.height
        rows = server.rows("SELECT count(value) FROM pue_kpi", db=DB)
        assert rows[0]["count"] == kpis["value"].is_not_null().sum()
        feed = DerivedFeed.for_sink("influx", settings)
        assert feed.intervals_mark == feed.store.state_seq() > 0
        assert feed.changed_months("kpis") == [] and feed.changed_months("findings") == []
        # Nothing new: a second run writes no derived point.
        again = influxdb.build("influx", options, settings)
        again.site = sink.site
        await drain(again, journal, settings, again.site)
        assert again.points_written == 0
        journal.close()
    finally:
        server.stop()


async def test_mqtt_sink_publishes_the_stores_kpis(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "broker")
    try:
        sink = {"kind": "mqtt", "name": "bms", "host": broker.host, "port": broker.port}
        settings = _settings(tmp_path, [sink | {"realtime_interval_s": 0.5}])
        agent = build_agent(settings)
        assert agent.site is not None
        await _run_until_simulated_end(agent)

        store = IntervalStore(settings.state_dir / "store")
        today = datetime.now(agent.site.zone).date().isoformat()
        day = store.read_kpis(period_kind="day", period=today, metric="pue")
        month = store.read_kpis(period_kind="month", period=today[:7], metric="pue")
        assert day.height == 1 and month.height == 1

        found = await _retained(broker, "pue-agent/demo/#")
        published = json.loads(found["pue-agent/demo/kpi/pue_today"])
        assert published["period"] == today
        assert published["value"] == pytest.approx(day["value"][0], rel=1e-12)
        assert json.loads(found["pue-agent/demo/kpi/pue_month"])["value"] == pytest.approx(
            month["value"][0], rel=1e-12
        )
        assert "pue-agent/demo/kpi/pue_realtime" in found
        rules = [t for t in found if "/finding/" in t]
        assert len(rules) == store.read_findings(month=today[:7])["rule_id"].n_unique() > 0
        # The green window for schedulers, retained beside the KPIs (docs/green-hourly.md).
        window = json.loads(found["pue-agent/demo/green-window"])
        assert len(window["hours"]) == 25 and window["site"] == "demo"
    finally:
        broker.stop()

"""Outage and replay: the agent ingests at >= 10,000 readings/s while InfluxDB is down for 60 s.

After the server is back, the sink replays the backlog from the journal in
order; when the agent has stopped, every reading is in InfluxDB exactly once
(count and sum per series equal to the journal's). The catch-up rate is printed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import polars as pl
import pytest

from agent.journal import Journal
from agent.pipeline import Agent
from agent.sinks import influxdb
from collectors.sim import SimOptions
from collectors.sim.collector import SimCollector
from tests.servers.influxdb import start_influxdb
from tests.sinks.helpers import make_settings, sim_site

OUTAGE_S = 60.0


def _backlog(journal_path: Path, cursor: int) -> int:
    with sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT COALESCE(SUM(n_rows), 0) FROM batches WHERE seq > ? AND kind = 'readings'",
            (cursor,),
        ).fetchone()
    return int(row[0])


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_outage_of_60_s_then_replay_exactly_once(tmp_path: Path) -> None:
    influx = start_influxdb(tmp_path / "influx")
    try:
        influx.create_database("pue")
        settings = make_settings(tmp_path)
        collector = SimCollector("sim", SimOptions(pdus=2600, interval_s=0.5))
        rate = collector.simulator.readings_per_tick / 0.5
        assert rate >= 10_000
        sink = influxdb.build(
            "influx",
            {"api": "v1", "url": influx.url, "database": "pue", "backoff_max_s": 2.0},
            settings,
        )
        journal = Journal(settings.journal_path)
        agent = Agent(
            settings=settings,
            site=sim_site(collector.simulator),
            collectors=[collector],
            consumers=[sink],
            journal=journal,
        )
        running = asyncio.create_task(agent.run(install_signals=False))
        await asyncio.sleep(5)
        assert journal.cursor("influx") > 0  # writing live before the outage

        influx.stop()
        down_at = time.monotonic()
        await asyncio.sleep(OUTAGE_S)
        assert sink.alarm is not None and "unavailable" in sink.alarm
        cursor_at_restart = journal.cursor("influx")
        head_at_restart = journal.head[0]
        backlog = _backlog(settings.journal_path, cursor_at_restart)
        influx.start()
        up_at = time.monotonic()
        while journal.cursor("influx") < head_at_restart:
            assert time.monotonic() - up_at < 120, "no catch-up within 2 minutes"
            await asyncio.sleep(0.05)
        catch_up_s = time.monotonic() - up_at
        print(
            f"\noutage {up_at - down_at:.0f} s at {rate:,.0f} readings/s: backlog {backlog:,} "
            f"readings replayed in {catch_up_s:.1f} s = {backlog / catch_up_s:,.0f} readings/s "
            "(includes the retry backoff until the first write)"
        )
        await asyncio.sleep(2)
        agent.stop()
        await asyncio.wait_for(running, timeout=120)
        assert sink.alarm is None
        assert backlog >= OUTAGE_S * rate * 0.9

        # Every reading exactly once: count and sum per series equal to the journal's.
        journal = Journal(settings.journal_path)
        assert journal.cursor("influx") == journal.head[0]
        frame = pl.concat([b.frame for b in journal.iter_batches(kinds=("readings",))])
        expected = frame.group_by("device", "point").agg(pl.len().alias("n"), pl.col("value").sum())
        got: dict[tuple[str, str], tuple[int, float]] = {}
        for quantity in ("power_w", "energy_kwh"):
            for row in influx.rows(
                f'SELECT count("{quantity}") AS n, sum("{quantity}") AS s FROM pue_reading '
                "GROUP BY device, point",
                db="pue",
            ):
                if row["n"]:
                    got[(row["device"], row["point"])] = (row["n"], row["s"])
        assert len(got) == expected.height
        for device, point, n, total in expected.iter_rows():
            assert got[(device, point)][0] == n, (device, point)
            assert got[(device, point)][1] == pytest.approx(total, rel=1e-9), (device, point)
        assert sum(n for n, _ in got.values()) == frame.height
    finally:
        influx.stop()

"""Sink benchmarks: line-protocol serialisation and journal -> InfluxDB 1.x end to end.

1. Serialisation, points/s: the vectorised serialiser vs influxdb-client's Point API
   (same rows, same tags and fields), against the goal of 1,000,000 points/s.
2. End to end, points/s: a journal pre-filled with simulator readings drained by the
   InfluxDB sink into a real InfluxDB 1.6.7, vs ``curl`` posting the same line protocol,
   pre-built, 4 requests in flight (the server's limit here). Goal: >= 90 % of curl.
   A drain from cursor 0 *is* the replay after an outage, so this is the replay rate.

Run: ``.venv/bin/python -m tests.bench.bench_sinks`` (``BENCH_READINGS`` sets the size).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from influxdb_client.client.write.point import Point as _Point
from influxdb_client.domain.write_precision import WritePrecision

from agent.journal import Journal
from agent.plugins import ConsumerContext
from agent.settings import AgentSettings
from agent.sinks import influxdb
from agent.sinks.influx_schema import SiteTags, serialise
from agent.sinks.lineprotocol import encode_lines
from agent.site import parse_site
from collectors.sim.simulator import SiteSimulator, site_table
from tests.servers.influxdb import start_influxdb

READINGS = int(os.environ.get("BENCH_READINGS", "1000000"))
BATCH_POINTS = 50_000

#: Orientation figures measured on this kind of machine (issue 7).
BASELINE_POINT_API = 53_000
BASELINE_CURL_4 = 200_000
GOAL_SERIALISE = 1_000_000
GOAL_E2E_SHARE = 0.90

T0 = datetime(2026, 10, 1, tzinfo=UTC)

Point: Any = _Point


def _frame(pdus: int, ticks: int) -> tuple[pl.DataFrame, SiteSimulator]:
    sim = SiteSimulator(pdus=pdus)
    frames = [sim.tick(T0 + timedelta(seconds=10 * i)) for i in range(ticks)]
    return pl.concat(frames), sim


def bench_serialise() -> tuple[float, float]:
    frame, sim = _frame(25_000, 2)
    tags = SiteTags.from_site(parse_site(site_table(sim), source="bench"))
    serialise("readings", frame.head(1000), tags)  # warm up
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        body = encode_lines(serialise("readings", frame, tags).lines)
        best = min(best, time.perf_counter() - start)
    assert body
    vectorised = frame.height / best
    roles = dict(
        zip(
            zip(tags.points["device"], tags.points["point"], strict=True),
            tags.points["role"],
            strict=True,
        )
    )
    sample = frame.head(20_000)
    start = time.perf_counter()
    lines = []
    for ts, device, point, quantity, value, quality in sample.iter_rows():
        p = (
            Point("pue_reading")
            .tag("site", "demo")
            .tag("device", device)
            .tag("point", point)
            .tag("quantity", quantity)
            .tag("role", roles.get((device, point)))
            .field(quantity, value)
            .field("quality", quality)
            .time(ts, WritePrecision.US)
        )
        lines.append(p.to_line_protocol())
    point_api = sample.height / (time.perf_counter() - start)
    return vectorised, point_api


def _fill(journal: Journal, readings: int) -> tuple[int, SiteSimulator]:
    sim = SiteSimulator(pdus=2500)
    per_tick = sim.readings_per_tick
    total = 0
    i = 0
    while total < readings:
        frame = sim.tick(T0 + timedelta(seconds=10 * i))
        journal.append(frame, source="sim")
        total += per_tick
        i += 1
    return total, sim


def bench_curl(url: str, db: str, bodies: list[Path]) -> float:
    """Seconds for curl to post every body, 4 requests in flight."""
    listing = "\n".join(str(b) for b in bodies)
    start = time.perf_counter()
    subprocess.run(
        [
            "xargs",
            "-P",
            "4",
            "-I",
            "{}",
            "curl",
            "-sS",
            "-f",
            "-o",
            "/dev/null",
            "--data-binary",
            "@{}",
            f"{url}/write?db={db}&precision=u",
        ],
        input=listing.encode(),
        check=True,
    )
    return time.perf_counter() - start


async def bench_sink(
    settings: AgentSettings,
    journal: Journal,
    url: str,
    db: str,
    gzip: bool,
    site_sim: SiteSimulator,
) -> float:
    name = f"bench-{db}"
    sink = influxdb.build(
        name,
        {"api": "v1", "url": url, "database": db, "gzip": gzip, "batch_points": BATCH_POINTS},
        settings,
    )
    journal.register_cursor(name)
    stopping = asyncio.Event()
    stopping.set()
    site = parse_site(site_table(site_sim), source="bench")
    ctx = ConsumerContext(journal=journal, settings=settings, site=site, stopping=stopping)
    start = time.perf_counter()
    await sink.run(ctx)
    # run() ends with a 1 s quiet period that checks for late commits: not write time.
    elapsed = time.perf_counter() - start - 1.0
    assert journal.cursor(name) == journal.head[0]
    return elapsed


def _count(server: object, db: str) -> int:
    rows = server.rows(  # type: ignore[attr-defined]
        "SELECT count(power_w) AS p, count(energy_kwh) AS e FROM pue_reading", db=db
    )
    return int(rows[0]["p"] + rows[0]["e"])


def main() -> None:
    vectorised, point_api = bench_serialise()
    print("line-protocol serialisation (readings, 5 tags, 2 fields):")
    print(f"  vectorised (Polars)      {vectorised:>12,.0f} points/s   goal {GOAL_SERIALISE:,}")
    print(
        f"  influxdb-client Point    {point_api:>12,.0f} points/s   "
        f"(issue baseline {BASELINE_POINT_API:,}); speed-up x{vectorised / point_api:.0f}"
    )

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_influxdb(tmp / "influx")
        try:
            settings = AgentSettings(state_dir=tmp / "state")
            journal = Journal(tmp / "journal.sqlite")
            total, sim = _fill(journal, READINGS)
            tags = SiteTags.from_site(parse_site(site_table(sim), source="bench"))
            frame = pl.concat([b.frame for b in journal.iter_batches(kinds=("readings",))])
            bodies = []
            for n, start in enumerate(range(0, frame.height, BATCH_POINTS)):
                body = encode_lines(
                    serialise("readings", frame.slice(start, BATCH_POINTS), tags).lines
                )
                path = tmp / f"body-{n}.lp"
                path.write_bytes(body)
                bodies.append(path)
            results = {}
            for db in ("curl", "sink", "sink_gzip"):
                server.create_database(db)
            # Warm the server (first writes create shards) with a throw-away database.
            server.create_database("warm")
            bench_curl(server.url, "warm", bodies[:4])
            results["curl"] = total / bench_curl(server.url, "curl", bodies)
            assert _count(server, "curl") == total
            results["sink"] = total / asyncio.run(
                bench_sink(settings, journal, server.url, "sink", False, sim)
            )
            assert _count(server, "sink") == total
            results["sink_gzip"] = total / asyncio.run(
                bench_sink(settings, journal, server.url, "sink_gzip", True, sim)
            )
            assert _count(server, "sink_gzip") == total
        finally:
            server.stop()
    print(f"journal -> InfluxDB 1.6.7, {total:,} readings, {BATCH_POINTS:,} points/request:")
    print(
        f"  curl, pre-built, 4 in flight  {results['curl']:>10,.0f} points/s   "
        f"(issue baseline {BASELINE_CURL_4:,})"
    )
    for key, label in (("sink", "sink, no gzip"), ("sink_gzip", "sink, gzip")):
        share = results[key] / results["curl"]
        print(
            f"  {label:<28}  {results[key]:>10,.0f} points/s   {share:.0%} of curl "
            f"(goal {GOAL_E2E_SHARE:.0%}); = replay rate after an outage"
        )


if __name__ == "__main__":
    main()

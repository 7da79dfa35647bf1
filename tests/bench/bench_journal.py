"""Journal append benchmark: sustained readings/s with per-batch fsync, batch-size sweep, p99.

Baselines in the same process: the same Arrow IPC bytes appended to a plain file with one
fsync per batch (the floor any durable design pays), and the journal with fsync turned off
(what durability costs). Run: ``.venv/bin/python -m tests.bench.bench_journal``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from agent.journal import Journal, _encode
from agent.pipeline import Agent
from agent.plugins import build_collector
from agent.settings import CollectorEntry, load_settings
from collectors.sim.simulator import SiteSimulator

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))


def _frame(rows: int) -> pl.DataFrame:
    sim = SiteSimulator(pdus=max(1, rows // 2 - 19))
    frame = sim.tick(datetime(2026, 10, 1, tzinfo=UTC))
    sim.tick(datetime(2026, 10, 1, tzinfo=UTC) + timedelta(seconds=10))
    return frame.head(rows)


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98] * 1000 if len(latencies) > 2 else 0.0


def bench_journal(rows: int, *, durable: bool = True) -> tuple[float, float]:
    frame = _frame(rows)
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "j.sqlite")
        if not durable:
            journal._db.execute("PRAGMA synchronous=OFF")
        done, latencies = 0, []
        start = time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            t = time.perf_counter()
            journal.append(frame, source="bench")
            latencies.append(time.perf_counter() - t)
            done += frame.height
        elapsed = time.perf_counter() - start
        journal.close()
    return done / elapsed, _p99(latencies)


def bench_plain_file(rows: int) -> tuple[float, float]:
    frame = _frame(rows)
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "f.bin", "ab") as out:
        done, latencies = 0, []
        start = time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            t = time.perf_counter()
            out.write(_encode(frame))
            out.flush()
            os.fsync(out.fileno())
            latencies.append(time.perf_counter() - t)
            done += frame.height
        elapsed = time.perf_counter() - start
    return done / elapsed, _p99(latencies)


async def _pipeline(pdus: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            state_dir=Path(tmp),
            collectors=[CollectorEntry(kind="sim", name="s", pdus=pdus, interval_s=1.0, speed=1e9)],
        )
        collector = build_collector("sim", "s", settings.collectors[0].options(), settings)
        agent = Agent(
            settings=settings,
            site=None,
            collectors=[collector],
            consumers=[],
            journal=Journal(settings.journal_path),
        )
        task = asyncio.create_task(agent.run(install_signals=False))
        await asyncio.sleep(0.5)
        before, t0 = agent.committed_readings, time.perf_counter()
        await asyncio.sleep(SECONDS)
        rate = (agent.committed_readings - before) / (time.perf_counter() - t0)
        agent.stop()
        await task
    return rate


def main() -> None:
    print(f"journal append, {SECONDS:g} s per point, fsync per batch (synchronous=FULL)")
    print(
        f"{'batch rows':>10} {'journal r/s':>14} {'p99 ms':>8} {'plain-file r/s':>15} "
        f"{'p99 ms':>8} {'ratio':>6} {'no-fsync r/s':>14}"
    )
    for rows in (1_000, 10_000, 50_000, 200_000):
        j_rate, j_p99 = bench_journal(rows)
        f_rate, f_p99 = bench_plain_file(rows)
        n_rate, _ = bench_journal(rows, durable=False)
        print(
            f"{rows:>10,} {j_rate:>14,.0f} {j_p99:>8.1f} {f_rate:>15,.0f} {f_p99:>8.1f} "
            f"{j_rate / f_rate:>6.2f} {n_rate:>14,.0f}"
        )
    pdus = 5_000
    rate = asyncio.run(_pipeline(pdus))
    print(
        f"end to end sim -> queue -> group commit ({2 * (pdus + 19):,} readings/tick): "
        f"{rate:,.0f} readings/s"
    )


if __name__ == "__main__":
    main()

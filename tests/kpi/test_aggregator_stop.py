"""A clean stop aggregates everything committed, even what the read-ahead missed.

The aggregator reads the next journal page while it aggregates the current one. A read-ahead
that ran before the writer's last commit comes back empty; if the agent's stop arrives in
between, that empty page must not be taken for "caught up" (the batch would wait for the
next start). Here the first page's aggregation is held until the read-ahead has come back
empty, a second batch is committed and the stop is given.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from agent.aggregator import site_aggregator
from agent.journal import Journal
from agent.plugins import ConsumerContext
from agent.readings import make_batch
from agent.settings import AgentSettings, load_settings
from agent.site import load_site_for
from agent.store import IntervalStore
from tests.rules.helpers import SITE_TOML

_START = datetime(2026, 10, 1, tzinfo=UTC)


def _batch(first_minute: int, minutes: int) -> pl.DataFrame:
    # Registers advance 0.02 kWh (grid) and 0.01 kWh (IT) a minute.
    ts = [_START + timedelta(minutes=first_minute + i) for i in range(minutes)]
    return make_batch(
        ts=ts * 2,
        device=["meter-1"] * minutes + ["pdu-1"] * minutes,
        point=["energy"] * (2 * minutes),
        quantity=["energy_kwh"] * (2 * minutes),
        value=[100 + 0.02 * (first_minute + i) for i in range(minutes)]
        + [50 + 0.01 * (first_minute + i) for i in range(minutes)],
    )


def _settings(root: Path) -> AgentSettings:
    root.mkdir()
    (root / "site.toml").write_text(SITE_TOML)
    (root / "agent.toml").write_text(
        f'state_dir = "{root / "state"}"\nsite_file = "site.toml"\n'
        f'policies_dir = "{root / "no-packs"}"\n'
    )
    return load_settings(root / "agent.toml")


def _grid_kwh(settings: AgentSettings) -> tuple[int, float]:
    rows = IntervalStore(settings.store_path()).read_intervals().collect()
    grid = rows.filter(pl.col("meter") == "grid-1")
    return grid.height, float(grid["energy_kwh"].sum())


def _reference(root: Path) -> tuple[int, float]:
    """Both batches in the journal before the aggregator starts: no race at all."""
    settings = _settings(root)
    site, aggregator = load_site_for(settings), site_aggregator(settings)
    assert site is not None and aggregator is not None
    journal = Journal(settings.journal_path)
    journal.register_cursor(aggregator.name)
    journal.append(_batch(0, 60), source="test")
    journal.append(_batch(60, 60), source="test")

    async def run() -> None:
        stopping = asyncio.Event()
        stopping.set()
        await aggregator.run(
            ConsumerContext(journal=journal, settings=AgentSettings(), site=site, stopping=stopping)
        )

    asyncio.run(run())
    journal.close()
    return _grid_kwh(settings)


def test_stop_right_after_the_last_commit_aggregates_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "raced")
    site = load_site_for(settings)
    aggregator = site_aggregator(settings)
    assert site is not None and aggregator is not None
    journal = Journal(settings.journal_path)
    journal.register_cursor(aggregator.name)
    journal.append(_batch(0, 60), source="test")  # 00:00-00:59

    held = threading.Event()
    release = threading.Event()
    original = aggregator.process_page

    def held_first_page(*args: Any) -> int:
        if not held.is_set():
            held.set()
            assert release.wait(10), "the test never released the first page"
        return original(*args)

    aggregator.process_page = held_first_page  # type: ignore[method-assign]

    async def scenario() -> None:
        stopping = asyncio.Event()
        ctx = ConsumerContext(
            journal=journal, settings=AgentSettings(), site=site, stopping=stopping
        )
        task = asyncio.create_task(aggregator.run(ctx))
        while not held.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the read-ahead of page 2 finds nothing yet
        journal.append(_batch(60, 60), source="test")  # 01:00-01:59, the last commit
        stopping.set()  # as the pipeline does once the writer has ended
        ctx.new_data.set()
        release.set()
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(scenario())
    try:
        assert journal.cursor(aggregator.name) == journal.head[0] == 2
    finally:
        journal.close()
    intervals, kwh = _grid_kwh(settings)
    # Equal to an aggregator that had both batches from the start. Without the second
    # batch the store would hold under an hour of grid intervals (< 60 x 0.02 = 1.2 kWh).
    assert (intervals, kwh) == _reference(tmp_path / "reference")
    assert intervals > 60 and kwh > 60 * 0.02

"""Restart equivalence: a crash at any step of a page, then a restart, gives the same intervals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from agent.aggregator import Aggregator, build
from agent.journal import Journal
from agent.plugins import ConsumerContext
from agent.settings import AgentSettings, ConfigError
from agent.site import Site, parse_site
from agent.store import IntervalStore
from collectors.sim.simulator import SiteSimulator, site_table

START = datetime(2026, 10, 31, 15, 0, tzinfo=UTC)  # crosses the local month boundary at 16:00Z


def _journal(path: Path, ticks: int = 320) -> tuple[Journal, Site]:
    sim = SiteSimulator(pdus=6, seed=3)
    site = parse_site(site_table(sim), source="sim")
    journal = Journal(path)
    for i in range(0, ticks, 4):
        # Irregular batches: 4 ticks of 15 s each, one batch per collector call.
        frame = pl.concat([sim.tick(START + timedelta(seconds=15 * (i + j))) for j in range(4)])
        journal.append(frame, source="sim")
    return journal, site


def _sink(tmp: Path, name: str, page: int) -> Aggregator:
    settings = AgentSettings(state_dir=tmp)
    return build(name, {"page_batches": page}, settings)


async def _run(sink: Aggregator, journal: Journal, site: Site) -> None:
    journal.register_cursor(sink.name)
    stopping = asyncio.Event()
    stopping.set()  # run until caught up
    ctx = ConsumerContext(journal=journal, settings=AgentSettings(), site=site, stopping=stopping)
    await sink.run(ctx)


def _read(root: Path) -> pl.DataFrame:
    return IntervalStore(root).read_intervals(with_rejected_counts=True).collect()


@pytest.mark.parametrize("crash_at", ["after_store", "after_state", "before_store"])
async def test_crash_mid_stream_then_restart_gives_identical_intervals(
    tmp_path: Path, crash_at: str
) -> None:
    journal, site = _journal(tmp_path / "j" / "journal.sqlite")
    reference = _sink(tmp_path / "ref", "ref", page=7)
    await _run(reference, journal, site)
    expected = _read(reference.store_root)
    assert expected.height > 0
    # Both local months (October and November at 00:00 +08:00 = 16:00Z) are in the store.
    assert expected["interval_start"].min() < datetime(2026, 10, 31, 16, tzinfo=UTC)
    assert expected["interval_start"].max() >= datetime(2026, 10, 31, 16, tzinfo=UTC)

    crashing = _sink(tmp_path / "crash", "agg", page=5)
    calls = {"pages": 0}
    original_process = crashing.process_page
    original_save = crashing.save_state

    class Killed(Exception):
        pass

    def process_page(engine, store, page):  # type: ignore[no-untyped-def]
        calls["pages"] += 1
        if calls["pages"] == 4 and crash_at == "before_store":
            raise Killed
        return original_process(engine, store, page)

    def save_state(seq, state):  # type: ignore[no-untyped-def]
        if calls["pages"] == 4 and crash_at == "after_store":
            raise Killed  # parts written, state and cursor not
        original_save(seq, state)
        if calls["pages"] == 4 and crash_at == "after_state":
            raise Killed  # state written, cursor not advanced

    crashing.process_page = process_page  # type: ignore[method-assign]
    crashing.save_state = save_state  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await _run(crashing, journal, site)
    assert journal.cursor("agg") < journal.head[0]
    # A fresh process: new sink object, state from disk, a different page size.
    restarted = _sink(tmp_path / "crash", "agg", page=9)
    await _run(restarted, journal, site)
    got = _read(restarted.store_root)
    assert got.equals(expected)
    assert journal.cursor("agg") == journal.head[0]


async def test_changed_energy_options_refuse_to_continue(tmp_path: Path) -> None:
    journal, site = _journal(tmp_path / "j" / "journal.sqlite", ticks=40)
    await _run(_sink(tmp_path, "agg", page=3), journal, site)
    other = build("agg", {"interval_s": 300}, AgentSettings(state_dir=tmp_path))
    with pytest.raises(ConfigError, match="energy options changed"):
        other.make_engine(site)


async def test_import_batches_aggregated_separately(tmp_path: Path) -> None:
    journal, site = _journal(tmp_path / "j" / "journal.sqlite", ticks=40)
    sim = SiteSimulator(pdus=6, seed=3)
    history = pl.concat(
        [sim.tick(START - timedelta(days=30) + timedelta(minutes=15 * i)) for i in range(8)]
    ).with_columns(pl.lit(2, pl.UInt8).alias("quality"))
    journal.append(history, source="import:sha256=abc")
    sink = _sink(tmp_path, "agg", page=4)
    await _run(sink, journal, site)
    rows = _read(sink.store_root)
    old = rows.filter(pl.col("interval_start") < START)
    # 7 quarter-hours of history at 1-minute intervals per register meter, all imported.
    assert old.filter(pl.col("meter") == "grid-1.input").height == 7 * 15
    assert (old["flags"] & 64 == 64).all()
    assert rows.filter(pl.col("interval_start") >= START).height > 0

"""Shared set-up for the sink tests: settings with secrets, a journal and a consumer context."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from agent.journal import Journal
from agent.plugins import ConsumerContext
from agent.settings import AgentSettings
from agent.site import Site, parse_site
from collectors.sim.simulator import SiteSimulator, site_table

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def make_settings(tmp_path: Path, secrets: dict[str, str] | None = None) -> AgentSettings:
    """Settings with the state dir and a secrets dir under ``tmp_path``."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for name, value in (secrets or {}).items():
        (secrets_dir / name).write_text(value + "\n", encoding="utf-8")
    return AgentSettings(state_dir=tmp_path / "state", secrets_dir=secrets_dir)


def sim_site(sim: SiteSimulator, site_id: str = "demo") -> Site:
    """The site model matching a simulator."""
    return parse_site(site_table(sim, site_id=site_id), source="test")


def fill_journal(
    journal: Journal, sim: SiteSimulator, ticks: int, step_s: float = 10.0, first: int = 0
) -> int:
    """Append ``ticks`` simulator batches (from tick ``first``); returns the readings count."""
    total = 0
    for i in range(first, first + ticks):
        frame = sim.tick(T0 + timedelta(seconds=step_s * i))
        journal.append(frame, source="sim")
        total += frame.height
    return total


def journal_frame(journal: Journal) -> pl.DataFrame:
    """Every reading in the journal as one frame."""
    frames = [b.frame for b in journal.iter_batches(kinds=("readings",))]
    return pl.concat(frames)


async def drain(
    consumer: Any, journal: Journal, settings: AgentSettings, site: Site | None
) -> None:
    """Run a consumer until it has caught up with what the journal holds now."""
    journal.register_cursor(consumer.name)
    stopping = asyncio.Event()
    stopping.set()
    ctx = ConsumerContext(journal=journal, settings=settings, site=site, stopping=stopping)
    await asyncio.wait_for(consumer.run(ctx), timeout=120)

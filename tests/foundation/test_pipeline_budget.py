"""The running pipeline with a tiny budget and a sink that is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from agent import metrics
from agent.journal import Journal
from agent.pipeline import Agent
from agent.plugins import CollectorContext, ConsumerContext
from agent.settings import load_settings
from collectors.sim.simulator import SiteSimulator


class _DownSink:
    """A consumer whose server is down: it never advances its cursor."""

    name = "influx-down"

    def describe(self) -> str:
        return "down"

    async def run(self, ctx: ConsumerContext) -> None:
        await ctx.stopping.wait()


class _Burst:
    """Emits a fixed number of simulator batches, recording what emit returned."""

    name = "burst"

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.results: list[object] = []

    def describe(self) -> str:
        return "burst"

    async def run(self, ctx: CollectorContext) -> None:
        sim = SiteSimulator(pdus=50)
        for i in range(self.batches):
            batch = sim.tick(datetime(2026, 10, 1, 0, i, tzinfo=UTC))
            self.results.append(await ctx.emit(batch))
        await asyncio.Event().wait()


async def test_budget_reached_records_gap_raises_alarm_and_keeps_needed_data(
    tmp_path: Path,
) -> None:
    settings = load_settings(None, state_dir=tmp_path)
    journal = Journal(settings.journal_path, budget_bytes=30_000)
    burst = _Burst(40)
    agent = Agent(
        settings=settings, site=None, collectors=[burst], consumers=[_DownSink()], journal=journal
    )
    task = asyncio.create_task(agent.run(install_signals=False))
    for _ in range(200):
        if len(burst.results) == burst.batches:
            break
        await asyncio.sleep(0.05)
    agent.stop()
    await task
    stored = [r for r in burst.results if r is not None]
    refused = burst.batches - len(stored)
    assert stored and refused, "the budget must be reached part-way"
    alarm = metrics.REGISTRY.get_sample_value(
        "pue_agent_alarm", {"alarm": "journal_budget", "component": "journal"}
    )
    assert alarm == 1
    reopened = Journal(settings.journal_path)
    assert reopened.verify().ok
    gaps = reopened.gaps()
    per_batch = 2 * len(SiteSimulator(pdus=50).devices)
    assert gaps["readings"].sum() == refused * per_batch
    # Everything the down sink still needs is there.
    assert reopened.stats()["readings"] == len(stored) * per_batch

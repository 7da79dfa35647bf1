"""A collector whose cancellation a library swallowed must not park the agent.

On Python 3.11 ``asyncio.wait_for`` returns the inner result when it completes at the
moment a cancel arrives (nats-py awaits every reply that way): the task goes on with only
``Task.cancelling()`` left of the request. These tests make a collector swallow its
cancellation exactly like that and check that both a clean stop and a kill (cancelling
the agent's task, what the cluster tests do) still end.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.journal import Journal, JournalError
from agent.pipeline import Agent
from agent.plugins import CollectorContext, ConsumerContext
from agent.settings import load_settings
from collectors.sim.simulator import SiteSimulator

_T0 = datetime(2026, 10, 1, tzinfo=UTC)


class _SwallowsCancel:
    """Emits batches; the first cancellation is swallowed, then it emits again."""

    name = "swallower"

    def __init__(self) -> None:
        self.emitted = 0
        self.swallowed = 0
        self.after_swallow: BaseException | None = None

    def describe(self) -> str:
        return "swallows one cancellation"

    async def run(self, ctx: CollectorContext) -> None:
        sim = SiteSimulator(pdus=2)
        tick = 0
        while True:
            try:
                await asyncio.sleep(0.01)
                tick += 1
                await ctx.emit(sim.tick(_T0 + timedelta(minutes=tick)))
                self.emitted += 1
            except asyncio.CancelledError as exc:
                # Wherever the cancel lands (the sleep or the emit), the first one is
                # swallowed, as wait_for does when its inner await has just finished.
                if self.swallowed:
                    self.after_swallow = exc
                    raise
                self.swallowed += 1


class _Idle:
    name = "idle"

    def describe(self) -> str:
        return "idle"

    async def run(self, ctx: ConsumerContext) -> None:
        await ctx.stopping.wait()


def _agent(tmp_path: Path, collector: _SwallowsCancel) -> Agent:
    settings = load_settings(None, state_dir=tmp_path)
    return Agent(
        settings=settings,
        site=None,
        collectors=[collector],
        consumers=[_Idle()],
        journal=Journal(settings.journal_path),
    )


async def _until_emitting(collector: _SwallowsCancel) -> None:
    for _ in range(500):
        if collector.emitted >= 3:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the collector never emitted")


async def test_clean_stop_ends_a_collector_that_swallowed_its_cancel(tmp_path: Path) -> None:
    collector = _SwallowsCancel()
    agent = _agent(tmp_path, collector)
    task = asyncio.create_task(agent.run(install_signals=False))
    await _until_emitting(collector)
    agent.stop()
    # Without the check in submit the collector emits forever (the writer is still alive
    # while stop waits for the collectors), and this wait times out.
    await asyncio.wait({task}, timeout=10)
    assert task.done(), "the agent did not stop"
    await task
    assert collector.swallowed == 1
    assert isinstance(collector.after_swallow, asyncio.CancelledError)
    assert Journal(agent.settings.journal_path).stats()["readings"] > 0


async def test_kill_ends_a_collector_that_swallowed_its_cancel(tmp_path: Path) -> None:
    collector = _SwallowsCancel()
    agent = _agent(tmp_path, collector)
    task = asyncio.create_task(agent.run(install_signals=False))
    await _until_emitting(collector)
    task.cancel()  # the in-process "kill": the TaskGroup cancels writer and collector once
    # Without the fix the collector parks in emit behind the dead writer for ever.
    await asyncio.wait({task}, timeout=10)
    assert task.done(), "the killed agent did not end"
    assert task.cancelled()
    assert collector.swallowed == 1
    assert isinstance(collector.after_swallow, asyncio.CancelledError)


async def test_batches_queued_when_the_writer_dies_are_released(tmp_path: Path) -> None:
    """Collectors waiting on a commit the killed writer will never make are let go, unacked."""
    settings = load_settings(None, state_dir=tmp_path)
    settings.journal.max_batch_rows = 1  # one batch per commit: A in flight, B still queued
    agent = Agent(
        settings=settings,
        site=None,
        collectors=[],
        consumers=[],
        journal=Journal(settings.journal_path),
    )
    sim = SiteSimulator(pdus=1)
    batch_a, batch_b = sim.tick(_T0), sim.tick(_T0 + timedelta(minutes=1))
    try:
        waiting_a = asyncio.create_task(agent.submit(batch_a, "a"))
        waiting_b = asyncio.create_task(agent.submit(batch_b, "b"))
        await asyncio.sleep(0.05)
        assert not waiting_a.done() and not waiting_b.done(), "no writer yet: both wait"
        writer = asyncio.create_task(agent._writer())
        await asyncio.sleep(0)  # the writer takes A and starts its commit in a thread
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        # A (its commit's outcome unknown) and B (still queued) are both released, unacked.
        for waiting in (waiting_a, waiting_b):
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(waiting, timeout=5)
        # A batch submitted after the writer ended is refused at once, with a reason.
        with pytest.raises(JournalError, match="writer has stopped"):
            await asyncio.wait_for(agent.submit(batch_b, "later"), timeout=5)
        await asyncio.sleep(0.5)  # let A's commit thread finish before closing
    finally:
        agent.journal.close()
    # B was never committed; A may or may not have been (it was in flight), never acked.
    assert Journal(settings.journal_path).stats()["readings"] in (0, batch_a.height)

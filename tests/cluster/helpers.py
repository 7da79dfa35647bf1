"""Agents of a campus in one event loop: publishers (sim + nats sink) and site aggregators.

Every agent is a real :class:`agent.pipeline.Agent` (journal, queue, consumers) with its
own state directory; "killing" one cancels its task mid-flight (no clean stop, its
sink's cursor stays wherever the last ack left it), "stopping" one is a clean stop.
The single-agent reference is the aggregator run over one journal holding the same
simulator ticks: the interval engine gives the same intervals for the same readings
in any batching (``tests/kpi/test_restart.py``), so any difference is the campus path's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from agent.aggregator import build as build_aggregator
from agent.journal import Journal
from agent.pipeline import Agent, build_agent
from agent.plugins import ConsumerContext
from agent.settings import AgentSettings
from agent.sinks.nats import NatsSink
from agent.site import parse_site
from agent.store import IntervalStore
from collectors.nats.collector import NatsCollector
from collectors.sim.simulator import SiteSimulator, site_table

__all__ = [
    "INTERVAL_S",
    "PDUS",
    "START",
    "STEP_S",
    "RunningAgent",
    "aggregator_agent",
    "assert_equal_intervals",
    "collector_of",
    "publisher_agent",
    "reading_totals",
    "reference_intervals",
    "sim_readings",
    "sink_of",
    "store_intervals",
    "wait_for",
]

PDUS = 4
STEP_S = 10
INTERVAL_S = 60
START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@dataclass
class RunningAgent:
    """An agent and its running task."""

    agent: Agent
    task: asyncio.Task[None]

    def kill(self) -> None:
        """Cancel mid-flight, like a SIGKILL of the process (what is journalled stays)."""
        self.task.cancel()

    async def stop(self) -> None:
        """Stop cleanly and wait for the agent to finish."""
        self.agent.stop()
        await asyncio.wait_for(self.task, timeout=30)

    def aggregated(self) -> bool:
        """Whether the aggregator has taken in every batch of the local journal.

        Waited on before a clean stop: the aggregator's read-ahead may have read the
        journal just before the last commit, and a stop then leaves that batch for the
        next start (nothing is lost, but the store would not hold it yet).
        """
        journal = self.agent.journal
        return journal.cursor("aggregator") == journal.head[0]

    async def wait_killed(self) -> None:
        """Wait until a killed agent has stopped (its task group, writer included, has ended).

        The kill is one cancellation, as a SIGKILL is one signal. A collector whose
        cancellation a library swallowed (asyncio.wait_for on Python 3.11, inside nats-py)
        must still end: the pipeline turns the lost cancel back into a stop at its next
        emit. If anything stays parked, the test fails and names where.
        """
        await asyncio.wait({self.task}, timeout=20)
        if not self.task.done():
            parked = []
            for task in asyncio.all_tasks():
                chain: list[str] = []
                coro: Any = task.get_coro()
                while coro is not None and hasattr(coro, "cr_frame"):
                    if coro.cr_frame is not None:
                        chain.append(f"{coro.cr_frame.f_code.co_filename}:{coro.cr_frame.f_lineno}")
                    coro = getattr(coro, "cr_await", None)
                parked.append(f"{task.get_name()}: {' > '.join(chain)}")
            raise AssertionError("killed agent's tasks still parked:\n" + "\n".join(parked))
        await asyncio.gather(self.task, return_exceptions=True)


def _start(settings: AgentSettings) -> RunningAgent:
    agent = build_agent(settings)
    return RunningAgent(agent, asyncio.create_task(agent.run(install_signals=False)))


def sim_options(ticks: int, *, speed: float, seed: int = 1) -> dict[str, Any]:
    """A ``sim`` collector emitting ``ticks`` ticks from :data:`START`."""
    return {
        "kind": "sim",
        "name": "sim",
        "pdus": PDUS,
        "seed": seed,
        "interval_s": STEP_S,
        "speed": speed,
        "ticks_per_batch": 3,
        "start": START.isoformat(),
        "end": (START + timedelta(seconds=STEP_S * ticks)).isoformat(),
    }


def publisher_agent(
    state_dir: Path,
    link: dict[str, Any],
    agent_id: str,
    ticks: int,
    *,
    speed: float,
    secrets_dir: Path | None = None,
) -> RunningAgent:
    """Start an agent polling the simulated site and publishing its journal over NATS.

    ``ticks=0``: no collector, the agent only publishes what its journal holds.
    """
    settings = AgentSettings(
        state_dir=state_dir,
        secrets_dir=secrets_dir,
        collectors=[sim_options(ticks, speed=speed)] if ticks else [],
        sinks=[{"kind": "nats", "name": "campus", "agent_id": agent_id, **link}],
    )
    return _start(settings)


def aggregator_agent(
    state_dir: Path,
    link: dict[str, Any],
    holder: str,
    *,
    secrets_dir: Path | None = None,
    **collector: Any,
) -> RunningAgent:
    """Start a site aggregator host: the ``nats`` collector and the local aggregator."""
    settings = AgentSettings(
        state_dir=state_dir,
        secrets_dir=secrets_dir,
        site=site_table(SiteSimulator(pdus=PDUS)),
        collectors=[{"kind": "nats", "name": "campus", "holder_id": holder, **link, **collector}],
        sinks=[
            {
                "kind": "aggregator",
                "name": "aggregator",
                "interval_s": INTERVAL_S,
                "page_batches": 16,
                "rules": False,
                "kpi_refresh_s": 3600,
            }
        ],
    )
    return _start(settings)


def collector_of(running: RunningAgent) -> NatsCollector:
    """The ``nats`` collector of an aggregator agent."""
    found = running.agent.collectors[0]
    assert isinstance(found, NatsCollector)
    return found


def sink_of(running: RunningAgent) -> NatsSink:
    """The ``nats`` sink of a publishing agent."""
    return next(c for c in running.agent.consumers if isinstance(c, NatsSink))


def sim_readings(ticks: int, seed: int = 1) -> pl.DataFrame:
    """Every reading the simulated site produces in ``ticks`` ticks from :data:`START`."""
    sim = SiteSimulator(pdus=PDUS, seed=seed)
    return pl.concat(
        [sim.tick(START + timedelta(seconds=STEP_S * i)) for i in range(ticks)], rechunk=True
    )


async def reference_intervals(tmp: Path, ticks: int) -> pl.DataFrame:
    """Intervals of one agent polling alone: the aggregator over one journal of the ticks."""
    journal = Journal(tmp / "journal.sqlite")
    readings = sim_readings(ticks)
    for offset in range(0, readings.height, 64 * 12):
        journal.append(readings.slice(offset, 64 * 12), source="sim")
    settings = AgentSettings(state_dir=tmp)
    aggregator = build_aggregator(
        "aggregator", {"interval_s": INTERVAL_S, "rules": False}, settings
    )
    journal.register_cursor(aggregator.name)
    stopping = asyncio.Event()
    stopping.set()
    site = parse_site(site_table(SiteSimulator(pdus=PDUS)), source="test")
    await aggregator.run(
        ConsumerContext(journal=journal, settings=settings, site=site, stopping=stopping)
    )
    journal.close()
    return store_intervals(tmp)


def store_intervals(state_dir: Path) -> pl.DataFrame:
    """The intervals an agent's store holds, sorted by meter and interval."""
    frame = IntervalStore(state_dir / "store").read_intervals().collect()
    return frame.select("meter", "interval_start", "energy_kwh", "coverage").sort(
        "meter", "interval_start"
    )


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Wait until ``condition()`` holds (polling every 50 ms), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def assert_equal_intervals(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same keys, energy within 1e-9 kWh and the same coverage."""
    assert got["meter", "interval_start"].equals(expected["meter", "interval_start"]), (
        f"{got.height} intervals, expected {expected.height}"
    )
    diff = (got["energy_kwh"] - expected["energy_kwh"]).abs().max()
    assert diff is not None and float(diff) <= 1e-9, diff  # type: ignore[arg-type]
    assert got["coverage"].equals(expected["coverage"])


def reading_totals(frame: pl.DataFrame) -> pl.DataFrame:
    """Count and sum of values per (device, point): the exactly-once check."""
    return (
        frame.group_by("device", "point")
        .agg(pl.len().alias("n"), pl.col("value").sum().alias("total"))
        .sort("device", "point")
    )

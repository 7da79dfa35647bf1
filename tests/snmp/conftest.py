"""Shared SNMP test fixtures: one snmpsim per session, and helpers polling through the collector."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agent.plugins import CollectorContext
from agent.settings import AgentSettings
from collectors.snmp import build
from collectors.snmp.collector import SnmpCollector
from tests.paths import FIXTURES
from tests.servers.snmp import SnmpsimServer, V3User, snmpsim

SNMP_FIXTURES = FIXTURES / "snmp"
#: The SNMPv3 user snmpsim is started with (test keys, not secrets of any real system).
SIM_USER = V3User("pue-sim", "sim-auth-key-7d1c", "sim-priv-key-42aa", "SHA256", "AES256")


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnmpsimServer]:
    """One snmpsim serving every walk in the fixtures folder (community = file stem)."""
    log = tmp_path_factory.mktemp("snmpsim") / "snmpsim.log"
    with snmpsim(SNMP_FIXTURES, users=[SIM_USER], probe_community="apc-8641", log_path=log) as s:
        yield s


class Capture:
    """A CollectorContext.emit that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[pl.DataFrame] = []

    async def __call__(self, batch: pl.DataFrame) -> None:
        self.batches.append(batch)

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.batches) if self.batches else pl.DataFrame()


def settings(tmp: Path | None = None, **kw: Any) -> AgentSettings:
    return AgentSettings(state_dir=tmp or Path("/nonexistent"), **kw)


async def run_collector(
    collector: SnmpCollector, *, until: float = 15.0, polls: int = 1
) -> Capture:
    """Run ``collector`` until every device finished ``polls`` polls, then stop it."""
    capture = Capture()
    ctx = CollectorContext(name=collector.name, settings=collector.settings, emit=capture)  # type: ignore[arg-type]
    task = asyncio.create_task(collector.run(ctx))
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if collector.states and all(s.finished >= polls for s in collector.states.values()):
            break
        if task.done():
            task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return capture


async def poll_once(
    sim: SnmpsimServer, community: str, **device: Any
) -> tuple[pl.DataFrame, SnmpCollector]:
    """Poll one snmpsim walk once through the collector; returns its readings and the collector."""
    entry = {"name": community, "host": "127.0.0.1", "port": sim.port, "community": community}
    entry.update(device)
    collector = build(
        "snmp-test",
        {"devices": [entry], "defaults": {"interval_s": 3600, "jitter_s": 0}, "flush_s": 0.05},
        settings(),
    )
    # interval_s = 3600 with a random phase would wait; start immediately instead.
    capture = await run_collector(_start_now(collector))
    return capture.frame(), collector


def _start_now(collector: SnmpCollector) -> SnmpCollector:
    collector.first_poll_now = True
    return collector


def value_of(frame: pl.DataFrame, point: str) -> float:
    rows = frame.filter(pl.col("point") == point)
    assert rows.height >= 1, f"no reading for {point}; have {sorted(frame['point'].to_list())}"
    return float(rows["value"][0])

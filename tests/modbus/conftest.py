"""Shared Modbus test helpers: running the collector against real pymodbus servers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from agent.plugins import CollectorContext
from agent.settings import AgentSettings
from collectors.modbus import build
from collectors.modbus.collector import ModbusCollector


class Capture:
    """A CollectorContext.emit that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[pl.DataFrame] = []

    async def __call__(self, batch: pl.DataFrame) -> None:
        self.batches.append(batch)

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.batches) if self.batches else pl.DataFrame()


def settings() -> AgentSettings:
    return AgentSettings(state_dir=Path("/nonexistent"))


def make(options: dict[str, Any], name: str = "modbus") -> ModbusCollector:
    collector = build(name, options, settings())
    collector.first_poll_now = True
    return collector


def tcp_options(
    port: int, devices: list[dict[str, Any]], *, transport: str = "tcp", **defaults: Any
) -> dict[str, Any]:
    return {
        "flush_s": 0.05,
        "buses": [{"name": "gw", "transport": transport, "host": "127.0.0.1", "port": port}],
        "defaults": {"interval_s": 60.0, "jitter_s": 0.0, "timeout_s": 0.5, **defaults},
        "devices": devices,
    }


async def run_until(
    collector: ModbusCollector,
    done: Callable[[ModbusCollector], bool],
    *,
    until: float = 10.0,
) -> Capture:
    """Run ``collector`` until ``done(collector)`` holds (or ``until`` s pass), then stop it."""
    capture = Capture()
    ctx = CollectorContext(name=collector.name, settings=collector.settings, emit=capture)  # type: ignore[arg-type]
    task = asyncio.create_task(collector.run(ctx))
    deadline = time.monotonic() + until
    while time.monotonic() < deadline and not task.done():
        if collector.states and done(collector):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return capture


async def poll_all_once(collector: ModbusCollector, *, until: float = 10.0) -> pl.DataFrame:
    """Every device polled once; the readings as one frame."""
    capture = await run_until(
        collector, lambda c: all(s.finished >= 1 for s in c.states.values()), until=until
    )
    return capture.frame()


def value_of(frame: pl.DataFrame, device: str, point: str) -> float:
    rows = frame.filter((pl.col("device") == device) & (pl.col("point") == point))
    assert rows.height == 1, f"{device} {point}: {rows.height} rows"
    return float(rows["value"][0])

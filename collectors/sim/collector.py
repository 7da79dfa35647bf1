"""The ``sim`` collector: emits :class:`SiteSimulator` batches on a (possibly accelerated) clock."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent import metrics
from agent.plugins import CollectorContext
from agent.settings import AgentSettings, ConfigError, validation_problems
from collectors.sim.simulator import SiteSimulator

__all__ = ["SimCollector", "SimOptions", "build"]


class SimOptions(BaseModel):
    """Options of a ``[[collectors]]`` table with ``kind = "sim"``."""

    model_config = ConfigDict(extra="forbid")

    pdus: int = Field(24, ge=1, le=1_000_000, description="Simulated rack PDUs.")
    interval_s: float = Field(10.0, gt=0, description="Simulated seconds between readings.")
    speed: float = Field(
        1.0, gt=0, description="Simulated seconds per wall second (1 = real time)."
    )
    start: datetime | None = Field(None, description="Simulated start (default: now).")
    end: datetime | None = Field(None, description="Stop emitting at this simulated time.")
    ticks_per_batch: int = Field(1, ge=1, description="Ticks combined into one emitted batch.")
    seed: int = 1
    idle_share: float = Field(0.1, ge=0, le=1)


@dataclass
class SimCollector:
    """Emits one batch per tick (or per ``ticks_per_batch`` ticks)."""

    name: str
    options: SimOptions
    simulator: SiteSimulator = field(init=False)
    emitted_readings: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.simulator = SiteSimulator(
            pdus=self.options.pdus, seed=self.options.seed, idle_share=self.options.idle_share
        )

    def polled_devices(self) -> list[str]:
        """The simulated devices (``pue-agent check``)."""
        # A UPS is two simulated meters (input and output side) of one device.
        return list(dict.fromkeys(d.device for d in self.simulator.devices))

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        rate = self.simulator.readings_per_tick / o.interval_s * o.speed
        return (
            f"sim: {len(self.simulator.devices)} simulated meters ({o.pdus} PDUs), every "
            f"{o.interval_s:g} s simulated at {o.speed:g}x (~{rate:,.0f} readings/s)"
        )

    async def run(self, ctx: CollectorContext) -> None:
        """Emit batches until cancelled or the simulated ``end`` is reached."""
        o = self.options
        sim_t = (o.start or datetime.now(UTC)).astimezone(UTC)
        step = timedelta(seconds=o.interval_s)
        wall_step = o.interval_s / o.speed
        next_wall = time.monotonic()
        # One simulated poll per device per tick, counted as the other collectors count theirs.
        polls = [metrics.POLLS.labels(ctx.name, device) for device in self.polled_devices()]
        while o.end is None or sim_t < o.end:
            frames = []
            for _ in range(o.ticks_per_batch):
                frames.append(self.simulator.tick(sim_t))
                for counter in polls:
                    counter.inc()
                sim_t += step
                if o.end is not None and sim_t >= o.end:
                    break
            batch = frames[0] if len(frames) == 1 else _concat(frames)
            await ctx.emit(batch)
            self.emitted_readings += batch.height
            next_wall += wall_step * len(frames)
            delay = next_wall - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Behind schedule (accelerated clock or slow disk): yield, never busy-spin.
                await asyncio.sleep(0)
                next_wall = max(next_wall, time.monotonic() - 1.0)


def _concat(frames: list[Any]) -> Any:
    return pl.concat(frames, rechunk=False)


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> SimCollector:
    """Build a sim collector from its config table.

    Raises:
        ConfigError: naming the collector and the bad option.
    """
    del settings
    try:
        parsed = SimOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"collectors.{name}: {validation_problems(exc)}") from exc
    return SimCollector(name=name, options=parsed)

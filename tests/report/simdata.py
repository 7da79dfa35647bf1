"""Interval data for report tests and benchmarks, built from the simulator's power model.

Energy per interval is the trapezoid of the simulated power at the interval's ends,
which is how the simulator's own registers integrate, so the figures are those an
aggregator would produce from the simulated readings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from agent.periods import month_bounds, shift_month
from agent.schemas import INTERVAL_SCHEMA, IntervalFlag
from agent.site import Site, parse_site
from collectors.sim.simulator import SiteSimulator, site_table


def sim_site(pdus: int = 24, *, seed: int = 1) -> tuple[SiteSimulator, Site]:
    sim = SiteSimulator(pdus=pdus, seed=seed)
    table = site_table(sim, site_id="demo", category=2)
    table["facts"]["policies"] = ["shanxi-2024-35"]
    return sim, parse_site(table, source="sim")


def power_matrix(sim: SiteSimulator, times: list[datetime]) -> np.ndarray:
    """Power (W) of every device at every time: shape (len(times), devices)."""
    return np.stack([sim.power_w(t) for t in times])


def intervals_for(
    sim: SiteSimulator, site: Site, start: datetime, end: datetime, step: timedelta
) -> pl.DataFrame:
    """INTERVAL_SCHEMA rows for every meter from ``start`` to ``end`` at ``step``."""
    n = int((end - start) / step)
    edges = [start + i * step for i in range(n + 1)]
    power = power_matrix(sim, edges)
    energy = (power[:-1] + power[1:]) / 2 * step.total_seconds() / 3.6e6  # kWh, (n, devices)
    meters = [m.id for m in site.meters]
    starts = pl.Series("interval_start", edges[:-1], dtype=INTERVAL_SCHEMA["interval_start"])
    frame = pl.DataFrame(
        {
            "meter": np.repeat(np.array(meters, dtype=object), n),
            "interval_start": pl.concat([starts] * len(meters)),
            "energy_kwh": energy.T.reshape(-1),
        }
    )
    return (
        frame.with_columns(
            (
                pl.col("interval_start")
                + pl.duration(microseconds=int(step / timedelta(microseconds=1)))
            ).alias("interval_end"),
            pl.lit(1.0).alias("coverage"),
            pl.lit(0, pl.UInt16).alias("flags"),
            pl.lit("register").alias("method"),
        )
        .select(INTERVAL_SCHEMA.names())
        .cast(INTERVAL_SCHEMA)
    )


def month_intervals(
    sim: SiteSimulator, site: Site, month: str, *, minutes: int = 15
) -> pl.DataFrame:
    start, end = month_bounds(month, site.timezone)
    return intervals_for(sim, site, start, end, timedelta(minutes=minutes))


def history_intervals(sim: SiteSimulator, site: Site, month: str, months: int = 22) -> pl.DataFrame:
    """Hourly rows for the ``months`` before ``month`` (enough for TTM and its history)."""
    start, _ = month_bounds(shift_month(month, -months), site.timezone)
    end, _ = month_bounds(month, site.timezone)
    return intervals_for(sim, site, start, end, timedelta(hours=6))


def with_events(frame: pl.DataFrame, month: str, site: Site) -> pl.DataFrame:
    """Mark a short gap, a wrap, a reset and a rejected value on a few meters."""
    start, _ = month_bounds(month, site.timezone)
    t = pl.col("interval_start")
    marks = [
        (
            "pdu-003.output",
            start + timedelta(days=3, hours=2),
            timedelta(hours=2),
            int(IntervalFlag.GAP | IntervalFlag.INTERPOLATED),
            0.0,
        ),
        (
            "chiller-1.input",
            start + timedelta(days=10),
            timedelta(minutes=15),
            int(IntervalFlag.WRAP),
            1.0,
        ),
        (
            "pdu-007.output",
            start + timedelta(days=12, hours=5),
            timedelta(minutes=15),
            int(IntervalFlag.RESET),
            1.0,
        ),
        (
            "grid-1.input",
            start + timedelta(days=20),
            timedelta(minutes=30),
            int(IntervalFlag.REJECTED),
            1.0,
        ),
    ]
    for meter, at, span, flag, coverage in marks:
        hit = (pl.col("meter") == meter) & (t >= at) & (t < at + span)
        frame = frame.with_columns(
            pl.when(hit).then(pl.lit(flag, pl.UInt16)).otherwise(pl.col("flags")).alias("flags"),
            pl.when(hit).then(pl.lit(coverage)).otherwise(pl.col("coverage")).alias("coverage"),
        )
    return frame


def drop_days(frame: pl.DataFrame, meter_glob: str, start: datetime, days: int) -> pl.DataFrame:
    """Remove ``days`` days of rows of the meters matching a prefix (low coverage)."""
    prefix = meter_glob.rstrip("*")
    t = pl.col("interval_start")
    return frame.filter(
        ~(
            pl.col("meter").str.starts_with(prefix)
            & (t >= start)
            & (t < start + timedelta(days=days))
        )
    )


def now_utc() -> datetime:
    return datetime.now(UTC)

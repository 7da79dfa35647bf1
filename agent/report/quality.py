"""Data-quality tables for the report: coverage per meter and the list of data events.

Coverage comes from the hourly roll-up (no second pass over the minute rows); the
events table reads only the flagged rows.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from agent.report.rollup import EVENT_KINDS
from agent.site import Site

__all__ = ["event_table", "meter_coverage"]


def _site_meters(site: Site) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "meter": [m.id for m in site.meters],
            "device": [m.device for m in site.meters],
            "role": [m.role.value for m in site.meters],
            "metering_point": [
                m.metering_point.value if m.metering_point else None for m in site.meters
            ],
            "rack": [m.rack for m in site.meters],
        },
        schema={
            "meter": pl.String(),
            "device": pl.String(),
            "role": pl.String(),
            "metering_point": pl.String(),
            "rack": pl.String(),
        },
    )


def meter_coverage(
    hourly: pl.DataFrame, site: Site, start: datetime, end: datetime
) -> pl.DataFrame:
    """One row per meter of the site: role, energy, time-weighted coverage and event counts.

    Args:
        hourly: The month's hourly roll-up (:func:`agent.report.rollup.local_hours`).
        site: The site model; a meter with no rows appears with coverage 0, never dropped.
        start: Month start (UTC).
        end: Month end (UTC).
    """
    period_us = (end - start).total_seconds() * 1e6
    stats = hourly.group_by("meter").agg(
        pl.col("n_intervals").sum().alias("intervals"),
        pl.col("energy_kwh").sum(),
        (pl.col("covered_us").sum() / period_us).alias("coverage"),
        *(pl.col(f"n_{name}").sum().alias(name) for name in EVENT_KINDS),
    )
    return (
        _site_meters(site)
        .join(stats, on="meter", how="left")
        .with_columns(
            pl.col("intervals").fill_null(0),
            pl.col("energy_kwh").fill_null(0.0),
            pl.col("coverage").fill_null(0.0),
            *(pl.col(name).fill_null(0) for name in EVENT_KINDS),
        )
        .sort("role", "meter")
    )


def event_table(intervals: pl.LazyFrame, *, limit: int | None = None) -> tuple[pl.DataFrame, int]:
    """Runs of flagged intervals (gaps, resets, wraps, rejected values…) per meter and kind.

    Consecutive flagged intervals of one meter and kind form one event. Returns
    the events (sorted by start, at most ``limit``) and the total number of events.
    """
    mask = sum(EVENT_KINDS.values())
    flagged = (
        intervals.filter(pl.col("flags").cast(pl.Int32).and_(mask) != 0)
        .select("meter", "interval_start", "interval_end", "coverage", "flags", "energy_kwh")
        .collect(engine="streaming")
    )
    kinds = pl.concat(
        [
            flagged.filter(pl.col("flags").cast(pl.Int32).and_(bit) != 0).with_columns(
                pl.lit(name).alias("kind")
            )
            for name, bit in EVENT_KINDS.items()
        ]
    ).sort("meter", "kind", "interval_start")
    runs = kinds.with_columns(
        (
            (pl.col("meter") != pl.col("meter").shift(1))
            | (pl.col("kind") != pl.col("kind").shift(1))
            | (pl.col("interval_start") != pl.col("interval_end").shift(1))
        )
        .fill_null(True)
        .cum_sum()
        .alias("run")
    )
    events = (
        runs.group_by("run")
        .agg(
            pl.col("meter").first(),
            pl.col("kind").first(),
            pl.col("interval_start").min().alias("start"),
            pl.col("interval_end").max().alias("end"),
            pl.len().alias("intervals"),
            pl.col("coverage").min().alias("min_coverage"),
            pl.col("energy_kwh").sum().alias("energy_kwh"),
        )
        .drop("run")
        .sort("start", "meter", "kind")
    )
    total = events.height
    return (events.head(limit) if limit is not None else events), total

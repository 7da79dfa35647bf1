"""Roll-ups of the month's interval rows: one pass over the data feeds every figure.

The month's minute rows are read once and summed per meter and *local* hour
(so no row of a zone with a half-hour offset straddles a local hour), keeping
the count of each data event. The KPI engine accepts such hourly rows ("base
intervals or hourly roll-ups"), and their sums over any whole hour, day or
month are those of the minute rows. ``verify`` rebuilds the same roll-up from
the bundled Parquet file, so nothing it compares was taken on trust.
"""

from __future__ import annotations

import polars as pl

from agent.schemas import INTERVAL_SCHEMA, IntervalFlag
from agent.site import Site

__all__ = ["EVENT_KINDS", "daily_rollup", "hourly_rollup"]

#: Flags counted per meter (and listed in the events table), in display order.
EVENT_KINDS: dict[str, int] = {
    "gap": int(IntervalFlag.GAP),
    "reset": int(IntervalFlag.RESET),
    "wrap": int(IntervalFlag.WRAP),
    "rejected": int(IntervalFlag.REJECTED),
    "interpolated": int(IntervalFlag.INTERPOLATED),
    "estimated": int(IntervalFlag.ESTIMATED),
}


def _rollup(intervals: pl.LazyFrame, site: Site, every: str) -> pl.LazyFrame:
    zone = site.timezone
    flags = pl.col("flags").cast(pl.Int32)
    return (
        intervals.with_columns(
            pl.col("interval_start").dt.convert_time_zone(zone).dt.truncate(every).alias("_p"),
            (pl.col("coverage") * (pl.col("interval_end") - pl.col("interval_start")))
            .dt.total_microseconds()
            .alias("covered_us"),
        )
        .group_by("meter", "_p")
        .agg(
            pl.col("energy_kwh").sum(),
            pl.col("covered_us").sum(),
            flags.bitwise_or().cast(pl.UInt16).alias("flags"),
            pl.col("method").min().alias("method"),
            pl.len().cast(pl.Int64).alias("n_intervals"),
            *((flags.and_(bit) != 0).sum().alias(f"n_{n}") for n, bit in EVENT_KINDS.items()),
        )
        .with_columns(
            pl.col("_p").dt.convert_time_zone("UTC").alias("interval_start"),
            pl.col("_p").dt.offset_by(every).dt.convert_time_zone("UTC").alias("interval_end"),
        )
        .with_columns(
            (
                pl.col("covered_us")
                / (pl.col("interval_end") - pl.col("interval_start")).dt.total_microseconds()
            ).alias("coverage")
        )
        .drop("_p")
        .cast(INTERVAL_SCHEMA, strict=False)
    )


def hourly_rollup(intervals: pl.LazyFrame, site: Site) -> pl.DataFrame:
    """Per meter and local hour, sorted.

    Columns: those of INTERVAL_SCHEMA plus ``covered_us``, ``n_intervals`` and one
    ``n_<event>`` count per :data:`EVENT_KINDS`.
    """
    return (
        _rollup(intervals, site, "1h").sort("meter", "interval_start").collect(engine="streaming")
    )


def daily_rollup(intervals: pl.LazyFrame, site: Site) -> pl.LazyFrame:
    """Per meter and local day, in INTERVAL_SCHEMA (the bundle's ``history`` file)."""
    return (
        _rollup(intervals, site, "1d")
        .select(INTERVAL_SCHEMA.names())
        .sort("interval_start", "meter")
    )

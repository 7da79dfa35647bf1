"""Roll-ups of the month's interval rows in the site's local calendar, for the report.

The month's minute rows are read once and summed per meter and *local* hour (so no
row of a zone with a half-hour offset straddles a local hour), keeping the count of
each data event. The KPI engine accepts such hourly rows ("base intervals or hourly
roll-ups"), and their sums over any whole hour, day or month are those of the minute
rows. ``verify`` rebuilds the same roll-up from the bundled Parquet file, so nothing it
compares was taken on trust. Both are :func:`agent.store.period_rollup`, the roll-up
the store and the live KPIs use.
"""

from __future__ import annotations

import polars as pl

from agent.schemas import INTERVAL_SCHEMA, IntervalFlag
from agent.site import Site
from agent.store import period_rollup

__all__ = ["EVENT_KINDS", "local_days", "local_hours"]

#: Flags counted per meter (and listed in the events table), in display order.
EVENT_KINDS: dict[str, int] = {
    "gap": int(IntervalFlag.GAP),
    "reset": int(IntervalFlag.RESET),
    "wrap": int(IntervalFlag.WRAP),
    "rejected": int(IntervalFlag.REJECTED),
    "interpolated": int(IntervalFlag.INTERPOLATED),
    "estimated": int(IntervalFlag.ESTIMATED),
}


def local_hours(intervals: pl.LazyFrame, site: Site) -> pl.DataFrame:
    """Per meter and local hour, sorted.

    Columns: those of INTERVAL_SCHEMA plus ``covered_us``, ``n_intervals`` and one
    ``n_<event>`` count per :data:`EVENT_KINDS`.
    """
    return (
        period_rollup(intervals, every="1h", timezone=site.timezone, events=EVENT_KINDS)
        .sort("meter", "interval_start")
        .collect(engine="streaming")
    )


def local_days(intervals: pl.LazyFrame, site: Site) -> pl.LazyFrame:
    """Per meter and local day, in INTERVAL_SCHEMA (the bundle's ``history`` file)."""
    return (
        period_rollup(intervals, every="1d", timezone=site.timezone)
        .select(INTERVAL_SCHEMA.names())
        .sort("interval_start", "meter")
    )

"""Daily energy by role (IT / cooling / losses / other / on-site renewable) for the charts.

The KPI engine gives E_DC and E_IT; the breakdown chart also needs cooling,
losses and other energy, which are sums of the meters of those roles. Losses
that are not metered (no ``power_loss`` meter) are the balance
E_DC − IT − cooling − other − metered losses (docs/pue.md's identity), clipped at 0.
``verify`` re-computes this table from the bundled intervals like the KPIs.
"""

from __future__ import annotations

import polars as pl

from agent.site import MeterRole, Site

__all__ = ["BREAKDOWN_COLUMNS", "daily_breakdown"]

BREAKDOWN_COLUMNS = ("e_dc", "e_it", "cooling", "losses", "other", "renewable")


def _weights(site: Site) -> pl.DataFrame:
    dc = {m.id: 0 for m in site.meters}
    it = dict(dc)
    for sign, meter in site.expand("e_dc"):
        dc[meter] += sign
    for sign, meter in site.expand("e_it"):
        it[meter] += sign
    return pl.DataFrame(
        {
            "meter": [m.id for m in site.meters],
            "role": [m.role.value for m in site.meters],
            "w_dc": [float(dc[m.id]) for m in site.meters],
            "w_it": [float(it[m.id]) for m in site.meters],
        }
    )


def daily_breakdown(intervals: pl.LazyFrame, site: Site) -> pl.DataFrame:
    """One row per local day: ``day`` (YYYY-MM-DD) and kWh per :data:`BREAKDOWN_COLUMNS`."""
    role = pl.col("role")
    e = pl.col("energy_kwh")
    per_meter_day = (
        intervals.with_columns(
            pl.col("interval_start")
            .dt.convert_time_zone(site.timezone)
            .dt.strftime("%Y-%m-%d")
            .alias("day")
        )
        .group_by("day", "meter")
        .agg(e.sum())
        .collect(engine="streaming")
    )
    daily = (
        per_meter_day.join(_weights(site), on="meter", how="inner")
        .group_by("day")
        .agg(
            (e * pl.col("w_dc")).sum().alias("e_dc"),
            (e * pl.col("w_it")).sum().alias("e_it"),
            e.filter(role == MeterRole.COOLING.value).sum().alias("cooling"),
            e.filter(role == MeterRole.POWER_LOSS.value).sum().alias("_losses_metered"),
            e.filter(role == MeterRole.OTHER.value).sum().alias("other"),
            e.filter(role == MeterRole.ONSITE_RENEWABLE.value).sum().alias("renewable"),
        )
    )
    balance = (pl.col("e_dc") - pl.col("e_it") - pl.col("cooling") - pl.col("other")) - pl.col(
        "_losses_metered"
    )
    return (
        daily.with_columns(
            (balance.clip(lower_bound=0.0) + pl.col("_losses_metered")).alias("losses")
        )
        .select("day", *BREAKDOWN_COLUMNS)
        .sort("day")
    )

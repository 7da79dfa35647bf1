"""The site's figures on ``/metrics``, refreshed at scrape time.

The gauges carry what the rest of the agent already computed, never a second
computation: the real-time PUE and power by role come from the same
:class:`agent.realtime.RealtimeSnapshot` as ``GET /api/v1/kpi/current``, and the
KPIs are the stored rows ``pue-agent kpi --json`` and ``GET /api/v1/kpi`` print
(the latest ``day``, ``month`` and ``ttm`` row of every metric: PUE, REF, CUE,
pPUE …, with category and coverage). A KPI that is ``insufficient_data`` has no
value and is left out rather than exported as 0.
"""

from __future__ import annotations

import math

import polars as pl
from prometheus_client import Gauge

from agent import metrics
from agent.kpi.green_window import GreenWindow
from agent.realtime import RealtimeSnapshot

__all__ = [
    "EXPORTED_KINDS",
    "GREEN_WINDOW_SHARE",
    "GREEN_WINDOW_STORAGE",
    "GREEN_WINDOW_SURPLUS",
    "SITE_KPI",
    "SITE_KPI_COVERAGE",
    "SITE_POWER",
    "SITE_PUE_REALTIME",
    "refresh_green_window",
    "refresh_site_metrics",
]

#: The stored KPI windows exported: today (the latest day), this month (interim), the TTM.
EXPORTED_KINDS = ("day", "month", "ttm")

SITE_PUE_REALTIME = Gauge(
    "pue_agent_site_pue_realtime",
    "Real-time PUE: E_DC power over E_IT power by the site's formulas (a ratio of powers, "
    "not a period PUE).",
    ["site"],
    registry=metrics.REGISTRY,
)
SITE_POWER = Gauge(
    "pue_agent_site_power_watts",
    "Latest power by meter role (monitor meters left out).",
    ["site", "role"],
    registry=metrics.REGISTRY,
)
SITE_KPI = Gauge(
    "pue_agent_site_kpi",
    "Stored KPI of the latest day, month (interim) and TTM (annual): pue, ref, "
    "ref_metered, ref_documentary, cue, ppue_* ... as `pue-agent kpi --json` gives them.",
    ["site", "metric", "period_kind", "period", "category", "unit"],
    registry=metrics.REGISTRY,
)
SITE_KPI_COVERAGE = Gauge(
    "pue_agent_site_kpi_coverage_ratio",
    "Data coverage (0 to 1) of the stored KPI with the same site, metric and period.",
    ["site", "metric", "period_kind", "period"],
    registry=metrics.REGISTRY,
)

GREEN_WINDOW_SURPLUS = Gauge(
    "pue_agent_green_window_surplus_watts",
    "Expected green surplus of the current hour (hours_ahead 0) and the next 24: 7-day "
    "same-hour on-site mean x today's ratio + contracts - load (GET /api/v1/green-window).",
    ["site", "hours_ahead"],
    registry=metrics.REGISTRY,
)
GREEN_WINDOW_SHARE = Gauge(
    "pue_agent_green_window_share_ratio",
    "Expected green share (0 to 1) of the current hour and the next 24 (green window).",
    ["site", "hours_ahead"],
    registry=metrics.REGISTRY,
)
GREEN_WINDOW_STORAGE = Gauge(
    "pue_agent_green_window_storage_green_kwh",
    "Green energy the battery holds now (first-in-first-out accounting of hourly matching).",
    ["site"],
    registry=metrics.REGISTRY,
)


def latest_kpis(kpis: pl.DataFrame, site: str) -> pl.DataFrame:
    """The latest row of every (metric, period kind) of :data:`EXPORTED_KINDS` for ``site``."""
    return (
        kpis.filter(
            (pl.col("site").is_null() | (pl.col("site") == site))
            & pl.col("period_kind").is_in(EXPORTED_KINDS)
        )
        .sort("period_start", "period_end")
        .group_by("metric", "period_kind", maintain_order=True)
        .last()
        .sort("period_kind", "metric")
    )


def refresh_site_metrics(
    site: str, snapshot: RealtimeSnapshot | None, kpis: pl.DataFrame | None
) -> None:
    """Set the site gauges from a real-time snapshot and the stored KPI history."""
    SITE_PUE_REALTIME.clear()
    SITE_POWER.clear()
    if snapshot is not None:
        if snapshot.pue_realtime is not None and math.isfinite(snapshot.pue_realtime):
            SITE_PUE_REALTIME.labels(site).set(snapshot.pue_realtime)
        for role, watts in sorted(snapshot.power_by_role_w.items()):
            SITE_POWER.labels(site, role).set(watts)
    if kpis is None:
        return
    SITE_KPI.clear()
    SITE_KPI_COVERAGE.clear()
    for row in latest_kpis(kpis, site).iter_rows(named=True):
        category = "" if row["category"] is None else str(row["category"])
        if row["value"] is not None and math.isfinite(row["value"]):
            SITE_KPI.labels(
                site, row["metric"], row["period_kind"], row["period"], category, row["unit"] or ""
            ).set(row["value"])
        if row["coverage"] is not None:
            SITE_KPI_COVERAGE.labels(site, row["metric"], row["period_kind"], row["period"]).set(
                row["coverage"]
            )


def refresh_green_window(site: str, window: GreenWindow | None) -> None:
    """Set the green-window gauges (cleared when the window cannot be computed)."""
    for gauge in (GREEN_WINDOW_SURPLUS, GREEN_WINDOW_SHARE, GREEN_WINDOW_STORAGE):
        gauge.clear()
    if window is None:
        return
    GREEN_WINDOW_STORAGE.labels(site).set(window.storage_green_kwh)
    for row in window.hours.iter_rows(named=True):
        ahead = str(row["hours_ahead"])
        # Prometheus base unit: watts (the API gives kW).
        GREEN_WINDOW_SURPLUS.labels(site, ahead).set(row["expected_surplus_kw"] * 1000.0)
        if row["green_share"] is not None:
            GREEN_WINDOW_SHARE.labels(site, ahead).set(row["green_share"])

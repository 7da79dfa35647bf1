"""The green-window signal for schedulers: expected green surplus now and for 24 hours.

For the current local hour and each of the next 24 it gives the expected green surplus
(kW) and the hour's expected green share, so a batch scheduler can hold flexible work
until green hours (``deploy/green-window/``). Method (stated in every answer, see
:data:`METHOD`):

* on-site generation: the mean of the same local hour over the last 7 whole days,
  scaled by today's observed ratio (today's generation in the hours so far over the
  7-day mean of those hours; 1 before any generation is expected; clipped to 0..3 so a
  dawn hour of a few kWh cannot scale a whole day);
* load: the mean of the same local hour over the last 7 days (consumption as hourly
  matching defines it, battery charge and discharge taken out);
* contracts: the delivery their hourly profiles state for that hour;
* storage: the green energy the battery holds now by the first-in-first-out rule of
  hourly matching, given beside the hours (when it is discharged is the site's choice).

surplus_kw = max(0, on-site + contract - load); share = min(1, (on-site + contract) / load).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from agent.green import GreenLedger, GreenLedgerError
from agent.kpi.from_store import hour_rows
from agent.kpi.hourly import GreenSupply, match_hours
from agent.settings import AgentSettings
from agent.site import Site
from agent.store import IntervalStore

__all__ = [
    "HISTORY_DAYS",
    "HORIZON_H",
    "METHOD",
    "WINDOW_SCHEMA",
    "GreenWindow",
    "GreenWindowUnavailableError",
    "forecast_window",
    "green_window_for",
    "green_window_from_store",
]

#: Days of history the same-hour mean uses.
HISTORY_DAYS = 7
#: Hours after the current one in the window (the current hour is ``hours_ahead`` 0).
HORIZON_H = 24
#: Bound on today's scaling ratio.
_RATIO_MAX = 3.0
METHOD = (
    "on-site: mean of the same local hour over the last 7 days x today's observed ratio "
    "(clipped 0..3); load: 7-day same-hour mean; contracts: stated hourly profiles; "
    "storage: FIFO green content now"
)

WINDOW_SCHEMA = pl.Schema(
    {
        "hour_start": pl.Datetime("us", "UTC"),
        "hours_ahead": pl.Int32(),
        "expected_load_kw": pl.Float64(),
        "expected_onsite_kw": pl.Float64(),
        "contract_kw": pl.Float64(),
        "expected_surplus_kw": pl.Float64(),
        "green_share": pl.Float64(),
    }
)


@dataclass(frozen=True, slots=True)
class GreenWindow:
    """The signal: one row per hour (:data:`WINDOW_SCHEMA`) and how it was made."""

    site: str
    computed_at: datetime
    ratio: float
    storage_green_kwh: float
    hours: pl.DataFrame

    def to_json(self) -> dict[str, Any]:
        """The JSON body of ``GET /api/v1/green-window`` and the retained MQTT message."""
        rows = self.hours.with_columns(pl.col("hour_start").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        return {
            "site": self.site,
            "computed_at": self.computed_at.isoformat(timespec="seconds"),
            "method": METHOD,
            "today_ratio": self.ratio,
            "storage_green_kwh": self.storage_green_kwh,
            "hours": rows.to_dicts(),
        }


def _local_hour(timezone: str) -> pl.Expr:
    return pl.col("hour_start").dt.convert_time_zone(timezone).dt.hour().alias("_hod")


def forecast_window(
    hours: pl.DataFrame, contracts: pl.DataFrame, site: Site, now: datetime
) -> GreenWindow:
    """The window from matched hours (:data:`agent.kpi.hourly.HOUR_SCHEMA`) up to ``now``.

    Args:
        hours: Matched hours covering at least the last 7 days and today so far.
        contracts: Contract delivery per local hour (``CONTRACT_HOURS_SCHEMA``).
        site: The site (time zone).
        now: The current time (UTC); its hour is ``hours_ahead`` 0.
    """
    tz = site.timezone
    hour_now = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    local_midnight = (
        now.astimezone(site.zone).replace(hour=0, minute=0, second=0, microsecond=0)
    ).astimezone(UTC)
    history = hours.lazy().filter(
        (pl.col("hour_start") >= local_midnight - timedelta(days=HISTORY_DAYS))
        & (pl.col("hour_start") < local_midnight)
    )
    profile = history.group_by(_local_hour(tz)).agg(
        pl.col("onsite_kwh").mean().alias("_onsite"),
        pl.col("consumption_kwh").mean().alias("_load"),
    )
    today = (
        hours.lazy()
        .filter((pl.col("hour_start") >= local_midnight) & (pl.col("hour_start") < hour_now))
        .with_columns(_local_hour(tz))
        .join(profile, on="_hod", how="inner")
        .select(pl.col("onsite_kwh").sum().alias("_seen"), pl.col("_onsite").sum().alias("_usual"))
    )
    ratio_expr = (
        pl.when(pl.col("_usual") > 0)
        .then(pl.col("_seen") / pl.col("_usual"))
        .otherwise(1.0)
        .clip(0.0, _RATIO_MAX)
    )
    # Green the battery holds now: charged from green minus discharged as green (FIFO).
    stored = hours.lazy().select(
        (pl.col("green_in_kwh").sum() - pl.col("storage_green_kwh").sum())
        .clip(lower_bound=0.0)
        .alias("_stored")
    )
    targets = pl.LazyFrame(
        {
            "hour_start": [hour_now + timedelta(hours=k) for k in range(HORIZON_H + 1)],
            "hours_ahead": list(range(HORIZON_H + 1)),
        },
        schema={"hour_start": pl.Datetime("us", "UTC"), "hours_ahead": pl.Int32},
    )
    delivered = (
        contracts.lazy()
        .select(
            (pl.col("hour") + ":00")
            .str.to_datetime("%Y-%m-%dT%H:%M", time_unit="us")
            .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
            .alias("hour_start"),
            "energy_kwh",
        )
        .group_by("hour_start")
        .agg(pl.col("energy_kwh").sum().alias("contract_kw"))
    )
    ratio_frame, stored_frame, window = pl.collect_all(
        [
            today.select(ratio_expr.fill_null(1.0).alias("ratio")),
            stored,
            targets.with_columns(_local_hour(tz))
            .join(profile, on="_hod", how="left")
            .join(delivered, on="hour_start", how="left"),
        ]
    )
    ratio = float(ratio_frame["ratio"][0]) if ratio_frame.height else 1.0
    supply = pl.col("expected_onsite_kw") + pl.col("contract_kw")
    out = (
        window.with_columns(
            pl.col("_load").fill_null(0.0).alias("expected_load_kw"),
            (pl.col("_onsite").fill_null(0.0) * ratio).alias("expected_onsite_kw"),
            pl.col("contract_kw").fill_null(0.0),
        )
        .with_columns(
            (supply - pl.col("expected_load_kw"))
            .clip(lower_bound=0.0)
            .alias("expected_surplus_kw"),
            pl.when(pl.col("expected_load_kw") > 0)
            .then((supply / pl.col("expected_load_kw")).clip(upper_bound=1.0))
            .alias("green_share"),
        )
        .sort("hours_ahead")
        .select(WINDOW_SCHEMA.names())
        .cast(WINDOW_SCHEMA)
    )
    return GreenWindow(
        site=site.id,
        computed_at=now.astimezone(UTC),
        ratio=ratio,
        storage_green_kwh=float(stored_frame["_stored"][0] or 0.0),
        hours=out,
    )


def green_window_from_store(
    store: IntervalStore, site: Site, supply: GreenSupply, now: datetime | None = None
) -> GreenWindow:
    """The window from the store's last 8 days of hourly roll-ups and the green ledger."""
    now = now or datetime.now(UTC)
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(days=HISTORY_DAYS + 2)
    hours = match_hours(hour_rows(store, site, start, end), site, supply).collect()
    return forecast_window(hours, supply.contracts, site, now)


class GreenWindowUnavailableError(RuntimeError):
    """The store or the green ledger cannot be read (the API answers 503, says which)."""


def green_window_for(
    settings: AgentSettings, site: Site, now: datetime | None = None
) -> GreenWindow:
    """The window of the agent's store and ledger (blocking: call in a thread).

    What ``GET /api/v1/green-window``, ``/metrics`` and the MQTT sink publish.

    Raises:
        GreenWindowUnavailableError: the ledger or the store cannot be read.
    """
    try:
        supply = GreenLedger(settings.green_ledger_path()).supply()
    except GreenLedgerError as exc:
        raise GreenWindowUnavailableError(f"green ledger unreadable: {exc}") from None
    try:
        return green_window_from_store(IntervalStore(settings.store_path()), site, supply, now)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise GreenWindowUnavailableError(f"interval store unreadable: {exc}") from None

"""A month's KPIs from the local interval store, reading per period kind only what it needs.

:func:`agent.kpi.compute_kpis` takes one frame of interval rows for every kind. Over
the store that is wasteful for a large site: 2,000 meters at one minute are 89 M rows
a month. What each kind needs (see ``compute_kpis``):

* ``interval``: the month's base interval rows (per-interval sums across meters);
* ``hour``, ``day``, ``month``: per-meter sums of local hours; in a zone whose UTC
  offsets are whole hours the store's hourly roll-ups give exactly those;
* ``ttm``: per-meter sums of the eleven months before plus the month; for the months
  before, the store's cached per-meter daily roll-ups (hours and base rows at the
  edges) give the same sums from ~60 k rows a month.

Both store roll-ups are exact: parts that may share keys are de-duplicated first, as
:meth:`agent.store.IntervalStore.read_intervals` does. The result equals
``compute_kpis`` over ``read_intervals`` up to float rounding (sums in another order).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import polars as pl

from agent.energy.silence import describe_silences
from agent.kpi.compute import DEFAULT_KINDS, compute_kpis, kpi_choices, sort_kpis
from agent.kpi.hourly import HOURLY_CHOICES, GreenSupply, hourly_kpis, match_hours
from agent.periods import month_bounds, shift_month, ttm_bounds, whole_hour_offsets
from agent.schemas import KPI_SCHEMA, PeriodKind
from agent.site import Site
from agent.store import IntervalStore, period_rollup

__all__ = [
    "compute_and_store_month",
    "earlier_rows",
    "earlier_totals",
    "hour_rows",
    "month_rows",
    "month_silences",
    "recorded_silences",
    "store_kpis",
]


def earlier_rows(store: IntervalStore, site: Site, month: str) -> pl.LazyFrame:
    """Rows whose per-meter sums are those of the eleven local months before ``month``.

    Whole UTC days from the store's daily roll-up, hours and base intervals at the
    edges (:meth:`IntervalStore.read_rollup`); for the TTM only, which sums per meter.
    """
    t_start, _ = ttm_bounds(month, site.timezone)
    m_start, _ = month_bounds(month, site.timezone)
    return store.read_rollup(t_start, m_start, every="1d")


def earlier_totals(store: IntervalStore, site: Site, month: str) -> pl.DataFrame:
    """Per meter, the eleven local months before ``month`` summed into one row.

    What the TTM needs of them (it sums per meter); the live refresh caches this.
    """
    t_start, _ = ttm_bounds(month, site.timezone)
    m_start, _ = month_bounds(month, site.timezone)
    rows = earlier_rows(store, site, month)
    return period_rollup(rows, window=(t_start, m_start)).collect()


def month_rows(store: IntervalStore, site: Site, month: str) -> pl.LazyFrame:
    """Rows of local month ``month`` that keep local hours whole, the coarsest available.

    The hourly roll-ups where the zone's offsets are whole hours, base intervals otherwise.
    """
    return hour_rows(store, site, *month_bounds(month, site.timezone))


def hour_rows(store: IntervalStore, site: Site, start: datetime, end: datetime) -> pl.LazyFrame:
    """Rows of ``[start, end)`` that keep local hours whole (for hourly matching).

    The hourly roll-ups where the zone's offsets are whole hours, base intervals otherwise.
    """
    if whole_hour_offsets(site.timezone):
        return store.read_rollup(start, end, every="1h")
    return store.scan_intervals(start, end)


def _hourly(
    store: IntervalStore,
    site: Site,
    supply: GreenSupply,
    *,
    month: str,
    coverage_threshold: float,
    kinds: Sequence[PeriodKind],
    whole_ttm: bool,
) -> pl.DataFrame | None:
    """Hourly-matching KPIs of ``month`` (docs/green-hourly.md); ``None`` if no kind wants them.

    Days and the month are matched over the month's hours (the battery queue starts at
    the month), so ``pue-agent kpi``, the live refresh and the report give the same
    figures. ``whole_ttm``: the TTM row too, matched over the twelve months' hours (the
    queue runs across months); the live refresh has no TTM row.
    """
    tz = site.timezone
    m_start, m_end = month_bounds(month, tz)
    frames = []
    in_month = [k for k in kinds if k in (PeriodKind.DAY, PeriodKind.MONTH)]
    if in_month:
        hours = match_hours(hour_rows(store, site, m_start, m_end), site, supply).collect()
        frames.append(
            hourly_kpis(
                hours, site, month=month, coverage_threshold=coverage_threshold, kinds=in_month
            )
        )
    if whole_ttm and PeriodKind.TTM in kinds:
        t_start = ttm_bounds(month, tz)[0]
        hours = match_hours(hour_rows(store, site, t_start, m_end), site, supply).collect()
        frames.append(
            hourly_kpis(
                hours,
                site,
                month=month,
                coverage_threshold=coverage_threshold,
                kinds=[PeriodKind.TTM],
            )
        )
    return pl.concat(frames, how="vertical") if frames else None


def store_kpis(
    store: IntervalStore,
    site: Site,
    green: pl.DataFrame | None,
    *,
    month: str,
    coverage_threshold: float = 0.95,
    kinds: Sequence[PeriodKind] = DEFAULT_KINDS,
    earlier: pl.LazyFrame | None = None,
    supply: GreenSupply | None = None,
) -> pl.DataFrame:
    """:func:`compute_kpis` of ``month`` over the store, reading per kind only what it needs.

    Args:
        store: The interval store.
        site: The site model.
        green: Documentary renewable energy (``GREEN_SCHEMA``), or ``None``.
        month: Local month label ``YYYY-MM``.
        coverage_threshold: Minimum coverage for a value.
        kinds: Period kinds to compute.
        earlier: Rows standing for the eleven months before ``month`` (e.g. a caller's
            cached per-meter sums of :func:`earlier_rows`); read from the store if ``None``.
        supply: Green supply placed in time (:meth:`agent.green.GreenLedger.supply`): adds
            the hourly-matching KPIs (:data:`agent.kpi.hourly.HOURLY_METRICS`) of the days,
            the month and, unless ``earlier`` is given (the live refresh), the TTM.

    Returns:
        Rows in :data:`KPI_SCHEMA`, in ``compute_kpis`` order.
    """
    wanted = list(dict.fromkeys(kinds))
    coarse: list[PeriodKind] = [k for k in wanted if k is not PeriodKind.INTERVAL]
    m_start, m_end = month_bounds(month, site.timezone)
    # (rows, kinds) per pass: the interval kind sums every meter per base interval, the
    # one kind that reads all rows; the others read the coarsest rows that keep them exact.
    passes: list[tuple[pl.LazyFrame, list[PeriodKind]]] = []
    if coarse:
        month_part = month_rows(store, site, month)
        if PeriodKind.TTM in coarse:
            before = earlier if earlier is not None else earlier_rows(store, site, month)
            month_part = pl.concat([before, month_part], how="vertical_relaxed")
        passes.append((month_part, coarse))
    if PeriodKind.INTERVAL in wanted:
        passes.append((store.scan_intervals(m_start, m_end), [PeriodKind.INTERVAL]))
    frames = [
        compute_kpis(
            rows, site, green, month=month, coverage_threshold=coverage_threshold, kinds=kinds
        )
        for rows, kinds in passes
    ]
    if supply is not None:
        hourly = _hourly(
            store,
            site,
            supply,
            month=month,
            coverage_threshold=coverage_threshold,
            kinds=wanted,
            whole_ttm=earlier is None,
        )
        if hourly is not None:
            frames.append(hourly)
    if not frames:
        return pl.DataFrame(schema=KPI_SCHEMA)
    return sort_kpis(pl.concat(frames, how="vertical"))


def compute_and_store_month(
    store: IntervalStore,
    site: Site,
    green: pl.DataFrame | None,
    month: str,
    coverage_threshold: float = 0.95,
    supply: GreenSupply | None = None,
) -> tuple[pl.DataFrame, dict[str, object]]:
    """Compute every KPI kind of ``month`` from the store, store them; return them and the choices.

    What ``pue-agent kpi`` runs: each period kind reads only what it needs
    (:func:`store_kpis`), and the KPIs are written back with the choices they were
    computed with, so the rules, the API and the sinks see the same rows. With ``supply``
    the hourly-matching KPIs are included (over the twelve months' hours).
    """
    kpis = store_kpis(
        store, site, green, month=month, coverage_threshold=coverage_threshold, supply=supply
    )
    choices = kpi_choices(
        site, coverage_threshold=coverage_threshold, computed_at=datetime.now(UTC)
    )
    if supply is not None:
        choices["hourly_matching"] = HOURLY_CHOICES
    store.write_kpis(kpis, choices=choices)
    return kpis, choices


def recorded_silences(store: IntervalStore, month: str) -> pl.DataFrame:
    """Silent periods recorded in ``month`` or the month before (one may run into it)."""
    return store.read_silences([shift_month(month, -1), month])


def month_silences(store: IntervalStore, site: Site, month: str) -> pl.DataFrame:
    """The meters' silent periods overlapping local month ``month``, with how they were filled.

    :func:`agent.energy.silence.describe_silences` over the month's stored interval rows:
    what ``kpi --json`` shows and what the report computes from its bundled rows.
    """
    start, end = month_bounds(month, site.timezone)
    return describe_silences(
        recorded_silences(store, month), store.scan_intervals(start, end), start, end
    )

"""The report's history input, read from a real interval store, counts every key once.

``read_history`` feeds ``data/history.parquet`` (per meter and *local* day) and, from it,
the TTM figure and the history charts. Parts of the store may share a
``(meter, interval_start)`` key — an import over what the live aggregator wrote, a
compaction between writing its part and removing the old ones — and each part has its
own hourly roll-up, so the rows must come through the store's de-duplicating path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from agent.periods import month_bounds, shift_month
from agent.report.bundle import HISTORY_MONTHS
from agent.report.rollup import local_days
from agent.report.sources import read_history
from agent.schemas import INTERVAL_SCHEMA
from agent.site import Site
from agent.store import IntervalStore, hourly_rollup
from tests.report.simdata import sim_site

MONTH = "2026-10"
MINUTE = timedelta(minutes=1)


def zone_site(zone: str) -> Site:
    _, site = sim_site()
    return site.model_copy(update={"timezone": zone})


def history_bounds(site: Site, month: str = MONTH) -> tuple[datetime, datetime]:
    start, _ = month_bounds(shift_month(month, -HISTORY_MONTHS), site.timezone)
    end, _ = month_bounds(month, site.timezone)
    return start, end


def constant_rows(
    meters: list[str], lo: datetime, hi: datetime, kwh: float, step: timedelta = MINUTE
) -> pl.DataFrame:
    """One row per meter and ``step`` in ``[lo, hi)``, each ``kwh``, fully covered."""
    starts = pl.datetime_range(
        lo, hi, step, closed="left", eager=True, time_unit="us", time_zone="UTC"
    )
    return (
        pl.DataFrame(
            {
                "meter": pl.Series(meters).repeat_by(starts.len()).explode(),
                "interval_start": pl.concat([starts] * len(meters)),
            }
        )
        .with_columns(
            (pl.col("interval_start") + step).alias("interval_end"),
            pl.lit(kwh).alias("energy_kwh"),
            pl.lit(1.0).alias("coverage"),
            pl.lit(0, pl.UInt16).alias("flags"),
            pl.lit("register").alias("method"),
        )
        .select(INTERVAL_SCHEMA.names())
        .cast(INTERVAL_SCHEMA)
    )


def history_input(root: Path, site: Site, month: str = MONTH) -> pl.DataFrame:
    """What the bundle writes as ``data/history.parquet`` from the store (see build_bundle)."""
    start, end = history_bounds(site, month)
    history = read_history(root, start, end, timezone=site.timezone)
    return local_days(
        history.filter((pl.col("interval_start") >= start) & (pl.col("interval_start") < end)),
        site,
    ).collect()


def local_day(site: Site, day: str) -> datetime:
    """Local midnight starting ``day`` (YYYY-MM-DD), in UTC."""
    return datetime.fromisoformat(day).replace(tzinfo=site.zone).astimezone(UTC)


def energy_of(history: pl.DataFrame, meter: str, day: datetime) -> float:
    row = history.filter((pl.col("meter") == meter) & (pl.col("interval_start") == day))
    assert row.height == 1, row
    return float(row["energy_kwh"][0])


# -- an import over live parts, a compaction caught half-way ------------------------------------


def live_store(root: Path, site: Site) -> IntervalStore:
    """Two local days of September (a month before the report month) for two meters.

    Every minute of every meter is 0.25 kWh, written as the aggregator does: one part
    per page (here one per local day).
    """
    store = IntervalStore(root)
    for page, day in enumerate(("2026-09-10", "2026-09-11")):
        lo = local_day(site, day)
        store.write_intervals(
            constant_rows(["meter-a", "meter-b"], lo, lo + timedelta(days=1), 0.25),
            tag=f"{101 + page:012d}",
        )
    return store


def test_import_over_live_history_is_counted_once(tmp_path: Path) -> None:
    site = zone_site("Asia/Shanghai")
    store = live_store(tmp_path, site)
    day = local_day(site, "2026-09-10")
    # `pue-agent import` loads the same three hours of meter-a again (a later part).
    store.write_intervals(
        constant_rows(["meter-a"], day + timedelta(hours=10), day + timedelta(hours=13), 0.25),
        tag=f"{150:012d}-import",
    )
    history = history_input(tmp_path, site)
    # 1,440 minutes x 0.25 kWh = 360 kWh per meter and local day; counting the imported
    # 180 minutes twice would give 360 + 180 x 0.25 = 405 kWh for meter-a on the 10th.
    assert energy_of(history, "meter-a", day) == pytest.approx(360.0, rel=1e-12)
    assert energy_of(history, "meter-b", day) == pytest.approx(360.0, rel=1e-12)
    assert energy_of(history, "meter-a", day + timedelta(days=1)) == pytest.approx(360.0)
    assert history["energy_kwh"].sum() == pytest.approx(4 * 360.0, rel=1e-12)
    # Coverage is not counted twice either (1.125 with the import's hours doubled).
    assert history["coverage"].max() == pytest.approx(1.0, rel=1e-12)
    assert history.height == 4


def test_compaction_half_way_is_counted_once(tmp_path: Path) -> None:
    site = zone_site("Asia/Shanghai")
    store = live_store(tmp_path, site)
    # ``compact("2026-09")`` wrote its merged part and has not removed the old ones yet
    # (or crashed in between): every key of the month is in two parts.
    merged = store.read_intervals().collect()
    store.write_intervals(merged, tag="compact-00000000000000000001")
    history = history_input(tmp_path, site)
    assert history["energy_kwh"].sum() == pytest.approx(4 * 360.0, rel=1e-12)  # not 2 x 1,440
    assert history["energy_kwh"].to_list() == pytest.approx([360.0] * 4, rel=1e-12)


def test_hourly_part_left_by_an_interrupted_compaction_is_not_counted(tmp_path: Path) -> None:
    site = zone_site("Asia/Shanghai")
    store = live_store(tmp_path, site)
    old = {p: p.read_bytes() for p in (tmp_path / "hourly").rglob("part-*.parquet")}
    store.compact("2026-09")
    # Crash after the old interval parts were removed, before their hourly roll-ups were.
    for path, data in old.items():
        path.write_bytes(data)
    history = history_input(tmp_path, site)
    assert history["energy_kwh"].sum() == pytest.approx(4 * 360.0, rel=1e-12)


# -- exact per local day, whatever the zone ------------------------------------------------------

STEP = timedelta(minutes=15)


def random_rows(
    meters: list[str], lo: datetime, hi: datetime, seed: int, *, scale: float = 1.0
) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frame = constant_rows(meters, lo, hi, 0.0, STEP)
    n = frame.height
    return frame.with_columns(
        pl.Series("energy_kwh", rng.uniform(0.5, 2.0, n) * scale),
        pl.Series("coverage", np.where(rng.uniform(size=n) < 0.05, 0.5, 1.0)),
        pl.Series("flags", rng.choice([0, 1, 2], n).astype(np.uint16)),
    ).filter(pl.Series(rng.uniform(size=n) > 0.01))


@pytest.mark.parametrize(
    "zone",
    [
        "Asia/Shanghai",  # +08:00
        "Asia/Kolkata",  # +05:30: local days start at 18:30 UTC, inside an hour
        "Asia/Kathmandu",  # +05:45
        "Australia/Lord_Howe",  # +10:30, +11:00 from 2026-10-04 (a half-hour DST shift)
        "America/St_Johns",  # -02:30 (DST)
        "UTC",
    ],
)
def test_local_days_exact_in_any_zone(tmp_path: Path, zone: str) -> None:
    """Every local day's sums equal those of the de-duplicated interval rows."""
    site = zone_site(zone)
    store = IntervalStore(tmp_path)
    meters = ["meter-a", "meter-b", "meter-c"]
    lo, hi = (
        datetime.fromisoformat("2026-09-28T00:00+00:00"),
        datetime.fromisoformat("2026-10-08T00:00+00:00"),
    )
    # Pages of 7 h 15 min: hours, local days and UTC days split between parts.
    t, page = lo, 0
    while t < hi:
        stop = min(t + timedelta(hours=7, minutes=15), hi)
        store.write_intervals(random_rows(meters, t, stop, page), tag=f"{page + 1:012d}")
        t, page = stop, page + 1
    # An import across a local midnight, with other values (the later part wins).
    midnight = datetime(2026, 10, 2, tzinfo=site.zone)
    store.write_intervals(
        random_rows(meters[:2], midnight - timedelta(hours=5), midnight + timedelta(hours=3), 99),
        tag=f"{900:012d}-import",
    )
    reference = local_days(store.read_intervals(*history_bounds(site, "2026-11")), site)
    got = history_input(tmp_path, site, "2026-11")
    want = reference.collect()
    assert got.height == want.height > 0
    assert got.select("meter", "interval_start", "interval_end", "flags").equals(
        want.select("meter", "interval_start", "interval_end", "flags")
    )
    for column in ("energy_kwh", "coverage"):
        assert got[column].to_list() == pytest.approx(want[column].to_list(), rel=1e-9)


# -- fallbacks ------------------------------------------------------------------------------------


def test_hourly_parts_without_interval_parts_are_read_as_they_are(tmp_path: Path) -> None:
    """History loaded as hourly roll-up parts only (no interval parts: no keys to compare)."""
    site = zone_site("Asia/Shanghai")
    lo = local_day(site, "2026-09-10")
    hourly = hourly_rollup(constant_rows(["meter-a"], lo, lo + timedelta(days=1), 0.25))
    target = tmp_path / "hourly" / "month=2026-09" / "part-history.parquet"
    target.parent.mkdir(parents=True)
    hourly.write_parquet(target)
    history = history_input(tmp_path, site)
    assert history["energy_kwh"].to_list() == pytest.approx([360.0], rel=1e-12)


def test_empty_store(tmp_path: Path) -> None:
    site = zone_site("Asia/Shanghai")
    start, end = history_bounds(site)
    frame = read_history(tmp_path, start, end, timezone=site.timezone)
    assert frame.collect_schema() == INTERVAL_SCHEMA
    assert frame.collect().height == 0

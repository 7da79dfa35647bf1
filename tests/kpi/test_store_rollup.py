"""KPIs from the store's roll-ups equal KPIs from the full, de-duplicated interval read.

``agent.kpi.from_store.store_kpis`` reads per period kind only what it needs (month
hourly roll-ups, cached daily roll-ups of the months before, base rows for interval
PUE); ``compute_kpis(store.read_intervals(...))`` reads every row. Both must agree —
after parts are replaced, when parts share keys, after ``compact``, on stores written
before the index existed, after a crash between a part and its derived files, on a
read-only store, and in a half-hour zone.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from agent.kpi import compute_kpis, month_bounds, ttm_bounds
from agent.kpi.from_store import store_kpis
from agent.schemas import INTERVAL_SCHEMA, PeriodKind
from agent.site import Site, parse_site
from agent.store import IntervalStore, StoreError, hourly_rollup
from tests.kpi.helpers import hourly_parts_summed, small_site

MONTH = "2026-10"
STEP = timedelta(minutes=15)
SITE = small_site(pv=True)


def rows(
    site: Site, start: datetime, end: datetime, seed: int, *, scale: float = 1.0
) -> pl.DataFrame:
    """Random 15-minute rows of every meter; a few rows missing, some partly covered.

    Enough is covered for OK month and TTM values; hours missing a row are not.
    """
    rng = np.random.default_rng(seed)
    starts = pl.datetime_range(
        start, end, STEP, closed="left", eager=True, time_unit="us", time_zone="UTC"
    )
    ids = [m.id for m in site.meters]
    n = starts.len() * len(ids)
    frame = pl.DataFrame(
        {
            "meter": pl.Series(ids).repeat_by(starts.len()).explode(),
            "interval_start": pl.concat([starts] * len(ids)),
            "energy_kwh": rng.uniform(0.5, 2.0, n) * scale,
            "coverage": np.where(rng.uniform(size=n) < 0.01, 0.25, 1.0),
            "flags": rng.choice([0, 1, 2], n).astype(np.uint16),
            "keep": rng.uniform(size=n) > 0.005,
        }
    )
    return (
        frame.filter("keep")
        .with_columns(
            (pl.col("interval_start") + STEP).alias("interval_end"),
            pl.lit("register").alias("method"),
        )
        .select(INTERVAL_SCHEMA.names())
        .cast(INTERVAL_SCHEMA)
    )


def fill(store: IntervalStore, site: Site, *, page: timedelta, seed: int = 1) -> None:
    """Twelve local months (and a day either side) as parts of ``page`` length.

    Pages end at odd times (``page`` is not whole hours), so hours and days are split
    between parts, as the aggregator's pages split them.
    """
    start, _ = ttm_bounds(MONTH, site.timezone)
    _, end = month_bounds(MONTH, site.timezone)
    t, i = start - timedelta(days=1), 0
    while t < end + timedelta(days=1):
        stop = min(t + page, end + timedelta(days=1))
        store.write_intervals(rows(site, t, stop, seed + i), tag=f"{i + 1:012d}")
        t, i = stop, i + 1


def full_read(store: IntervalStore, site: Site, **kw: object) -> pl.DataFrame:
    """KPIs from every interval row (the reference)."""
    t_start, _ = ttm_bounds(MONTH, site.timezone)
    _, m_end = month_bounds(MONTH, site.timezone)
    return compute_kpis(store.read_intervals(t_start, m_end), site, None, month=MONTH, **kw)  # type: ignore[arg-type]


def assert_same(reference: pl.DataFrame, got: pl.DataFrame) -> None:
    """Same rows, statuses, categories; values to 1e-9 relative, coverage to 1e-12."""
    assert got.height == reference.height
    assert got.drop("value", "coverage").equals(reference.drop("value", "coverage"))
    for column, tolerance in (("value", 1e-9), ("coverage", 1e-12)):
        a, b = reference[column], got[column]
        assert a.is_null().equals(b.is_null())
        scale = pl.max_horizontal(a.abs(), b.abs(), pl.lit(1e-300))
        worst = pl.select(((a - b).abs() / scale).max()).item()
        assert worst is None or worst <= tolerance, (column, worst)


def ttm_pue(kpis: pl.DataFrame) -> float:
    picked = kpis.filter((pl.col("period_kind") == "ttm") & (pl.col("metric") == "pue"))
    return float(picked["value"][0])


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "store"
    fill(IntervalStore(root), SITE, page=timedelta(days=9, hours=7, minutes=45))
    return root


def copy_store(src: Path, dst: Path) -> IntervalStore:
    import shutil  # noqa: PLC0415

    shutil.copytree(src, dst)
    return IntervalStore(dst)


def test_store_kpis_equal_full_read(filled: Path, tmp_path: Path) -> None:
    store = copy_store(filled, tmp_path / "store")
    reference = full_read(store, SITE)
    assert reference.filter(pl.col("period_kind") == "ttm").height > 0
    assert_same(reference, store_kpis(store, SITE, None, month=MONTH))
    # Second run: the month roll-ups come from the cache written by the first.
    assert sorted(p.parent.name for p in (store.root / "rollup").glob("*/daily.parquet"))
    assert_same(reference, store_kpis(store, SITE, None, month=MONTH))


def test_replaced_part_is_seen(filled: Path, tmp_path: Path) -> None:
    store = copy_store(filled, tmp_path / "store")
    before = store_kpis(store, SITE, None, month=MONTH, kinds=[PeriodKind.TTM])
    # Re-run a page of an earlier month with other values (same tag: the part is replaced).
    start, _ = ttm_bounds(MONTH, SITE.timezone)
    page = rows(SITE, start + timedelta(days=20), start + timedelta(days=23), 99, scale=3.0)
    store.write_intervals(page, tag="000000000003")
    after = store_kpis(store, SITE, None, month=MONTH)
    assert_same(full_read(store, SITE), after)
    assert ttm_pue(after) != pytest.approx(ttm_pue(before), rel=1e-6)


def test_parts_sharing_keys_latest_wins(filled: Path, tmp_path: Path) -> None:
    store = copy_store(filled, tmp_path / "store")
    store_kpis(store, SITE, None, month=MONTH)  # caches to invalidate
    start, _ = ttm_bounds(MONTH, SITE.timezone)
    m_start, _ = month_bounds(MONTH, SITE.timezone)
    # An import over live data: same keys, other values, in an earlier month and in the
    # month itself (mid-hour, across a UTC day): latest part wins, never summed.
    for tag, lo in (("zz-import-1", start + timedelta(days=40)), ("zz-import-2", m_start)):
        store.write_intervals(rows(SITE, lo, lo + timedelta(hours=30), 7, scale=5.0), tag=tag)
    got = store_kpis(store, SITE, None, month=MONTH)
    assert_same(full_read(store, SITE), got)
    # ... which the hourly roll-up summed over parts (the previous TTM input) would not.
    t_start, _ = ttm_bounds(MONTH, SITE.timezone)

    def total(frame: pl.LazyFrame) -> float:
        return float(frame.select(pl.col("energy_kwh").sum()).collect().item())

    summed = total(hourly_parts_summed(store, t_start, m_start))
    exact = total(store.read_rollup(t_start, m_start))
    assert exact == pytest.approx(total(store.read_intervals(t_start, m_start)), rel=1e-12)
    assert summed > exact * 1.001


def test_compact_keeps_kpis(filled: Path, tmp_path: Path) -> None:
    store = copy_store(filled, tmp_path / "store")
    m_start, _ = month_bounds(MONTH, SITE.timezone)
    store.write_intervals(
        rows(SITE, m_start, m_start + timedelta(hours=5), 3, scale=2.0), tag="zz-import"
    )
    reference = full_read(store, SITE)
    assert_same(reference, store_kpis(store, SITE, None, month=MONTH))
    for month in ("2026-09", "2026-10"):
        store.compact(month)
        for table in ("intervals", "hourly", "index"):
            assert len(list((store.root / table / f"month={month}").glob("part-*"))) == 1
    assert_same(reference, full_read(store, SITE))
    assert_same(reference, store_kpis(store, SITE, None, month=MONTH))


def write_old_layout(root: Path, frame: pl.DataFrame, tag: str) -> None:
    """A part as the store wrote it before write ids and indexes: no footer metadata."""
    for (month,), part in (
        frame.with_columns(pl.col("interval_start").dt.strftime("%Y-%m").alias("_m"))
        .partition_by("_m", as_dict=True)
        .items()
    ):
        ordered = part.drop("_m").sort("meter", "interval_start")
        for table, data in (
            ("intervals", ordered.with_columns(pl.lit(0, pl.UInt32).alias("rejected_readings"))),
            ("hourly", hourly_rollup(ordered)),
        ):
            path = root / table / f"month={month}" / f"part-{tag}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            data.write_parquet(path)


def test_older_layout_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    start, _ = ttm_bounds(MONTH, SITE.timezone)
    _, end = month_bounds(MONTH, SITE.timezone)
    t, i = start, 0
    while t < end:
        stop = min(t + timedelta(days=45, minutes=30), end)
        write_old_layout(root, rows(SITE, t, stop, 50 + i), f"{i:04d}")
        t, i = stop, i + 1
    # An import written by the old code over some live rows: the old hourly roll-ups
    # count these keys twice; the index finds them.
    write_old_layout(root, rows(SITE, end - timedelta(days=3), end, 8, scale=4.0), "zz-import")
    store = IntervalStore(root)
    assert not (root / "index").exists()
    reference = full_read(store, SITE)
    assert_same(reference, store_kpis(store, SITE, None, month=MONTH))
    assert list((root / "index").glob("month=*/part-*.parquet"))  # indexes were built
    assert_same(reference, store_kpis(store, SITE, None, month=MONTH))
    assert_same(reference, full_read(store, SITE))


def test_stale_derived_files_after_crash(filled: Path, tmp_path: Path) -> None:
    store = copy_store(filled, tmp_path / "store")
    store_kpis(store, SITE, None, month=MONTH)
    # Crash between a replaced part and its hourly roll-up / index: keep the old ones.
    part = sorted((store.root / "intervals").glob("month=2026-03/part-*.parquet"))[0]
    saved = {t: store._derived_path(t, part).read_bytes() for t in ("hourly", "index")}
    frame = pl.read_parquet(part).with_columns(pl.col("energy_kwh") * 3)
    store.write_intervals(frame.drop("rejected_readings"), tag=part.stem.removeprefix("part-"))
    for table, data in saved.items():
        store._derived_path(table, part).write_bytes(data)
    assert_same(full_read(store, SITE), store_kpis(store, SITE, None, month=MONTH))


def test_read_only_store_still_exact(
    filled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = copy_store(filled, tmp_path / "store")
    start, _ = ttm_bounds(MONTH, SITE.timezone)
    store.write_intervals(
        rows(SITE, start + timedelta(days=3), start + timedelta(days=4), 5, scale=2.0), tag="zz"
    )
    for derived in (store.root / "index").glob("month=2025-11/*.parquet"):
        derived.unlink()  # must be recomputed, and cannot be written back

    def refuse(path: Path, frame: pl.DataFrame, metadata: dict[str, str] | None = None) -> None:
        raise StoreError(f"cannot write {path}: read-only")

    monkeypatch.setattr("agent.store._write_parquet", refuse)
    reference = full_read(store, SITE)
    assert_same(reference, store_kpis(store, SITE, None, month=MONTH))
    assert not list((store.root / "index").glob("month=2025-11/*.parquet"))


def test_read_intervals_same_rows_and_order(filled: Path, tmp_path: Path) -> None:
    store = copy_store(filled, tmp_path / "store")
    m_start, _ = month_bounds(MONTH, SITE.timezone)
    store.write_intervals(rows(SITE, m_start, m_start + timedelta(hours=7), 4), tag="zz")
    files = sorted((store.root / "intervals").glob("month=*/part-*.parquet"))

    def reference(lo: datetime | None, hi: datetime | None) -> pl.DataFrame:
        frame = pl.scan_parquet(files, include_file_paths="_file")
        if lo is not None:
            frame = frame.filter(pl.col("interval_start") >= lo)
        if hi is not None:
            frame = frame.filter(pl.col("interval_start") < hi)
        return (
            frame.sort("_file", maintain_order=True)
            .unique(["meter", "interval_start"], keep="last", maintain_order=True)
            .select(INTERVAL_SCHEMA.names())
            .sort("meter", "interval_start")
            .collect()
        )

    for lo, hi in ((None, None), (m_start - timedelta(days=40), m_start + timedelta(hours=5))):
        assert store.read_intervals(lo, hi).collect().equals(reference(lo, hi))
    store_kpis(store, SITE, None, month=MONTH)  # indexes and caches in place: same again
    assert store.read_intervals().collect().equals(reference(None, None))


@pytest.mark.parametrize("seconds", [0, 900, 3600 * 5 + 1800])
def test_read_rollup_sums_per_meter(filled: Path, tmp_path: Path, seconds: int) -> None:
    store = copy_store(filled, tmp_path / "store")
    start, _ = ttm_bounds(MONTH, SITE.timezone)
    lo = start + timedelta(days=2, seconds=seconds)
    hi = lo + timedelta(days=70, hours=13, seconds=seconds)

    def per_meter(frame: pl.LazyFrame) -> pl.DataFrame:
        return (
            frame.group_by("meter")
            .agg(
                pl.col("energy_kwh").sum(),
                (
                    pl.col("coverage")
                    * (pl.col("interval_end") - pl.col("interval_start")).dt.total_microseconds()
                ).sum(),
                pl.len(),
            )
            .sort("meter")
            .collect()
        )

    exact, coarse = per_meter(store.read_intervals(lo, hi)), per_meter(store.read_rollup(lo, hi))
    assert coarse["len"].sum() < exact["len"].sum() / 10
    for column in ("energy_kwh", "coverage"):
        assert np.allclose(coarse[column].to_numpy(), exact[column].to_numpy(), rtol=1e-12)


def test_half_hour_zone(tmp_path: Path) -> None:
    raw = SITE.model_dump(mode="json")
    site = parse_site({**raw, "timezone": "Asia/Kolkata"}, source="test")
    store = IntervalStore(tmp_path / "store")
    fill(store, site, page=timedelta(days=33, minutes=45), seed=11)
    assert_same(full_read(store, site), store_kpis(store, site, None, month=MONTH))


def test_live_kinds_and_ttm_only(filled: Path, tmp_path: Path) -> None:
    store = copy_store(filled, tmp_path / "store")
    kinds = [PeriodKind.DAY, PeriodKind.MONTH, PeriodKind.TTM]
    assert_same(
        full_read(store, SITE, kinds=kinds), store_kpis(store, SITE, None, month=MONTH, kinds=kinds)
    )
    only = [PeriodKind.TTM]
    assert_same(
        full_read(store, SITE, kinds=only), store_kpis(store, SITE, None, month=MONTH, kinds=only)
    )

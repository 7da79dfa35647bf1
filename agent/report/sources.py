"""Where a report's inputs come from on a running site: the interval store and the journal.

Intervals come through :class:`agent.store.IntervalStore` (which never counts a key
twice); the journal check re-derives intervals with :func:`agent.energy.interval_energy`,
the Polars reference of the aggregator's arithmetic.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import polars as pl

from agent.energy import EnergyConfig, interval_energy
from agent.periods import utc_months
from agent.schemas import INTERVAL_SCHEMA
from agent.site import Site
from agent.store import IntervalStore, dedupe_parts
from collectors.nats.merge import (
    chain_breaks,
    merge_order,
    month_contributions,
    publisher_gaps,
    received_in,
)

__all__ = [
    "agent_chains",
    "batch_hashes",
    "journal_summary",
    "month_intervals",
    "read_history",
    "read_intervals",
    "rederive_intervals",
]


def read_intervals(store_root: Path, start: datetime, end: datetime) -> pl.LazyFrame:
    """Interval rows in ``[start, end)`` from the interval store under ``store_root``."""
    return IntervalStore(store_root).read_intervals(start, end)


def _overlap_clusters(ranges: pl.DataFrame) -> list[list[str]]:
    """Parts grouped so that no two groups share an ``interval_start`` value.

    ``ranges``: one row per part (``_file``, ``lo``, ``hi``: its first and last
    interval_start in the period). Parts whose [lo, hi] ranges overlap, directly or
    through a chain, form one group; groups keep file name order inside.
    """
    clusters: list[list[str]] = []
    high: datetime | None = None
    for row in ranges.sort("lo", "_file").iter_rows(named=True):
        if high is not None and row["lo"] <= high:
            clusters[-1].append(row["_file"])
            high = max(high, row["hi"])
        else:
            clusters.append([row["_file"]])
            high = row["hi"]
    return [sorted(c) for c in clusters]


@contextmanager
def month_intervals(store_root: Path, start: datetime, end: datetime) -> Iterator[pl.LazyFrame]:
    """The period's interval rows, de-duplicated like ``IntervalStore.read_intervals``.

    Streams instead of sorting the whole period in memory (89 M rows for 2,000 meters
    at one minute would need ~8 GB). Same rows as ``read_intervals``: one per
    ``(meter, interval_start)``, from the latest part in file name order. How, from the
    store layout (``docs/interval-store.md``):

    * each part's first and last ``interval_start`` in the period are read (one
      streaming pass over that column);
    * a part whose range overlaps no other part's cannot share a key with another part,
      so its rows are passed through as they are: every writer (aggregator page,
      import, compaction) writes one row per meter and interval into a part;
    * parts whose ranges overlap are de-duplicated exactly as ``read_intervals`` does,
      one UTC day at a time (a key never spans two days), into temporary Parquet
      files that live until the context exits.

    Rows come in store order (parts by time, each sorted by meter and start), not
    sorted over the whole period: that sort is what costs the memory.

    Falls back to :func:`read_intervals` when the store has no interval parts laid out
    as documented.
    """
    base = store_root / "intervals"
    files = [
        str(f)
        for m in utc_months(start, end - timedelta(microseconds=1))
        for f in sorted((base / f"month={m}").glob("part-*.parquet"))
    ]
    if not files:
        yield read_intervals(store_root, start, end)
        return
    in_period = (pl.col("interval_start") >= start) & (pl.col("interval_start") < end)
    ranges = (
        pl.scan_parquet(files, include_file_paths="_file")
        .select("_file", "interval_start")
        .filter(in_period)
        .group_by("_file")
        .agg(pl.col("interval_start").min().alias("lo"), pl.col("interval_start").max().alias("hi"))
        .collect(engine="streaming")
    )
    names = INTERVAL_SCHEMA.names()
    spool = Path(tempfile.mkdtemp(prefix="pue-report-dedupe-"))
    try:
        pieces: list[pl.LazyFrame] = []
        run: list[str] = []

        def flush() -> None:
            if run:
                pieces.append(pl.scan_parquet(list(run)).filter(in_period).select(names))
                run.clear()

        bounds = {r["_file"]: (r["lo"], r["hi"]) for r in ranges.iter_rows(named=True)}
        for cluster in _overlap_clusters(ranges):
            if len(cluster) == 1:
                run.append(cluster[0])
                continue
            flush()
            lo = min(bounds[f][0] for f in cluster)
            hi = max(bounds[f][1] for f in cluster)
            day = lo.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            while day <= hi:
                window = (pl.col("interval_start") >= max(day, start)) & (
                    pl.col("interval_start") < min(day + timedelta(days=1), end)
                )
                target = spool / f"{len(pieces):06d}.parquet"
                (
                    dedupe_parts(cluster, window)
                    .select(names)
                    .sort("meter", "interval_start")
                    .sink_parquet(target, compression="lz4")
                )
                pieces.append(pl.scan_parquet(target))
                day += timedelta(days=1)
        flush()
        yield pl.concat(pieces, how="vertical") if pieces else pl.LazyFrame(schema=INTERVAL_SCHEMA)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _history_hours(
    start: datetime, end: datetime, timezone: str
) -> tuple[Literal["1h", "1d"], list[datetime]]:
    """How to read ``[start, end)`` from the store so that no row spans two local days.

    Returns the longest store roll-up that fits (``"1d"`` only where local days are UTC
    days) and the UTC hours holding a local midnight *inside* them (zones with half- or
    quarter-hour offsets: one such hour a day). Those hours must come as base rows: their
    hourly roll-up straddles two local days.
    """
    zone = ZoneInfo(timezone)
    last = timedelta(hours=1) - timedelta(microseconds=1)
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    hour = start.replace(minute=0, second=0, microsecond=0)
    split: list[datetime] = []
    utc_days = True
    while hour < end:
        first_day, last_day = hour.astimezone(zone).date(), (hour + last).astimezone(zone).date()
        if first_day != last_day:
            split.append(hour)
        utc_days = utc_days and first_day == last_day == hour.date()
        hour += timedelta(hours=1)
    return ("1d" if utc_days else "1h"), split


def _hourly_parts(store_root: Path, months: Iterable[str]) -> list[Path]:
    return [
        f
        for m in months
        for f in sorted((store_root / "hourly" / f"month={m}").glob("part-*.parquet"))
    ]


def read_history(
    store_root: Path, start: datetime, end: datetime, *, timezone: str
) -> pl.LazyFrame:
    """The months before the report, as rows that each lie in one local day of ``timezone``.

    Every ``(meter, interval_start)`` is counted once, even where parts of the store share
    keys (an import over live data, a compaction between writing its part and removing
    the old ones): the rows come from ``IntervalStore.read_rollup(every="1h")`` — per
    meter and whole UTC hour from the parts' hourly roll-ups, parts that may share keys
    de-duplicated first (a meter-hour split between parts comes as several rows; the
    bundle's daily roll-up sums them). Reading 22 months of base intervals would be ~20x
    the month itself; the bundle keeps daily roll-ups of history anyway, so hours lose
    nothing. Where a UTC hour holds a local midnight (half- and quarter-hour zones), that
    hour's base interval rows are read instead of its hourly rows, so each local day's
    sums are exact (cost: the base rows of every part holding such an hour are decoded,
    ~1 s per month for 2,000 meters at one minute); where local days are UTC days, the
    store's daily roll-ups are read. Parts that share keys cost what the store's
    de-duplication costs (an in-memory sort of those parts' rows).

    Fallback, for stores not laid out as documented: a UTC month with hourly roll-up
    parts but no interval parts (history loaded as roll-ups only) is read from those
    parts as they are — without keys they cannot be de-duplicated. Hourly parts of a
    month that has interval parts are only read through the store (one left behind by
    an interrupted compaction is not counted).
    """
    names = INTERVAL_SCHEMA.names()
    in_period = (pl.col("interval_start") >= start) & (pl.col("interval_start") < end)
    months = utc_months(start, end - timedelta(microseconds=1))
    store = IntervalStore(store_root)
    laid_out = {
        m for m in months if any((store_root / "intervals" / f"month={m}").glob("part-*.parquet"))
    }
    pieces: list[pl.LazyFrame] = []
    if laid_out:
        every, split = _history_hours(start, end, timezone)
        rows = store.read_rollup(start, end, every=every)
        if split:
            hours = pl.Series(split, dtype=INTERVAL_SCHEMA["interval_start"])
            in_split = pl.col("interval_start").dt.truncate("1h").is_in(hours.implode())
            base = store.scan_intervals(start, end)
            pieces += [rows.filter(~in_split), base.filter(in_split).select(names)]
        else:
            pieces.append(rows)
    legacy = _hourly_parts(store_root, [m for m in months if m not in laid_out])
    if legacy:
        pieces.append(pl.scan_parquet(legacy).filter(in_period).select(names))
    if not pieces:
        return pl.LazyFrame(schema=INTERVAL_SCHEMA)
    return pl.concat(pieces, how="vertical")


def _ro(path: Path) -> sqlite3.Connection:
    # Read-only URI: a report never writes to (or locks) the live journal.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def journal_summary(path: Path, start: datetime, end: datetime) -> dict[str, Any]:
    """Chain hashes of the journal batches whose readings fall in ``[start, end)``.

    Returns ``{"available": False}`` when the journal holds no batch of the month
    (pruned, or none recorded).
    """
    lo, hi = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
    db = _ro(path)
    try:
        row = db.execute(
            "SELECT MIN(seq), MAX(seq), COUNT(*), COALESCE(SUM(n_rows), 0) FROM batches "
            "WHERE kind = 'readings' AND last_ts >= ? AND first_ts < ?",
            (lo, hi),
        ).fetchone()
        if row is None or row[0] is None:
            return {"available": False}
        first_seq, last_seq = int(row[0]), int(row[1])
        hashes = {
            int(seq): (bytes(prev).hex(), bytes(link).hex())
            for seq, prev, link in db.execute(
                "SELECT seq, prev_hash, hash FROM batches WHERE seq IN (?, ?)",
                (first_seq, last_seq),
            )
        }
        gaps = db.execute(
            "SELECT COUNT(*) FROM batches WHERE kind = 'gap' AND seq BETWEEN ? AND ?",
            (first_seq, last_seq),
        ).fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    return {
        "available": True,
        "first_seq": first_seq,
        "first_prev_hash": hashes[first_seq][0],
        "first_hash": hashes[first_seq][1],
        "last_seq": last_seq,
        "last_hash": hashes[last_seq][1],
        "batch_count": last_seq - first_seq + 1,
        "reading_batches": int(row[2]),
        "readings": int(row[3]),
        "gap_batches": int(gaps),
        "head_seq": int(meta.get("head_seq", last_seq)),
        "head_hash": str(meta.get("head_hash", hashes[last_seq][1])),
    }


def _runs(values: pl.Series) -> list[list[int]]:
    """Sorted distinct integers as ``[first, last]`` runs of consecutive values."""
    unique = values.drop_nulls().unique().sort()
    if unique.len() == 0:
        return []
    runs = (
        pl.DataFrame({"v": unique})
        .with_columns((pl.col("v").diff() != 1).fill_null(True).cum_sum().alias("run"))
        .group_by("run", maintain_order=True)
        .agg(pl.col("v").min().alias("lo"), pl.col("v").max().alias("hi"))
    )
    return [[int(lo), int(hi)] for lo, hi in runs.select("lo", "hi").iter_rows()]


def _missing(seqs: pl.Series) -> list[list[int]]:
    """``[first, last]`` runs of the integers absent between a sorted series' ends."""
    frame = pl.DataFrame({"seq": seqs.sort()}).with_columns(pl.col("seq").shift(1).alias("prev"))
    holes = frame.filter(pl.col("seq") - pl.col("prev") > 1)
    return [[int(prev) + 1, int(seq) - 1] for seq, prev in holes.iter_rows()]


def agent_chains(
    state_files: Iterable[Path], start: datetime, end: datetime, *, dedupe_window_s: float
) -> dict[str, Any] | None:
    """Every publishing agent's chain for ``[start, end)``, from the site's merge state.

    For each agent whose batches the ``nats`` collector took in (``received`` in
    :mod:`collectors.nats.merge`) on the pages that merged data of the period
    (:func:`~collectors.nats.merge.received_in`): its first and last such batch (seq
    and chain hashes), the counts of those holding data of the period, the seqs it
    never took in between (``missing``), the local journal batches holding the merged
    readings (``local_seqs``, as runs), the stream seqs and the chain problems
    recorded; the order those pages merged the reading batches in (``merge_pages``,
    :func:`~collectors.nats.merge.merge_order`: what ``verify`` replays); plus the rows
    of the publishers' gap batches overlapping the period. ``None`` when no state file
    has any (a site without publishing agents).

    Args:
        state_files: The merge state file of each ``nats`` collector of the site.
        start: Period start (UTC).
        end: Period end (UTC).
        dedupe_window_s: The collectors' de-duplication window (for the re-merge).
    """
    lo, hi = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
    paths = [p for p in state_files if p.is_file()]
    if not paths:
        return None
    window_us = round(dedupe_window_s * 1e6)
    per_file = [received_in(p, lo, hi, window_us=window_us) for p in paths]
    received = pl.concat(per_file)
    gaps = pl.concat([publisher_gaps(p, lo, hi) for p in paths])
    breaks = [b for p in paths for b in chain_breaks(p)]
    if received.height == 0 and gaps.height == 0:
        return None
    agents: list[dict[str, Any]] = []
    counts = month_contributions(received)
    for row in counts.iter_rows(named=True):
        rows = received.filter(pl.col("agent") == row["agent"])
        first = rows.filter(pl.col("seq") == row["first_seq"]).row(0, named=True)
        last = rows.filter(pl.col("seq") == row["last_seq"]).row(0, named=True)
        refused = gaps.filter(pl.col("agent") == row["agent"])["readings"].sum()
        agents.append(
            {
                **row,
                "gap_readings": int(refused),
                "first_prev_hash": bytes(first["prev_hash"]).hex(),
                "first_hash": bytes(first["hash"]).hex(),
                "last_hash": bytes(last["hash"]).hex(),
                "missing": _missing(rows["seq"]),
                "local_seqs": _runs(rows["local_seq"]),
                "stream_seqs": [int(rows["stream_seq"].min()), int(rows["stream_seq"].max())],  # type: ignore[arg-type]
                "breaks": [
                    {"seq": seq, "problem": problem}
                    for _, agent, seq, problem in breaks
                    if agent == row["agent"] and row["first_seq"] <= seq <= row["last_seq"]
                ],
            }
        )
    names = [str(a["agent"]) for a in agents]
    return {
        "dedupe_window_s": dedupe_window_s,
        "agents": agents,
        # One collector's pages after the other's: exact for one ``nats`` collector per
        # host (the documented deployment) and for several whose agents share no point.
        "merge_pages": ";".join(
            order for order in (merge_order(frame, names) for frame in per_file) if order
        ),
        "publisher_gaps": gaps.with_columns(
            pl.col("first_ts", "last_ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        ).to_dicts(),
    }


def batch_hashes(path: Path, seqs: Iterable[int]) -> dict[int, str]:
    """The stored chain hash of each of ``seqs`` (missing batches are absent)."""
    wanted = list(seqs)
    db = _ro(path)
    try:
        marks = ",".join("?" for _ in wanted)
        rows = db.execute(f"SELECT seq, hash FROM batches WHERE seq IN ({marks})", wanted)
        return {int(seq): bytes(link).hex() for seq, link in rows}
    finally:
        db.close()


def rederive_intervals(
    journal: Any, site: Site, summary: dict[str, Any], *, interval_s: int = 60
) -> pl.DataFrame:
    """Interval rows re-derived from the raw readings of the batches in ``summary``.

    Args:
        journal: An open :class:`agent.journal.Journal`.
        site: The site model the bundle carries.
        summary: ``journal.json`` (first and last batch).
        interval_s: Base interval length of the bundled rows.

    """
    config = EnergyConfig(interval_s=interval_s)
    frames = [
        batch.frame
        for batch in journal.iter_batches(int(summary["first_seq"]) - 1, kinds=("readings",))
        if batch.seq <= int(summary["last_seq"])
    ]
    readings = pl.concat(frames).lazy() if frames else pl.LazyFrame()
    return interval_energy(readings, site, config).collect()

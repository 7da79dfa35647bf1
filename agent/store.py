"""The local interval store: Parquet under ``state_dir/store/``, partitioned by month.

Layout (documented in ``docs/interval-store.md``)::

    store/intervals/month=YYYY-MM/part-<tag>.parquet   interval rows (INTERVAL_SCHEMA
                                                       + rejected_readings), UTC month of
                                                       interval_start
    store/hourly/month=YYYY-MM/part-<tag>.parquet      the same rows summed per meter and
                                                       hour (INTERVAL_SCHEMA; for TTM KPIs)
    store/index/month=YYYY-MM/part-<tag>.parquet       per meter and UTC day of the part: key
                                                       range, row count, sums (INDEX_SCHEMA)
    store/rollup/month=YYYY-MM/daily.parquet           exact per-meter daily sums of the month
                                                       (cache, checked against the parts)
    store/kpis/month=YYYY-MM/kpis.parquet              KPI rows (KPI_SCHEMA) whose period
                                                       label starts with YYYY-MM
    store/kpis/month=YYYY-MM/choices.json              the choices behind them

Every file is written to a temporary name, fsynced and renamed, so a reader (or a
crash) sees a whole file or none. Writing a part with a tag that exists replaces it;
the aggregator tags parts by the first journal batch they came from, so re-running
the same batches after a crash replaces instead of duplicating. Readers de-duplicate
``(meter, interval_start)`` keeping the row of the latest part anyway.

Each interval part carries a unique write id in its Parquet footer; its hourly roll-up
and index part carry the id they were computed from, so a derived file left behind by
a crash (or written by an older version, without ids) is recognised and recomputed from
the part. The index tells which parts may share a key with another part: only those go
through the de-duplicating sort, and the month's exact daily sums are computed once and
cached (``rollup/``) under the list of part ids they came from.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from agent.periods import utc_months
from agent.schemas import (
    FINDING_SCHEMA,
    INTERVAL_SCHEMA,
    INTERVAL_STORE_SCHEMA,
    KPI_SCHEMA,
    SILENCE_SCHEMA,
)

__all__ = [
    "INDEX_SCHEMA",
    "IntervalStore",
    "StoreError",
    "atomic_write_bytes",
    "day_index",
    "dedupe_parts",
    "hourly_rollup",
    "period_rollup",
]

#: Per interval part (``store/index/``): one row per meter and UTC day the part holds.
#: ``first_start``/``last_start`` bound its keys (two parts whose ranges for a meter and
#: day do not intersect cannot share a key); the sums make the month's daily roll-up.
INDEX_SCHEMA = pl.Schema(
    {
        "meter": pl.String(),
        "day": pl.Datetime("us", "UTC"),
        "first_start": pl.Datetime("us", "UTC"),
        "last_start": pl.Datetime("us", "UTC"),
        "rows": pl.UInt32(),
        "energy_kwh": pl.Float64(),
        "covered_us": pl.Float64(),
        "flags": pl.UInt16(),
        "method": pl.String(),
    }
)

# Parquet footer keys (key-value metadata).
_WRITE_ID = "pue.write_id"  # interval part: unique per write
_SOURCE = "pue.source"  # hourly / index part: the write id of the part it summarises
_UNIQUE = "pue.unique_keys"  # index part: "1" when the part holds each key once
_PARTS = "pue.parts"  # month roll-up: JSON [[part file, source], ...] it was made from
_OVERLAPPING = "pue.overlapping"  # month roll-up: JSON [part file, ...] that may share keys

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY = ["meter", "interval_start"]


class StoreError(RuntimeError):
    """The store cannot be read or written; the message names the file."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc}") from exc


def _write_parquet(path: Path, frame: pl.DataFrame, metadata: dict[str, str] | None = None) -> None:
    # Readers may cache roll-ups from several threads of one process: the temporary
    # name carries the thread too, so two writers never share it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(tmp, compression="zstd", statistics=True, metadata=metadata)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc}") from exc


def _month_index(ts: pl.Expr) -> pl.Expr:
    """Months since year 0 (an integer key: formatting a label per row costs ~100 ns)."""
    return ts.dt.year().cast(pl.Int32) * 12 + ts.dt.month().cast(pl.Int32) - 1


def _metadata(path: Path) -> dict[str, str]:
    """A Parquet file's key-value metadata; empty when the file is missing or unreadable."""
    try:
        return pl.read_parquet_metadata(path)
    except (OSError, pl.exceptions.PolarsError):
        return {}


def _floor(ts: datetime, unit: timedelta) -> datetime:
    return ts - (ts - _EPOCH) % unit


def _ceil(ts: datetime, unit: timedelta) -> datetime:
    floor = _floor(ts, unit)
    return floor if floor == ts else floor + unit


def _tiles(
    start: datetime, end: datetime, units: tuple[timedelta, ...]
) -> list[tuple[timedelta | None, datetime, datetime]]:
    """Split ``[start, end)`` into whole UTC ``units`` (largest first) and the rest (``None``)."""
    if start >= end:
        return []
    if not units:
        return [(None, start, end)]
    unit, rest = units[0], units[1:]
    lo, hi = _ceil(start, unit), _floor(end, unit)
    if lo >= hi:
        return _tiles(start, end, rest)
    return [*_tiles(start, lo, rest), (unit, lo, hi), *_tiles(hi, end, rest)]


def _between(start: datetime, end: datetime) -> pl.Expr:
    return (pl.col("interval_start") >= start) & (pl.col("interval_start") < end)


def dedupe_parts(files: Sequence[Path | str], where: pl.Expr | None = None) -> pl.LazyFrame:
    """Rows of interval parts ``files``, one per key, from the latest file (name order).

    The store's one de-duplication rule: every reader of parts that may share
    ``(meter, interval_start)`` keys (an import over live data, a compaction caught
    half-way) goes through here, the report's streaming month read included.
    """
    frame = pl.scan_parquet([str(f) for f in files], include_file_paths="_file")
    if where is not None:
        frame = frame.filter(where)  # whole keys in or out: filtering first is the same
    return frame.sort("_file", maintain_order=True).unique(_KEY, keep="last", maintain_order=True)


def _covered_us() -> pl.Expr:
    return pl.col("coverage") * (
        pl.col("interval_end") - pl.col("interval_start")
    ).dt.total_microseconds().cast(pl.Float64)


def day_index(intervals: pl.LazyFrame) -> tuple[pl.DataFrame, bool]:
    """The index of a part: per meter and UTC day, key range, row count and sums.

    Args:
        intervals: Interval rows (:data:`INTERVAL_SCHEMA` columns).

    Returns:
        The rows in :data:`INDEX_SCHEMA` (sorted by meter, day) and whether every
        ``(meter, interval_start)`` occurs once.
    """
    index = (
        intervals.group_by("meter", pl.col("interval_start").dt.truncate("1d").alias("day"))
        .agg(
            pl.col("interval_start").min().alias("first_start"),
            pl.col("interval_start").max().alias("last_start"),
            pl.len().alias("rows"),
            pl.col("interval_start").n_unique().alias("_keys"),
            pl.col("energy_kwh").sum(),
            _covered_us().sum().alias("covered_us"),
            pl.col("flags").bitwise_or(),
            pl.col("method").min(),
        )
        .sort("meter", "day")
        .collect()
    )
    unique = bool((index["rows"] == index["_keys"]).all())
    return index.select(INDEX_SCHEMA.names()).cast(INDEX_SCHEMA), unique


def _sum_periods(sums: pl.LazyFrame, extra: Sequence[pl.Expr] = ()) -> pl.LazyFrame:
    """Sum rows per meter and period (``_start``, ``_end`` columns): the store's one roll-up rule.

    ``energy_kwh`` and ``covered_us`` are summed, ``flags`` OR-ed, ``method`` is the
    smallest (``power_integration`` before ``register``: a period that mixes both is
    labelled an estimate). Coverage multiplies by the reciprocal of the period's length:
    Polars divides a column by a scalar that way except for a one-row column, which
    would make the last bit depend on the frame. Rows in first-seen order.
    """
    return (
        sums.group_by("meter", "_start", "_end", maintain_order=True)
        .agg(
            pl.col("energy_kwh").sum(),
            pl.col("covered_us").sum(),
            pl.col("flags").bitwise_or(),
            pl.col("method").min(),
            *extra,
        )
        .with_columns(
            pl.col("_start").alias("interval_start"),
            pl.col("_end").alias("interval_end"),
            (
                pl.col("covered_us")
                * (1.0 / (pl.col("_end") - pl.col("_start")).dt.total_microseconds())
            ).alias("coverage"),
        )
        .drop("_start", "_end")
    )


def period_rollup(
    rows: pl.LazyFrame,
    *,
    every: str | None = None,
    timezone: str = "UTC",
    window: tuple[datetime, datetime] | None = None,
    events: Mapping[str, int] | None = None,
) -> pl.LazyFrame:
    """Per-meter sums of interval rows over periods: the one roll-up every reader uses.

    The store's hourly parts (UTC hours), its daily month cache, the live TTM's
    eleven earlier months (one ``window``) and the report's local hours and days all
    come from here, so a period's energy, coverage and flags mean the same everywhere.

    Args:
        rows: Interval rows (:data:`INTERVAL_SCHEMA` columns).
        every: Period length (``"1h"``, ``"1d"``), truncated in ``timezone``; a local day
            keeps its real length across a daylight-saving change.
        timezone: Zone whose calendar the periods follow (``every`` only).
        window: Instead of ``every``: one period ``[start, end)`` (rows outside are dropped).
        events: Extra counts per period, ``{"wrap": IntervalFlag.WRAP, …}``: adds
            ``n_<name>`` (rows carrying the flag), ``n_intervals`` and keeps ``covered_us``.

    Returns:
        :data:`INTERVAL_SCHEMA` rows (plus the event columns), one per meter and period,
        in first-seen order.
    """
    if (every is None) == (window is None):
        raise ValueError("period_rollup: give exactly one of every= or window=")
    covered = _covered_us().alias("covered_us")
    if window is not None:
        start, end = (pl.lit(t.astimezone(UTC), dtype=pl.Datetime("us", "UTC")) for t in window)
        sums = rows.filter(_between(*window)).with_columns(
            covered, start.alias("_start"), end.alias("_end")
        )
    else:
        assert every is not None
        local = pl.col("interval_start").dt.convert_time_zone(timezone).dt.truncate(every)
        sums = rows.with_columns(
            covered,
            local.dt.convert_time_zone("UTC").alias("_start"),
            local.dt.offset_by(every).dt.convert_time_zone("UTC").alias("_end"),
        )
    extra: list[pl.Expr] = []
    keep = list(INTERVAL_SCHEMA.names())
    if events is not None:
        flags = pl.col("flags").cast(pl.Int32)
        extra = [
            pl.len().cast(pl.Int64).alias("n_intervals"),
            *((flags.and_(bit) != 0).sum().alias(f"n_{name}") for name, bit in events.items()),
        ]
        keep += ["covered_us", "n_intervals", *(f"n_{name}" for name in events)]
    return _sum_periods(sums, extra).select(keep).cast(INTERVAL_SCHEMA, strict=False)


def _hourly(intervals: pl.LazyFrame) -> pl.LazyFrame:
    """:func:`hourly_rollup`, lazily and unsorted."""
    return period_rollup(intervals, every="1h")


def hourly_rollup(intervals: pl.DataFrame) -> pl.DataFrame:
    """Sum interval rows per meter and UTC hour (coverage time-weighted, flags OR-ed).

    The result is itself in :data:`INTERVAL_SCHEMA`, with one-hour intervals, so every
    period sum over whole hours is unchanged by the roll-up.
    """
    return _hourly(intervals.lazy()).sort("meter", "interval_start").collect()


@dataclass(frozen=True)
class _MonthView:
    """What the store knows about one UTC month's interval parts.

    ``dirty`` parts may share a key with another part (or repeat one), or lack a
    trustworthy hourly roll-up: they are read through the de-duplicating sort. The
    other parts' rows are unique store-wide and are read as they are. ``daily`` is the
    month's exact per-meter daily roll-up (``None`` when not computed).
    """

    def with_daily(self, daily: pl.LazyFrame) -> _MonthView:
        """This view with its daily roll-up."""
        return _MonthView(self.month, self.parts, self.dirty, daily, self.ordered)

    month: str
    parts: tuple[Path, ...]
    dirty: frozenset[str]
    daily: pl.LazyFrame | None
    #: One clean part written by ``write_intervals`` (sorted by meter, interval_start).
    ordered: bool = False

    @property
    def clean(self) -> list[Path]:
        """Parts whose rows are read without de-duplication."""
        return [p for p in self.parts if p.name not in self.dirty]

    @property
    def unclean(self) -> list[Path]:
        """Parts read through the de-duplicating sort."""
        return [p for p in self.parts if p.name in self.dirty]


def _clashes(indexes: dict[str, pl.LazyFrame]) -> frozenset[str]:
    """Parts whose key range for some meter and day intersects another part's."""
    if len(indexes) < 2:
        return frozenset()
    ranges = pl.concat(
        [
            ix.select("meter", "day", "first_start", "last_start", pl.lit(name).alias("_part"))
            for name, ix in indexes.items()
        ]
    )
    clash = (
        ranges.sort("meter", "day", "first_start")
        .with_columns(pl.col("last_start").cum_max().shift(1).over("meter", "day").alias("_prev"))
        .filter(pl.col("first_start") <= pl.col("_prev"))
        .select("meter", "day")
        .unique()
    )
    names = ranges.join(clash, on=["meter", "day"], how="semi").select("_part").unique().collect()
    return frozenset(names["_part"].to_list())


class IntervalStore:
    """Month-partitioned Parquet store of interval rows and KPI rows."""

    def __init__(self, root: Path) -> None:
        """Use (and create on first write) the store under ``root`` (``state_dir/store``)."""
        self.root = root

    # -- intervals ----------------------------------------------------------------------------

    def _parts(self, table: str, months: Iterable[str] | None) -> list[Path]:
        base = self.root / table
        if not base.is_dir():
            return []
        if months is None:
            dirs = sorted(p for p in base.iterdir() if p.name.startswith("month="))
        else:
            dirs = [base / f"month={m}" for m in months]
        return [f for d in dirs if d.is_dir() for f in sorted(d.glob("part-*.parquet"))]

    def write_intervals(self, frame: pl.DataFrame, *, tag: str | None = None) -> list[Path]:
        """Write interval rows, one part per UTC month, plus its hourly roll-up and index.

        Args:
            frame: Rows with the :data:`INTERVAL_SCHEMA` columns (``rejected_readings``
                optional, stored as 0 when absent).
            tag: Part name; an existing part with the same tag is replaced. Default: a
                unique time-based tag.

        Returns:
            The interval part files written.

        Raises:
            StoreError: for missing columns or a write failure.
        """
        missing = [c for c in INTERVAL_SCHEMA.names() if c not in frame.columns]
        if missing:
            raise StoreError(f"write_intervals: missing column(s) {missing}")
        if "rejected_readings" not in frame.columns:
            frame = frame.with_columns(pl.lit(0, pl.UInt32).alias("rejected_readings"))
        frame = frame.select(INTERVAL_STORE_SCHEMA.names()).cast(INTERVAL_STORE_SCHEMA)
        if frame.height == 0:
            return []
        tag = tag or f"{time.time_ns():020d}"
        written = []
        for (index,), part in (
            frame.with_columns(_month_index(pl.col("interval_start")).alias("_m"))
            .partition_by("_m", as_dict=True, maintain_order=True)
            .items()
        ):
            month = f"{int(index) // 12:04d}-{int(index) % 12 + 1:02d}"
            rows = part.drop("_m").sort("meter", "interval_start")
            path = self.root / "intervals" / f"month={month}" / f"part-{tag}.parquet"
            # Part first, derived files after, each naming the write they summarise: a
            # crash in between leaves derived files that no longer match (recomputed).
            write_id = uuid.uuid4().hex
            _write_parquet(path, rows, {_WRITE_ID: write_id})
            self._write_derived(path, rows.lazy(), write_id)
            written.append(path)
        return written

    def _derived_path(self, table: str, part: Path) -> Path:
        return self.root / table / part.parent.name / part.name

    def _write_derived(
        self, part: Path, rows: pl.LazyFrame, source: str
    ) -> tuple[pl.DataFrame, bool]:
        """Write ``part``'s hourly roll-up and index (from ``rows``); return :func:`day_index`."""
        rows = rows.select(INTERVAL_SCHEMA.names())
        _write_parquet(
            self._derived_path("hourly", part),
            _hourly(rows).sort("meter", "interval_start").collect(),
            {_SOURCE: source},
        )
        index, unique = day_index(rows)
        _write_parquet(
            self._derived_path("index", part),
            index,
            {_SOURCE: source, _UNIQUE: "1" if unique else "0"},
        )
        return index, unique

    def _source(self, part: Path) -> str:
        """The identity of a part's contents: its write id, or size and mtime (older parts)."""
        write_id = _metadata(part).get(_WRITE_ID)
        if write_id:
            return write_id
        try:
            stat = part.stat()
        except OSError as exc:
            raise StoreError(f"cannot read {part}: {exc}") from exc
        return f"stat:{stat.st_size}:{stat.st_mtime_ns}"

    def _index(
        self, part: Path, source: str, *, repair: bool
    ) -> tuple[pl.LazyFrame | None, bool, bool]:
        """A part's index, whether its keys are unique, and whether its derived files hold.

        A missing or stale index (and hourly roll-up) is recomputed from the part's rows
        when ``repair`` is set and written back if the store is writable; otherwise the
        index is ``None``.
        """
        path = self._derived_path("index", part)
        meta = _metadata(path)
        if meta.get(_SOURCE) == source:
            return pl.scan_parquet(path), meta.get(_UNIQUE) == "1", True
        if not repair:
            return None, False, False
        rows = pl.scan_parquet(part).select(INTERVAL_SCHEMA.names())
        try:
            index, unique = self._write_derived(part, rows, source)
        except StoreError:
            # Read-only store: the part is read through the slow path every time.
            index, unique = day_index(rows)
            return index.lazy(), unique, False
        return index.lazy(), unique, True

    def _view(self, month: str, *, repair: bool = True) -> _MonthView | None:
        """The month's parts, which of them need de-duplication, and its daily roll-up.

        With ``repair`` unset nothing is computed from rows or written: parts without a
        trustworthy index are simply all dirty, and ``daily`` is only the cached one.
        """
        parts = tuple(self._parts("intervals", [month]))
        if not parts:
            return None
        sources = [self._source(p) for p in parts]
        fingerprint = json.dumps(
            [[p.name, source] for p, source in zip(parts, sources, strict=True)]
        )
        # Parts carrying a write id were sorted by ``write_intervals``; older ones may not be.
        single = len(parts) == 1 and not sources[0].startswith("stat:")
        cache = self.root / "rollup" / f"month={month}" / "daily.parquet"
        meta = _metadata(cache)
        if meta.get(_PARTS) == fingerprint:
            cached = frozenset(json.loads(meta[_OVERLAPPING]))
            return _MonthView(month, parts, cached, pl.scan_parquet(cache), single and not cached)
        indexes: dict[str, pl.LazyFrame] = {}
        dirty: set[str] = set()
        untrusted: set[str] = set()
        for part, source in zip(parts, sources, strict=True):
            index, unique, trusted = self._index(part, source, repair=repair)
            if index is not None:
                indexes[part.name] = index
            if not unique:
                dirty.add(part.name)
            if not trusted:
                untrusted.add(part.name)
        if not repair and untrusted:
            # A part of unknown keys may share any of them: read all through the sort.
            return _MonthView(month, parts, frozenset(p.name for p in parts), None)
        # Parts whose hourly roll-up cannot be trusted are read from their rows too.
        dirty |= untrusted | _clashes(indexes)
        view = _MonthView(month, parts, frozenset(dirty), None, single and not dirty)
        if not repair:
            return view
        daily = self._daily(view, indexes)
        if not untrusted:
            with contextlib.suppress(StoreError):
                _write_parquet(
                    cache, daily, {_PARTS: fingerprint, _OVERLAPPING: json.dumps(sorted(dirty))}
                )
        return view.with_daily(daily.lazy())

    def _daily(self, view: _MonthView, indexes: dict[str, pl.LazyFrame]) -> pl.DataFrame:
        """Exact per-meter UTC-day sums of a month (INTERVAL_SCHEMA, one-day rows)."""
        columns = ["meter", "day", "energy_kwh", "covered_us", "flags", "method"]
        pieces = [indexes[p.name].select(columns) for p in view.clean]
        if view.unclean:
            pieces.append(day_index(dedupe_parts(view.unclean))[0].lazy().select(columns))
        days = pl.concat(pieces).with_columns(
            pl.col("day").alias("_start"), (pl.col("day") + _DAY).alias("_end")
        )
        return (
            _sum_periods(days)
            .select(INTERVAL_SCHEMA.names())
            .cast(INTERVAL_SCHEMA)
            .sort("meter", "interval_start")
            .collect()
        )

    def _rows_of(self, view: _MonthView, where: pl.Expr, columns: list[str]) -> list[pl.LazyFrame]:
        """A month's interval rows matching ``where``, de-duplicated, as pieces in no order."""
        pieces = []
        if view.clean:
            pieces.append(pl.scan_parquet(list(view.clean)).filter(where).select(columns))
        if view.unclean:
            pieces.append(dedupe_parts(view.unclean, where).select(columns))
        return pieces

    def _hours_of(self, view: _MonthView, where: pl.Expr) -> list[pl.LazyFrame]:
        """Hourly roll-up rows of a month's whole hours matching ``where`` (pieces, unsummed)."""
        pieces = []
        if view.clean:
            files = [self._derived_path("hourly", p) for p in view.clean]
            pieces.append(pl.scan_parquet(files).filter(where).select(INTERVAL_SCHEMA.names()))
        if view.unclean:
            rows = dedupe_parts(view.unclean, where).select(INTERVAL_SCHEMA.names())
            pieces.append(_hourly(rows))
        return pieces

    def _scan(
        self, table: str, start: datetime | None, end: datetime | None, schema: pl.Schema
    ) -> pl.LazyFrame:
        months = None
        if start is not None and end is not None:
            months = utc_months(start, end)
        files = self._parts(table, months)
        if not files:
            return pl.LazyFrame(schema=schema)
        frame = pl.scan_parquet(files, include_file_paths="_file")
        if start is not None:
            frame = frame.filter(pl.col("interval_start") >= start)
        if end is not None:
            frame = frame.filter(pl.col("interval_start") < end)
        return frame

    def read_intervals(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        with_rejected_counts: bool = False,
        dedupe: bool = True,
    ) -> pl.LazyFrame:
        """Interval rows with ``start <= interval_start < end`` (both optional).

        Args:
            start: Inclusive lower bound (timezone-aware).
            end: Exclusive upper bound.
            with_rejected_counts: Keep the ``rejected_readings`` column.
            dedupe: Keep one row per ``(meter, interval_start)`` (from the latest part).

        Returns:
            A LazyFrame in :data:`INTERVAL_SCHEMA` (plus ``rejected_readings`` if asked).
        """
        names = INTERVAL_STORE_SCHEMA.names() if with_rejected_counts else INTERVAL_SCHEMA.names()
        if dedupe:
            return self._read_deduped(start, end, names)
        frame = self._scan(
            "intervals", start, end, pl.Schema({**INTERVAL_STORE_SCHEMA, "_file": pl.String()})
        )
        return frame.select(names).sort("meter", "interval_start")

    def _read_deduped(
        self, start: datetime | None, end: datetime | None, names: list[str]
    ) -> pl.LazyFrame:
        """:meth:`read_intervals` with de-duplication, month by month.

        Only the parts the indexes cannot clear (missing or stale index, keys shared with
        another part) go through the de-duplicating sort; nothing is computed or written
        here. A month held in one clean part is already in order.
        """
        if start is None or end is None:
            base = self.root / "intervals"
            found = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
            months = [d.removeprefix("month=") for d in found if d.startswith("month=")]
        else:
            months = utc_months(start, end)
        views = [v for m in months if (v := self._view(m, repair=False)) is not None]
        where = pl.lit(value=True)
        if start is not None:
            where = where & (pl.col("interval_start") >= start)
        if end is not None:
            where = where & (pl.col("interval_start") < end)
        pieces = [piece for v in views for piece in self._rows_of(v, where, names)]
        if not pieces:
            return pl.LazyFrame(schema=INTERVAL_STORE_SCHEMA).select(names)
        frame = pl.concat(pieces, how="vertical")
        if len(views) == 1 and views[0].ordered:
            return frame  # one part with unique keys, written sorted by (meter, interval_start)
        return frame.sort("meter", "interval_start")

    def scan_intervals(self, start: datetime, end: datetime) -> pl.LazyFrame:
        """The rows :meth:`read_intervals` returns for ``[start, end)``, in no particular order.

        For large reads (a month of a 2,000-meter site at one minute is 89 M rows): only
        parts that may share keys go through the de-duplicating sort, and nothing is
        sorted. Missing or stale part indexes are computed (and stored) first.
        """
        pieces: list[pl.LazyFrame] = []
        for month in utc_months(start, end - timedelta(microseconds=1)):
            view = self._view(month)
            if view is not None:
                pieces += self._rows_of(view, _between(start, end), INTERVAL_SCHEMA.names())
        if not pieces:
            return pl.LazyFrame(schema=INTERVAL_SCHEMA)
        return pl.concat(pieces, how="vertical")

    def read_rollup(
        self, start: datetime, end: datetime, *, every: Literal["1h", "1d"] = "1d"
    ) -> pl.LazyFrame:
        """Exact sums of the rows :meth:`read_intervals` returns for ``[start, end)``.

        Rows are :data:`INTERVAL_SCHEMA`: one per meter and whole UTC day (``every="1d"``)
        inside the range, per meter and whole UTC hour for the rest, and the interval
        rows themselves at the edges that are not whole hours. Sums over any set of
        these periods equal the sums over the interval rows; a meter and hour may come
        in more than one row (one per part; sum them). Days come from the month's cached
        roll-up (``rollup/``), hours from the parts' hourly roll-ups; parts that may share
        keys are de-duplicated first, so the result never counts a key twice.

        Args:
            start: Inclusive lower bound of ``interval_start`` (timezone-aware).
            end: Exclusive upper bound.
            every: The longest rows wanted.

        Returns:
            A LazyFrame in :data:`INTERVAL_SCHEMA`, in no particular order.
        """
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        units = (_DAY, _HOUR) if every == "1d" else (_HOUR,)
        pieces: list[pl.LazyFrame] = []
        for month in utc_months(start, end - timedelta(microseconds=1)):
            view = self._view(month)
            if view is None:
                continue
            year, number = int(month[:4]), int(month[5:])
            m_start = datetime(year, number, 1, tzinfo=UTC)
            m_end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
            for unit, lo, hi in _tiles(max(start, m_start), min(end, m_end), units):
                if unit == _DAY and view.daily is not None:
                    pieces.append(view.daily.filter(_between(lo, hi)))
                elif unit is not None:
                    pieces += self._hours_of(view, _between(lo, hi))
                else:
                    pieces += self._rows_of(view, _between(lo, hi), INTERVAL_SCHEMA.names())
        if not pieces:
            return pl.LazyFrame(schema=INTERVAL_SCHEMA)
        return pl.concat(pieces, how="vertical")

    def compact(self, month: str) -> None:
        """Merge a month's parts into one (after de-duplication) and rebuild its roll-ups."""
        files = self._parts("intervals", [month])
        if len(files) <= 1:
            return
        rows = dedupe_parts(files).drop("_file").collect()
        tag = f"compact-{time.time_ns():020d}"
        self.write_intervals(rows, tag=tag)
        keep = f"part-{tag}.parquet"
        # Until the old parts are gone the new one shares all their keys: readers in
        # between de-duplicate (the indexes say so), so they see the same rows.
        for table in ("intervals", "hourly", "index"):
            for old in self._parts(table, [month]):
                if old.name != keep:
                    old.unlink()

    # -- KPIs ---------------------------------------------------------------------------------

    def _upsert_monthly(
        self, table: str, frame: pl.DataFrame, schema: pl.Schema, key: list[str], order: list[str]
    ) -> list[Path]:
        """Replace rows with the same ``key`` in ``table``'s month files (by ``period``)."""
        missing = [c for c in schema.names() if c not in frame.columns]
        if missing:
            raise StoreError(f"{table}: missing column(s) {missing}")
        frame = frame.select(schema.names()).cast(schema)
        written = []
        for (month,), part in (
            frame.with_columns(pl.col("period").str.slice(0, 7).alias("_m"))
            .partition_by("_m", as_dict=True)
            .items()
        ):
            path = self.root / table / f"month={month}" / f"{table}.parquet"
            new = part.drop("_m")
            if path.is_file():
                old = pl.read_parquet(path).cast(schema)
                new = pl.concat([old.join(new.select(key), on=key, how="anti"), new])
            _write_parquet(path, new.sort(order))
            written.append(path)
        return written

    def _read_monthly(
        self, table: str, schema: pl.Schema, month: str | None, equal: dict[str, str | None]
    ) -> pl.DataFrame:
        """Rows of ``table`` (one month or all), filtered on the non-``None`` ``equal`` pairs."""
        base = self.root / table
        pattern = f"month={month}" if month else "month=*"
        files = sorted(base.glob(f"{pattern}/{table}.parquet")) if base.is_dir() else []
        if not files:
            return pl.DataFrame(schema=schema)
        frame = pl.scan_parquet(files)
        for column, value in equal.items():
            if value is not None:
                frame = frame.filter(pl.col(column) == value)
        return frame.collect().cast(schema)

    def write_kpis(self, frame: pl.DataFrame, *, choices: dict[str, object] | None = None) -> None:
        """Store KPI rows (replacing rows with the same site, kind, period and metric).

        Rows are partitioned by the month their ``period`` label starts with.
        """
        key = ["site", "period_kind", "period", "metric"]
        order = ["period_kind", "period_start", "metric"]
        for path in self._upsert_monthly("kpis", frame, KPI_SCHEMA, key, order):
            if choices is not None:
                atomic_write_bytes(
                    path.with_name("choices.json"),
                    json.dumps(choices, sort_keys=True, ensure_ascii=False, indent=1).encode(),
                )

    def read_kpis(
        self,
        *,
        month: str | None = None,
        period_kind: str | None = None,
        period: str | None = None,
        metric: str | None = None,
    ) -> pl.DataFrame:
        """Stored KPI rows (``KPI_SCHEMA``), optionally filtered."""
        equal = {"period_kind": period_kind, "period": period, "metric": metric}
        return self._read_monthly("kpis", KPI_SCHEMA, month, equal)

    def write_findings(self, frame: pl.DataFrame) -> None:
        """Store rule findings (``FINDING_SCHEMA``), replacing rows with the same key.

        The key is ``(site, period, policy_id, rule_id)``; rows are partitioned by the
        month their ``period`` label starts with (``store/findings/month=YYYY-MM/``).
        """
        key = ["site", "period", "policy_id", "rule_id"]
        self._upsert_monthly(
            "findings", frame, FINDING_SCHEMA, key, ["period", "policy_id", "rule_id"]
        )

    def read_findings(
        self, *, month: str | None = None, rule_id: str | None = None
    ) -> pl.DataFrame:
        """Stored findings (``FINDING_SCHEMA``), optionally of one month / one rule."""
        return self._read_monthly("findings", FINDING_SCHEMA, month, {"rule_id": rule_id})

    def write_silences(self, frame: pl.DataFrame) -> None:
        """Store silent periods of meters (``SILENCE_SCHEMA``), replacing same-key rows.

        The key is ``(meter, start)``; rows are partitioned by ``period``, the site-local
        month of ``start`` (``store/silences/month=YYYY-MM/``).
        """
        if frame.height:
            self._upsert_monthly(
                "silences", frame, SILENCE_SCHEMA, ["meter", "start"], ["start", "meter"]
            )

    def read_silences(self, months: Iterable[str] | None = None) -> pl.DataFrame:
        """Stored silent periods (``SILENCE_SCHEMA``) recorded in ``months`` (default all)."""
        if months is None:
            return self._read_monthly("silences", SILENCE_SCHEMA, None, {})
        return pl.concat(
            [self._read_monthly("silences", SILENCE_SCHEMA, m, {}) for m in months]
            or [pl.DataFrame(schema=SILENCE_SCHEMA)]
        )

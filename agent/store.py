"""The local interval store: Parquet under ``state_dir/store/``, partitioned by month.

Layout (documented in ``docs/interval-store.md``)::

    store/intervals/month=YYYY-MM/part-<tag>.parquet   interval rows (INTERVAL_SCHEMA
                                                       + rejected_readings), UTC month of
                                                       interval_start
    store/hourly/month=YYYY-MM/part-<tag>.parquet      the same rows summed per meter and
                                                       hour (INTERVAL_SCHEMA; for TTM KPIs)
    store/kpis/month=YYYY-MM/kpis.parquet              KPI rows (KPI_SCHEMA) whose period
                                                       label starts with YYYY-MM
    store/kpis/month=YYYY-MM/choices.json              the choices behind them

Every file is written to a temporary name, fsynced and renamed, so a reader (or a
crash) sees a whole file or none. Writing a part with a tag that exists replaces it;
the aggregator tags parts by the first journal batch they came from, so re-running
the same batches after a crash replaces instead of duplicating. Readers de-duplicate
``(meter, interval_start)`` keeping the row of the latest part anyway.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from agent.energy.core import INTERVAL_STORE_SCHEMA
from agent.schemas import FINDING_SCHEMA, INTERVAL_SCHEMA, KPI_SCHEMA

__all__ = ["IntervalStore", "StoreError", "atomic_write_bytes", "hourly_rollup"]


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


def _write_parquet(path: Path, frame: pl.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc}") from exc


def _month_label(ts: pl.Expr) -> pl.Expr:
    return ts.dt.strftime("%Y-%m")


def _months_between(start: datetime, end: datetime) -> list[str]:
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    index, last = start.year * 12 + start.month - 1, end.year * 12 + end.month - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index, last + 1)]


def hourly_rollup(intervals: pl.DataFrame) -> pl.DataFrame:
    """Sum interval rows per meter and UTC hour (coverage time-weighted, flags OR-ed).

    The result is itself in :data:`INTERVAL_SCHEMA`, with one-hour intervals, so every
    period sum over whole hours is unchanged by the roll-up.
    """
    hour_us = 3_600_000_000
    return (
        intervals.lazy()
        .with_columns(
            pl.col("interval_start").dt.truncate("1h").alias("_h"),
            (
                pl.col("coverage")
                * (pl.col("interval_end") - pl.col("interval_start")).dt.total_microseconds()
            ).alias("_covered"),
        )
        .group_by("meter", "_h")
        .agg(
            pl.col("energy_kwh").sum(),
            pl.col("_covered").sum(),
            pl.col("flags").bitwise_or(),
            pl.col("method").first(),
        )
        .select(
            "meter",
            pl.col("_h").alias("interval_start"),
            (pl.col("_h") + pl.duration(hours=1)).alias("interval_end"),
            "energy_kwh",
            (pl.col("_covered") / hour_us).alias("coverage"),
            "flags",
            "method",
        )
        .sort("meter", "interval_start")
        .collect()
        .cast(INTERVAL_SCHEMA)
    )


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
        """Write interval rows, one part per UTC month, plus their hourly roll-up.

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
        for (month,), part in (
            frame.with_columns(_month_label(pl.col("interval_start")).alias("_m"))
            .partition_by("_m", as_dict=True, maintain_order=True)
            .items()
        ):
            rows = part.drop("_m").sort("meter", "interval_start")
            path = self.root / "intervals" / f"month={month}" / f"part-{tag}.parquet"
            _write_parquet(path, rows)
            _write_parquet(
                self.root / "hourly" / f"month={month}" / f"part-{tag}.parquet",
                hourly_rollup(rows.select(INTERVAL_SCHEMA.names())),
            )
            written.append(path)
        return written

    def _scan(
        self, table: str, start: datetime | None, end: datetime | None, schema: pl.Schema
    ) -> pl.LazyFrame:
        months = None
        if start is not None and end is not None:
            months = _months_between(start, end)
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
        frame = self._scan(
            "intervals", start, end, pl.Schema({**INTERVAL_STORE_SCHEMA, "_file": pl.String()})
        )
        if dedupe:
            frame = frame.sort("_file", maintain_order=True).unique(
                ["meter", "interval_start"], keep="last", maintain_order=True
            )
        names = INTERVAL_STORE_SCHEMA.names() if with_rejected_counts else INTERVAL_SCHEMA.names()
        return frame.select(names).sort("meter", "interval_start")

    def read_hourly(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> pl.LazyFrame:
        """Hourly roll-ups (``INTERVAL_SCHEMA``, one-hour rows), summed over parts."""
        frame = self._scan(
            "hourly", start, end, pl.Schema({**INTERVAL_SCHEMA, "_file": pl.String()})
        )
        return (
            frame.with_columns((pl.col("coverage") * 3_600_000_000).alias("_covered"))
            .group_by("meter", "interval_start", "interval_end")
            .agg(
                pl.col("energy_kwh").sum(),
                pl.col("_covered").sum(),
                pl.col("flags").bitwise_or(),
                pl.col("method").first(),
            )
            .with_columns((pl.col("_covered") / 3_600_000_000).alias("coverage"))
            .select(INTERVAL_SCHEMA.names())
        )

    def compact(self, month: str) -> None:
        """Merge a month's parts into one (after de-duplication) and rebuild its roll-up."""
        files = self._parts("intervals", [month])
        if len(files) <= 1:
            return
        rows = (
            pl.scan_parquet(files, include_file_paths="_file")
            .sort("_file", maintain_order=True)
            .unique(["meter", "interval_start"], keep="last", maintain_order=True)
            .drop("_file")
            .collect()
        )
        tag = f"compact-{time.time_ns():020d}"
        self.write_intervals(rows, tag=tag)
        keep = f"part-{tag}.parquet"
        for table in ("intervals", "hourly"):
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

    def read_choices(self, month: str) -> dict[str, object] | None:
        """The choices recorded with a month's KPIs, if any."""
        path = self.root / "kpis" / f"month={month}" / "choices.json"
        if not path.is_file():
            return None
        loaded: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
        return loaded

    # -- findings -----------------------------------------------------------------------------

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

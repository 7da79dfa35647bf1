"""Where a report's inputs come from on a running site: the interval store and the journal.

``agent.store.IntervalStore`` and ``agent.energy.interval_energy`` belong to the
KPI engineer; they are imported lazily and, while missing, the clearly named
fallbacks here are used (and say so).
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from agent.schemas import INTERVAL_SCHEMA
from agent.site import Site

__all__ = [
    "batch_hashes",
    "journal_summary",
    "read_history",
    "read_intervals",
    "rederive_intervals",
]


def read_intervals(store_root: Path, start: datetime, end: datetime) -> pl.LazyFrame:
    """Interval rows in ``[start, end)`` from the interval store under ``store_root``.

    Uses ``agent.store.IntervalStore(root).read_intervals`` when it exists; otherwise
    (fallback) scans every Parquet file under ``store_root/intervals``.
    """
    try:
        store_module = importlib.import_module("agent.store")
        store = store_module.IntervalStore(store_root)
        frame: pl.LazyFrame = store.read_intervals(start, end)
        return frame
    except (ImportError, AttributeError):
        files = sorted((store_root / "intervals").rglob("*.parquet"))
        if not files:
            return pl.LazyFrame(schema=INTERVAL_SCHEMA)
        return pl.scan_parquet(files).filter(
            (pl.col("interval_start") >= start) & (pl.col("interval_start") < end)
        )


def read_history(store_root: Path, start: datetime, end: datetime) -> pl.LazyFrame:
    """The months before the report: the store's hourly roll-ups when it keeps them.

    Reading 22 months of base intervals would be ~20x the month itself; the bundle
    keeps daily roll-ups of history anyway, so the hourly ones lose nothing.
    """
    try:
        store_module = importlib.import_module("agent.store")
        store = store_module.IntervalStore(store_root)
        frame: pl.LazyFrame = store.read_hourly(start, end)
        return frame
    except (ImportError, AttributeError):
        return read_intervals(store_root, start, end)


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
) -> pl.DataFrame | None:
    """Interval rows re-derived from the raw readings of the batches in ``summary``.

    Args:
        journal: An open :class:`agent.journal.Journal`.
        site: The site model the bundle carries.
        summary: ``journal.json`` (first and last batch).
        interval_s: Base interval length of the bundled rows.

    Returns ``None`` while ``agent.energy.interval_energy`` does not exist.
    """
    try:
        energy = importlib.import_module("agent.energy")
        interval_energy = energy.interval_energy
        config = energy.EnergyConfig(interval_s=interval_s)
    except (ImportError, AttributeError):
        return None
    frames = [
        batch.frame
        for batch in journal.iter_batches(int(summary["first_seq"]) - 1, kinds=("readings",))
        if batch.seq <= int(summary["last_seq"])
    ]
    readings = pl.concat(frames).lazy() if frames else pl.LazyFrame()
    derived: pl.LazyFrame = interval_energy(readings, site, config)
    return derived.collect()

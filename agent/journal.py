"""The durable, hash-chained journal of every reading batch.

Design (see ``docs/journal.md`` for the why):

* SQLite in WAL mode with ``synchronous=FULL``: a commit is fsynced before
  :meth:`Journal.append_many` returns, and SQLite's own recovery cuts a torn
  tail after a crash, so no home-made file format has to get that right.
* One row per batch; the batch itself is an Arrow IPC stream (LZ4) in a BLOB.
* Each row stores ``hash = SHA-256(prev_hash || header || payload)`` where the
  header fixes the sequence number, kind, source and row count, so editing,
  deleting, inserting or swapping batches breaks the chain at a named batch.
* Consumers (sinks, the aggregator) each own a named cursor; data is pruned
  only below the lowest cursor, and pruning keeps a checkpoint (the last pruned
  hash) so the remaining chain still verifies.
* A disk budget: when it is reached and nothing more can be pruned, new
  reading batches are refused (never silently dropped) and the caller records
  an explicit ``gap`` batch so reports can show what is missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa
import pyarrow.ipc as pa_ipc

from agent import metrics

__all__ = [
    "GAP_SCHEMA",
    "AppendResult",
    "BatchKind",
    "Journal",
    "JournalBatch",
    "JournalError",
    "JournalFullError",
    "RawBatch",
    "VerifyReport",
    "chain_hash",
    "decode_payload",
]

BatchKind = Literal["readings", "gap"]

#: Schema of the payload of a ``gap`` batch: what was refused, per device.
GAP_SCHEMA = pl.Schema(
    {
        "device": pl.String(),
        "first_ts": pl.Datetime("us", "UTC"),
        "last_ts": pl.Datetime("us", "UTC"),
        "readings": pl.Int64(),
        "reason": pl.String(),
    }
)

_GENESIS_HASH = bytes(32)
_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS batches (
    seq        INTEGER PRIMARY KEY,
    created_us INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    n_rows     INTEGER NOT NULL,
    first_ts   INTEGER,
    last_ts    INTEGER,
    payload    BLOB    NOT NULL,
    prev_hash  BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    name       TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class JournalError(RuntimeError):
    """The journal cannot be opened or written."""


class JournalFullError(JournalError):
    """The disk budget is reached and nothing more can be pruned: the batch was not stored."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What a committed append returns: the batch's place in the chain."""

    seq: int
    hash: str
    n_rows: int


@dataclass(frozen=True, slots=True)
class JournalBatch:
    """A batch read back from the journal."""

    seq: int
    kind: BatchKind
    source: str
    created_us: int
    frame: pl.DataFrame


@dataclass(frozen=True, slots=True)
class RawBatch:
    """A batch as stored: its chain fields and the undecoded payload (for replication)."""

    seq: int
    kind: BatchKind
    source: str
    n_rows: int
    created_us: int
    payload: bytes
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of :meth:`Journal.verify`."""

    ok: bool
    batches_checked: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str
    problem: str | None = None
    bad_seq: int | None = None


def _header(seq: int, kind: str, source: str, n_rows: int, created_us: int) -> bytes:
    # Canonical JSON so any language can recompute the chain.
    return json.dumps(
        {"seq": seq, "kind": kind, "source": source, "n_rows": n_rows, "created_us": created_us},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def chain_hash(
    prev_hash: bytes, seq: int, kind: str, source: str, n_rows: int, created_us: int, payload: bytes
) -> bytes:
    """Return the SHA-256 link of one batch (public so auditors' tools can re-derive it)."""
    digest = hashlib.sha256(prev_hash)
    digest.update(_header(seq, kind, source, n_rows, created_us))
    digest.update(payload)
    return digest.digest()


def _encode(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="lz4")
    return buffer.getvalue()


def _decode(payload: bytes) -> pl.DataFrame:
    # pyarrow's IPC reader decodes these LZ4 payloads about twice as fast as pl.read_ipc
    # (less CPU, and it decompresses columns in parallel); from_arrow is zero-copy and
    # maps the dtypes as read_ipc does (string_view/large_string -> String, UTC kept).
    frame = pl.from_arrow(pa_ipc.open_file(pa.BufferReader(payload)).read_all())
    if not isinstance(frame, pl.DataFrame):  # a Table always converts to a frame
        raise JournalError("journal payload is not a table")
    return frame


def decode_payload(payload: bytes) -> pl.DataFrame:
    """Decode a batch payload (Arrow IPC, LZ4) as stored and as :class:`RawBatch` carries it."""
    return _decode(payload)


def _ts_bounds(frame: pl.DataFrame, column: str) -> tuple[int | None, int | None]:
    if frame.height == 0 or column not in frame.columns:
        return None, None
    bounds = frame.select(
        pl.col(column).min().dt.epoch("us").alias("lo"),
        pl.col(column).max().dt.epoch("us").alias("hi"),
    ).row(0)
    return bounds[0], bounds[1]


class Journal:
    """Append-only, hash-chained, fsynced store of reading batches with per-consumer cursors.

    The writer side is thread-safe (one lock); readers use their own
    connections, so consumers catching up never block ingestion.
    """

    def __init__(self, path: Path, *, budget_bytes: int | None = None) -> None:
        """Open (or create) the journal at ``path``.

        Args:
            path: The SQLite database file; its directory is created if needed.
            budget_bytes: Disk budget for stored payloads; ``None`` means unbounded.
        """
        self.path = path
        self.budget_bytes = budget_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._local = threading.local()
        try:
            self._db = self._connect()
            self._db.executescript(_SCHEMA_SQL)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        # The recorded head wins over the newest row: a journal whose newest batches were
        # deleted must keep numbering after them, so the hole stays visible to verify().
        self._head_seq = int(self._meta("head_seq", self._meta("base_seq", "0")))
        self._head_hash = bytes.fromhex(
            self._meta("head_hash", self._meta("base_hash", _GENESIS_HASH.hex()))
        )
        row = self._db.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM batches").fetchone()
        self._payload_bytes = int(row[0])
        self.alarm: str | None = None

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged batch survives power loss.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    def _head_locked(self) -> tuple[int, bytes]:
        base_seq = self._meta("base_seq", "0")
        base_hash = self._meta("base_hash", _GENESIS_HASH.hex())
        return int(self._meta("head_seq", base_seq)), bytes.fromhex(
            self._meta("head_hash", base_hash)
        )

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def close(self) -> None:
        """Close the writer connection (readers are closed when their threads end)."""
        with self._lock:
            self._db.close()

    # -- writing -----------------------------------------------------------------------------

    @property
    def head(self) -> tuple[int, str]:
        """The last sequence number and its chain hash."""
        return self._head_seq, self._head_hash.hex()

    @property
    def payload_bytes(self) -> int:
        """Bytes of stored batch payloads (what the budget counts)."""
        return self._payload_bytes

    def append(
        self, frame: pl.DataFrame, *, source: str, kind: BatchKind = "readings"
    ) -> AppendResult:
        """Append one batch durably; see :meth:`append_many`."""
        return self.append_many([(frame, source)], kind=kind)[0]

    def append_many(
        self, batches: Sequence[tuple[pl.DataFrame, str]], *, kind: BatchKind = "readings"
    ) -> list[AppendResult]:
        """Append batches in one transaction with one fsync (group commit).

        Each batch is still its own link in the chain. When this returns, every
        batch is on disk; before it returns, none counts as stored.

        Raises:
            JournalFullError: if the budget is reached and cannot be freed by pruning
                (reading batches only; ``gap`` records are always written).
            JournalError: if SQLite fails (e.g. the disk is full); nothing is stored.
        """
        encoded = [(frame, source, _encode(frame)) for frame, source in batches]
        incoming = sum(len(payload) for _, _, payload in encoded)
        with self._lock:
            if kind == "readings" and self.budget_bytes is not None:
                if self._payload_bytes + incoming > self.budget_bytes:
                    self._prune_locked()
                if self._payload_bytes + incoming > self.budget_bytes:
                    self.alarm = (
                        f"journal budget of {self.budget_bytes} bytes reached with "
                        f"{self._payload_bytes} bytes kept for sinks that have not caught up"
                    )
                    raise JournalFullError(self.alarm)
            bounds = [
                (
                    _ts_bounds(frame, "ts" if kind == "readings" else "first_ts")[0],
                    _ts_bounds(frame, "ts" if kind == "readings" else "last_ts")[1],
                )
                for frame, _, _ in encoded
            ]
            created_us = time.time_ns() // 1000
            try:
                self._db.execute("BEGIN IMMEDIATE")
                # Read the head under the write lock: another process (``pue-agent import``)
                # may have appended since we last wrote, and the chain must continue from it.
                seq, prev = self._head_locked()
                rows = []
                results = []
                for (frame, source, payload), (first_ts, last_ts) in zip(
                    encoded, bounds, strict=True
                ):
                    seq += 1
                    link = chain_hash(prev, seq, kind, source, frame.height, created_us, payload)
                    rows.append(
                        (
                            seq,
                            created_us,
                            kind,
                            source,
                            frame.height,
                            first_ts,
                            last_ts,
                            payload,
                            prev,
                            link,
                        )
                    )
                    results.append(AppendResult(seq=seq, hash=link.hex(), n_rows=frame.height))
                    prev = link
                self._db.executemany(
                    "INSERT INTO batches (seq, created_us, kind, source, n_rows, first_ts, last_ts,"
                    " payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # The head is kept apart from the rows so that deleting the newest batches
                # (which leaves a shorter but self-consistent chain) is still detected.
                self._db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("head_seq", str(seq)), ("head_hash", prev.hex())],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise JournalError(f"journal write failed: {exc}") from exc
            self._head_seq, self._head_hash = seq, prev
            self._payload_bytes += incoming
            if kind == "readings" and self.alarm and self._payload_bytes < (self.budget_bytes or 0):
                self.alarm = None
            return results

    def record_gap(self, refused: pl.DataFrame, *, source: str, reason: str) -> AppendResult:
        """Record that reading batch ``refused`` could not be stored, so reports show the hole.

        The record is small (one row per device) and is written even over budget.
        """
        summary = (
            refused.lazy()
            .group_by("device")
            .agg(
                pl.col("ts").min().alias("first_ts"),
                pl.col("ts").max().alias("last_ts"),
                pl.len().cast(pl.Int64).alias("readings"),
            )
            .with_columns(pl.lit(reason).alias("reason"))
            .sort("device")
            .collect()
            .select(GAP_SCHEMA.names())
        )
        return self.append_many([(summary, source)], kind="gap")[0]

    # -- cursors and pruning -----------------------------------------------------------------

    def register_cursor(self, name: str) -> int:
        """Make sure consumer ``name`` has a cursor (new ones start before the oldest batch)."""
        with self._lock:
            base = int(self._meta("base_seq", "0"))
            self._db.execute(
                "INSERT OR IGNORE INTO cursors (name, seq, updated_us) VALUES (?, ?, ?)",
                (name, base, time.time_ns() // 1000),
            )
        return self.cursor(name)

    def cursor(self, name: str) -> int:
        """The last sequence number consumer ``name`` has fully processed."""
        row = self._reader().execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise JournalError(f"no cursor named {name!r}")
        return int(row[0])

    def cursors(self) -> dict[str, int]:
        """All cursors by consumer name."""
        rows = self._reader().execute("SELECT name, seq FROM cursors ORDER BY name").fetchall()
        return {str(name): int(seq) for name, seq in rows}

    def advance_cursor(self, name: str, seq: int) -> None:
        """Record that consumer ``name`` has durably handled every batch up to ``seq``.

        A full disk (or EIO) does not raise: the storage alarm is raised and the cursor
        stays where it was until a later advance succeeds (``MAX`` catches up). A cursor
        behind only means re-reading some batches after a restart, which every consumer
        handles; an exception here would stop the consumer, and with it the agent.

        Raises:
            JournalError: for any other database error.
        """
        alarm = f"cursor:{name}"
        with self._lock:
            try:
                self._db.execute(
                    "UPDATE cursors SET seq = MAX(seq, ?), updated_us = ? WHERE name = ?",
                    (seq, time.time_ns() // 1000, name),
                )
            except sqlite3.Error as exc:
                reason = metrics.storage_error(exc)
                if reason is None:
                    raise JournalError(f"cannot advance cursor {name!r}: {exc}") from exc
                metrics.raise_alarm("storage", alarm, reason)
                return
        metrics.clear_alarm("storage", alarm)

    def lag(self) -> dict[str, int]:
        """Batches each consumer is behind the head."""
        return {name: self._head_seq - seq for name, seq in self.cursors().items()}

    def prune(self) -> int:
        """Delete batches every consumer has processed; returns how many were deleted."""
        with self._lock:
            return self._prune_locked()

    def _prune_locked(self) -> int:
        cursors = [int(r[0]) for r in self._db.execute("SELECT seq FROM cursors").fetchall()]
        if not cursors:
            # No consumer has ever read this journal: nothing is known to be safe to drop.
            return 0
        upto = min(cursors)
        row = self._db.execute(
            "SELECT seq, hash FROM batches WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (upto,)
        ).fetchone()
        if row is None:
            return 0
        last_seq, last_hash = int(row[0]), bytes(row[1])
        self._db.execute("BEGIN IMMEDIATE")
        freed = self._db.execute(
            "SELECT COALESCE(SUM(length(payload)), 0), COUNT(*) FROM batches WHERE seq <= ?",
            (last_seq,),
        ).fetchone()
        self._db.execute("DELETE FROM batches WHERE seq <= ?", (last_seq,))
        self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("base_seq", str(last_seq)), ("base_hash", last_hash.hex())],
        )
        self._db.execute("COMMIT")
        self._payload_bytes -= int(freed[0])
        return int(freed[1])

    # -- reading -----------------------------------------------------------------------------

    def read(
        self, after_seq: int, *, limit: int = 64, kinds: Sequence[BatchKind] = ("readings", "gap")
    ) -> list[JournalBatch]:
        """Return up to ``limit`` batches with ``seq > after_seq``, in order."""
        placeholders = ",".join("?" for _ in kinds)
        rows = (
            self._reader()
            .execute(
                f"SELECT seq, kind, source, created_us, payload FROM batches "
                f"WHERE seq > ? AND kind IN ({placeholders}) ORDER BY seq LIMIT ?",
                (after_seq, *kinds, limit),
            )
            .fetchall()
        )
        return [
            JournalBatch(
                seq=int(seq),
                kind=kind,
                source=str(source),
                created_us=int(created),
                frame=_decode(bytes(payload)),
            )
            for seq, kind, source, created, payload in rows
        ]

    def read_raw(self, after_seq: int, *, limit: int = 64) -> list[RawBatch]:
        """Return up to ``limit`` batches with ``seq > after_seq`` as stored, undecoded.

        What a replicating sink sends: the payload bytes and chain fields exactly as
        hashed, so the receiver re-derives :func:`chain_hash` without re-encoding.
        """
        rows = (
            self._reader()
            .execute(
                "SELECT seq, kind, source, n_rows, created_us, payload, prev_hash, hash"
                " FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            .fetchall()
        )
        return [
            RawBatch(
                seq=int(seq),
                kind=kind,
                source=str(source),
                n_rows=int(n_rows),
                created_us=int(created),
                payload=bytes(payload),
                prev_hash=bytes(prev_hash),
                hash=bytes(link),
            )
            for seq, kind, source, n_rows, created, payload, prev_hash, link in rows
        ]

    def iter_batches(
        self, after_seq: int = 0, *, kinds: Sequence[BatchKind] = ("readings", "gap")
    ) -> Iterator[JournalBatch]:
        """Iterate over every batch after ``after_seq`` in order, a page at a time."""
        while True:
            page = self.read(after_seq, limit=64, kinds=kinds)
            if not page:
                return
            yield from page
            after_seq = page[-1].seq

    def gaps(self) -> pl.DataFrame:
        """Every recorded gap (refused data), with the batch sequence that recorded it."""
        frames = [
            b.frame.with_columns(pl.lit(b.seq).alias("seq"))
            for b in self.iter_batches(kinds=("gap",))
        ]
        if not frames:
            return pl.DataFrame(schema={**GAP_SCHEMA, "seq": pl.Int64()})
        return pl.concat(frames)

    def stats(self) -> dict[str, int | str | None]:
        """Counts and sizes for ``/metrics`` and ``pue-agent journal stats``."""
        row = (
            self._reader()
            .execute(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN kind = 'readings' THEN n_rows END), 0),"
                " MIN(seq) FROM batches"
            )
            .fetchone()
        )
        return {
            "batches": int(row[0]),
            "readings": int(row[1]),
            "first_seq": None if row[2] is None else int(row[2]),
            "head_seq": self._head_seq,
            "head_hash": self._head_hash.hex(),
            "payload_bytes": self._payload_bytes,
            "budget_bytes": self.budget_bytes,
            "alarm": self.alarm,
        }

    # -- verification ------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Re-derive the whole chain and name the first batch that breaks it."""
        db = self._reader()
        base_seq_row = db.execute("SELECT value FROM meta WHERE key = 'base_seq'").fetchone()
        base_hash_row = db.execute("SELECT value FROM meta WHERE key = 'base_hash'").fetchone()
        expected_seq = int(base_seq_row[0]) if base_seq_row else 0
        prev = bytes.fromhex(base_hash_row[0]) if base_hash_row else _GENESIS_HASH
        first: int | None = None
        checked = 0
        cursor = db.execute(
            "SELECT seq, created_us, kind, source, n_rows, payload, prev_hash, hash "
            "FROM batches ORDER BY seq"
        )

        def fail(problem: str, seq: int) -> VerifyReport:
            return VerifyReport(False, checked, first, seq, prev.hex(), problem, seq)

        for seq, created, kind, source, n_rows, payload, prev_hash, stored in cursor:
            expected_seq += 1
            if first is None:
                first = int(seq)
            if seq != expected_seq:
                missing = (
                    f"batch {expected_seq}"
                    if seq == expected_seq + 1
                    else f"batches {expected_seq}-{seq - 1}"
                )
                return fail(f"{missing} missing: the chain jumps to batch {seq}", expected_seq)
            if bytes(prev_hash) != prev:
                return fail(f"batch {seq}: does not link to the batch before it", int(seq))
            link = chain_hash(prev, int(seq), kind, source, int(n_rows), int(created), payload)
            if link != bytes(stored):
                return fail(
                    f"batch {seq}: content does not match its hash (altered or moved)", int(seq)
                )
            try:
                height = _decode(bytes(payload)).height
            except Exception as exc:  # noqa: BLE001 - any decode failure is a corrupt batch
                return fail(f"batch {seq}: payload unreadable ({exc})", int(seq))
            if height != n_rows:
                return fail(f"batch {seq}: holds {height} rows, header says {n_rows}", int(seq))
            prev = link
            checked += 1
        head_row = db.execute("SELECT value FROM meta WHERE key = 'head_seq'").fetchone()
        head_seq = int(head_row[0]) if head_row else expected_seq
        if expected_seq != head_seq:
            return VerifyReport(
                False,
                checked,
                first,
                expected_seq,
                prev.hex(),
                f"batches {expected_seq + 1}-{head_seq} missing: the chain ends at batch "
                f"{expected_seq} but the recorded head is batch {head_seq}",
                expected_seq + 1,
            )
        return VerifyReport(True, checked, first, expected_seq if checked else None, prev.hex())

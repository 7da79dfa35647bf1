"""The site aggregator's merge: chain continuity per agent and redundant-pair de-duplication.

:class:`MergeState` is what one aggregator host remembers, in one SQLite file committed
in one transaction after each emitted batch (so the three always agree):

* ``position`` — the last stream sequence whose readings are in the local journal;
* ``heads`` — per publishing agent, the last journal batch (seq, hash) taken in, so the
  next one must be ``seq + 1`` with ``prev_hash`` equal to that hash;
* ``last`` — per (device, point, quantity), the newest reading taken in (µs), for
  de-duplication across pages (one Arrow blob, held in memory between pages);
* ``provenance`` — which agents' batches (first..last seq) each local journal batch
  holds: the source agent of every reading, recorded;
* ``breaks`` — every chain problem found (kept for the auditor, and alarmed).

De-duplication (:func:`dedupe`): two agents polling the same meter produce readings of
the same point a moment apart. Per (device, point, quantity), readings are taken in
time order and a reading closer than ``window_us`` to the one before it — or not newer
than ``window_us`` past the last one already taken in — is a duplicate and dropped.
So of two pollers' readings of one poll, the earlier-stamped one is kept (equal stamps:
the one earlier on the stream) and the other is dropped, *whatever their values*: a
register read a few hundred milliseconds apart legitimately differs, and picking one
reading per poll, never averaging, keeps every kept value one a device really
reported. Dropped readings whose value differs from their kept twin of the same page
are counted (``disagreed``) so a poller that reads a different register shows up.
"""

from __future__ import annotations

import io
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

__all__ = ["NEWEST_SCHEMA", "ChainVerdict", "DedupeResult", "MergeState", "dedupe"]

_GENESIS = bytes(32)
_KEY = ["device", "point", "quantity"]

_LAST_SCHEMA = pl.Schema(
    {"device": pl.String(), "point": pl.String(), "quantity": pl.String(), "last_us": pl.Int64()}
)

#: The newest kept reading per point (what :meth:`MergeState.commit` remembers).
NEWEST_SCHEMA = pl.Schema(
    {"device": pl.String(), "point": pl.String(), "quantity": pl.String(), "ts_us": pl.Int64()}
)

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 0), stream_seq INTEGER);
CREATE TABLE IF NOT EXISTS heads (agent TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS last (id INTEGER PRIMARY KEY CHECK (id = 0), frame BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS provenance (
    local_seq INTEGER, agent TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    stream_first INTEGER NOT NULL, stream_last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS breaks (
    stream_seq INTEGER NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL, problem TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """What to do with one received batch."""

    #: ``take`` (in chain order), ``duplicate`` (seq already taken in) or ``reject``
    #: (its own hash does not match its content: never emitted).
    action: str
    #: A continuity problem to record and alarm on (the batch may still be taken).
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class DedupeResult:
    """Readings kept, and what was dropped."""

    kept: pl.DataFrame
    dropped: int
    disagreed: int
    #: Newest kept timestamp (µs) per key, to remember.
    newest: pl.DataFrame


class MergeState:
    """The durable merge state of one aggregator host (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the state file at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA_SQL)
        self._lock = threading.Lock()
        row = self._db.execute("SELECT stream_seq FROM position WHERE id = 0").fetchone()
        self.position: int = int(row[0]) if row else 0
        self._last: pl.DataFrame | None = None
        self.heads: dict[str, tuple[int, bytes]] = {
            str(agent): (int(seq), bytes(link))
            for agent, seq, link in self._db.execute("SELECT agent, seq, hash FROM heads")
        }

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @staticmethod
    def check(
        seq: int, prev_hash: bytes, link_ok: bool, *, head: tuple[int, bytes] | None
    ) -> ChainVerdict:
        """Judge batch ``seq`` of one agent against that agent's chain ``head`` so far.

        Args:
            seq: The batch's sequence in its agent's journal.
            prev_hash: The link it claims to follow.
            link_ok: Whether its own hash matches its header and payload.
            head: The agent's last batch taken in (seq, hash); ``None`` before the first.
        """
        if not link_ok:
            return ChainVerdict("reject", f"batch {seq}: content does not match its hash")
        if head is None:
            if seq == 1 and prev_hash == _GENESIS:
                return ChainVerdict("take")
            # The stream's retention (or a late first start) begins mid-chain.
            return ChainVerdict("take", f"chain joined at batch {seq} (earlier ones not seen)")
        if seq <= head[0]:
            return ChainVerdict("duplicate")
        if seq != head[0] + 1:
            return ChainVerdict(
                "take", f"batches {head[0] + 1}-{seq - 1} missing: the chain jumps to {seq}"
            )
        if prev_hash != head[1]:
            return ChainVerdict("take", f"batch {seq}: does not link to batch {head[0]}")
        return ChainVerdict("take")

    @property
    def last(self) -> pl.DataFrame:
        """The newest reading taken in per point (``device, point, quantity, last_us``).

        Held in memory (loaded once, kept in step by :meth:`commit`): a page's readings
        are joined against it, never looked up row by row.
        """
        if self._last is None:
            row = self._db.execute("SELECT frame FROM last WHERE id = 0").fetchone()
            self._last = (
                pl.read_ipc(io.BytesIO(bytes(row[0]))).cast(_LAST_SCHEMA)
                if row
                else pl.DataFrame(schema=_LAST_SCHEMA)
            )
        return self._last

    def commit(
        self,
        *,
        stream_seq: int,
        heads: dict[str, tuple[int, bytes]],
        newest: pl.DataFrame,
        provenance: Iterable[tuple[int | None, str, int, int, int, int]],
        breaks: Iterable[tuple[int, str, int, str]],
    ) -> None:
        """Record, in one transaction, everything a handled page changed."""
        last = self.last
        blob: bytes | None = None
        if newest.height:
            merged = pl.concat([last, newest.rename({"ts_us": "last_us"})])
            last = merged.group_by(_KEY).agg(pl.col("last_us").max())
            # One blob per page: rewriting the whole table (a few MB for 100,000 points) is
            # far cheaper than upserting every point's row, and commits with the position.
            buffer = io.BytesIO()
            last.write_ipc(buffer, compression="lz4")
            blob = buffer.getvalue()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO position (id, stream_seq) VALUES (0, ?)", (stream_seq,)
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO heads (agent, seq, hash) VALUES (?, ?, ?)",
                    [(agent, seq, link) for agent, (seq, link) in heads.items()],
                )
                if blob is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO last (id, frame) VALUES (0, ?)", (blob,)
                    )
                self._db.executemany("INSERT INTO provenance VALUES (?, ?, ?, ?, ?, ?)", provenance)
                self._db.executemany("INSERT INTO breaks VALUES (?, ?, ?, ?)", breaks)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.position = stream_seq
        self.heads.update(heads)
        self._last = last

    def recorded_local_seq(self) -> int:
        """The newest local journal batch a commit recorded (0 before the first)."""
        row = self._db.execute("SELECT MAX(local_seq) FROM provenance").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def take_journalled(self, readings: pl.DataFrame) -> None:
        """Count readings already in the local journal as taken in.

        A crash between the local journal's commit of a page and :meth:`commit` leaves
        those readings journalled but the position behind: the page is replayed, and
        without this its readings would be journalled twice. Once they are in
        :attr:`last`, :func:`dedupe` drops them; the next commit persists it.
        """
        if readings.height == 0:
            return
        newest = readings.group_by(_KEY).agg(pl.col("ts").dt.epoch("us").max().alias("last_us"))
        merged = pl.concat([self.last, newest.cast(_LAST_SCHEMA)])
        self._last = merged.group_by(_KEY).agg(pl.col("last_us").max())

    def provenance(self) -> pl.DataFrame:
        """Every recorded (local journal batch, agent, first..last agent seq) row."""
        rows = self._db.execute(
            "SELECT local_seq, agent, first_seq, last_seq FROM provenance ORDER BY rowid"
        ).fetchall()
        return pl.DataFrame(
            rows,
            schema={
                "local_seq": pl.Int64,
                "agent": pl.String,
                "first_seq": pl.Int64,
                "last_seq": pl.Int64,
            },
            orient="row",
        )

    def breaks(self) -> list[tuple[int, str, int, str]]:
        """Every chain problem recorded (stream seq, agent, batch seq, problem)."""
        rows = self._db.execute("SELECT * FROM breaks ORDER BY rowid").fetchall()
        return [(int(a), str(b), int(c), str(d)) for a, b, c, d in rows]


def dedupe(readings: pl.DataFrame, last: pl.DataFrame, window_us: int) -> DedupeResult:
    """Keep one reading per poll of each point (see the module docstring for the rule).

    Args:
        readings: Reading frames of one page, in stream order (``READING_SCHEMA``).
        last: ``device, point, quantity, last_us``: newest reading already taken in.
        window_us: Readings of one point closer than this are one reading.

    Returns:
        The kept readings (sorted by key and time), counts, and the newest kept per key.
    """
    ts = pl.col("ts").dt.epoch("us")
    same_key = pl.all_horizontal(pl.col(k) == pl.col(k).shift(1) for k in _KEY).fill_null(False)
    marked = (
        readings.with_row_index("_order")
        # Sorting on a 64-bit hash of the key is several times cheaper than on three
        # strings; adjacency is then checked on the real key, so a hash collision can
        # only keep a twin (never drop a reading of another point).
        .with_columns(pl.struct(_KEY).hash(seed=0).alias("_h"))
        .sort(["_h", "ts", "_order"])
        .join(last, on=_KEY, how="left", maintain_order="left")
        .with_columns((same_key & (ts - ts.shift(1) <= window_us)).fill_null(False).alias("_near"))
        .with_columns(
            ((ts <= pl.col("last_us") + window_us).fill_null(False) | pl.col("_near")).alias(
                "_dup"
            ),
            # Only a twin in this page is known here; one taken in earlier is not kept.
            (pl.col("_near") & (pl.col("value") != pl.col("value").shift(1))).alias("_differs"),
        )
    )
    dropped = marked.filter(pl.col("_dup"))
    kept = marked.filter(~pl.col("_dup")).drop(
        "_order", "_h", "last_us", "_near", "_dup", "_differs"
    )
    newest = kept.group_by(_KEY).agg(ts.max().alias("ts_us"))
    return DedupeResult(
        kept=kept,
        dropped=dropped.height,
        disagreed=int(dropped["_differs"].fill_null(False).sum()),
        newest=newest.select(*_KEY, "ts_us"),
    )

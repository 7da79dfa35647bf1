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
* ``received`` — every publisher batch taken in: agent, seq, kind, rows, first and
  last timestamp, its chain hashes, its stream seq, the local journal batch holding
  its readings and the page that merged it (what a report's ``journal.json`` lists per
  agent for the month, and the page order ``verify`` replays the merge in);
* ``publisher_gaps`` — the rows of every publisher ``gap`` batch taken in (readings a
  publisher's journal refused), so the site's report shows the holes of its agents;
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

The rule is applied page by page with a running ``last``, so its result depends on the
pages: a reading that arrives after one of its point newer by more than the window is
dropped (``late``) even if no twin of it was ever taken in. :func:`replay` re-applies it
to recorded pages exactly as the collector did, for ``verify``.
"""

from __future__ import annotations

import io
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from agent.readings import READING_SCHEMA

__all__ = [
    "CONTRIBUTION_SCHEMA",
    "DEFAULT_DEDUPE_WINDOW_S",
    "LAST_SCHEMA",
    "NEWEST_SCHEMA",
    "PUBLISHER_GAP_SCHEMA",
    "RECEIVED_SCHEMA",
    "ChainVerdict",
    "DedupeResult",
    "MergeState",
    "Received",
    "advance_last",
    "chain_breaks",
    "dedupe",
    "merge_order",
    "month_contributions",
    "parse_merge_order",
    "publisher_gaps",
    "received_in",
    "replay",
    "state_file",
]

#: Readings of one point closer than this (s) are one poll (collector option ``dedupe_window_s``).
DEFAULT_DEDUPE_WINDOW_S = 2.0

_GENESIS = bytes(32)
_KEY = ["device", "point", "quantity"]

#: The newest reading taken in per point (:attr:`MergeState.last`; empty: nothing yet).
LAST_SCHEMA = pl.Schema(
    {"device": pl.String(), "point": pl.String(), "quantity": pl.String(), "last_us": pl.Int64()}
)

#: The newest kept reading per point (what :meth:`MergeState.commit` remembers).
NEWEST_SCHEMA = pl.Schema(
    {"device": pl.String(), "point": pl.String(), "quantity": pl.String(), "ts_us": pl.Int64()}
)

#: One publisher batch taken in (``received`` table; timestamps in µs since the epoch).
RECEIVED_SCHEMA = pl.Schema(
    {
        "agent": pl.String(),
        "seq": pl.Int64(),
        "kind": pl.String(),
        "n_rows": pl.Int64(),
        "first_us": pl.Int64(),
        "last_us": pl.Int64(),
        "prev_hash": pl.Binary(),
        "hash": pl.Binary(),
        "stream_seq": pl.Int64(),
        "local_seq": pl.Int64(),
        # The page that merged it: the stream seq its page's commit recorded.
        "page": pl.Int64(),
    }
)

#: The rows of a publisher's gap batch, with the batch that carried them.
PUBLISHER_GAP_SCHEMA = pl.Schema(
    {
        "agent": pl.String(),
        "seq": pl.Int64(),
        "device": pl.String(),
        "first_ts": pl.Datetime("us", "UTC"),
        "last_ts": pl.Datetime("us", "UTC"),
        "readings": pl.Int64(),
        "reason": pl.String(),
    }
)

#: Per agent, the batches of its chain that hold data of a period (:func:`month_contributions`).
CONTRIBUTION_SCHEMA = pl.Schema(
    {
        "agent": pl.String(),
        "first_seq": pl.Int64(),
        "last_seq": pl.Int64(),
        "batches": pl.Int64(),
        "reading_batches": pl.Int64(),
        "readings": pl.Int64(),
        "gap_batches": pl.Int64(),
    }
)

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 0), stream_seq INTEGER);
CREATE TABLE IF NOT EXISTS heads (agent TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS last (id INTEGER PRIMARY KEY CHECK (id = 0), frame BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS provenance (
    local_seq INTEGER, agent TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    stream_first INTEGER NOT NULL, stream_last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS received (
    agent TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, n_rows INTEGER NOT NULL,
    first_us INTEGER, last_us INTEGER, prev_hash BLOB NOT NULL, hash BLOB NOT NULL,
    stream_seq INTEGER NOT NULL, local_seq INTEGER, page INTEGER NOT NULL,
    PRIMARY KEY (agent, seq)
);
CREATE INDEX IF NOT EXISTS received_time ON received (last_us);
CREATE TABLE IF NOT EXISTS publisher_gaps (
    agent TEXT NOT NULL, seq INTEGER NOT NULL, device TEXT NOT NULL, first_us INTEGER NOT NULL,
    last_us INTEGER NOT NULL, readings INTEGER NOT NULL, reason TEXT NOT NULL
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
    #: Every reading dropped (late ones included).
    dropped: int
    disagreed: int
    #: Of ``dropped``: older by more than the window than the newest reading of their
    #: point already taken in, and not within the window of the page's reading of the
    #: point before them (that would be a twin, counted as a duplicate). Either a
    #: lagging poller's copy of a poll taken in earlier or a reading no other poller
    #: delivered: the aggregator keeps only the newest reading per point, so it cannot
    #: tell which (``verify``'s re-merge can).
    late: int
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
                pl.read_ipc(io.BytesIO(bytes(row[0]))).cast(LAST_SCHEMA)
                if row
                else pl.DataFrame(schema=LAST_SCHEMA)
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
        received: Iterable[Received] = (),
        gaps: pl.DataFrame | None = None,
    ) -> None:
        """Record, in one transaction, everything a handled page changed.

        Args:
            stream_seq: The page's last stream sequence.
            heads: The new chain head of each agent the page advanced.
            newest: Newest kept reading per point (:attr:`DedupeResult.newest`).
            provenance: ``(local_seq, agent, first_seq, last_seq, stream_first,
                stream_last)`` per agent of the page.
            breaks: Chain problems found ``(stream_seq, agent, seq, problem)``.
            received: One row per publisher batch taken in (``RECEIVED_SCHEMA`` order).
            gaps: Rows of publisher gap batches taken in (``PUBLISHER_GAP_SCHEMA``).
        """
        gap_rows = (
            []
            if gaps is None or gaps.height == 0
            else gaps.select(
                "agent",
                "seq",
                "device",
                pl.col("first_ts").dt.epoch("us"),
                pl.col("last_ts").dt.epoch("us"),
                "readings",
                "reason",
            ).rows()
        )
        last = self.last
        blob: bytes | None = None
        if newest.height:
            last = advance_last(last, newest)
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
                # OR REPLACE: a page replayed after a crash before this commit re-sends it.
                self._db.executemany(
                    "INSERT OR REPLACE INTO received VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    received,
                )
                self._db.executemany(
                    "INSERT INTO publisher_gaps VALUES (?, ?, ?, ?, ?, ?, ?)", gap_rows
                )
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
        merged = pl.concat([self.last, newest.cast(LAST_SCHEMA)])
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

    def publisher_gaps(self) -> pl.DataFrame:
        """Every publisher gap row taken in (``PUBLISHER_GAP_SCHEMA``)."""
        return _gap_frame(self._db, None, None)


#: A ``received`` row: agent, seq, kind, n_rows, first_us, last_us, prev_hash, hash,
#: stream_seq, local_seq, page.
Received = tuple[str, int, str, int, int | None, int | None, bytes, bytes, int, int | None, int]


def advance_last(last: pl.DataFrame, newest: pl.DataFrame) -> pl.DataFrame:
    """``last`` (``LAST_SCHEMA``) moved on by a page's newest kept readings (``NEWEST_SCHEMA``)."""
    merged = pl.concat([last, newest.select(*_KEY, pl.col("ts_us").alias("last_us"))])
    return merged.group_by(_KEY).agg(pl.col("last_us").max())


def state_file(state_dir: Path, collector: str) -> Path:
    """Where the ``nats`` collector named ``collector`` keeps its merge state."""
    return state_dir / "nats" / collector / "merge.sqlite"


def _read_only(path: Path) -> sqlite3.Connection:
    # Read-only URI: a report never writes to (or locks) a running aggregator's state.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _gap_frame(db: sqlite3.Connection, lo_us: int | None, hi_us: int | None) -> pl.DataFrame:
    args: tuple[int, ...]
    if not _has_table(db, "publisher_gaps"):
        return pl.DataFrame(schema=PUBLISHER_GAP_SCHEMA)
    where, args = "", ()
    if lo_us is not None and hi_us is not None:
        where, args = " WHERE last_us >= ? AND first_us < ?", (lo_us, hi_us)
    rows = db.execute(
        "SELECT agent, seq, device, first_us, last_us, readings, reason FROM publisher_gaps"
        f"{where} ORDER BY agent, seq, device",
        args,
    ).fetchall()
    frame = pl.DataFrame(
        rows,
        schema={**PUBLISHER_GAP_SCHEMA, "first_ts": pl.Int64(), "last_ts": pl.Int64()},
        orient="row",
    )
    return frame.with_columns(
        pl.from_epoch("first_ts", "us").dt.replace_time_zone("UTC"),
        pl.from_epoch("last_ts", "us").dt.replace_time_zone("UTC"),
    )


def publisher_gaps(path: Path, lo_us: int, hi_us: int) -> pl.DataFrame:
    """Publisher gap rows of the state file at ``path`` overlapping ``[lo_us, hi_us)``."""
    db = _read_only(path)
    try:
        return _gap_frame(db, lo_us, hi_us)
    finally:
        db.close()


def received_in(path: Path, lo_us: int, hi_us: int, *, window_us: int = 0) -> pl.DataFrame:
    """The received batches of the pages that merged data of a period, per agent.

    A batch holds data of ``[lo_us, hi_us)`` when its timestamps overlap it (readings,
    or a gap's refused span). The pages from the first to the last that merged such a
    batch — or one with data in the ``window_us`` before ``lo_us``, which can still
    drop a reading of the period as a twin — are the ones a re-merge must replay, every
    batch of them: another agent's batch of an earlier or later period in those pages
    moved the merge's newest reading per point too. Per agent, every received batch
    between its first and its last one in those pages is returned (``RECEIVED_SCHEMA``
    plus ``in_period``: whether it holds data of the period itself), so a seq absent
    from the rows is one the aggregator never took in. Empty for a state file older
    than the ``received`` table.
    """
    db = _read_only(path)
    try:
        if not _has_table(db, "received"):
            rows: list[Any] = []
        else:
            rows = db.execute(
                "WITH pages AS (SELECT MIN(page) AS lo, MAX(page) AS hi FROM received"
                " WHERE last_us >= ? AND first_us < ?),"
                " span AS (SELECT agent, MIN(seq) AS lo, MAX(seq) AS hi FROM received, pages"
                " WHERE page BETWEEN pages.lo AND pages.hi GROUP BY agent)"
                " SELECT r.*, (r.last_us >= ? AND r.first_us < ?) FROM received r"
                " JOIN span s ON r.agent = s.agent AND r.seq BETWEEN s.lo AND s.hi"
                " ORDER BY r.agent, r.seq",
                (lo_us - window_us, hi_us, lo_us, hi_us),
            ).fetchall()
    finally:
        db.close()
    return pl.DataFrame(
        rows, schema={**RECEIVED_SCHEMA, "in_period": pl.Boolean()}, orient="row"
    ).with_columns(pl.col("in_period").fill_null(False))


def month_contributions(received: pl.DataFrame) -> pl.DataFrame:
    """Per agent, counts of the batches of :func:`received_in` that hold the period's data.

    A gap batch's ``n_rows`` counts its rows (one per device), not the readings refused:
    those are in :func:`publisher_gaps`. An agent whose batches of those pages hold no
    data of the period itself has zero counts.
    """
    in_period = received.filter(pl.col("in_period"))
    is_gap = pl.col("kind") == "gap"
    return (
        received.group_by("agent")
        .agg(pl.col("seq").min().alias("first_seq"), pl.col("seq").max().alias("last_seq"))
        .join(
            in_period.group_by("agent").agg(
                pl.len().cast(pl.Int64).alias("batches"),
                (~is_gap).sum().cast(pl.Int64).alias("reading_batches"),
                pl.col("n_rows").filter(~is_gap).sum().cast(pl.Int64).alias("readings"),
                is_gap.sum().cast(pl.Int64).alias("gap_batches"),
            ),
            on="agent",
            how="left",
        )
        .sort("agent")
        .select(CONTRIBUTION_SCHEMA.names())
        .cast(CONTRIBUTION_SCHEMA)
        .fill_null(0)
    )


def merge_order(received: pl.DataFrame, agents: list[str]) -> str:
    """The pages of :func:`received_in`'s reading batches, agents in stream order, as text.

    Pages are separated by ``;``, a page's entries by ``,``; an entry is an index into
    ``agents`` (``i``) or a run of that agent's consecutive batches (``i*n``). An
    agent's batches come in seq order, so the n-th batch an index stands for is the
    n-th reading batch of that agent in the rows. ``"1*8;1,0,1,0"``: a page of eight of
    ``agents[1]``'s batches, then a page of four alternating. Pages that merged no
    reading batch are left out (they moved nothing). About two characters per batch
    (a backlog's page is one run): the least that lets :func:`replay` redo the merge.
    """
    index = pl.DataFrame(
        {"agent": agents, "_i": list(range(len(agents)))},
        schema={"agent": pl.String, "_i": pl.Int64},
    )
    batches = (
        received.filter(pl.col("kind") == "readings")
        .join(index, on="agent", how="inner")
        .sort("page", "stream_seq")
        .select("page", "_i")
    )
    if batches.height == 0:
        return ""
    changed = (pl.col("page") != pl.col("page").shift(1)) | (pl.col("_i") != pl.col("_i").shift(1))
    runs = (
        batches.with_columns(changed.fill_null(True).cum_sum().alias("_run"))
        .group_by("_run", maintain_order=True)
        .agg(pl.col("page").first(), pl.col("_i").first(), pl.len().alias("n"))
        .with_columns(
            pl.when(pl.col("n") > 1)
            .then(pl.format("{}*{}", "_i", "n"))
            .otherwise(pl.col("_i").cast(pl.String))
            .alias("entry")
        )
    )
    pages = runs.group_by("page", maintain_order=True).agg(pl.col("entry").str.join(","))
    return ";".join(pages["entry"].to_list())


def parse_merge_order(text: str) -> list[list[tuple[int, int]]]:
    """:func:`merge_order`'s text as pages of ``(agent index, batches)`` runs.

    Raises:
        ValueError: naming the first entry that is not ``i`` or ``i*n`` (n >= 1).
    """
    pages: list[list[tuple[int, int]]] = []
    for page in text.split(";") if text else []:
        runs: list[tuple[int, int]] = []
        for entry in page.split(","):
            index, star, count = entry.partition("*")
            if not index.isdigit() or (star and not count.isdigit()):
                raise ValueError(f"merge order entry {entry!r} is not i or i*n")
            runs.append((int(index), int(count) if count else 1))
            if runs[-1][1] < 1:
                raise ValueError(f"merge order entry {entry!r} runs no batch")
        pages.append(runs)
    return pages


def replay(
    pages: Iterable[pl.DataFrame], window_us: int, *, last: pl.DataFrame | None = None
) -> DedupeResult:
    """Merge pages of readings as the ``nats`` collector does: one :func:`dedupe` per page.

    Each page's readings are de-duplicated against the newest reading per point kept
    on the pages before it (starting from ``last``, or nothing), which then moves on
    with the page's newest kept readings, as :meth:`MergeState.commit` moves it.

    Args:
        pages: Per page, its reading batches concatenated in stream order.
        window_us: The collector's de-duplication window.
        last: ``LAST_SCHEMA``: the newest reading per point before the first page.

    Returns:
        Every page's kept readings (in page order) and the summed counts; ``newest`` is
        the final newest reading per point (``NEWEST_SCHEMA``).
    """
    frames = [p.select(READING_SCHEMA.names()) for p in pages if p.height]
    before = pl.DataFrame(schema=LAST_SCHEMA) if last is None else last.cast(LAST_SCHEMA)
    if not frames:
        newest = before.select(*_KEY, pl.col("last_us").alias("ts_us"))
        return DedupeResult(pl.DataFrame(schema=READING_SCHEMA), 0, 0, 0, newest)
    # The collector keeps the newest reading per point as a frame it rewrites per page,
    # O(points) each time; here it is an array indexed by a number per point, so a page
    # costs what its own readings cost. Kept readings of a point only ever get newer
    # (a kept one is past the newest + window), so "newest" is a plain overwrite-by-max.
    every = pl.concat(frames, how="vertical")
    points = every.select(_KEY).unique(maintain_order=True).with_row_index("_p")
    every = every.join(points, on=_KEY, how="left", maintain_order="left")
    none = np.iinfo(np.int64).min
    newest_us = np.full(points.height, none, dtype=np.int64)
    known = before.join(points, on=_KEY, how="inner")
    newest_us[known["_p"].to_numpy()] = known["last_us"].to_numpy()
    kept: list[pl.DataFrame] = []
    dropped = disagreed = late = 0
    offset = 0
    # One iteration per page, as the collector: merging pages would change the result.
    for frame in frames:
        page = every.slice(offset, frame.height)
        offset += frame.height
        page_points = page.select(*_KEY, "_p").unique("_p")
        index = page_points["_p"].to_numpy()
        last_page = (
            page_points.with_columns(pl.Series("last_us", newest_us[index]))
            .filter(pl.col("last_us") != none)
            .select(LAST_SCHEMA.names())
        )
        result = dedupe(page.drop("_p"), last_page, window_us)
        kept.append(result.kept)
        dropped, disagreed, late = (
            dropped + result.dropped,
            disagreed + result.disagreed,
            late + result.late,
        )
        moved = result.newest.join(page_points, on=_KEY, how="inner")
        at = moved["_p"].to_numpy()
        newest_us[at] = np.maximum(newest_us[at], moved["ts_us"].to_numpy())
    final = points.with_columns(pl.Series("ts_us", newest_us)).filter(pl.col("ts_us") != none)
    untouched = before.join(points, on=_KEY, how="anti")
    return DedupeResult(
        kept=pl.concat(kept),
        dropped=dropped,
        disagreed=disagreed,
        late=late,
        newest=pl.concat(
            [
                untouched.select(*_KEY, pl.col("last_us").alias("ts_us")),
                final.select(*_KEY, "ts_us"),
            ]
        ).cast(NEWEST_SCHEMA),
    )


def chain_breaks(path: Path) -> list[tuple[int, str, int, str]]:
    """Every chain problem recorded in the state file at ``path`` (read-only)."""
    db = _read_only(path)
    try:
        rows = db.execute("SELECT * FROM breaks ORDER BY rowid").fetchall()
    finally:
        db.close()
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
            # Older than the newest reading taken in by more than the window: it arrived
            # after a newer one of its point (a twin of the page's previous one is not).
            (~pl.col("_near") & (ts < pl.col("last_us") - window_us))
            .fill_null(False)
            .alias("_late"),
        )
    )
    dropped = marked.filter(pl.col("_dup"))
    kept = marked.filter(~pl.col("_dup")).drop(
        "_order", "_h", "last_us", "_near", "_dup", "_differs", "_late"
    )
    newest = kept.group_by(_KEY).agg(ts.max().alias("ts_us"))
    return DedupeResult(
        kept=kept,
        dropped=dropped.height,
        disagreed=int(dropped["_differs"].fill_null(False).sum()),
        late=int(dropped["_late"].sum()),
        newest=newest.select(*_KEY, "ts_us"),
    )

"""The aggregator's outputs as the other sinks read them: intervals, KPIs and findings.

This is the one documented interface between the aggregator and the output sinks
(InfluxDB, MQTT). The aggregator writes interval parts, KPIs and rule findings into
the :class:`~agent.store.IntervalStore`. The other sinks follow the
store with a durable watermark per kind, kept under ``state_dir/sinks/<sink>/``,
and advance it only after the server took the rows:

* **intervals** — the aggregator tags each part with the journal sequence of the
  first batch of its page (``part-000000001234[-import].parquet``) and saves its
  state (``store/aggregator/<name>/state.json``: last batch ``S``) after the parts.
  A part whose tag is ``<= S`` is final (only a page re-run from an earlier state
  rewrites a part), so the watermark is a journal sequence ``W``: the rows to send
  are the parts tagged ``W < tag <= S``, in tag order.
* **KPIs / findings** — one Parquet file per month, rewritten on each refresh. When
  a file changed (inode, mtime, size), the rows not yet sent are found by an
  anti-join against a snapshot of what was sent (``<kind>-month=YYYY-MM.parquet``
  next to the watermark), so only new or changed rows go out. MQTT keeps the
  latest values instead: it republishes when the content hash changed.

Shutdown: an aggregator running in the same agent registers its progress on the
agent's board (:attr:`agent.plugins.ConsumerContext.aggregators`); a sink that
stops waits until that aggregator has finished its last refresh, then sends what
is new, so the store and the server agree when the agent has stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from agent.logs import get_logger
from agent.plugins import DerivedProgress
from agent.schemas import INTERVAL_SCHEMA
from agent.settings import AgentSettings
from agent.store import atomic_write_bytes

__all__ = [
    "DerivedFeed",
    "StoreRef",
    "TableKind",
    "locate_store",
]

_log = get_logger("aggregator.feed")

_PART = re.compile(r"^part-(\d{12})(?:-import)?\.parquet$")
#: Interval rows per write_frames call while catching up (parts are grouped up to this).
_CHUNK_ROWS = 200_000

TableKind = Literal["kpis", "findings"]


@dataclass(frozen=True)
class StoreRef:
    """Where the aggregator writes: the store root and the aggregator's name."""

    root: Path
    aggregator: str

    def state_seq(self) -> int:
        """Last journal batch whose intervals are in the store (0 before the first page)."""
        pointer = self.root / "aggregator" / self.aggregator / "state.json"
        try:
            return int(json.loads(pointer.read_text(encoding="utf-8"))["seq"])
        except (OSError, ValueError, KeyError):
            return 0


def locate_store(settings: AgentSettings) -> StoreRef:
    """The store the aggregator writes (:meth:`AgentSettings.store_path`) and its name."""
    entry = settings.aggregator_entry()
    name = (entry.name or entry.kind) if entry is not None else "aggregator"
    return StoreRef(root=settings.store_path(), aggregator=name)


# -- watermarks -------------------------------------------------------------------------------


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_size]


def _month_files(root: Path, kind: TableKind) -> dict[str, Path]:
    base = root / kind
    if not base.is_dir():
        return {}
    return {
        p.parent.name.removeprefix("month="): p
        for p in sorted(base.glob(f"month=*/{kind}.parquet"))
    }


def _frame_hash(frame: pl.DataFrame, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    digest.update(frame.write_csv().encode())
    return digest.hexdigest()


@dataclass
class DerivedFeed:
    """One sink's view of the store: what was sent, and what is new."""

    sink: str
    store: StoreRef
    directory: Path
    marks: dict[str, object] = field(default_factory=dict)
    #: The running agent's aggregator progress board (empty outside a running agent).
    aggregators: dict[Path, DerivedProgress] = field(default_factory=dict)

    @classmethod
    def for_sink(
        cls,
        sink: str,
        settings: AgentSettings,
        aggregators: dict[Path, DerivedProgress] | None = None,
    ) -> DerivedFeed:
        """The feed of sink ``sink``, its watermark loaded from ``state_dir/sinks/<sink>/``.

        Args:
            sink: The sink's name.
            settings: The agent's settings (where the store and the watermark live).
            aggregators: The running agent's board (``ConsumerContext.aggregators``).
        """
        directory = settings.state_dir / "sinks" / sink
        feed = cls(
            sink=sink,
            store=locate_store(settings),
            directory=directory,
            aggregators=aggregators if aggregators is not None else {},
        )
        path = directory / "derived.json"
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    feed.marks = loaded
            except ValueError:
                _log.warning("unreadable watermark file: starting over", file=str(path))
        return feed

    async def wait_for_aggregator(self, head: int, *, poll_s: float = 0.1) -> None:
        """At shutdown: wait until the agent's aggregator has refreshed up to ``head`` or ended."""
        while True:
            progress = self.aggregators.get(self.store.root.resolve())
            if progress is None or progress.finished or progress.derived_seq >= head:
                return
            await asyncio.sleep(poll_s)

    def _save(self) -> None:
        atomic_write_bytes(
            self.directory / "derived.json", json.dumps(self.marks, sort_keys=True).encode()
        )

    @property
    def intervals_mark(self) -> int:
        """Journal sequence up to which the store's interval parts were sent."""
        value = self.marks.get("intervals", 0)
        return int(value) if isinstance(value, int) else 0

    def _table_marks(self, kind: str) -> dict[str, object]:
        value = self.marks.setdefault(kind, {})
        assert isinstance(value, dict)
        return value

    # -- intervals ----------------------------------------------------------------------------

    def interval_groups(self) -> tuple[int, list[tuple[int, list[Path]]]]:
        """The aggregator's committed sequence and the new parts, grouped by tag, in order."""
        upto = self.store.state_seq()
        after = self.intervals_mark
        if upto <= after:
            return upto, []
        base = self.store.root / "intervals"
        by_tag: dict[int, list[Path]] = {}
        if base.is_dir():
            for path in base.glob("month=*/part-*.parquet"):
                match = _PART.match(path.name)
                if match is None:
                    continue
                tag = int(match.group(1))
                if after < tag <= upto:
                    by_tag.setdefault(tag, []).append(path)
        return upto, sorted((tag, sorted(paths)) for tag, paths in by_tag.items())

    async def send_intervals(self, write: Callable[[pl.DataFrame], Awaitable[bool]]) -> bool:
        """Send new interval parts through ``write``; the watermark follows each success.

        Returns:
            False when a write did not complete (the watermark stays before it).
        """
        upto, groups = await asyncio.to_thread(self.interval_groups)
        if upto <= self.intervals_mark:
            return True
        batch: list[Path] = []
        rows = 0
        last_tag = self.intervals_mark
        for index, (tag, paths) in enumerate(groups):
            batch += paths
            rows += sum(_parquet_rows(p) for p in paths)
            last_tag = tag
            if rows < _CHUNK_ROWS and index < len(groups) - 1:
                continue
            frame = await asyncio.to_thread(_read_parts, batch)
            if not await write(frame):
                return False
            self.marks["intervals"] = last_tag
            await asyncio.to_thread(self._save)
            batch, rows = [], 0
        self.marks["intervals"] = upto
        await asyncio.to_thread(self._save)
        return True

    # -- KPIs and findings (InfluxDB: changed rows) -------------------------------------------

    def _snapshot(self, kind: TableKind, month: str) -> Path:
        return self.directory / f"{kind}-month={month}.parquet"

    def changed_months(self, kind: TableKind) -> list[tuple[str, Path, list[int]]]:
        """Months whose ``kind`` file changed since it was last sent."""
        sent = self._table_marks(kind)
        out = []
        for month, path in _month_files(self.store.root, kind).items():
            key = _stat_key(path)
            if key is not None and sent.get(month) != key:
                out.append((month, path, key))
        return out

    def unsent_rows(
        self, kind: TableKind, month: str, path: Path
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """A month file's rows, and those that differ from (or are missing in) the snapshot."""
        current = pl.read_parquet(path)
        snapshot = self._snapshot(kind, month)
        if not snapshot.is_file():
            return current, current
        sent = pl.read_parquet(snapshot)
        if sent.schema != current.schema:
            return current, current
        return current, current.join(sent, on=current.columns, how="anti", nulls_equal=True)

    def mark_sent(self, kind: TableKind, month: str, sent: pl.DataFrame, key: list[int]) -> None:
        """Record ``sent`` (the file as of ``key``) as sent: snapshot first, watermark last."""
        self.directory.mkdir(parents=True, exist_ok=True)
        snapshot = self._snapshot(kind, month)
        tmp = snapshot.with_name(f".{snapshot.name}.tmp")
        sent.write_parquet(tmp)
        tmp.replace(snapshot)
        self._table_marks(kind)[month] = key
        self._save()

    async def send_tables(
        self, kind: TableKind, write: Callable[[pl.DataFrame], Awaitable[bool]]
    ) -> bool:
        """Send the new/changed rows of every changed month; False if a write did not complete."""
        for month, path, key in await asyncio.to_thread(self.changed_months, kind):
            current, rows = await asyncio.to_thread(self.unsent_rows, kind, month, path)
            if rows.height and not await write(rows):
                return False
            # The file may have been replaced after `key` was taken: the snapshot holds
            # what was read and sent, so the next round (another key) diffs against it.
            await asyncio.to_thread(self.mark_sent, kind, month, current, key)
        return True

    # -- KPIs and findings (MQTT: latest values) ----------------------------------------------

    def latest(self, kind: TableKind, months: int) -> pl.DataFrame | None:
        """The rows of the newest ``months`` month files of ``kind`` (None when there are none)."""
        files = list(_month_files(self.store.root, kind).values())[-months:]
        if not files:
            return None
        return pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")

    async def publish_latest(
        self,
        kind: TableKind,
        months: int,
        publish: Callable[[pl.DataFrame], Awaitable[object]],
        *,
        salt: str = "",
    ) -> bool:
        """Publish the latest rows of ``kind`` when their content changed; True if published."""
        frame = await asyncio.to_thread(self.latest, kind, months)
        if frame is None or frame.height == 0:
            return False
        digest = _frame_hash(frame, salt)
        if self.marks.get(f"{kind}_hash") == digest:
            return False
        await publish(frame)
        self.marks[f"{kind}_hash"] = digest
        await asyncio.to_thread(self._save)
        return True


def _parquet_rows(path: Path) -> int:
    try:
        return int(pl.scan_parquet(path).select(pl.len()).collect().item())
    except (OSError, pl.exceptions.PolarsError):
        return 0


def _read_parts(paths: list[Path]) -> pl.DataFrame:
    """Interval rows of ``paths`` in tag order (INTERVAL_SCHEMA + rejected_readings)."""
    frames = [pl.read_parquet(p) for p in paths if p.is_file()]
    if not frames:
        return pl.DataFrame(schema=INTERVAL_SCHEMA)
    return pl.concat(frames, how="vertical_relaxed").select(INTERVAL_SCHEMA.names())

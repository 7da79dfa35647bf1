"""The InfluxDB sink: journal readings (and derived frames) into InfluxDB 1.x or 2.x/3.x.

Raw readings follow the journal cursor strictly: batches are read from the
sink's cursor, serialised (vectorised, :mod:`agent.sinks.lineprotocol`) into
chunks of ``batch_points`` (or whatever arrived within ``flush_interval_s``),
and written with up to ``max_in_flight`` requests at once. The cursor moves
only over a contiguous prefix of chunks that the server acknowledged (or whose
refused points are durably quarantined), so an outage simply leaves the data in
the journal, and when the server is back the backlog is replayed in journal
order. Points are keyed by series and timestamp, so a chunk written twice
(a crash between the write and the cursor update) overwrites itself.

Failure handling, per write:

* no answer, 5xx, 429, 503, 408 -> retry with capped exponential backoff (or the
  server's ``Retry-After``), cursor stays put;
* 400 / 422 (partial write, type conflict, parse error) -> the chunk is split
  (by the conflict the server names, else in halves) until the refused points
  are isolated; those go to ``state_dir/quarantine/<sink>.jsonl`` with the
  server's message and an alarm; the rest is written; nothing is retried forever;
* 401 / 403 -> alarm naming the sink (never the secret), retry with backoff;
* 404 (database / bucket missing) -> alarm, retry with backoff;
* 413 -> the chunk is split in halves.

Derived data (intervals, KPIs, findings) is written through
:meth:`InfluxSink.write_frames`: after the journal work of each loop iteration
(at most every ``derived_interval_s``) the rows of the local store newer than the
sink's watermark (:mod:`agent.sinks.derived`) are written, and the watermark
advances only after the server took them, so a sink that was down catches up the
derived data too. At shutdown the sink waits for the aggregator's last refresh.

Routing: raw readings, journal gaps and the real-time PUE go to ``retention_policy``
(1.x) or ``bucket`` (2.x); intervals, KPIs and findings go to ``derived_retention_policy``
or ``derived_bucket`` when set (else to the same place), so raw data can be kept short and
KPIs forever (deploy/influxdb.md). The real-time PUE (measurement ``pue_realtime``) is
computed from the site's E_DC / E_IT formulas over the latest power readings
(:class:`agent.realtime.LatestPower`), one point per journal batch that moves it (of the
newest 16 batches: a backlog being caught up yields none for its older batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent import metrics
from agent.aggregator.feed import DerivedFeed, TableKind
from agent.journal import JournalBatch
from agent.logs import get_logger
from agent.plugins import ConsumerContext
from agent.readings import QUANTITIES
from agent.realtime import LatestPower
from agent.settings import AgentSettings, ConfigError, read_secret, validation_problems
from agent.sinks.health import (
    SINK_BYTES,
    SINK_FAILURES,
    SINK_POINTS,
    SINK_QUARANTINED,
    SinkHealth,
    redact,
)
from agent.sinks.influx_schema import (
    DERIVED_KINDS,
    REALTIME_SCHEMA,
    FrameKind,
    SiteTags,
    serialise,
)
from agent.sinks.influx_transport import (
    HttpOptions,
    Transport,
    V1Transport,
    V2Transport,
    WriteOutcome,
)
from agent.sinks.lineprotocol import encode_lines, escape_key, escape_measurement
from agent.sinks.quarantine import Quarantine
from agent.site import Site

__all__ = ["InfluxOptions", "InfluxSink", "WriteReport", "build"]

_log = get_logger("sinks.influxdb")

#: Statuses worth retrying as they are: the server (or the path to it) is unwell.
_RETRYABLE = {0, 408, 425, 429, 500, 502, 503, 504}
_DATA_ERRORS = {400, 422}
#: Journal batches behind the head that still yield real-time PUE points.
REALTIME_TAIL = 16
_AUTH_ERRORS = {401, 403}


class InfluxOptions(BaseModel):
    """Options of a ``[[sinks]]`` table with ``kind = "influxdb"``."""

    model_config = ConfigDict(extra="forbid")

    api: Literal["v2", "v1"] = Field(
        "v2", description="v2: InfluxDB 2.x/3.x/Cloud (influxdb-client); v1: InfluxDB 1.x /write."
    )
    url: str = Field(description="Base URL, e.g. https://influx.example:8086 (no credentials).")
    org: str | None = Field(None, description="v2: organisation.")
    bucket: str | None = Field(None, description="v2: bucket (readings, gaps, real-time PUE).")
    derived_bucket: str | None = Field(
        None, description="v2: bucket for intervals, KPIs and findings (default: bucket)."
    )
    token_secret: str | None = Field(None, description="v2: name of the token secret.")
    database: str | None = Field(None, description="v1: database.")
    retention_policy: str | None = Field(
        None, description="v1: retention policy of readings, gaps, real-time PUE (default: db's)."
    )
    derived_retention_policy: str | None = Field(
        None,
        description="v1: retention policy of intervals, KPIs, findings "
        "(default: retention_policy).",
    )
    username_secret: str | None = Field(None, description="v1: name of the user name secret.")
    password_secret: str | None = Field(None, description="v1: name of the password secret.")
    site: str | None = Field(None, description="Value of the site tag (default: the site id).")
    readings: bool | list[str] = Field(
        True, description="Write raw readings: all, none, or only these quantities."
    )
    batch_points: int = Field(50_000, ge=1, le=1_000_000, description="Points per request.")
    flush_interval_s: float = Field(
        1.0, gt=0, le=600, description="Longest a partial batch waits for more points."
    )
    max_in_flight: int = Field(4, ge=1, le=32, description="Concurrent write requests.")
    gzip: bool = Field(True, description="Compress request bodies.")
    ca_file: Path | None = Field(None, description="CA bundle to verify the server (TLS).")
    verify_tls: bool = True
    timeout_s: float = Field(30.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(10.0, gt=0, description="Cap of the retry backoff.")
    retry_after_max_s: float = Field(
        300.0, gt=0, description="Longest Retry-After honoured (a longer one is capped)."
    )
    derived: bool = Field(
        True, description="Write intervals, KPIs and findings from the local store."
    )
    realtime: bool = Field(
        True, description="Write the real-time PUE (pue_realtime) when a site is configured."
    )
    derived_interval_s: float = Field(
        5.0, gt=0, description="Shortest time between two looks at the local store."
    )

    @model_validator(mode="after")
    def _complete(self) -> InfluxOptions:
        if "@" in self.url.split("//", 1)[-1].split("/", 1)[0]:
            raise ValueError("url: put credentials in secrets, not in the URL")
        if self.api == "v2":
            missing = [n for n in ("org", "bucket", "token_secret") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"api v2 needs {', '.join(missing)}")
            if self.derived_retention_policy is not None:
                raise ValueError("derived_retention_policy is for api v1; use derived_bucket")
        else:
            if self.derived_bucket is not None:
                raise ValueError("derived_bucket is for api v2; use derived_retention_policy")
            if self.database is None:
                raise ValueError("api v1 needs database")
            if (self.username_secret is None) != (self.password_secret is None):
                raise ValueError("username_secret and password_secret go together")
        if isinstance(self.readings, list):
            unknown = sorted(set(self.readings) - set(QUANTITIES))
            if unknown:
                raise ValueError(f"readings: unknown quantities {unknown}")
        return self


@dataclass
class WriteReport:
    """What a :meth:`InfluxSink.write_frames` call did."""

    points: int = 0
    quarantined: int = 0
    #: False when the sink was stopping while the server was unavailable (nothing lost:
    #: the caller keeps its watermark and offers the frame again).
    complete: bool = True


@dataclass
class _Chunk:
    kind: FrameKind
    frames: list[pl.DataFrame]
    #: Journal sequence fully covered once this chunk and all before it are done.
    upto_seq: int
    #: Real-time PUE rows (REALTIME_SCHEMA) computed from the batches of this chunk.
    realtime: list[dict[str, Any]] = field(default_factory=list)


class _AbortedError(Exception):
    """The sink is stopping while the server is unavailable: leave the cursor alone."""


@dataclass
class InfluxSink:
    """Consumer of kind ``influxdb``."""

    name: str
    options: InfluxOptions
    settings: AgentSettings
    transport: Transport
    health: SinkHealth
    quarantine: Quarantine
    site: Site | None = None
    #: Where intervals, KPIs and findings go, when not where the readings go.
    derived_transport: Transport | None = None
    points_written: int = field(default=0, init=False)
    chunks_written: int = field(default=0, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _tags: SiteTags | None = field(default=None, init=False)
    _feed: DerivedFeed | None = field(default=None, init=False)
    _derived_at: float = field(default=float("-inf"), init=False)
    _latest: LatestPower | None = field(default=None, init=False)
    _realtime: list[dict[str, Any]] = field(default_factory=list, init=False)
    _realtime_ts: datetime | None = field(default=None, init=False)

    # -- public -------------------------------------------------------------------------------

    @property
    def alarm(self) -> str | None:
        """The current alarm sentence, if any."""
        return self.health.alarm

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        what = (
            "all readings"
            if o.readings is True
            else ("no raw readings" if o.readings is False else f"readings {o.readings}")
        )
        derived = "intervals, KPIs, findings"
        if self.derived_transport is not None:
            derived += f" to {self.derived_transport.describe()}"
        realtime = " + real-time PUE" if o.realtime else ""
        return (
            f"influxdb: {self.transport.describe()}; {what}{realtime} + {derived}; "
            f"{o.batch_points} points/request, {o.max_in_flight} in flight"
        )

    def _transport_for(self, kind: FrameKind) -> Transport:
        """Derived kinds go to the derived target when one is configured."""
        if kind in DERIVED_KINDS and self.derived_transport is not None:
            return self.derived_transport
        return self.transport

    def _site_tags(self) -> SiteTags:
        if self._tags is None:
            self._tags = SiteTags.from_site(self.site, site_id=self.options.site)
        return self._tags

    async def write_frames(self, kind: FrameKind, frame: pl.DataFrame) -> WriteReport:
        """Write a derived frame (``intervals``, ``kpis``, ``findings``) now.

        Returns once every point is acknowledged or quarantined; waits through
        outages (retrying) unless the sink is stopping.
        """
        report = WriteReport()
        quarantined_before = self.quarantine.count
        try:
            for start in range(0, max(frame.height, 1), self.options.batch_points):
                part = frame.slice(start, self.options.batch_points)
                report.points += await self._write_frame(kind, part)
        except _AbortedError:
            report.complete = False
        report.quarantined = self.quarantine.count - quarantined_before
        return report

    async def close(self) -> None:
        """Release the transports' connections."""
        await self.transport.aclose()
        if self.derived_transport is not None:
            await self.derived_transport.aclose()

    # -- derived data from the local store ----------------------------------------------------

    async def send_derived(self) -> bool:
        """Write the store's intervals, KPIs and findings newer than the watermarks.

        Returns:
            True when everything new was written (False: stopping during an outage, or
            the store could not be read; the watermarks stay and the rows come again).
        """
        feed = self._feed
        if feed is None:
            return True
        self._derived_at = time.monotonic()

        def writer(kind: FrameKind) -> Callable[[pl.DataFrame], Awaitable[bool]]:
            async def write(frame: pl.DataFrame) -> bool:
                return (await self.write_frames(kind, frame)).complete

            return write

        tables: tuple[TableKind, ...] = ("kpis", "findings")
        try:
            if not await feed.send_intervals(writer("intervals")):
                return False
            for table in tables:
                if not await feed.send_tables(table, writer(table)):
                    return False
        except (OSError, pl.exceptions.PolarsError) as exc:
            _log.error("cannot read the local store", sink=self.name, error=str(exc))
            return False
        return True

    async def _derived_if_due(self) -> None:
        if (
            self._feed is not None
            and time.monotonic() - self._derived_at >= self.options.derived_interval_s
        ):
            await self.send_derived()

    async def _derived_at_stop(self, head: int) -> None:
        if self._feed is None:
            return
        await self._feed.wait_for_aggregator(head)
        if not await self.send_derived():
            _log.warning(
                "stopping before the derived data was written: it is sent at the next start",
                sink=self.name,
            )

    # -- the consumer loop --------------------------------------------------------------------

    async def run(self, ctx: ConsumerContext) -> None:
        """Follow the journal from the cursor until stopping and caught up."""
        self._stopping = ctx.stopping
        if self.site is None:
            self.site = ctx.site
            self._tags = None
        journal = ctx.journal
        if self.options.derived and self.site is not None and self._feed is None:
            self._feed = await asyncio.to_thread(
                DerivedFeed.for_sink, self.name, self.settings, ctx.aggregators
            )
        if self.options.realtime and self.site is not None and self._latest is None:
            self._latest = LatestPower(self.site)
        read_after = await asyncio.to_thread(journal.cursor, self.name)
        inflight: deque[tuple[_Chunk, asyncio.Task[None]]] = deque()
        pending: list[pl.DataFrame] = []
        pending_rows = 0
        pending_since = 0.0
        pending_upto = read_after
        quiet_since: float | None = None
        try:
            while True:
                await self._reap(ctx, inflight, wait=len(inflight) >= self.options.max_in_flight)
                if len(inflight) >= self.options.max_in_flight:
                    continue
                batches = await asyncio.to_thread(journal.read, read_after, limit=16)
                for batch in batches:
                    self._track_realtime(batch, journal.head[0])
                    pieces = self._pieces(batch)
                    for i, piece in enumerate(pieces):
                        if not pending:
                            pending_since = time.monotonic()
                        pending.append(piece)
                        pending_rows += piece.height
                        # A batch split over chunks is complete only with its last piece.
                        pending_upto = batch.seq if i == len(pieces) - 1 else batch.seq - 1
                        if pending_rows >= self.options.batch_points:
                            chunk = _Chunk("readings", pending, pending_upto, self._take_realtime())
                            pending, pending_rows = [], 0
                            await self._dispatch(ctx, inflight, chunk)
                    read_after = batch.seq
                if batches:
                    quiet_since = None
                    continue
                # Caught up with the journal for now.
                due = pending and (
                    ctx.stopping.is_set()
                    or time.monotonic() - pending_since >= self.options.flush_interval_s
                )
                if due:
                    chunk = _Chunk("readings", pending, pending_upto, self._take_realtime())
                    await self._dispatch(ctx, inflight, chunk)
                    pending, pending_rows = [], 0
                    continue
                if ctx.stopping.is_set() and not pending:
                    await self._reap(ctx, inflight, wait=True, all_of_them=True)
                    # The pipeline commits its queue after setting `stopping` and then
                    # signals `new_data`; wait for a quiet second before calling it done.
                    now = time.monotonic()
                    if quiet_since is None:
                        quiet_since = now
                        ctx.new_data.clear()
                    if now - quiet_since >= 1.0:
                        await self._derived_at_stop(journal.head[0])
                        return
                    await _wait(ctx.new_data, 1.0 - (now - quiet_since))
                    continue
                await self._derived_if_due()
                timeout = (
                    max(0.0, self.options.flush_interval_s - (time.monotonic() - pending_since))
                    if pending
                    else min(5.0, self.options.derived_interval_s)
                )
                ctx.new_data.clear()
                if inflight:
                    # Wake on whichever comes first: new data, a flush deadline, a write done.
                    waiters: list[asyncio.Future[Any]] = [
                        asyncio.ensure_future(ctx.new_data.wait())
                    ]
                    waiters += [task for _, task in inflight]
                    await asyncio.wait(
                        waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiters[0].cancel()
                else:
                    await _wait(ctx.new_data, timeout, also=ctx.stopping)
        except _AbortedError:
            _log.warning(
                "stopping while InfluxDB is unavailable: unwritten batches stay in the journal",
                sink=self.name,
                cursor=await asyncio.to_thread(journal.cursor, self.name),
                head=journal.head[0],
            )
        finally:
            for _, task in inflight:
                task.cancel()
            await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
            await self.close()

    def _track_realtime(self, batch: JournalBatch, head: int) -> None:
        """Feed a readings batch to the latest powers; keep a row when the real-time PUE moved.

        Only the newest :data:`REALTIME_TAIL` batches of the journal count: live that is
        every batch, and catching up a backlog costs nothing for a figure that is about now.
        """
        if self._latest is None or batch.kind == "gap" or batch.seq <= head - REALTIME_TAIL:
            return
        self._latest.update(batch.frame)
        snap = self._latest.snapshot()
        if snap.pue_realtime is None or snap.as_of is None:
            return
        if self._realtime_ts is not None and snap.as_of <= self._realtime_ts:
            return
        self._realtime_ts = snap.as_of
        self._realtime.append(
            {
                "ts": snap.as_of,
                "pue": snap.pue_realtime,
                "e_dc_power_w": snap.e_dc_power_w,
                "e_it_power_w": snap.e_it_power_w,
                "meters_reporting": snap.meters_reporting,
                "meters_total": snap.meters_total,
            }
        )

    def _take_realtime(self) -> list[dict[str, Any]]:
        rows, self._realtime = self._realtime, []
        return rows

    def _pieces(self, batch: JournalBatch) -> list[pl.DataFrame]:
        if batch.kind == "gap":
            return [batch.frame.with_columns(pl.lit("gap").alias("_kind"))]
        frame = batch.frame
        size = self.options.batch_points
        if frame.height <= size:
            return [frame]
        return [frame.slice(start, size) for start in range(0, frame.height, size)]

    async def _dispatch(
        self,
        ctx: ConsumerContext,
        inflight: deque[tuple[_Chunk, asyncio.Task[None]]],
        chunk: _Chunk,
    ) -> None:
        while len(inflight) >= self.options.max_in_flight:
            await self._reap(ctx, inflight, wait=True)
        task = asyncio.create_task(self._write_chunk(chunk), name=f"sink:{self.name}:write")
        inflight.append((chunk, task))

    async def _reap(
        self,
        ctx: ConsumerContext,
        inflight: deque[tuple[_Chunk, asyncio.Task[None]]],
        *,
        wait: bool,
        all_of_them: bool = False,
    ) -> None:
        """Advance the cursor over the finished prefix of chunks (in journal order)."""
        if wait and inflight:
            if all_of_them:
                await asyncio.gather(*(t for _, t in inflight), return_exceptions=True)
            else:
                await asyncio.wait([t for _, t in inflight], return_when=asyncio.FIRST_COMPLETED)
        upto: int | None = None
        while inflight and inflight[0][1].done():
            chunk, task = inflight.popleft()
            task.result()  # re-raises _AbortedError (or a bug) in order
            upto = chunk.upto_seq
        if upto is not None:
            await asyncio.to_thread(ctx.journal.advance_cursor, self.name, upto)
            metrics.JOURNAL_LAG.labels(self.name).set(ctx.journal.head[0] - upto)

    async def _write_chunk(self, chunk: _Chunk) -> None:
        readings = [f for f in chunk.frames if "_kind" not in f.columns]
        gaps = [f.drop("_kind") for f in chunk.frames if "_kind" in f.columns]
        if readings and self.options.readings is not False:
            frame = readings[0] if len(readings) == 1 else pl.concat(readings, rechunk=False)
            await self._write_frame("readings", frame)
        if gaps:
            await self._write_frame("gaps", pl.concat(gaps))
        if chunk.realtime:
            frame = pl.DataFrame(chunk.realtime, schema=REALTIME_SCHEMA)
            await self._write_frame("realtime", frame)
        self.chunks_written += 1

    # -- writing ------------------------------------------------------------------------------

    async def _write_frame(self, kind: FrameKind, frame: pl.DataFrame) -> int:
        if frame.height == 0:
            return 0
        quantities: Collection[str] | None = (
            self.options.readings if isinstance(self.options.readings, list) else None
        )
        serialised = await asyncio.to_thread(
            serialise, kind, frame, self._site_tags(), quantities=quantities
        )
        if serialised.unwritable.height:
            await asyncio.to_thread(self.quarantine.rows, serialised.unwritable, kind=kind)
            SINK_QUARANTINED.labels(self.name).inc(serialised.unwritable.height)
            self.health.raise_alarm(
                "quarantine",
                f"sink {self.name!r}: {serialised.unwritable.height} {kind} row(s) cannot be "
                f"written ({serialised.unwritable['reason'][0]}); kept in {self.quarantine.path}",
            )
        lines = serialised.lines
        if lines.len() == 0:
            return 0
        written = await self._write_lines(kind, lines)
        SINK_POINTS.labels(self.name, kind).inc(written)
        self.points_written += written
        return written

    async def _write_lines(self, kind: FrameKind, lines: pl.Series) -> int:
        """Write lines; returns how many were accepted (the rest is quarantined)."""
        outcome = await self._post(lines, self._transport_for(kind))
        if outcome.ok:
            return lines.len()
        if outcome.status == 413 and lines.len() > 1:
            half = lines.len() // 2
            first = await self._write_lines(kind, lines.slice(0, half))
            return first + await self._write_lines(kind, lines.slice(half))
        return lines.len() - await self._settle(kind, lines, outcome)

    async def _post(self, lines: pl.Series, transport: Transport) -> WriteOutcome:
        """Post until the answer is a success or about the data; retry everything else."""
        # Off the event loop: the other requests in flight keep being served meanwhile.
        body = await asyncio.to_thread(encode_lines, lines)
        attempt = 0
        failing_since = time.monotonic()
        while True:
            outcome = await transport.write(body)
            if outcome.ok:
                SINK_BYTES.labels(self.name).inc(len(body))
                if self.health.alarm_kind in {"auth", "not_found", "unavailable", "refused"}:
                    self.health.clear()
                return outcome
            if outcome.status in _DATA_ERRORS or outcome.status == 413:
                return outcome
            reason = self._classify_failure(outcome, time.monotonic() - failing_since, transport)
            SINK_FAILURES.labels(self.name, reason).inc()
            if self._stopping.is_set():
                raise _AbortedError
            delay = min(
                self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** min(attempt, 20)
            ) * (0.5 + random.random() / 2)
            if outcome.retry_after_s is not None:
                delay = min(max(outcome.retry_after_s, 0.0), self.options.retry_after_max_s)
            attempt += 1
            await _wait(self._stopping, delay)

    def _classify_failure(
        self, outcome: WriteOutcome, failing_for_s: float, transport: Transport
    ) -> str:
        status = outcome.status
        if status in _AUTH_ERRORS:
            what = (
                f"token secret {self.options.token_secret!r}"
                if self.options.api == "v2"
                else f"user/password secrets {self.options.username_secret!r}/"
                f"{self.options.password_secret!r}"
            )
            self.health.raise_alarm(
                "auth",
                f"sink {self.name!r}: InfluxDB refused the credentials (HTTP {status}); "
                f"check {what}. Readings stay in the journal.",
            )
            return "auth"
        if status == 404:
            self.health.raise_alarm(
                "not_found",
                f"sink {self.name!r}: HTTP 404 from {transport.describe()}: "
                f"{outcome.message[:300]}",
            )
            return "not_found"
        if status in _RETRYABLE:
            if failing_for_s >= 5.0 or status != 0:
                self.health.raise_alarm(
                    "unavailable",
                    f"sink {self.name!r}: InfluxDB unavailable "
                    f"({'no answer' if status == 0 else f'HTTP {status}'}); retrying, readings "
                    "are kept in the journal",
                )
            return "unavailable" if status == 0 else f"http_{status}"
        self.health.raise_alarm(
            "refused",
            f"sink {self.name!r}: unexpected HTTP {status} from InfluxDB: "
            f"{outcome.message[:300]}; retrying",
        )
        return f"http_{status}"

    async def _settle(self, kind: FrameKind, lines: pl.Series, outcome: WriteOutcome) -> int:
        """Isolate the lines the server refuses; quarantine them, write the rest.

        Returns:
            How many lines were quarantined.
        """
        quarantined = 0
        work: list[tuple[pl.Series, WriteOutcome]] = [(lines, outcome)]
        while work:
            part, result = work.pop()
            if part.len() == 1 or _all_refused(part, result.message):
                await asyncio.to_thread(
                    self.quarantine.lines,
                    part.to_list(),
                    kind=kind,
                    status=result.status,
                    message=self.health_redact(result.message),
                )
                quarantined += part.len()
                continue
            for group in _split(part, result.message):
                answer = await self._post(group, self._transport_for(kind))
                if answer.ok:
                    continue
                work.append((group, answer))
        if quarantined:
            SINK_QUARANTINED.labels(self.name).inc(quarantined)
            self.health.raise_alarm(
                "quarantine",
                f"sink {self.name!r}: InfluxDB refused {quarantined} {kind} point(s) "
                f"(HTTP {outcome.status}: {self.health_redact(outcome.message)[:300]}); "
                f"kept in {self.quarantine.path}",
            )
            _log.error(
                "points quarantined",
                sink=self.name,
                kind=kind,
                points=quarantined,
                file=str(self.quarantine.path),
            )
        return quarantined

    def health_redact(self, text: str) -> str:
        """Server text with any secret value removed (defence in depth)."""
        return redact(text, self.health.secrets)


_CONFLICT = re.compile(r'input field "((?:[^"\\]|\\.)*)" on measurement "((?:[^"\\]|\\.)*)"')
_UNPARSABLE = re.compile(r"unable to parse '(.*?)': ")
_DROPPED = re.compile(r"dropped=(\d+)")


def _all_refused(part: pl.Series, message: str) -> bool:
    """True when a type-conflict answer says every line of ``part`` was dropped."""
    match = _DROPPED.search(message)
    return (
        match is not None and "unable to parse" not in message and int(match.group(1)) == part.len()
    )


def _split(part: pl.Series, message: str) -> list[pl.Series]:
    """Cut ``part`` where the server's message points (its suspects), else in halves."""
    suspects: pl.Series | None = None
    conflict = _CONFLICT.search(message)
    unparsable = _UNPARSABLE.search(message)
    if conflict is not None:
        field_key = escape_key(conflict.group(1))
        measurement = escape_measurement(conflict.group(2))
        in_measurement = part.str.starts_with(measurement + ",") | part.str.starts_with(
            measurement + " "
        )
        has_field = part.str.contains(f" {field_key}=", literal=True) | part.str.contains(
            f",{field_key}=", literal=True
        )
        suspects = in_measurement & has_field
    elif unparsable is not None:
        suspects = part == unparsable.group(1)
    if suspects is not None:
        count = int(suspects.sum())
        if 0 < count < part.len():
            return [part.filter(~suspects), part.filter(suspects)]
    half = part.len() // 2
    return [part.slice(0, half), part.slice(half)]


async def _wait(event: asyncio.Event, seconds: float, *, also: asyncio.Event | None = None) -> None:
    """Wait for ``event`` (or ``also``) at most ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait())]
    if also is not None:
        waiters.append(asyncio.ensure_future(also.wait()))
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*waiters, return_exceptions=True)


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> InfluxSink:
    """Build the sink from its ``[[sinks]]`` table; secrets are read now.

    Raises:
        ConfigError: naming ``sinks.<name>.<field>`` (or the missing secret, never its value).
    """
    try:
        parsed = InfluxOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"sinks.{name}: {validation_problems(exc)}") from exc
    ca_file = settings.resolve(parsed.ca_file) if parsed.ca_file is not None else None
    secrets: list[str] = []
    transport: Transport
    derived: Transport | None = None
    http = HttpOptions(
        gzip=parsed.gzip,
        ca_file=ca_file,
        verify_tls=parsed.verify_tls,
        timeout_s=parsed.timeout_s,
        max_connections=parsed.max_in_flight,
    )
    if parsed.api == "v2":
        assert parsed.token_secret and parsed.org and parsed.bucket  # checked by the model
        token = read_secret(parsed.token_secret, settings)
        secrets.append(token.get_secret_value())
        transport = V2Transport(
            parsed.url,
            org=parsed.org,
            bucket=parsed.bucket,
            token=token,
            http=http,
        )
        if parsed.derived_bucket not in (None, parsed.bucket):
            derived = V2Transport(
                parsed.url, org=parsed.org, bucket=parsed.derived_bucket, token=token, http=http
            )
    else:
        assert parsed.database is not None
        username = password = None
        if parsed.username_secret is not None and parsed.password_secret is not None:
            username = read_secret(parsed.username_secret, settings).get_secret_value()
            password = read_secret(parsed.password_secret, settings)
            secrets.append(password.get_secret_value())
        v1 = functools.partial(
            V1Transport,
            parsed.url,
            database=parsed.database,
            username=username,
            password=password,
            http=http,
        )
        transport = v1(retention_policy=parsed.retention_policy)
        if parsed.derived_retention_policy not in (None, parsed.retention_policy):
            derived = v1(retention_policy=parsed.derived_retention_policy)
    return InfluxSink(
        name=name,
        options=parsed,
        settings=settings,
        transport=transport,
        derived_transport=derived,
        health=SinkHealth(sink=name, secrets=secrets),
        quarantine=Quarantine(settings.state_dir, name),
    )

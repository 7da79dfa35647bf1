"""The ``nats`` collector: the site aggregator role, fed by every agent's journal stream.

It consumes the stream the ``nats`` sinks publish to through one **durable JetStream
pull consumer** shared by the site's aggregator hosts, and only while it holds the
aggregator lease (:mod:`collectors.nats.lease`); a standby waits for the lease. Per
fetched page it:

1. checks each agent's chain (seq and prev-hash continuity, each batch's own hash);
2. de-duplicates the readings of redundant pollers (:func:`collectors.nats.merge.dedupe`);
3. emits the kept readings into the local journal (``emit`` returns once fsynced) —
   from there the local aggregator turns them into intervals like any collector's;
4. commits its merge state (stream position, chain heads, newest reading per point,
   provenance: which agents' batches are in which local batch, each batch taken in with
   its hashes, time span and page, and the rows of publishers' gap batches) in one
   transaction;
5. acknowledges the page to JetStream.

A crash between 3 and 4 re-emits the same readings, which the aggregator drops as
repeats of readings it has (same meter and timestamp); between 4 and 5 JetStream
redelivers a page whose stream sequence is at or below the position: skipped.

Taking over: the new holder first replays the stream from its own position up to the
stream's end (an ephemeral consumer that acknowledges nothing), so its journal, chain
heads and de-duplication state are complete before it consumes through the durable
consumer; a standby that never held the lease replays the whole retained stream. Its
own store therefore holds every interval, once, whichever host aggregated them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import polars as pl
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import Field, ValidationError

from agent.journal import GAP_SCHEMA, Journal, decode_payload
from agent.logs import get_logger
from agent.plugins import CollectorContext
from agent.readings import READING_SCHEMA, validate_batch
from agent.settings import AgentSettings, ConfigError, validation_problems
from agent.sinks.health import redact
from collectors.nats.lease import Lease, open_bucket
from collectors.nats.link import (
    Credentials,
    LinkError,
    NatsLinkOptions,
    close_quietly,
    connect,
    ensure_stream,
    parse_message,
    raise_if_cancelled,
    translate,
)
from collectors.nats.merge import (
    DEFAULT_DEDUPE_WINDOW_S,
    NEWEST_SCHEMA,
    MergeState,
    Received,
    dedupe,
    state_file,
)

__all__ = ["NatsCollector", "NatsCollectorOptions", "build"]

_log = get_logger("collectors.nats")

_LINK_ERRORS = (LinkError, OSError, nats.errors.Error, nats.js.errors.Error)


class NatsCollectorOptions(NatsLinkOptions):
    """Options of a ``[[collectors]]`` table with ``kind = "nats"``."""

    durable: str = Field(
        "site-aggregator",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The durable pull consumer every aggregator host of the site shares.",
    )
    holder_id: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="This host's name in the lease (default: the host name).",
    )
    lease_bucket: str = Field("pue_agent_leases", pattern=r"^[A-Za-z0-9_-]+$")
    lease_ttl_s: float = Field(15.0, gt=0, description="A dead holder's lease expires after this.")
    fetch_batches: int = Field(256, gt=0, description="Stream messages fetched per page.")
    fetch_wait_s: float = Field(1.0, gt=0, description="Longest wait for a page.")
    dedupe_window_s: float = Field(
        DEFAULT_DEDUPE_WINDOW_S,
        ge=0,
        description="Readings of one point closer than this are one poll (keep it well "
        "below the poll interval).",
    )
    ack_wait_s: float = Field(60.0, gt=0, description="JetStream redelivers unacked pages after.")
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


@dataclass
class _Page:
    """What a handled page did (for counters)."""

    taken: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass
class NatsCollector:
    """Collector of kind ``nats`` (the site aggregator role)."""

    name: str
    options: NatsCollectorOptions
    #: Where the merge state lives (opened on the first run: ``check`` creates nothing).
    state_path: Path
    credentials: Credentials = field(default_factory=Credentials, repr=False)
    #: Readings emitted into the local journal / dropped as another poller's duplicate.
    emitted_readings: int = field(default=0, init=False)
    deduplicated_readings: int = field(default=0, init=False)
    disagreeing_readings: int = field(default=0, init=False)
    #: Readings dropped as late: older by more than the window than a reading of their
    #: point taken in before (not in ``deduplicated_readings``; see ``DedupeResult.late``).
    late_readings: int = field(default=0, init=False)
    #: Journal batches taken in / skipped as already taken in / rejected (bad hash).
    batches_taken: int = field(default=0, init=False)
    batches_duplicate: int = field(default=0, init=False)
    batches_rejected: int = field(default=0, init=False)
    #: Whether this host holds the aggregator lease now; when it last took it over.
    active: bool = field(default=False, init=False)
    takeovers: int = field(default=0, init=False)
    _failing: str | None = field(default=None, init=False)
    #: Late readings dropped since the last page without any (logged once per episode).
    _late_run: int = field(default=0, init=False)
    _state: MergeState | None = field(default=None, init=False, repr=False)

    @property
    def state(self) -> MergeState:
        """The merge state (position, chain heads, provenance), opened when first needed."""
        if self._state is None:
            self._state = MergeState(self.state_path)
        return self._state

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        return (
            f"nats: site aggregator {o.holder_id!r} on stream {o.stream} via durable consumer "
            f"{o.durable!r} (lease {o.lease_bucket}, TTL {o.lease_ttl_s:g} s), de-duplicating "
            f"within {o.dedupe_window_s:g} s"
        )

    # -- failure logging (once when it fails, once when it recovers) -----------------------

    def _fail(self, exc: BaseException) -> None:
        message = redact(str(translate(exc, self.options)), self.credentials.secrets())
        if self._failing is None:
            _log.error("NATS failing", collector=self.name, error=message)
        self._failing = message

    def _recovered(self) -> None:
        if self._failing is not None:
            _log.info("NATS recovered", collector=self.name)
            self._failing = None

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, ctx: CollectorContext) -> None:
        """Hold (or wait for) the lease and consume until cancelled; reconnect with backoff."""
        await asyncio.to_thread(self._reconcile, ctx.settings.journal_path)
        delay = self.options.reconnect_initial_s
        while True:
            client = None
            lease: Lease | None = None
            try:
                client = await connect(self.options, self.credentials, f"pue-agent-{self.name}")
                js = client.jetstream(timeout=self.options.request_timeout_s)
                await ensure_stream(js, self.options)
                kv = await open_bucket(
                    js,
                    self.options.lease_bucket,
                    ttl_s=self.options.lease_ttl_s,
                    replicas=self.options.replicas,
                )
                lease = Lease(
                    kv, self.options.durable, self.options.holder_id, self.options.lease_ttl_s
                )
                self._recovered()
                delay = self.options.reconnect_initial_s
                await self._serve(ctx, js, lease)
            except _LINK_ERRORS as exc:
                raise_if_cancelled()
                self._fail(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
            finally:
                if self.active:
                    _log.warning("aggregator lease given up", collector=self.name)
                self.active = False
                if client is not None:
                    # Bounded: a stop must not wait on a cluster that no longer answers.
                    timeout_s = self.options.request_timeout_s
                    if lease is not None and lease.revision is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(asyncio.shield(lease.release()), timeout_s)
                    await close_quietly(client, timeout_s)

    def _reconcile(self, journal_path: Path) -> None:
        """Take in what the local journal holds beyond the merge state's last commit.

        The local journal is the truth: batches after the last one a commit recorded were
        journalled by a page whose commit a crash prevented (or by another collector of
        this host, whose points are not replayed from the stream).
        """
        if not journal_path.is_file():
            return
        journal = Journal(journal_path)
        try:
            after = self.state.recorded_local_seq()
            frames = [b.frame for b in journal.iter_batches(after, kinds=("readings",))]
        finally:
            journal.close()
        if frames:
            self.state.take_journalled(pl.concat(frames))

    async def _serve(self, ctx: CollectorContext, js: JetStreamContext, lease: Lease) -> None:
        o = self.options
        while True:
            raise_if_cancelled()
            if not await lease.acquire():
                await asyncio.sleep(o.lease_ttl_s / 5)
                continue
            self.active, self.takeovers = True, self.takeovers + 1
            _log.info(
                "aggregator lease taken: replaying the stream from the local position",
                collector=self.name,
                holder=o.holder_id,
                position=self.state.position,
            )
            await self._replay(ctx, js, lease)
            subscription = await js.pull_subscribe(
                f"{o.subject_prefix}.>",
                durable=o.durable,
                stream=o.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.ALL,
                    ack_wait=o.ack_wait_s,
                    max_ack_pending=-1,
                ),
            )
            try:
                while await self._keep(lease):
                    try:
                        msgs = await subscription.fetch(o.fetch_batches, timeout=o.fetch_wait_s)
                    except nats.errors.TimeoutError:
                        continue
                    if not msgs:
                        # nats-py can return an empty page (a 408 status the server sends
                        # when the fetch's own expiry passes first, seen on a loaded host).
                        continue
                    await self._handle(ctx, msgs)
                    if not lease.held:
                        break  # too late to ack: JetStream redelivers to the new holder
                    await msgs[-1].ack()
            finally:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
            self.active = False
            _log.warning("aggregator lease lost: standing by", collector=self.name)

    async def _keep(self, lease: Lease) -> bool:
        """Renew the lease when due; ``False`` once it is lost."""
        raise_if_cancelled()
        if lease.renew_due:
            return await lease.renew()
        return lease.held

    async def _replay(self, ctx: CollectorContext, js: JetStreamContext, lease: Lease) -> None:
        """Take in what other holders handled since this host's position (nothing acked)."""
        o = self.options
        info = await js.stream_info(o.stream)
        end = int(info.state.last_seq)
        if self.state.position >= end:
            return
        subscription = await js.pull_subscribe(
            f"{o.subject_prefix}.>",
            stream=o.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.state.position + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=max(o.lease_ttl_s, 5.0),
                mem_storage=True,
            ),
        )
        try:
            while self.state.position < end and await self._keep(lease):
                try:
                    msgs = await subscription.fetch(o.fetch_batches, timeout=o.fetch_wait_s)
                except nats.errors.TimeoutError:
                    # Nothing more to deliver now (the rest aged out of the stream, or the
                    # end moved on): the durable consumer takes it from here.
                    break
                if not msgs:
                    break  # the same, as an empty page (see _serve)
                await self._handle(ctx, msgs)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    # -- one page ---------------------------------------------------------------------------

    async def _handle(self, ctx: CollectorContext, msgs: list[Msg]) -> _Page:
        """Verify, de-duplicate, emit and commit one fetched page (see the module docstring)."""
        page = _Page()
        state = self.state
        heads: dict[str, tuple[int, bytes]] = {}
        frames: list[pl.DataFrame] = []
        spans: dict[str, list[int]] = {}
        breaks: list[tuple[int, str, int, str]] = []
        # Per batch taken in: agent, seq, kind, rows, first/last µs, hashes, stream seq.
        taken: list[tuple[str, int, str, int, int | None, int | None, bytes, bytes, int]] = []
        gap_frames: list[pl.DataFrame] = []
        last_stream = state.position
        for msg in msgs:
            try:
                batch = parse_message(msg)
            except ValueError as exc:
                stream_seq = int(msg.metadata.sequence.stream)
                if stream_seq > state.position:
                    _log.error("not a journal batch: skipped", collector=self.name, error=str(exc))
                    breaks.append((stream_seq, msg.subject, 0, str(exc)))
                    last_stream = max(last_stream, stream_seq)
                continue
            if batch.stream_seq <= state.position:
                continue  # redelivered after a crash, or replayed already
            last_stream = max(last_stream, batch.stream_seq)
            verdict = state.check(
                batch.seq,
                batch.prev_hash,
                batch.link_ok(),
                head=heads.get(batch.agent) or state.heads.get(batch.agent),
            )
            if verdict.problem is not None:
                breaks.append((batch.stream_seq, batch.agent, batch.seq, verdict.problem))
                _log.error(
                    "journal chain problem",
                    collector=self.name,
                    agent=batch.agent,
                    seq=batch.seq,
                    problem=verdict.problem,
                )
            if verdict.action == "duplicate":
                page.duplicates += 1
                continue
            if verdict.action == "reject":
                page.rejected += 1
                continue
            heads[batch.agent] = (batch.seq, batch.hash)
            bounds: tuple[int | None, int | None] = (None, None)
            if batch.n_rows and batch.kind in ("readings", "gap"):
                try:
                    frame = decode_payload(batch.payload)
                    if batch.kind == "readings":
                        frames.append(validate_batch(frame))
                        bounds = _bounds(frame, "ts", "ts")
                    else:
                        # A publisher's refused readings: carried into the merge state so
                        # the site's report shows the hole (docs/cluster.md).
                        gap = frame.select(GAP_SCHEMA.names()).cast(GAP_SCHEMA)
                        gap_frames.append(
                            gap.with_columns(
                                pl.lit(batch.agent).alias("agent"), pl.lit(batch.seq).alias("seq")
                            )
                        )
                        bounds = _bounds(gap, "first_ts", "last_ts")
                except Exception as exc:  # noqa: BLE001 - any unreadable payload is refused
                    # The chain is intact (its hash matched) but the content is unusable here
                    # (e.g. a newer agent's schema): kept in the stream, recorded, not merged.
                    what = "reading" if batch.kind == "readings" else batch.kind
                    problem = f"batch {batch.seq}: payload not a {what} batch ({exc})"
                    breaks.append((batch.stream_seq, batch.agent, batch.seq, problem))
                    _log.error("journal batch unreadable", collector=self.name, problem=problem)
                    page.rejected += 1
                    continue
            taken.append(
                (
                    batch.agent,
                    batch.seq,
                    batch.kind,
                    batch.n_rows,
                    *bounds,
                    batch.prev_hash,
                    batch.hash,
                    batch.stream_seq,
                )
            )
            page.taken += 1
            span = spans.setdefault(batch.agent, [batch.seq, batch.seq, batch.stream_seq, 0])
            span[1], span[3] = batch.seq, batch.stream_seq
        if last_stream == state.position:
            return page
        local_seq: int | None = None
        newest = pl.DataFrame(schema=NEWEST_SCHEMA)
        if frames:
            readings = pl.concat(frames, how="vertical").select(READING_SCHEMA.names())
            merged = await asyncio.to_thread(
                dedupe, readings, state.last, round(self.options.dedupe_window_s * 1e6)
            )
            newest = merged.newest
            self.deduplicated_readings += merged.dropped - merged.late
            self.disagreeing_readings += merged.disagreed
            self.late_readings += merged.late
            self._note_late(merged.late)
            if merged.kept.height:
                result = await ctx.emit(merged.kept)
                local_seq = None if result is None else result.seq
                self.emitted_readings += merged.kept.height
        provenance = [
            (local_seq, agent, first, last_seq, stream_first, stream_last)
            for agent, (first, last_seq, stream_first, stream_last) in spans.items()
        ]
        # The page is named by the stream seq this commit records: verify replays the
        # merge page by page in that order (collectors.nats.merge.replay).
        received: list[Received] = [
            (*row, local_seq if row[2] == "readings" else None, last_stream) for row in taken
        ]
        await asyncio.to_thread(
            state.commit,
            stream_seq=last_stream,
            heads=heads,
            newest=newest,
            provenance=provenance,
            breaks=breaks,
            received=received,
            gaps=pl.concat(gap_frames) if gap_frames else None,
        )
        self.batches_taken += page.taken
        self.batches_duplicate += page.duplicates
        self.batches_rejected += page.rejected
        return page

    def _note_late(self, late: int) -> None:
        """Log the start and the end of a run of pages dropping late readings (not each page)."""
        if late and not self._late_run:
            _log.warning(
                "late readings dropped: older than a reading of their point already taken in "
                "(a poller behind the other; kept in its own journal)",
                collector=self.name,
                readings=late,
            )
        elif not late and self._late_run:
            _log.info("late readings no more", collector=self.name, readings=self._late_run)
        self._late_run = self._late_run + late if late else 0


def _bounds(frame: pl.DataFrame, first: str, last: str) -> tuple[int | None, int | None]:
    """Earliest ``first`` and latest ``last`` timestamp of a batch, in µs (None if empty)."""
    lo, hi = frame.select(
        pl.col(first).dt.epoch("us").min(), pl.col(last).dt.epoch("us").max().alias("_hi")
    ).row(0)
    return lo, hi


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> NatsCollector:
    """Build the collector from its ``[[collectors]]`` table; secrets are read now.

    Raises:
        ConfigError: naming ``collectors.<name>.<field>`` (never a secret's value).
    """
    try:
        parsed = NatsCollectorOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"collectors.{name}: {validation_problems(exc)}") from exc
    parsed = settings.resolve_tls_files(parsed)
    credentials = Credentials.read(parsed, settings)
    state_path = state_file(settings.state_dir, name)
    return NatsCollector(name=name, options=parsed, state_path=state_path, credentials=credentials)

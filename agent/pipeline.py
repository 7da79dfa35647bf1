"""The running agent: collectors -> bounded queue -> journal (group commit) -> consumers.

Collectors ``await emit(batch)``; the batch goes into a bounded queue (so a
slow disk pushes back on collectors instead of growing memory), a single
writer task commits whatever is queued as one fsynced transaction, and only
then are the collectors' awaits resolved: a batch counts as collected once it
is durable. Consumers follow the journal from their own cursors.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import polars as pl

from agent import metrics
from agent.journal import AppendResult, Journal, JournalError, JournalFullError
from agent.logs import get_logger
from agent.plugins import (
    Collector,
    CollectorContext,
    Consumer,
    ConsumerContext,
    build_collector,
    build_consumer,
)
from agent.readings import ReadingBatchError, validate_batch
from agent.settings import AGGREGATOR_KINDS, AgentSettings, ConfigError, collector_name_problems
from agent.site import Site, load_site_for

__all__ = ["Agent", "RunHooks", "build_agent"]

_log = get_logger("pipeline")

#: Retry delays of a journal commit that hit a full disk: first, then doubling to the cap.
_STORAGE_RETRY_FIRST_S = 0.2
_STORAGE_RETRY_MAX_S = 2.0


@dataclass
class _Pending:
    batch: pl.DataFrame
    source: str
    done: asyncio.Future[AppendResult | None]


class RunHooks(Protocol):
    """What runs around a running :class:`Agent` (the service owns the agent and these)."""

    async def start(self) -> None:
        """Before the pipeline's tasks start (bind the API, install SIGHUP)."""
        ...

    async def run(self) -> None:
        """Inside the pipeline's TaskGroup, until the agent stops."""
        ...

    async def close(self) -> None:
        """After the pipeline has shut down."""
        ...


@dataclass
class Agent:
    """Collectors, journal and consumers wired together; :meth:`run` until stopped."""

    settings: AgentSettings
    site: Site | None
    collectors: list[Collector]
    consumers: list[Consumer]
    journal: Journal
    _queue: asyncio.Queue[_Pending | None] = field(init=False)
    _stopping: asyncio.Event = field(init=False)
    _new_data: asyncio.Event = field(init=False)
    _ack: IO[str] | None = field(default=None, init=False)
    committed_readings: int = field(default=0, init=False)
    #: Running collector supervisors by name (SIGHUP reload adds and removes entries).
    collector_tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _group: asyncio.TaskGroup | None = field(default=None, init=False)
    #: Set once the journal writer has ended: nothing queued after that is ever committed.
    _writer_gone: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.settings.journal.queue_batches)
        self._stopping = asyncio.Event()
        self._new_data = asyncio.Event()

    # -- control ------------------------------------------------------------------------------

    @property
    def stopping(self) -> asyncio.Event:
        """Set once :meth:`stop` was called."""
        return self._stopping

    def start_collector(self, collector: Collector) -> None:
        """Start polling ``collector`` in the running agent (start-up and SIGHUP reload)."""
        assert self._group is not None, "the agent is not running"
        if self._stopping.is_set():
            return  # a reload racing with shutdown: the writer may already be gone
        if collector not in self.collectors:
            self.collectors.append(collector)
        self.collector_tasks[collector.name] = self._group.create_task(
            self._supervise(collector), name=f"collector:{collector.name}"
        )

    async def stop_collector(self, name: str) -> None:
        """Cancel one collector (SIGHUP reload); what it already handed over is journalled."""
        task = self.collector_tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.collectors = [c for c in self.collectors if c.name != name]

    def stop(self) -> None:
        """Ask the agent to stop: collectors stop, the queue is flushed, consumers catch up."""
        if not self._stopping.is_set():
            _log.info("stopping")
            self._stopping.set()

    async def run(self, *, install_signals: bool = True, hooks: RunHooks | None = None) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT); returns after a clean shutdown.

        Args:
            install_signals: Stop on SIGTERM/SIGINT (off when embedded in tests).
            hooks: What runs around the pipeline (:class:`agent.service.AgentService`:
                systemd notifications, SIGHUP reload, the HTTP API), if anything.
        """
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        if self.settings.ack_file is not None:
            # Opened once at start-up, before any ingest: blocking here is harmless.
            self._ack = Path(self.settings.ack_file).open("a", encoding="utf-8")  # noqa: SIM115, ASYNC230
        for consumer in self.consumers:
            self.journal.register_cursor(consumer.name)
        # Consumers are told to stop only once the writer has committed the last batch, so
        # "stopping and caught up" really means everything acknowledged has been consumed.
        consumers_stopping = asyncio.Event()
        ctx = ConsumerContext(
            journal=self.journal,
            settings=self.settings,
            site=self.site,
            stopping=consumers_stopping,
            new_data=self._new_data,
        )
        _log.info(
            "started",
            collectors=[c.name for c in self.collectors],
            consumers=[c.name for c in self.consumers],
            journal=str(self.journal.path),
        )
        try:
            if hooks is not None:
                await hooks.start()
            async with asyncio.TaskGroup() as group:
                self._group = group
                writer = group.create_task(self._writer(), name="journal-writer")
                consumer_tasks = [
                    group.create_task(c.run(ctx), name=f"consumer:{c.name}") for c in self.consumers
                ]
                for collector in self.collectors:
                    self.start_collector(collector)
                if hooks is not None:
                    group.create_task(hooks.run(), name="service")
                await self._stopping.wait()
                collector_tasks = list(self.collector_tasks.values())
                for task in collector_tasks:
                    task.cancel()
                await asyncio.gather(*collector_tasks, return_exceptions=True)
                await self._queue.put(None)  # the writer drains what is queued, then ends
                await writer
                consumers_stopping.set()
                self._new_data.set()
                await asyncio.gather(*consumer_tasks)
        finally:
            if hooks is not None:
                await hooks.close()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            if self._ack is not None:
                self._ack.close()
            self.journal.close()
            _log.info("stopped", committed_readings=self.committed_readings)

    # -- collectors ---------------------------------------------------------------------------

    async def _supervise(self, collector: Collector) -> None:
        """Run a collector; if it crashes, log once and restart it with capped backoff."""
        ctx = CollectorContext(
            name=collector.name, settings=self.settings, emit=self._emitter(collector.name)
        )
        delay = 1.0
        while True:
            try:
                await collector.run(ctx)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one collector's bug must not stop the others
                _log.exception(
                    "collector crashed; restarting",
                    collector=collector.name,
                    retry_in_s=round(delay, 1),
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 60.0)

    def _emitter(self, source: str) -> _CollectorEmit:
        return _CollectorEmit(self, source)

    async def submit(self, batch: pl.DataFrame, source: str) -> AppendResult | None:
        """Validate and queue a batch; resolve when it is durable (None if refused)."""
        try:
            batch = validate_batch(batch)
        except ReadingBatchError as exc:
            metrics.READINGS_REJECTED.labels(source, "schema").inc(batch.height)
            _log.error("batch rejected", source=source, error=str(exc))
            raise
        if batch.height == 0:
            return None
        _raise_if_cancelled()
        if self._writer_gone:
            raise _writer_stopped()
        done: asyncio.Future[AppendResult | None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(batch, source, done))
        if self._writer_gone and not done.done():
            # The writer ended while we waited for room; it drained the queue before this
            # put, so nobody will ever commit this batch.
            raise _writer_stopped()
        return await done

    # -- the writer ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        try:
            await self._write_until_sentinel()
        finally:
            # Cancelled (the agent's task was killed) or ended: no batch still queued will be
            # committed, so its collector must not wait for it. Synchronous, so no put can
            # slip in between the flag and the drain.
            self._writer_gone = True
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if pending is not None and not pending.done.done():
                    pending.done.cancel()

    async def _write_until_sentinel(self) -> None:
        limit = self.settings.journal.max_batch_rows
        finished = False
        while not finished:
            item = await self._queue.get()
            if item is None:
                break
            group = [item]
            rows = item.batch.height
            while rows < limit and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    finished = True
                    break
                group.append(nxt)
                rows += nxt.batch.height
            await self._commit(group)
        # Anything still queued after the sentinel (should not happen) is committed too.
        while not self._queue.empty():
            nxt = self._queue.get_nowait()
            if nxt is not None:
                await self._commit([nxt])

    async def _commit(self, group: list[_Pending]) -> None:
        delay_s = _STORAGE_RETRY_FIRST_S
        while True:
            try:
                with metrics.JOURNAL_APPEND_SECONDS.time():
                    results: list[AppendResult | None] = list(
                        await asyncio.to_thread(
                            self.journal.append_many, [(p.batch, p.source) for p in group]
                        )
                    )
                break
            except asyncio.CancelledError:
                # The writer is being killed mid-commit: the group's outcome is unknown, so
                # none of it is acknowledged (its collectors' awaits end, they do not park).
                for pending in group:
                    if not pending.done.done():
                        pending.done.cancel()
                raise
            except JournalFullError as exc:
                results = [None] * len(group)
                await self._record_gaps(group, str(exc))
                break
            except JournalError as exc:
                reason = metrics.storage_error(exc)
                if reason is not None and not self._stopping.is_set():
                    # Disk full (or EIO/EMFILE): hold the group and retry; the bounded queue
                    # fills and collectors wait in emit, so collection pauses and nothing
                    # is acknowledged that is not durable. Resumes when space returns.
                    metrics.raise_alarm("storage", "journal", reason)
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, _STORAGE_RETRY_MAX_S)
                    continue
                # Stopping, or not a storage fault: nothing of the group is stored; the
                # collectors hear it (their await raises) and keep their data where they
                # can (QoS 1: the broker redelivers).
                _log.error("journal write failed", error=str(exc))
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                return
        metrics.clear_alarm("storage", "journal")
        for pending, result in zip(group, results, strict=True):
            if result is not None:
                self.committed_readings += result.n_rows
                metrics.JOURNAL_READINGS.inc(result.n_rows)
                # A device whose readings are durable had a good poll (any protocol).
                metrics.record_good_poll(
                    pending.source, pending.batch.get_column("device").unique().to_list()
                )
                if self._ack is not None:
                    self._ack.write(
                        f"{result.seq} {result.hash} {result.n_rows} {time.time():.6f}\n"
                    )
            if not pending.done.done():
                pending.done.set_result(result)
        if self._ack is not None:
            self._ack.flush()
        metrics.JOURNAL_BYTES.set(self.journal.payload_bytes)
        if any(r is not None for r in results) and self.journal.alarm is None:
            metrics.ALARMS.labels("journal_budget", "journal").set(0)
        self._new_data.set()

    async def _record_gaps(self, group: list[_Pending], reason: str) -> None:
        for pending in group:
            await asyncio.to_thread(
                self.journal.record_gap, pending.batch, source=pending.source, reason=reason
            )
            metrics.JOURNAL_GAPS.inc(pending.batch.height)
        metrics.ALARMS.labels("journal_budget", "journal").set(1)
        _log.error(
            "journal budget reached: readings refused and recorded as a gap",
            alarm="journal_budget",
            readings=sum(p.batch.height for p in group),
            reason=reason,
        )


def _raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the calling task was told to stop.

    A library can swallow a cancellation: on Python 3.11, ``asyncio.wait_for`` returns
    the inner result when it completes at the moment the cancel arrives, and the task's
    ``cancelling()`` count is all that is left of it. A collector that then emits would
    park in :meth:`Agent.submit` behind a writer that is already gone, and a TaskGroup
    that is already aborting never cancels it again. Every collector emits, so this is
    the one place that turns the lost cancellation back into a stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _writer_stopped() -> JournalError:
    return JournalError("the journal writer has stopped: this batch was not committed")


@dataclass
class _CollectorEmit:
    agent: Agent
    source: str

    async def __call__(self, batch: pl.DataFrame) -> AppendResult | None:
        return await self.agent.submit(batch, self.source)


def build_agent(settings: AgentSettings) -> Agent:
    """Build every configured part; configuration errors raise before anything starts."""
    site = load_site_for(settings)
    collectors = [
        build_collector(entry.kind, entry.name or f"{entry.kind}-{i}", entry.options(), settings)
        for i, entry in enumerate(settings.collectors)
        if entry.enabled
    ]
    duplicates = collector_name_problems(settings)
    if duplicates:
        raise ConfigError("; ".join(duplicates))
    consumers = [
        build_consumer(entry.kind, entry.name or entry.kind, entry.options(), settings)
        for entry in settings.sinks
        if entry.enabled
    ]
    if site is not None and not any(e.kind in AGGREGATOR_KINDS for e in settings.sinks):
        # A site model means KPIs are wanted: run the aggregator with default options.
        consumers.append(build_consumer("aggregator", "aggregator", {}, settings))
    journal = Journal(
        settings.journal_path, budget_bytes=int(settings.journal.budget_mb * 1024 * 1024)
    )
    return Agent(
        settings=settings, site=site, collectors=collectors, consumers=consumers, journal=journal
    )

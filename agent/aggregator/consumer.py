"""The aggregator: a journal consumer that turns readings into interval energy in the store.

Kind ``aggregator`` in ``[[sinks]]`` (``local_store``, its old name, is still
accepted). It follows its journal cursor a page at a time, feeds
live reading batches to an :class:`~agent.energy.IntervalEngine` and writes the
intervals that became final to the :class:`~agent.store.IntervalStore`; imported
batches (source ``import:…``) are history and are aggregated on their own, whole.

Durability order per page: store parts (tagged by the page's first batch) ->
engine state (carried readings + marks + the last batch handled, one atomic
pointer file) -> journal cursor. A crash between any two steps is harmless: the
state file says which batch comes next, the page is re-run, and its parts replace
the ones a crashed run may have written. So a restart produces exactly the
intervals of an uninterrupted run (``tests/kpi/test_restart.py``).

One writer at a time: a running aggregator holds an exclusive lock on its state
directory (``running.lock``). :func:`catch_up` — what ``pue-agent import`` runs so that
history is in the store at once — takes the same lock without waiting: when a running
agent holds it, the import is left in the journal for that agent (nothing is counted
twice); otherwise it aggregates the journal up to its head through
:meth:`Aggregator.process_page`, advancing the state and the cursor exactly as the
running agent would, so a later ``pue-agent run`` starts after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent import metrics
from agent.aggregator.refresh import KpiRefresher
from agent.energy import (
    EnergyConfig,
    EnergyConfigError,
    EngineState,
    IntervalEngine,
    interval_energy,
)
from agent.energy.core import ENGINE as ENERGY_ENGINE
from agent.energy.engine import CARRY_SCHEMA, MARKS_SCHEMA
from agent.energy.silence import DEFAULT_SILENCE_S, SilenceFinder, SilenceTracker
from agent.journal import Journal, JournalBatch
from agent.logs import get_logger
from agent.plugins import ConsumerContext, DerivedProgress
from agent.settings import AGGREGATOR_KINDS, AgentSettings, ConfigError, validation_problems
from agent.site import Site
from agent.store import IntervalStore, atomic_write_bytes

__all__ = [
    "IMPORT_SOURCE_PREFIX",
    "Aggregator",
    "AggregatorOptions",
    "CatchUp",
    "build",
    "catch_up",
    "site_aggregator",
]

_log = get_logger("aggregator")

#: Journal source of batches written by ``pue-agent import``.
IMPORT_SOURCE_PREFIX = "import:"
#: Held (``flock``) by the one process aggregating into this aggregator's state.
LOCK_FILE = "running.lock"
#: Seconds between two attempts to take a lock a catch-up holds.
_LOCK_RETRY_S = 0.2
#: Retry delays of a page that hit a full disk: first, then doubling to the cap.
_STORAGE_RETRY_FIRST_S = 0.2
_STORAGE_RETRY_MAX_S = 2.0


class AggregatorOptions(BaseModel):
    """Options of a ``[[sinks]]`` table with ``kind = "aggregator"``."""

    model_config = ConfigDict(extra="forbid")

    interval_s: int = Field(60, gt=0, description="Base interval (divides an hour).")
    max_gap_s: float = Field(6 * 3600.0, gt=0, description="Longest gap still counted covered.")
    max_power_gap_s: float = Field(300.0, gt=0, description="No trapezoid across longer gaps.")
    rating_tolerance: float = Field(0.1, ge=0)
    wrap_max_fraction: float = Field(0.1, gt=0, lt=1)
    reset_fill: Literal["power", "none"] = "power"
    page_batches: int = Field(64, gt=0, description="Journal batches handled per store write.")
    store_dir: Path | None = Field(None, description="Default: <state_dir>/store.")
    kpi_refresh_s: float = Field(
        60.0, gt=0, description="Shortest time between two live KPI/finding refreshes."
    )
    kpi_coverage_threshold: float = Field(
        0.95, ge=0, le=1, description="Coverage below which a live KPI is insufficient_data."
    )
    rules: bool = Field(True, description="Evaluate the policy packs on each KPI refresh.")
    silence_s: float = Field(
        DEFAULT_SILENCE_S,
        gt=0,
        description="Shortest silence of a meter (no reading) listed as a silent period.",
    )

    def energy_config(self) -> EnergyConfig:
        """The :class:`EnergyConfig` these options describe."""
        return EnergyConfig(
            interval_s=self.interval_s,
            max_gap_s=self.max_gap_s,
            max_power_gap_s=self.max_power_gap_s,
            rating_tolerance=self.rating_tolerance,
            wrap_max_fraction=self.wrap_max_fraction,
            reset_fill=self.reset_fill,
        )


@dataclass
class _Saved:
    seq: int
    state: EngineState
    config_json: str
    silences: SilenceTracker = field(default_factory=SilenceTracker)


@dataclass
class Aggregator:
    """The aggregator consumer."""

    name: str
    options: AggregatorOptions
    store_root: Path
    config: EnergyConfig
    #: The green ledger (:meth:`AgentSettings.green_ledger_path`) the live KPIs use.
    green_path: Path | None = None
    #: The operator's policy packs for the live findings (``None``: built-in only).
    policies_dir: Path | None = None
    intervals_written: int = field(default=0, init=False)
    refresher: KpiRefresher | None = field(default=None, init=False)
    #: Live meters' last reading and usual spacing (saved with the engine state).
    silences: SilenceTracker = field(default_factory=SilenceTracker, init=False)
    _finders: tuple[SilenceFinder, SilenceFinder] | None = field(
        default=None, init=False, repr=False
    )
    _lock: IO[str] | None = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        return (
            f"interval energy every {self.config.interval_s} s into {self.store_root} "
            f"(max gap {self.config.max_gap_s:g} s, reset fill {self.config.reset_fill})"
        )

    @property
    def state_dir(self) -> Path:
        """Where the engine state of this sink lives."""
        return self.store_root / "aggregator" / self.name

    # -- one writer ---------------------------------------------------------------------------

    def try_lock(self) -> bool:
        """Take this aggregator's writer lock if no other process holds it."""
        if self._lock is not None:
            return True
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.state_dir / LOCK_FILE).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock = handle
        return True

    def unlock(self) -> None:
        """Release the writer lock (if held)."""
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- state --------------------------------------------------------------------------------

    def load_state(self) -> _Saved | None:
        """The last saved engine state, or ``None`` before the first page."""
        pointer = self.state_dir / "state.json"
        if not pointer.is_file():
            return None
        meta = json.loads(pointer.read_text(encoding="utf-8"))
        seq = int(meta["seq"])
        carry = pl.read_parquet(self.state_dir / meta["carry"]).cast(CARRY_SCHEMA)
        marks = pl.read_parquet(self.state_dir / meta["marks"]).cast(MARKS_SCHEMA)
        silences = SilenceTracker.from_json(meta.get("silences"))
        return _Saved(seq, EngineState(carry=carry, marks=marks), str(meta["config"]), silences)

    def save_state(self, seq: int, state: EngineState) -> None:
        """Persist the engine state as of journal batch ``seq`` (atomic pointer last)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        carry_name, marks_name = f"carry-{seq:012d}.parquet", f"marks-{seq:012d}.parquet"
        for name, frame in ((carry_name, state.carry), (marks_name, state.marks)):
            buffer = _parquet_bytes(frame)
            atomic_write_bytes(self.state_dir / name, buffer)
        meta = {
            "seq": seq,
            "carry": carry_name,
            "marks": marks_name,
            "config": self.config.to_json(),
            "silences": self.silences.to_json(),
        }
        atomic_write_bytes(self.state_dir / "state.json", json.dumps(meta, sort_keys=True).encode())
        for old in self.state_dir.glob("*.parquet"):
            if old.name not in (carry_name, marks_name):
                old.unlink(missing_ok=True)

    # -- processing ---------------------------------------------------------------------------

    def make_engine(self, site: Site) -> tuple[IntervalEngine, int]:
        """An engine restored from the saved state, and the last journal batch it covers.

        Raises:
            ConfigError: if the saved state was made with other energy options (intervals
                would silently change meaning mid-stream).
        """
        saved = self.load_state()
        self._finders = None
        if saved is None:
            self.silences = SilenceTracker()
            return IntervalEngine(site, self.config), 0
        if saved.config_json != self.config.to_json():
            raise ConfigError(
                f"sinks.{self.name}: energy options changed since the store was started "
                f"({self.state_dir}); keep them or move the store away to rebuild it"
            )
        self.silences = saved.silences
        return IntervalEngine(site, self.config, saved.state), saved.seq

    def process_page(
        self, engine: IntervalEngine, store: IntervalStore, page: list[JournalBatch]
    ) -> int:
        """Aggregate one page of journal batches and make the result durable.

        Returns:
            The sequence number of the last batch handled.
        """
        live = [
            b.frame
            for b in page
            if b.kind == "readings" and not b.source.startswith(IMPORT_SOURCE_PREFIX)
        ]
        for batch in page:
            if batch.kind == "readings" and batch.source.startswith(IMPORT_SOURCE_PREFIX):
                # History: aggregated whole and on its own, it never disturbs live carry-over.
                # In-memory engine: ordered float sums, so a re-run after a crash writes
                # the same bits (the streaming default adds in thread order).
                rows = interval_energy(
                    batch.frame.lazy(), engine.site, self.config, with_rejected_counts=True
                ).collect(engine=ENERGY_ENGINE)
                store.write_intervals(rows, tag=f"{batch.seq:012d}-import")
                store.write_silences(
                    self._finder(engine.site, live=False).find(batch.frame, imported=True)
                )
                self.intervals_written += rows.height
                self._note(rows)
        if live:
            readings = pl.concat(live, how="vertical")
            rows = engine.feed(readings)
            store.write_intervals(rows, tag=f"{page[0].seq:012d}")
            reads = engine.resolved.filter(pl.col("value").is_finite())
            store.write_silences(
                self._finder(engine.site, live=True).find_resolved(
                    reads["mi"].to_numpy(), reads["ts"].to_numpy()
                )
            )
            self.intervals_written += rows.height
            self._note(rows)
        last = page[-1].seq
        self.save_state(last, engine.state)
        return last

    def _finder(self, site: Site, *, live: bool) -> SilenceFinder:
        """The silence finder of live pages (carrying :attr:`silences`) or of imports."""
        if self._finders is None or self._finders[0].tracker is not self.silences:
            min_s = self.options.silence_s
            self._finders = (
                SilenceFinder(site, min_s=min_s, tracker=self.silences),
                SilenceFinder(site, min_s=min_s),
            )
        return self._finders[0] if live else self._finders[1]

    # -- live KPIs and findings ----------------------------------------------------------------

    def _note(self, rows: pl.DataFrame) -> None:
        """Remember (durably, before the state moves) the local months ``rows`` touched."""
        if self.refresher is not None:
            self.refresher.note(rows)

    def make_refresher(self, site: Site, store: IntervalStore) -> KpiRefresher:
        """The KPI/finding refresher of this aggregator (pending months restored)."""
        return KpiRefresher(
            site=site,
            store=store,
            green_path=self.green_path or self.store_root.parent / "green" / "ledger.json",
            pending_path=self.state_dir / "kpi-pending.json",
            coverage_threshold=self.options.kpi_coverage_threshold,
            rules=self.options.rules,
            policies_dir=self.policies_dir,
        )

    async def refresh_kpis(
        self, seq: int, progress: DerivedProgress, *, force: bool, last: float
    ) -> float:
        """Refresh the touched months if due (or ``force``); returns the last refresh time."""
        refresher = self.refresher
        if refresher is None:
            return last
        if refresher.pending and (force or time.monotonic() - last >= self.options.kpi_refresh_s):
            last = time.monotonic()
            try:
                months = await asyncio.to_thread(refresher.refresh)
            except Exception as exc:  # noqa: BLE001 - KPIs must never stop the aggregation
                _log.error("live KPI refresh failed", sink=self.name, error=repr(exc))
            else:
                _log.debug("live KPIs refreshed", sink=self.name, months=months, seq=seq)
        if not refresher.pending:
            progress.derived_seq = max(progress.derived_seq, seq)
        return last

    async def run(self, ctx: ConsumerContext) -> None:
        """Follow the journal until the agent stops and this consumer has caught up."""
        if ctx.site is None:
            _log.warning("no site model: the aggregator has nothing to compute", sink=self.name)
            await ctx.stopping.wait()
            return
        # Announced on the agent's board: the output sinks wait for its last refresh.
        key = self.store_root.resolve()
        progress = DerivedProgress(name=self.name)
        ctx.aggregators[key] = progress
        try:
            if await self._wait_for_lock(ctx):
                await self._run(ctx, ctx.site, progress)
        finally:
            self.unlock()
            progress.finished = True
            if ctx.aggregators.get(key) is progress:
                del ctx.aggregators[key]

    async def _wait_for_lock(self, ctx: ConsumerContext) -> bool:
        """Take the writer lock, waiting while a ``pue-agent import`` catch-up holds it.

        Returns ``False`` if the agent stops first (the holder consumes the journal).
        """
        warned = False
        while not self.try_lock():
            if ctx.stopping.is_set():
                return False
            if not warned:
                _log.warning(
                    "aggregator state held by another process (pue-agent import?): waiting",
                    sink=self.name,
                    lock=str(self.state_dir / LOCK_FILE),
                )
                warned = True
            await asyncio.sleep(_LOCK_RETRY_S)
        return True

    async def _run(self, ctx: ConsumerContext, site: Site, progress: DerivedProgress) -> None:
        engine, seq = await asyncio.to_thread(self.make_engine, site)
        store = IntervalStore(self.store_root)
        self.refresher = await asyncio.to_thread(self.make_refresher, site, store)
        # The saved state is authoritative: the cursor may lag it by one page after a crash.
        # Without a state (first start) the cursor says where the journal begins.
        if seq == 0:
            seq = ctx.journal.cursor(self.name)
        await self._follow(ctx, engine, store, progress, seq)

    async def _follow(
        self,
        ctx: ConsumerContext,
        engine: IntervalEngine,
        store: IntervalStore,
        progress: DerivedProgress,
        seq: int,
    ) -> None:
        """Aggregate pages until stopped; the next page is read while one is aggregated.

        Reading (LZ4 + Arrow decode) and aggregating overlap on two cores; the read-ahead
        only reads, so the cursor and the saved state still move page by page.
        """
        last_refresh = float("-inf")
        limit = self.options.page_batches
        ahead: asyncio.Future[list[JournalBatch]] | None = None
        retry_s = _STORAGE_RETRY_FIRST_S
        try:
            while True:
                read_ahead = ahead is not None
                page = await (ahead or asyncio.to_thread(ctx.journal.read, seq, limit=limit))
                ahead = None
                if not page and read_ahead:
                    # Read while the previous page was aggregated, perhaps before the last
                    # commit (and the stop that followed it): look again before deciding.
                    continue
                if page:
                    ahead = asyncio.ensure_future(
                        asyncio.to_thread(ctx.journal.read, page[-1].seq, limit=limit)
                    )
                    try:
                        seq = await asyncio.to_thread(self.process_page, engine, store, page)
                        ctx.journal.advance_cursor(self.name, seq)
                    except Exception as exc:
                        reason = metrics.storage_error(exc)
                        if reason is None:
                            raise
                        # Disk full (or EIO/EMFILE) in a part, the carry state or the cursor:
                        # alarm, wait, then resume exactly as after a crash (the saved state
                        # says which batch comes next; re-written parts replace partial ones).
                        metrics.raise_alarm("storage", self.name, reason)
                        ahead.cancel()
                        ahead = None
                        if ctx.stopping.is_set():
                            return  # the next start resumes from the saved state
                        await asyncio.sleep(retry_s)
                        retry_s = min(retry_s * 2, _STORAGE_RETRY_MAX_S)
                        engine, seq = await asyncio.to_thread(self.make_engine, engine.site)
                        if seq == 0:
                            seq = ctx.journal.cursor(self.name)
                        continue
                    metrics.clear_alarm("storage", self.name)
                    retry_s = _STORAGE_RETRY_FIRST_S
                    last_refresh = await self.refresh_kpis(
                        seq, progress, force=False, last=last_refresh
                    )
                    continue
                if seq > ctx.journal.cursor(self.name):
                    ctx.journal.advance_cursor(self.name, seq)
                if ctx.stopping.is_set():
                    await self.refresh_kpis(seq, progress, force=True, last=last_refresh)
                    return
                ctx.new_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.new_data.wait(), timeout=1.0)
                last_refresh = await self.refresh_kpis(
                    seq, progress, force=False, last=last_refresh
                )
        finally:
            if ahead is not None:
                ahead.cancel()


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What :func:`catch_up` did."""

    aggregator: str
    #: A running agent holds the aggregator: the journal was left to it.
    busy: bool
    #: The last journal batch now in the store.
    seq: int
    batches: int
    intervals: int
    #: Local months whose KPIs and findings were refreshed.
    months: tuple[str, ...]


def catch_up(aggregator: Aggregator, site: Site, journal: Journal) -> CatchUp:
    """Aggregate the journal up to its head now, as the running agent would.

    The same pages, state and cursor as :meth:`Aggregator.run` (then one KPI/finding
    refresh of the months touched), under the aggregator's writer lock; if a running
    agent holds that lock, nothing is done (``busy``): that agent aggregates the batches.
    """
    if not aggregator.try_lock():
        return CatchUp(aggregator.name, True, journal.cursor(aggregator.name), 0, 0, ())
    try:
        journal.register_cursor(aggregator.name)
        engine, seq = aggregator.make_engine(site)
        store = IntervalStore(aggregator.store_root)
        refresher = aggregator.refresher = aggregator.make_refresher(site, store)
        if seq == 0:
            seq = journal.cursor(aggregator.name)
        batches, written = 0, aggregator.intervals_written
        while page := journal.read(seq, limit=aggregator.options.page_batches):
            seq = aggregator.process_page(engine, store, page)
            journal.advance_cursor(aggregator.name, seq)
            batches += len(page)
        months = refresher.refresh() if refresher.pending else []
        return CatchUp(
            aggregator.name,
            False,
            seq,
            batches,
            aggregator.intervals_written - written,
            tuple(months),
        )
    finally:
        aggregator.unlock()


def site_aggregator(settings: AgentSettings) -> Aggregator | None:
    """The aggregator ``pue-agent run`` runs for a site: the configured one or the default.

    ``None`` when every configured aggregator is disabled (``pue-agent run`` runs none).

    Raises:
        ConfigError: for bad options of the configured aggregator.
    """
    entry = settings.aggregator_entry()
    if entry is None:
        if any(e.kind in AGGREGATOR_KINDS for e in settings.sinks):
            return None
        return build("aggregator", {}, settings)
    return build(entry.name or entry.kind, entry.options(), settings)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> Aggregator:
    """Build the aggregator from its ``[[sinks]]`` table.

    Raises:
        ConfigError: naming ``sinks.<name>.<field>``.
    """
    try:
        parsed = AggregatorOptions.model_validate(options)
        config = parsed.energy_config()
    except ValidationError as exc:
        raise ConfigError(f"sinks.{name}: {validation_problems(exc)}") from exc
    except EnergyConfigError as exc:
        raise ConfigError(f"sinks.{name}: {exc}") from exc
    root = settings.resolve(parsed.store_dir) if parsed.store_dir else settings.state_dir / "store"
    return Aggregator(
        name=name,
        options=parsed,
        store_root=root,
        config=config,
        green_path=settings.green_ledger_path(),
        policies_dir=settings.policies_path(),
    )

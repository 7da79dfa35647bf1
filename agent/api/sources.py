"""Where the API's data comes from: the journal (real time), the interval store, the rules.

Each source is one small function, so the HTTP layer knows nothing of storage:

* :class:`RealtimeFollower` reads new journal batches into
  :class:`agent.realtime.LatestPower`. It keeps its position in memory and
  registers **no** journal cursor: a real-time view must never hold data back
  from pruning.
* :func:`stored_kpis` reads the interval store at :meth:`AgentSettings.store_path`
  (the same call ``pue-agent rules evaluate`` makes). If the store cannot be read the
  API answers 503 and says so, rather than inventing figures.
* :func:`evaluate_findings` runs :func:`rules.evaluate_for_site` over the stored KPI
  history, exactly as ``pue-agent rules evaluate``, the report and the live refresh do.
* :func:`report_path` is where ``pue-agent report`` leaves a month's bundle:
  ``state_dir/reports/<site>-<YYYY-MM>.zip``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from agent.journal import Journal
from agent.logs import get_logger
from agent.periods import MONTH_RE
from agent.realtime import LatestPower, RealtimeSnapshot
from agent.schemas import KPI_SCHEMA
from agent.settings import AgentSettings
from agent.site import Site
from agent.store import IntervalStore
from rules import evaluate_for_site, load_packs

__all__ = [
    "KpiSource",
    "RealtimeFollower",
    "SourceUnavailableError",
    "evaluate_findings",
    "filter_kpis",
    "report_path",
    "stored_kpis",
]

_log = get_logger("api.sources")

#: Returns the whole KPI history (``KPI_SCHEMA``) for the agent's site.
KpiSource = Callable[["AgentSettings"], pl.DataFrame]


class SourceUnavailableError(RuntimeError):
    """A data source the endpoint needs is not available (the API answers 503)."""


def stored_kpis(settings: AgentSettings) -> pl.DataFrame:
    """The KPI history from the interval store (blocking: call in a thread).

    Raises:
        SourceUnavailableError: when the store cannot be read.
    """
    try:
        return IntervalStore(settings.store_path()).read_kpis()
    # StoreError is a RuntimeError; a corrupt Parquet part raises a PolarsError.
    except (OSError, ValueError, RuntimeError, pl.exceptions.PolarsError) as exc:
        raise SourceUnavailableError(f"the interval store could not be read: {exc}") from exc


def filter_kpis(kpis: pl.DataFrame, period: str, kind: str | None) -> pl.DataFrame:
    """Rows labelled ``period`` (and of ``kind``, if given), in KPI_SCHEMA column order."""
    frame = kpis.filter(pl.col("period") == period)
    if kind is not None:
        frame = frame.filter(pl.col("period_kind") == kind)
    columns = [c for c in KPI_SCHEMA.names() if c in frame.columns]
    return frame.select(columns).sort("period_kind", "metric")


def evaluate_findings(
    kpis: pl.DataFrame, site: Site, month: str, policies_dir: Path | None = None
) -> pl.DataFrame:
    """Findings of every policy pack for ``month`` from the KPI history (blocking).

    Args:
        kpis: The KPI history (month and TTM rows).
        site: The site model (facts, category).
        month: ``YYYY-MM``.
        policies_dir: The operator's packs, read besides the built-in ones (``None``:
            built-in packs only).
    """
    return evaluate_for_site(kpis, site, month, load_packs(policies_dir))


def report_path(state_dir: Path, site_id: str, month: str) -> Path:
    """Where the bundle of ``month`` is expected (``month`` must match :data:`MONTH_RE`)."""
    if not MONTH_RE.fullmatch(month):
        raise ValueError(f"not a month: {month!r}")
    return state_dir / "reports" / f"{site_id}-{month}.zip"


@dataclass
class RealtimeFollower:
    """Follows the journal head and keeps the latest power of every site meter."""

    journal: Journal
    site: Site
    poll_s: float = 1.0
    #: Batches read back from the head at start, so the view is warm after a restart.
    warm_batches: int = 64
    latest: LatestPower = field(init=False)
    position: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.latest = LatestPower(self.site)

    def start(self) -> None:
        """Start following in a background task."""
        self.position = max(0, self.journal.head[0] - self.warm_batches)
        self._task = asyncio.create_task(self._follow(), name="api-realtime")

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def snapshot(self) -> RealtimeSnapshot:
        """The real-time figures from what has been read so far."""
        return self.latest.snapshot()

    async def _follow(self) -> None:
        while True:
            try:
                page = await asyncio.to_thread(
                    self.journal.read, self.position, limit=256, kinds=("readings",)
                )
            except Exception:  # noqa: BLE001 - the view must not die with one bad read
                _log.exception("real-time view could not read the journal")
                page = []
            # Updated on the loop thread, so a snapshot never sees half an update.
            for batch in page:
                self.latest.update(batch.frame)
                self.position = batch.seq
            if len(page) < 256:
                await asyncio.sleep(self.poll_s)

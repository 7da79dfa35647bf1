"""Live KPIs and rule findings for the months the aggregator touched.

After a page of intervals is in the store, the aggregator notes the site-local
months it touched; at most every ``kpi_refresh_s`` it recomputes the KPIs the
sinks publish (``day``, ``month``, ``ttm``: ``pue-agent kpi`` and the reports
recompute every kind anyway) for those months only, stores them with
:meth:`IntervalStore.write_kpis`, evaluates the policy packs for the month and
stores the findings with :meth:`IntervalStore.write_findings`. Early warnings are
logged once when they appear and once when they clear.

Cost for a large site: the month is read from the hourly roll-ups (whole-hour
zones; base intervals otherwise), and the eleven months before it — which only
the TTM needs — are summed once per meter from the store's daily roll-ups and
cached until a page touches one of them (an import). Both roll-ups are exact
(de-duplicated like ``read_intervals``), see :mod:`agent.kpi.from_store`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from agent.green import GreenLedger, GreenLedgerError
from agent.kpi import kpi_choices
from agent.kpi.from_store import earlier_totals, store_kpis
from agent.kpi.hourly import GreenSupply
from agent.logs import get_logger
from agent.schemas import PeriodKind
from agent.site import Site
from agent.store import IntervalStore, atomic_write_bytes
from rules import LoadedPacks, evaluate_for_site, load_packs, warning_changes

__all__ = ["LIVE_KINDS", "KpiRefresher"]

_log = get_logger("aggregator")

#: Period kinds refreshed live (what the InfluxDB and MQTT sinks publish).
LIVE_KINDS: tuple[PeriodKind, ...] = (PeriodKind.DAY, PeriodKind.MONTH, PeriodKind.TTM)


@dataclass
class KpiRefresher:
    """Recomputes KPIs and findings of touched months; ``pending`` survives a restart."""

    site: Site
    store: IntervalStore
    green_path: Path | None
    pending_path: Path
    coverage_threshold: float = 0.95
    rules: bool = True
    #: The operator's policy packs (``AgentSettings.policies_path()``); ``None``: built-in only.
    policies_dir: Path | None = None
    pending: set[str] = field(default_factory=set)
    refreshed: int = field(default=0, init=False)
    _earlier: dict[str, pl.DataFrame] = field(default_factory=dict, init=False)
    _findings: dict[str, pl.DataFrame] = field(default_factory=dict, init=False)
    _packs: LoadedPacks | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.pending_path.is_file():
            try:
                self.pending |= set(json.loads(self.pending_path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                _log.warning("unreadable pending-months file", file=str(self.pending_path))

    def _persist(self) -> None:
        atomic_write_bytes(self.pending_path, json.dumps(sorted(self.pending)).encode())

    def note(self, rows: pl.DataFrame) -> None:
        """Interval rows were written: their local months need a refresh (durably noted)."""
        if rows.height == 0:
            return
        months = set(
            rows.select(
                pl.col("interval_start")
                .dt.convert_time_zone(self.site.timezone)
                .dt.strftime("%Y-%m")
                .unique()
            )
            .to_series()
            .to_list()
        )
        # A later month's cached TTM part includes a touched earlier month: drop it.
        first = min(months)
        for cached in [m for m in self._earlier if m > first]:
            del self._earlier[cached]
        if not months <= self.pending:
            self.pending |= months
            self._persist()

    # -- computing ----------------------------------------------------------------------------

    def _earlier_totals(self, month: str) -> pl.DataFrame:
        """Per meter, the eleven months before ``month`` as one row (cached until touched)."""
        cached = self._earlier.get(month)
        if cached is None:
            cached = self._earlier[month] = earlier_totals(self.store, self.site, month)
        return cached

    def _green(self) -> pl.DataFrame | None:
        if self.green_path is None:
            return None
        try:
            return GreenLedger(self.green_path).frame()
        except GreenLedgerError as exc:
            _log.error("green ledger unreadable: REF without certificates", error=str(exc))
            return None

    def _supply(self) -> GreenSupply:
        """Green supply in time for hourly matching (none if the ledger is unreadable)."""
        if self.green_path is None:
            return GreenSupply.empty()
        try:
            return GreenLedger(self.green_path).supply()
        except GreenLedgerError:
            return GreenSupply.empty()  # already logged once by _green()

    def kpis(self, month: str) -> pl.DataFrame:
        """The live KPIs (:data:`LIVE_KINDS`) of local month ``month``.

        With the month's hourly matching (day and month rows; the TTM's hourly share is
        computed by ``pue-agent kpi``, which reads the twelve months' hours).
        """
        return store_kpis(
            self.store,
            self.site,
            self._green(),
            month=month,
            coverage_threshold=self.coverage_threshold,
            kinds=LIVE_KINDS,
            earlier=self._earlier_totals(month).lazy(),
            supply=self._supply(),
        )

    def _load_packs(self) -> LoadedPacks:
        if self._packs is None:
            self._packs = load_packs(self.policies_dir)
            for error in self._packs.errors:
                _log.warning("policy pack refused", error=error)
        return self._packs

    def findings(self, month: str) -> pl.DataFrame:
        """Evaluate every policy pack for ``month`` against the stored KPI history."""
        history = self.store.read_kpis().filter(pl.col("period_kind").is_in(["month", "ttm"]))
        return evaluate_for_site(history, self.site, month, self._load_packs())

    def _log_warnings(self, month: str, findings: pl.DataFrame) -> None:
        previous = self._findings.get(month)
        if previous is None:
            previous = self.store.read_findings(month=month)
        for change in warning_changes(previous, findings):
            log = _log.warning if change.change == "appeared" else _log.info
            log(
                f"rule warning {change.change}",
                site=change.site,
                rule=change.rule_id,
                month=month,
                warning=change.warning,
                detail=change.detail,
            )
        self._findings[month] = findings

    def refresh(self) -> list[str]:
        """Recompute and store KPIs (and findings) of every pending month; returns them."""
        done = []
        for month in sorted(self.pending):
            kpis = self.kpis(month)
            self.store.write_kpis(
                kpis,
                choices=kpi_choices(self.site, coverage_threshold=self.coverage_threshold),
            )
            if self.rules:
                findings = self.findings(month)
                self._log_warnings(month, findings)
                self.store.write_findings(findings)
            done.append(month)
        self.pending -= set(done)
        self.refreshed += len(done)
        self._persist()
        return done

"""One monthly report from the agent's own data: what ``pue-agent report`` runs.

The site model, the month's intervals and history from the interval store
(:meth:`AgentSettings.store_path`), the journal's summary, the site's signing key and
the operator's policy packs go into :func:`agent.report.bundle.build_bundle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl

from agent import keys
from agent.green import GreenLedger, GreenLedgerError, load_green_file
from agent.kpi.from_store import recorded_silences
from agent.periods import PeriodError, month_bounds, shift_month
from agent.report.bundle import (
    HISTORY_MONTHS,
    BundleError,
    BundleResult,
    ReportRequest,
    build_bundle,
)
from agent.report.render import FontError
from agent.report.sources import agent_chains, journal_summary, month_intervals, read_history
from agent.settings import AgentSettings
from agent.site import load_site_for
from agent.store import IntervalStore
from collectors.nats.merge import DEFAULT_DEDUPE_WINDOW_S, state_file

__all__ = ["ReportError", "run_report"]


class ReportError(RuntimeError):
    """The report cannot be built (the message says why)."""


def _agent_chains(settings: AgentSettings, start: datetime, end: datetime) -> dict[str, Any] | None:
    """The publishing agents' chains, when ``nats`` collectors feed this site's journal."""
    entries = [
        (entry.name or f"{entry.kind}-{i}", entry.options())
        for i, entry in enumerate(settings.collectors)
        if entry.enabled and entry.kind == "nats"
    ]
    if not entries:
        return None
    windows = {
        float(options.get("dedupe_window_s", DEFAULT_DEDUPE_WINDOW_S)) for _, options in entries
    }
    return agent_chains(
        [state_file(settings.state_dir, name) for name, _ in entries],
        start,
        end,
        # Several collectors with different windows: the widest is what dropped most.
        dedupe_window_s=max(windows),
    )


def run_report(
    settings: AgentSettings,
    month: str,
    *,
    langs: Sequence[Literal["zh", "en"]] = ("zh", "en"),
    out_dir: Path = Path(),
    green: Path | None = None,
    coverage_threshold: float = 0.95,
    policies_dir: Path | None = None,
    overwrite: bool = False,
    csv: bool = True,
) -> tuple[BundleResult, str]:
    """What ``pue-agent report`` does (the benchmark calls this too).

    Returns:
        The bundle and the signing key's fingerprint.

    Raises:
        ReportError: no site model, a bad month, no usable key, or a bundle error.
    """
    site = load_site_for(settings)
    if site is None:
        raise ReportError("no site model configured: a report needs one (site_file or [site])")
    try:
        start, end = month_bounds(month, site.timezone)
        history_start, _ = month_bounds(shift_month(month, -HISTORY_MONTHS), site.timezone)
    except PeriodError as exc:
        raise ReportError(str(exc)) from exc
    try:
        key = keys.load_signing_key(settings)
    except keys.SigningKeyError as exc:
        raise ReportError(str(exc)) from exc
    store = settings.store_path()
    journal = (
        journal_summary(settings.journal_path, start, end)
        if settings.journal_path.is_file()
        else None
    )
    chains = _agent_chains(settings, start, end)
    if chains is not None:
        # A site aggregator fed by publishing agents: their chains are part of the custody.
        journal = {**(journal or {"available": False}), **chains}
    try:
        # The ledger `pue-agent green` keeps, as `kpi` and the live findings read it,
        # unless the caller names a file.
        ledger = (
            load_green_file(green)
            if green is not None
            else GreenLedger(settings.green_ledger_path()).frame()
        )
        # Hourly matching needs the entries placed in time, which only the ledger keeps.
        supply = None if green is not None else GreenLedger(settings.green_ledger_path()).supply()
    except GreenLedgerError as exc:
        raise ReportError(str(exc)) from exc
    # The entries the bundle's figures can use: the month and the 22 before (TTM history).
    months = [shift_month(month, -back) for back in range(HISTORY_MONTHS + 1)]
    ledger = ledger.filter(pl.col("month").is_in(months))
    out_dir.mkdir(parents=True, exist_ok=True)
    with month_intervals(store, start, end) as intervals:
        request = ReportRequest(
            site=site,
            month=month,
            intervals=intervals,
            history=read_history(store, history_start, start, timezone=site.timezone),
            green=ledger,
            journal=journal,
            coverage_threshold=coverage_threshold,
            # The packs the live findings used (agent.toml) unless the caller names others.
            policies_dir=policies_dir or settings.policies_path(),
            csv=csv,
            silences=recorded_silences(IntervalStore(store), month),
            supply=supply,
        )
        try:
            result = build_bundle(request, key, out_dir, langs, overwrite=overwrite)
        except (BundleError, FontError) as exc:
            raise ReportError(str(exc)) from exc
    return result, key.fingerprint

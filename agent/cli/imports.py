"""``pue-agent import``: historical readings from a BMS/EMS export into the journal."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from agent.aggregator import catch_up, site_aggregator
from agent.cli.common import ConfigOption, StateDirOption, fail, out, settings_or_exit
from agent.importer import ImportFileError, import_file
from agent.journal import Journal, JournalError
from agent.settings import ConfigError
from agent.site import SiteError, load_site_for

__all__ = ["import_readings"]


def import_readings(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet: ts, device, point, quantity, value.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Import a file imported before.")] = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Load historical readings into the journal (all or nothing) and into the store.

    The readings are aggregated at once (the aggregator's own code path, state and cursor),
    so `kpi`, `rules evaluate` and `report` see them without the daemon. If a running agent
    holds the aggregator, it aggregates them instead (nothing is counted twice).
    """
    settings = settings_or_exit(config, state_dir)
    try:
        site = load_site_for(settings)
        aggregator = site_aggregator(settings) if site is not None else None
    except (ConfigError, SiteError) as exc:
        raise fail(f"{exc} (nothing imported)") from exc
    journal = Journal(settings.journal_path)
    try:
        result = import_file(file, journal, record_dir=settings.state_dir / "imports", force=force)
        span = result.last_ts - result.first_ts
        out.print(
            f"imported {result.rows} readings ({result.first_ts:%Y-%m-%d %H:%M}Z .. "
            f"{result.last_ts:%Y-%m-%d %H:%M}Z, {span / timedelta(days=1):.1f} days) as journal "
            f"batch {result.seq}, source {result.source}",
            highlight=False,
        )
        if site is None or aggregator is None:
            why = "no site model" if site is None else "no aggregator enabled"
            out.print(f"not aggregated ({why}): the readings wait in the journal", highlight=False)
            return
        done = catch_up(aggregator, site, journal)
    except (ImportFileError, JournalError, ConfigError) as exc:
        raise fail(str(exc)) from exc
    finally:
        journal.close()
    if done.busy:
        out.print(
            f"a running agent holds aggregator {done.aggregator!r}: it aggregates batch "
            f"{result.seq} (watch `pue-agent journal stats` until its lag is 0)",
            highlight=False,
        )
        return
    out.print(
        f"aggregated journal up to batch {done.seq} with aggregator {done.aggregator!r}: "
        f"{done.intervals} intervals into {aggregator.store_root}; KPIs and findings "
        f"refreshed for {', '.join(done.months) or 'no month'}",
        highlight=False,
    )

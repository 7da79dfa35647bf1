"""``pue-agent import``: historical readings from a BMS/EMS export into the journal."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import ConfigOption, StateDirOption, fail, out, settings_or_exit
from agent.importer import ImportFileError, import_file
from agent.journal import Journal, JournalError

__all__ = ["import_readings"]


def import_readings(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet: ts, device, point, quantity, value.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Import a file imported before.")] = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Load historical readings into the journal (all or nothing; stop the agent first)."""
    settings = settings_or_exit(config, state_dir)
    journal = Journal(settings.journal_path)
    try:
        result = import_file(file, journal, record_dir=settings.state_dir / "imports", force=force)
    except (ImportFileError, JournalError) as exc:
        raise fail(str(exc)) from exc
    finally:
        journal.close()
    span = result.last_ts - result.first_ts
    out.print(
        f"imported {result.rows} readings ({result.first_ts:%Y-%m-%d %H:%M}Z .. "
        f"{result.last_ts:%Y-%m-%d %H:%M}Z, {span / timedelta(days=1):.1f} days) as journal "
        f"batch {result.seq}, source {result.source}",
        highlight=False,
    )

"""``pue-agent journal verify`` and ``pue-agent journal stats``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import ConfigOption, JsonOption, StateDirOption, fail, out, settings_or_exit
from agent.journal import Journal

__all__ = ["journal_app", "stats", "verify_chain"]

journal_app = typer.Typer(help="Inspect and verify the hash-chained journal.", no_args_is_help=True)


@journal_app.command("verify")
def verify_chain(
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    path: Annotated[Path | None, typer.Option(help="Journal file (overrides settings).")] = None,
) -> None:
    """Re-derive the hash chain and name the first bad batch."""
    journal_path = path or settings_or_exit(config, state_dir).journal_path
    if not journal_path.is_file():
        raise fail(f"no journal at {journal_path}")
    report = Journal(journal_path).verify()
    if report.ok:
        out.print(
            f"journal OK: {report.batches_checked} batches "
            f"({report.first_seq}..{report.last_seq}), head {report.head_hash}",
            highlight=False,
        )
        return
    raise fail(f"journal BROKEN at batch {report.bad_seq}: {report.problem}", code=1)


@journal_app.command("stats")
def stats(
    config: ConfigOption = None, state_dir: StateDirOption = None, as_json: JsonOption = False
) -> None:
    """Print batch and reading counts, size, budget and each consumer's lag."""
    settings = settings_or_exit(config, state_dir)
    if not settings.journal_path.is_file():
        raise fail(f"no journal at {settings.journal_path}")
    journal = Journal(settings.journal_path)
    data = {**journal.stats(), "lag": journal.lag()}
    if as_json:
        out.print_json(json.dumps(data))
    else:
        for key, value in data.items():
            out.print(f"{key}: {value}", highlight=False)

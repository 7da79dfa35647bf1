"""``pue-agent green add|list|remove``: certificates and contracts (documentary green energy)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import ConfigOption, JsonOption, StateDirOption, fail, out, settings_or_exit
from agent.green import GreenLedger, GreenLedgerError

__all__ = ["add", "green_app", "list_entries", "remove"]

green_app = typer.Typer(
    help="Green certificates and contracts (documentary renewable energy).", no_args_is_help=True
)


def _ledger(config: Path | None, state_dir: Path | None) -> GreenLedger:
    return GreenLedger(settings_or_exit(config, state_dir).green_ledger_path())


@green_app.command("add")
def add(
    period: Annotated[str, typer.Option("--period", help="Local month, YYYY-MM.")],
    kind: Annotated[str, typer.Option("--kind", help="certificate | contract")],
    mwh: Annotated[float, typer.Option("--mwh", help="Energy in MWh (1 certificate = 1 MWh).")],
    ref: Annotated[str, typer.Option("--ref", help="Certificate / contract reference.")],
    note: Annotated[str | None, typer.Option("--note")] = None,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Record certificates retired or contracted green supply for a month."""
    try:
        entry = _ledger(config, state_dir).add(period, kind, mwh, ref, note=note)
    except GreenLedgerError as exc:
        raise fail(str(exc)) from exc
    out.print(
        f"added {entry.id}: {entry.period} {entry.kind} {entry.mwh:g} MWh {entry.ref} "
        f"(by {entry.added_by} at {entry.added_at})",
        highlight=False,
    )


@green_app.command("list")
def list_entries(
    as_json: JsonOption = False,
    all_entries: Annotated[bool, typer.Option("--all", help="Include removed entries.")] = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """List green entries."""
    try:
        entries = _ledger(config, state_dir).entries(include_removed=all_entries)
    except GreenLedgerError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        out.print_json(json.dumps([asdict(e) for e in entries]))
        return
    for e in entries:
        removed = f" REMOVED by {e.removed_by} at {e.removed_at}" if e.removed_at else ""
        out.print(
            f"{e.id} {e.period} {e.kind:11} {e.mwh:>10g} MWh {e.ref} "
            f"(by {e.added_by} at {e.added_at}){removed}",
            highlight=False,
        )


@green_app.command("remove")
def remove(
    entry_id: Annotated[str, typer.Argument(help="Entry id from `green list`.")],
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Mark an entry removed (kept in the ledger with who/when)."""
    try:
        entry = _ledger(config, state_dir).remove(entry_id)
    except GreenLedgerError as exc:
        raise fail(str(exc)) from exc
    out.print(f"removed {entry.id} (by {entry.removed_by} at {entry.removed_at})", highlight=False)

"""``pue-agent green add|list|remove``: certificates and contracts (documentary green energy)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.common import (
    ConfigOption,
    JsonOption,
    StateDirOption,
    fail,
    out,
    settings_or_exit,
    site_or_exit,
)
from agent.green import GreenLedger, GreenLedgerError, declared_profile, read_profile_csv
from agent.kpi.green_window import GreenWindowUnavailableError, green_window_for

__all__ = ["add", "green_app", "list_entries", "remove", "window"]

green_app = typer.Typer(
    help="Green certificates and contracts (documentary renewable energy).", no_args_is_help=True
)


def _ledger(config: Path | None, state_dir: Path | None) -> GreenLedger:
    return GreenLedger(settings_or_exit(config, state_dir).green_ledger_path())


def _profile(
    period: str, csv_path: Path | None, kw: str | None
) -> tuple[dict[str, float] | None, str | None]:
    """A contract's hourly delivery from ``--profile-csv`` or ``--profile-kw`` (or none)."""
    if csv_path is not None and kw is not None:
        raise GreenLedgerError("--profile-csv and --profile-kw: give one of them")
    if csv_path is not None:
        return read_profile_csv(csv_path, period), f"csv:{csv_path.name}"
    if kw is not None:
        try:
            values = [float(v) for v in kw.split(",")]
        except ValueError:
            raise GreenLedgerError(f"--profile-kw {kw!r}: expected 24 numbers (kW)") from None
        return declared_profile(period, values), "declared"
    return None, None


@green_app.command("add")
def add(
    period: Annotated[str, typer.Option("--period", help="Local month, YYYY-MM.")],
    kind: Annotated[str, typer.Option("--kind", help="certificate | contract")],
    ref: Annotated[str, typer.Option("--ref", help="Certificate / contract reference.")],
    mwh: Annotated[
        float | None,
        typer.Option(
            "--mwh", help="Energy in MWh (1 certificate = 1 MWh); a profile's sum if omitted."
        ),
    ] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    production: Annotated[
        str | None,
        typer.Option(
            "--production",
            help="Certificate production period as stated: YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH "
            "(local); default: the month.",
        ),
    ] = None,
    profile_csv: Annotated[
        Path | None,
        typer.Option(
            "--profile-csv", help="Contract: hourly settlement CSV with hour,energy_kwh (local)."
        ),
    ] = None,
    profile_kw: Annotated[
        str | None,
        typer.Option(
            "--profile-kw",
            help="Contract: declared delivery, 24 comma-separated kW for local hours 0-23, "
            "every day of the month.",
        ),
    ] = None,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Record certificates retired or contracted green supply for a month."""
    try:
        profile, source = _profile(period, profile_csv, profile_kw)
        if mwh is None:
            if profile is None:
                raise GreenLedgerError("--mwh: required unless a delivery profile is given")
            mwh = sum(profile.values()) / 1000.0
        entry = _ledger(config, state_dir).add(
            period,
            kind,
            mwh,
            ref,
            note=note,
            production=production,
            profile_kwh=profile,
            profile_source=source,
        )
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
        placed = f" produced {e.production}" if e.production else ""
        if e.profile_kwh:
            placed = f" hourly profile {len(e.profile_kwh)} h ({e.profile_source})"
        out.print(
            f"{e.id} {e.period} {e.kind:11} {e.mwh:>10g} MWh {e.ref}{placed} "
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


@green_app.command("window")
def window(
    as_json: JsonOption = False,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """The green window: expected green surplus and share now and for the next 24 hours."""
    settings = settings_or_exit(config, state_dir)
    site = site_or_exit(settings, needed_for="no green window")
    try:
        signal = green_window_for(settings, site)
    except GreenWindowUnavailableError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        out.print_json(json.dumps(signal.to_json(), ensure_ascii=False))
        return
    out.print(
        f"site {site.id}: today's ratio {signal.ratio:.2f}, battery green "
        f"{signal.storage_green_kwh:.1f} kWh",
        highlight=False,
    )
    for row in signal.hours.iter_rows(named=True):
        share = "—" if row["green_share"] is None else f"{row['green_share']:.0%}"
        local = row["hour_start"].astimezone(site.zone).strftime("%m-%d %H:00")
        out.print(
            f"  +{row['hours_ahead']:2d} h  {local}  surplus {row['expected_surplus_kw']:9.1f} kW"
            f"  share {share:>5}",
            highlight=False,
        )

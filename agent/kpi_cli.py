"""CLI of the energy/KPI area: ``pue-agent kpi``, ``pue-agent green …``, ``pue-agent import``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import polars as pl
import typer

__all__ = ["compute_month", "register"]

green_app = typer.Typer(
    help="Green certificates and contracts (documentary renewable energy).", no_args_is_help=True
)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Agent TOML file.")]
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="Override the state directory.")
]


def compute_month(
    settings_state: Path, site: object, month: str, threshold: float
) -> tuple[pl.DataFrame, dict[str, object]]:
    """Compute and store the KPIs of ``month`` from the local store; return them and the choices.

    Each period kind reads only what it needs (:func:`agent.kpi.from_store.store_kpis`):
    interval PUE the month's base intervals, hours/days/month the hourly roll-ups (base
    intervals in half-hour zones), the TTM the store's daily roll-ups of the eleven
    months before — all de-duplicated like ``read_intervals``.
    """
    from agent.green import GreenLedger  # noqa: PLC0415
    from agent.kpi import kpi_choices  # noqa: PLC0415
    from agent.kpi.from_store import store_kpis  # noqa: PLC0415
    from agent.site import Site  # noqa: PLC0415
    from agent.store import IntervalStore  # noqa: PLC0415

    assert isinstance(site, Site)
    store = IntervalStore(settings_state / "store")
    green = GreenLedger(settings_state / "green" / "ledger.json").frame()
    kpis = store_kpis(store, site, green, month=month, coverage_threshold=threshold)
    choices = kpi_choices(site, coverage_threshold=threshold, computed_at=datetime.now(UTC))
    store.write_kpis(kpis, choices=choices)
    return kpis, choices


def register(app: typer.Typer) -> None:
    """Add ``kpi``, ``green`` and ``import`` to the ``pue-agent`` app."""
    from agent.cli import fail, out, settings_or_exit  # noqa: PLC0415

    @app.command("kpi")
    def kpi(
        period: Annotated[str, typer.Option("--period", help="Local month, YYYY-MM.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        threshold: Annotated[float, typer.Option("--coverage-threshold", min=0.0, max=1.0)] = 0.95,
        config: ConfigOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        """Compute and print the month's PUE (interim), TTM PUE (annual), REF, CUE and more."""
        from agent.kpi import PeriodError  # noqa: PLC0415
        from agent.pipeline import load_site_for  # noqa: PLC0415
        from agent.site import SiteError  # noqa: PLC0415

        settings = settings_or_exit(config, state_dir)
        try:
            site = load_site_for(settings)
        except SiteError as exc:
            raise fail(str(exc)) from exc
        if site is None:
            raise fail("no site model configured (site_file or [site]): nothing to compute")
        try:
            kpis, choices = compute_month(settings.state_dir, site, period, threshold)
        except PeriodError as exc:
            raise fail(str(exc)) from exc
        shown = kpis.filter(pl.col("period_kind").is_in(["month", "ttm"]))
        if as_json:
            rows = shown.with_columns(
                pl.col("period_start", "period_end").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            ).to_dicts()
            out.print_json(
                json.dumps({"site": site.id, "period": period, "kpis": rows, "choices": choices})
            )
            return
        out.print(
            f"site {site.id} — {period} (category {site.pue_category}; "
            "month = interim, ttm = annual)"
        )
        for row in shown.iter_rows(named=True):
            value = (
                "insufficient_data"
                if row["value"] is None
                else f"{row['value']:.4f} {row['unit']}".strip()
            )
            out.print(
                f"  {row['period_kind']:5} {row['metric']:28} {value:>24}  "
                f"coverage {row['coverage'] or 0:.1%}",
                highlight=False,
            )

    app.add_typer(green_app, name="green")

    def _ledger(config: Path | None, state_dir: Path | None) -> object:
        from agent.green import GreenLedger  # noqa: PLC0415

        settings = settings_or_exit(config, state_dir)
        return GreenLedger(settings.state_dir / "green" / "ledger.json")

    @green_app.command("add")
    def green_add(
        period: Annotated[str, typer.Option("--period", help="Local month, YYYY-MM.")],
        kind: Annotated[str, typer.Option("--kind", help="certificate | contract")],
        mwh: Annotated[float, typer.Option("--mwh", help="Energy in MWh (1 certificate = 1 MWh).")],
        ref: Annotated[str, typer.Option("--ref", help="Certificate / contract reference.")],
        note: Annotated[str | None, typer.Option("--note")] = None,
        config: ConfigOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        """Record certificates retired or contracted green supply for a month."""
        from agent.green import GreenLedger, GreenLedgerError  # noqa: PLC0415

        ledger = _ledger(config, state_dir)
        assert isinstance(ledger, GreenLedger)
        try:
            entry = ledger.add(period, kind, mwh, ref, note=note)
        except GreenLedgerError as exc:
            raise fail(str(exc)) from exc
        out.print(
            f"added {entry.id}: {entry.period} {entry.kind} {entry.mwh:g} MWh {entry.ref} "
            f"(by {entry.added_by} at {entry.added_at})",
            highlight=False,
        )

    @green_app.command("list")
    def green_list(
        as_json: Annotated[bool, typer.Option("--json")] = False,
        all_entries: Annotated[
            bool, typer.Option("--all", help="Include removed entries.")
        ] = False,
        config: ConfigOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        """List green entries."""
        from dataclasses import asdict  # noqa: PLC0415

        from agent.green import GreenLedger  # noqa: PLC0415

        ledger = _ledger(config, state_dir)
        assert isinstance(ledger, GreenLedger)
        entries = ledger.entries(include_removed=all_entries)
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
    def green_remove(
        entry_id: Annotated[str, typer.Argument(help="Entry id from `green list`.")],
        config: ConfigOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        """Mark an entry removed (kept in the ledger with who/when)."""
        from agent.green import GreenLedger, GreenLedgerError  # noqa: PLC0415

        ledger = _ledger(config, state_dir)
        assert isinstance(ledger, GreenLedger)
        try:
            entry = ledger.remove(entry_id)
        except GreenLedgerError as exc:
            raise fail(str(exc)) from exc
        out.print(
            f"removed {entry.id} (by {entry.removed_by} at {entry.removed_at})", highlight=False
        )

    @app.command("import")
    def import_command(
        file: Annotated[
            Path, typer.Argument(help="CSV or Parquet: ts, device, point, quantity, value.")
        ],
        force: Annotated[
            bool, typer.Option("--force", help="Import a file imported before.")
        ] = False,
        config: ConfigOption = None,
        state_dir: StateDirOption = None,
    ) -> None:
        """Load historical readings into the journal (all or nothing; stop the agent first)."""
        from agent.importer import ImportFileError, import_file  # noqa: PLC0415
        from agent.journal import Journal, JournalError  # noqa: PLC0415

        settings = settings_or_exit(config, state_dir)
        journal = Journal(settings.journal_path)
        try:
            result = import_file(
                file, journal, record_dir=settings.state_dir / "imports", force=force
            )
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

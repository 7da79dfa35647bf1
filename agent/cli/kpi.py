"""``pue-agent kpi``: the month's PUE (interim), TTM PUE (annual), REF, CUE and more."""

from __future__ import annotations

import importlib
import json
import math
from typing import Annotated

import polars as pl
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
from agent.green import GreenLedger, GreenLedgerError
from agent.kpi.from_store import compute_and_store_month, month_silences
from agent.kpi.hourly import HOURLY_METRICS
from agent.periods import PeriodError
from agent.store import IntervalStore

__all__ = ["kpi"]


def _hourly_summary(shown: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """Hourly matching beside the annual REF, per window (``month``, ``ttm``).

    The same values as the ``kpis`` rows, keyed by metric for a reader that wants just these.
    """
    wanted = ["ref", *HOURLY_METRICS]
    rows = shown.filter(pl.col("metric").is_in(wanted))
    return {
        kind: {
            r["metric"]: r["value"]
            for r in rows.filter(pl.col("period_kind") == kind).iter_rows(named=True)
        }
        for kind in ("month", "ttm")
    }


#: ``--fleet`` is in its own module, loaded by name when asked for, like every command
#: (:data:`agent.cli.COMMANDS`): reading the fleet needs nats-py, which ``pue-agent kpi
#: --period`` (and ``kpi --help``) must not load (``tests/foundation/test_cli_lazy.py``).
_FLEET = ("agent.cli.fleet", "show_fleet")
_RETIRE = ("agent.cli.fleet", "retire_fleet_site")


def kpi(
    period: Annotated[
        str | None, typer.Option("--period", help="Local month, YYYY-MM (not with --fleet).")
    ] = None,
    as_json: JsonOption = False,
    threshold: Annotated[float, typer.Option("--coverage-threshold", min=0.0, max=1.0)] = 0.95,
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    fleet: Annotated[
        bool,
        typer.Option("--fleet", help="Every site's latest summary from the fleet's NATS bucket."),
    ] = False,
    nats_url: Annotated[
        list[str] | None,
        typer.Option(
            "--nats-url", help="With --fleet: NATS server URL(s) instead of the config's."
        ),
    ] = None,
    stale_after: Annotated[
        float | None,
        typer.Option(
            "--stale-after",
            help="With --fleet: seconds after which a summary is stale (default 2 x heartbeat).",
        ),
    ] = None,
    trust: Annotated[
        list[str] | None,
        typer.Option(
            "--trust",
            help="With --fleet: SITE=KEY, the site's public key (PEM file, hex or base64); "
            "repeatable, over trusted_keys of the config.",
        ),
    ] = None,
    retire: Annotated[
        bool,
        typer.Option(
            "--retire",
            help="With --fleet: purge this site's summary from the fleet bucket (a "
            "decommissioned site); run with the site's own config.",
        ),
    ] = False,
) -> None:
    """Compute and print the month's PUE (interim), TTM PUE (annual), REF, CUE and more.

    With ``--fleet``: every site's PUE, REF and coverage as the sites last published them.
    """
    settings = settings_or_exit(config, state_dir)
    if fleet:
        if period is not None:
            raise fail("--fleet lists each site's newest month: leave out --period")
        if stale_after is not None and not (0 < stale_after < math.inf):
            raise fail("--stale-after must be a positive number of seconds")
        if retire:
            if as_json or stale_after is not None or trust:
                raise fail("--retire takes no --json, --stale-after or --trust")
            module, attribute = _RETIRE
            getattr(importlib.import_module(module), attribute)(settings, nats_url or None)
            return
        module, attribute = _FLEET
        show = getattr(importlib.import_module(module), attribute)
        show(settings, as_json, nats_url or None, stale_after, trust or [])
        return
    if retire:
        raise fail("--retire goes with --fleet")
    if period is None:
        raise fail("--period YYYY-MM is required (or --fleet)")
    site = site_or_exit(settings, needed_for="nothing to compute")
    try:
        ledger = GreenLedger(settings.green_ledger_path())
        green, supply = ledger.frame(), ledger.supply()
        store = IntervalStore(settings.store_path())
        kpis, choices = compute_and_store_month(
            store, site, green, period, threshold, supply=supply
        )
        silences = month_silences(store, site, period)
    except (PeriodError, GreenLedgerError) as exc:
        raise fail(str(exc)) from exc
    shown = kpis.filter(pl.col("period_kind").is_in(["month", "ttm"]))
    if as_json:
        rows = shown.with_columns(
            pl.col("period_start", "period_end").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        ).to_dicts()
        silent = silences.with_columns(
            pl.col("start", "end").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        ).to_dicts()
        out.print_json(
            json.dumps(
                {
                    "site": site.id,
                    "period": period,
                    "kpis": rows,
                    "choices": choices,
                    "silent_periods": silent,
                    "hourly_matching": _hourly_summary(shown),
                }
            )
        )
        return
    out.print(
        f"site {site.id} — {period} (category {site.pue_category}; month = interim, ttm = annual)"
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
    out.print(f"silent periods (a meter with no reading): {silences.height}")
    for gap in silences.iter_rows(named=True):
        out.print(
            f"  {gap['meter']:20} {gap['start']:%Y-%m-%d %H:%M}Z .. {gap['end']:%Y-%m-%d %H:%M}Z "
            f"{gap['minutes']:7.0f} min  {gap['fill']:12} coverage {gap['covered']:.1%}"
            f"{'  (imported)' if gap['imported'] else ''}",
            highlight=False,
        )

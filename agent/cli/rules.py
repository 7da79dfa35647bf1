"""``pue-agent rules list`` and ``pue-agent rules evaluate``.

``evaluate`` reads the KPI history from the interval store
(:meth:`AgentSettings.store_path`) or from a Parquet file in ``KPI_SCHEMA`` given with
``--kpis``, and prints the findings of :func:`rules.evaluate_for_site` as a table
(``--json`` for machines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.markup import escape
from rich.table import Table

from agent.cli.common import (
    ConfigOption,
    JsonOption,
    StateDirOption,
    err,
    fail,
    out,
    settings_or_exit,
    site_or_exit,
)
from agent.periods import PeriodError, parse_month
from agent.schemas import KPI_SCHEMA
from agent.settings import DEFAULT_POLICIES_DIR, AgentSettings
from agent.store import IntervalStore
from rules import (
    POLICIES_DIR_ENV,
    LoadedPacks,
    Pack,
    Rule,
    benefit_payments,
    claim_state,
    evaluate_for_site,
    load_packs,
)

__all__ = ["evaluate_period", "list_packs", "rules_app"]

rules_app = typer.Typer(
    help="Policy packs: list them, evaluate them against the site's KPIs.",
    no_args_is_help=True,
)

PoliciesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--policies-dir",
        help="Operator packs (default: policies_dir in agent.toml, "
        f"${POLICIES_DIR_ENV}, or {DEFAULT_POLICIES_DIR}).",
    ),
]


def _load(option: Path | None, settings: AgentSettings) -> LoadedPacks:
    """Built-in packs and the operator's (``--policies-dir``, else the settings' one)."""
    loaded = load_packs(option if option is not None else settings.policies_path())
    for error in loaded.errors:
        err.print(f"refused pack: {error}", highlight=False, markup=False)
    return loaded


def _condition(rule: Rule) -> str:
    if rule.kind == "declaration":
        return f"declared: {rule.declaration}"
    text = f"{rule.window} {rule.metric}"
    if rule.kind == "threshold":
        text += f" {rule.comparator} {rule.threshold:g}"
        if rule.first_time:
            text += " (first time)"
    else:
        text += " (reported)"
    text += "".join(f"; {c.describe()}" for c in rule.facts)
    return text


def _benefit_text(rule: Rule) -> str:
    benefit = rule.benefit
    if benefit is None:
        return ""
    if benefit.kind == "per_rack":
        text = f"{benefit.rate:,.0f} CNY/rack"
    elif benefit.kind == "per_kwh":
        text = f"{benefit.rate:g} CNY/kWh x {benefit.basis_metric}"
    else:
        text = f"{benefit.rate:.0%} x {benefit.basis_fact}"
    if benefit.cap_cny is not None:
        text += f", cap {benefit.cap_cny:,.0f}"
    return text


def _pack_json(pack: Pack, source: str) -> dict[str, Any]:
    data = pack.model_dump(mode="json")
    data["source_file"] = source
    data["advisory"] = pack.advisory
    return data


@rules_app.command("list")
def list_packs(
    policies_dir: PoliciesDirOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """List the loaded policy packs and their rules (refused packs go to stderr, exit 1)."""
    loaded = _load(policies_dir, settings_or_exit(config))
    if as_json:
        packs = [_pack_json(p, loaded.sources[p.id]) for p in loaded.packs]
        typer.echo(json.dumps({"packs": packs, "refused": loaded.errors}, ensure_ascii=False))
    else:
        for pack in loaded.packs:
            status = pack.status + (", advisory" if pack.advisory else "")
            dates = f"{pack.effective_from or '?'} .. {pack.effective_to or 'open'}"
            out.print(
                f"[bold]{pack.id}[/]  {pack.document}  {pack.jurisdiction}  "
                f"({status}; in force {dates})",
                highlight=False,
            )
            out.print(
                f"  {pack.title_zh} — {loaded.sources[pack.id]}", highlight=False, markup=False
            )
            table = Table(show_header=True, box=None, padding=(0, 1))
            for column in ("rule", "clause", "condition", "benefit"):
                table.add_column(column, overflow="fold")
            for rule in pack.rules:
                short = rule.id.removeprefix(f"{pack.id}-")
                table.add_row(short, rule.clause_ref, _condition(rule), _benefit_text(rule))
            out.print(table)
    if loaded.errors:
        raise typer.Exit(1)


def _read_kpis(kpis_file: Path | None, store_root: Path) -> pl.DataFrame:
    """The KPI history, from ``--kpis`` or the interval store."""
    if kpis_file is None:
        return IntervalStore(store_root).read_kpis()
    if not kpis_file.is_file():
        raise fail(f"{kpis_file}: KPI file not found")
    frame = pl.read_parquet(kpis_file)
    missing = [name for name in KPI_SCHEMA.names() if name not in frame.columns]
    if missing:
        raise fail(f"{kpis_file}: not a KPI frame (missing {', '.join(missing)})")
    return frame.select(KPI_SCHEMA.names()).cast(KPI_SCHEMA)


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "" if value is None else format(value, spec)


_STYLE = {
    "eligible": "green",
    "not_eligible": "red",
    "insufficient_data": "yellow",
    "not_applicable": "dim",
}


@rules_app.command("evaluate")
def evaluate_period(
    period: Annotated[str, typer.Option("--period", help="Month to evaluate, YYYY-MM.")],
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    policies_dir: PoliciesDirOption = None,
    kpis_file: Annotated[
        Path | None, typer.Option("--kpis", help="KPI history (Parquet, KPI_SCHEMA).")
    ] = None,
    warn_margin: Annotated[
        float, typer.Option("--warn-margin", help="Early-warning margin to a met threshold.")
    ] = 0.02,
    explain: Annotated[
        bool, typer.Option("--explain", "-e", help="Show each finding's full explanation.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Evaluate every policy pack for a month and print the findings."""
    try:
        parse_month(period)
    except PeriodError as exc:
        raise fail(str(exc)) from exc
    settings = settings_or_exit(config, state_dir)
    site = site_or_exit(settings, needed_for="the rules need its declared facts")
    loaded = _load(policies_dir, settings)
    kpis = _read_kpis(kpis_file, settings.store_path())
    findings = evaluate_for_site(kpis, site, period, loaded, warn_margin=warn_margin)
    if as_json:
        document = {
            "site": site.id,
            "period": period,
            "findings": findings.to_dicts(),
            "refused_packs": loaded.errors,
        }
        typer.echo(json.dumps(document, ensure_ascii=False, default=str))
    else:
        _print_findings(findings, site.id, period, benefit_payments(loaded), explain=explain)
    if loaded.errors:
        raise typer.Exit(1)


def _print_findings(
    findings: pl.DataFrame,
    site: str,
    period: str,
    payments: dict[str, Any],
    *,
    explain: bool = False,
) -> None:
    out.print(f"[bold]Findings for {site}, {period}[/]", highlight=False)
    for (policy_id,), group in findings.group_by("policy_id", maintain_order=True):
        first = group.row(0, named=True)
        status = first["policy_status"] + (", advisory" if first["advisory"] else "")
        out.print(f"\n[bold]{policy_id}[/]  {first['document']}  ({status})", highlight=False)
        table = Table(box=None, padding=(0, 1))
        for column in ("rule", "result", "measured", "test", "cover", "benefit CNY", "notes"):
            table.add_column(column, overflow="fold")
        for row in group.iter_rows(named=True):
            paid = payments.get(row["rule_id"])
            table.add_row(*_finding_cells(row, str(policy_id), paid, explain=explain))
        out.print(table)


def _finding_cells(
    row: dict[str, Any], policy_id: str, paid: Any, *, explain: bool
) -> tuple[str, ...]:
    test = ""
    if row["comparator"] is not None:
        test = f"{row['window']} {row['metric']} {row['comparator']} {row['threshold']:g}"
    elif row["metric"] is not None:
        test = f"{row['window']} {row['metric']} (reported)"
    notes = []
    if row["result"] == "not_applicable" and row["policy_status"] in ("expired", "not_yet"):
        notes.append(f"policy {row['policy_status'].replace('_', ' ')}")
    claim = claim_state(row, paid)
    if claim is not None and claim[0] == "claim":
        notes.append(f"claim once, first met {claim[1]}")
    elif claim is not None:
        notes.append(f"met, already claimable since {claim[1]}")
    elif row["first_met_period"]:
        notes.append(f"first met {row['first_met_period']}")
    if row["warning_detail"]:
        notes.append(f"[bold yellow]WARNING[/] {escape(row['warning_detail'])}")
    if explain:
        notes.append(escape(row["explanation"]))
    result = row["result"]
    return (
        str(row["rule_id"]).removeprefix(f"{policy_id}-"),
        f"[{_STYLE.get(result, 'default')}]{result}[/]",
        _fmt(row["measured_value"]),
        test,
        _fmt(row["coverage"], ".1%"),
        _fmt(row["benefit_cny"], ",.0f"),
        "; ".join(notes),
    )

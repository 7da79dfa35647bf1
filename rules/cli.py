"""``pue-agent rules list`` and ``pue-agent rules evaluate``.

``evaluate`` reads the KPI history from the local interval store
(``agent.store.IntervalStore(settings.state_dir / "store").read_kpis()``) or from a
Parquet file in ``KPI_SCHEMA`` given with ``--kpis``, the declared facts from the
site model, and prints the findings as a table (``--json`` for machines).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.schemas import KPI_SCHEMA
from rules.pack import (
    DEFAULT_POLICIES_DIR,
    POLICIES_DIR_ENV,
    LoadedPacks,
    Pack,
    Rule,
    load_packs,
)

if TYPE_CHECKING:
    from agent.settings import AgentSettings

__all__ = ["POLICIES_DIR_ENV", "register", "rules_app"]

rules_app = typer.Typer(
    help="Policy packs: list them, evaluate them against the site's KPIs.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Agent TOML file (default /etc/pue-agent/agent.toml)."),
]
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="Override the state directory.")
]
PoliciesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--policies-dir",
        help="Operator packs (default: policies_dir in agent.toml, "
        f"${POLICIES_DIR_ENV}, or {DEFAULT_POLICIES_DIR}).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def register(app: typer.Typer) -> None:
    """Add the ``rules`` command group to the agent CLI."""
    app.add_typer(rules_app, name="rules")


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


def _benefit(rule: Rule) -> str:
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
    from agent.cli import settings_or_exit  # noqa: PLC0415 - avoids a cycle at import

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
                table.add_row(short, rule.clause_ref, _condition(rule), _benefit(rule))
            out.print(table)
    if loaded.errors:
        raise typer.Exit(1)


def _read_kpis(kpis_file: Path | None, store_root: Path) -> pl.DataFrame:
    """The KPI history, from ``--kpis`` or the local interval store."""
    if kpis_file is not None:
        if not kpis_file.is_file():
            raise _fail(f"{kpis_file}: KPI file not found")
        frame = pl.read_parquet(kpis_file)
        missing = [name for name in KPI_SCHEMA.names() if name not in frame.columns]
        if missing:
            raise _fail(f"{kpis_file}: not a KPI frame (missing {', '.join(missing)})")
        return frame.select(KPI_SCHEMA.names()).cast(KPI_SCHEMA)
    try:
        store_module = importlib.import_module("agent.store")
    except ImportError as exc:
        raise _fail("the interval store (agent.store) is not available; pass --kpis FILE") from exc
    store = store_module.IntervalStore(store_root)
    frame = store.read_kpis()
    if not isinstance(frame, pl.DataFrame):
        raise _fail("agent.store.IntervalStore.read_kpis did not return a DataFrame")
    return frame


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "" if value is None else format(value, spec)


_STYLE = {
    "eligible": "green",
    "not_eligible": "red",
    "insufficient_data": "yellow",
    "not_applicable": "dim",
}


@rules_app.command("evaluate")
def evaluate_command(
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
    from agent.cli import settings_or_exit  # noqa: PLC0415 - avoids a cycle at import
    from agent.pipeline import load_site_for  # noqa: PLC0415
    from agent.site import SiteError  # noqa: PLC0415
    from rules.engine import evaluate  # noqa: PLC0415
    from rules.periods import month_index  # noqa: PLC0415

    try:
        month_index(period)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    settings = settings_or_exit(config, state_dir)
    try:
        site = load_site_for(settings)
    except SiteError as exc:
        raise _fail(str(exc)) from exc
    if site is None:
        raise _fail("no site model configured (site_file or [site]); facts are needed")
    loaded = _load(policies_dir, settings)
    kpis = _read_kpis(kpis_file, settings.state_dir / "store")
    findings = evaluate(
        loaded,
        kpis,
        site.facts,
        site=site.id,
        period=period,
        category=site.pue_category,
        warn_margin=warn_margin,
    )
    if as_json:
        document = {
            "site": site.id,
            "period": period,
            "findings": findings.to_dicts(),
            "refused_packs": loaded.errors,
        }
        typer.echo(json.dumps(document, ensure_ascii=False, default=str))
    else:
        _print_findings(findings, site.id, period, explain=explain)
    if loaded.errors:
        raise typer.Exit(1)


def _print_findings(
    findings: pl.DataFrame, site: str, period: str, *, explain: bool = False
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
            table.add_row(*_finding_cells(row, str(policy_id), explain=explain))
        out.print(table)


def _finding_cells(row: dict[str, Any], policy_id: str, *, explain: bool) -> tuple[str, ...]:
    test = ""
    if row["comparator"] is not None:
        test = f"{row['window']} {row['metric']} {row['comparator']} {row['threshold']:g}"
    elif row["metric"] is not None:
        test = f"{row['window']} {row['metric']} (reported)"
    notes = []
    if row["result"] == "not_applicable" and row["policy_status"] in ("expired", "not_yet"):
        notes.append(f"policy {row['policy_status'].replace('_', ' ')}")
    if row["first_met_period"]:
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

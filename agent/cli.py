"""The ``pue-agent`` command line.

Core commands live here; each feature area registers its own commands from its
own module (listed in :data:`COMMAND_MODULES`, each exposing
``register(app: typer.Typer) -> None``), so this file stays small and heavy
libraries are imported only by the command that needs them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent.settings import AgentSettings, ConfigError, load_settings
from agent.site import SiteError

__all__ = ["COMMAND_MODULES", "app", "main"]

app = typer.Typer(
    name="pue-agent",
    help="Collect datacenter energy telemetry and prove PUE, green share and CUE.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
journal_app = typer.Typer(help="Inspect and verify the hash-chained journal.", no_args_is_help=True)
app.add_typer(journal_app, name="journal")

#: Modules that add commands (``register(app)``); one per feature area.
COMMAND_MODULES: list[str] = [
    "agent.demo",
    "agent.probe",
    "rules.cli",
    "agent.report.cli",
    "agent.kpi_cli",
]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Agent TOML file (default /etc/pue-agent/agent.toml)."),
]
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="Override the state directory.")
]

err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error to stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def settings_or_exit(config: Path | None, state_dir: Path | None = None) -> AgentSettings:
    """Load settings or exit with the configuration error."""
    overrides = {"state_dir": state_dir} if state_dir is not None else {}
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from exc


@app.command()
def run(config: ConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Run the agent until SIGTERM/SIGINT (what the systemd service starts)."""
    from agent.logs import configure_logging  # noqa: PLC0415
    from agent.pipeline import build_agent  # noqa: PLC0415

    settings = settings_or_exit(config, state_dir)
    configure_logging(settings.log_level, settings.log_format)
    try:
        agent = build_agent(settings)
    except (ConfigError, SiteError) as exc:
        raise fail(str(exc)) from exc
    asyncio.run(agent.run())


def _packs_line(policies: Path, problems: list[str]) -> str:
    """What ``check`` says of the policy packs (a refused operator pack is a problem)."""
    from rules.pack import load_packs  # noqa: PLC0415

    loaded = load_packs(policies)
    problems += [f"policy pack refused: {error}" for error in loaded.errors]
    operator = sum(1 for source in loaded.sources.values() if Path(source).parent == policies)
    return (
        f"policy packs: {len(loaded.packs)} loaded ({operator} from {policies}"
        f"{'' if policies.is_dir() else ', which does not exist'})"
    )


@app.command()
def check(config: ConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Validate settings and the site model, and print what the agent would do."""
    from agent.pipeline import load_site_for  # noqa: PLC0415
    from agent.plugins import build_collector, build_consumer  # noqa: PLC0415

    settings = settings_or_exit(config, state_dir)
    problems: list[str] = []
    site = None
    try:
        site = load_site_for(settings)
    except SiteError as exc:
        problems.append(str(exc))
    lines = [
        f"config: {settings.config_path or '(defaults only)'}",
        f"state directory: {settings.state_dir}",
        f"journal: {settings.journal_path} (budget {settings.journal.budget_mb:g} MiB)",
    ]
    for i, entry in enumerate(settings.collectors):
        name = entry.name or f"{entry.kind}-{i}"
        try:
            collector = build_collector(entry.kind, name, entry.options(), settings)
            lines.append(f"collector {name}: {collector.describe()}")
        except (ConfigError, ImportError) as exc:
            problems.append(str(exc))
    for sink_entry in settings.sinks:
        name = sink_entry.name or sink_entry.kind
        try:
            sink = build_consumer(sink_entry.kind, name, sink_entry.options(), settings)
            lines.append(f"sink {name}: {sink.describe()}")
        except (ConfigError, ImportError) as exc:
            problems.append(str(exc))
    if site is not None and not any(e.kind == "local_store" for e in settings.sinks):
        store = build_consumer("local_store", "local_store", {}, settings)
        lines.append(f"sink local_store (added because a site is configured): {store.describe()}")
    if site is not None:
        lines.append(
            f"site {site.id} ({site.name}), {len(site.meters)} meters, PUE category "
            f"{site.pue_category}, time zone {site.timezone}"
        )
        for formula in ("e_dc", "e_it"):
            terms = " ".join(f"{'+' if s > 0 else '-'}{m}" for s, m in site.expand(formula))
            lines.append(f"  {formula.upper()} = {terms}")
    elif not problems:
        lines.append("site: none configured (readings are journalled, no KPIs computed)")
    lines.append(_packs_line(settings.policies_path(), problems))
    for line in lines:
        out.print(line, highlight=False, markup=False)
    if problems:
        for problem in problems:
            err.print(problem, highlight=False, markup=False)
        raise typer.Exit(1)
    out.print("OK", style="bold green")


@journal_app.command("verify")
def journal_verify(
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    path: Annotated[Path | None, typer.Option(help="Journal file (overrides settings).")] = None,
) -> None:
    """Re-derive the hash chain and name the first bad batch."""
    from agent.journal import Journal  # noqa: PLC0415

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
def journal_stats(
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print batch and reading counts, size, budget and each consumer's lag."""
    from agent.journal import Journal  # noqa: PLC0415

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


def _register_modules() -> None:
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(app)


def main() -> None:
    """Console-script entry point."""
    _register_modules()
    try:
        app()
    except (ConfigError, SiteError) as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(2)

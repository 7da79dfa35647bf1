"""``pue-agent run`` (what systemd starts) and ``pue-agent check`` (what it would do)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from agent.cli.common import ConfigOption, StateDirOption, err, fail, out, settings_or_exit
from agent.logs import configure_logging
from agent.pipeline import build_agent
from agent.plugins import build_collector, build_consumer
from agent.service import AgentService
from agent.settings import AGGREGATOR_KINDS, AgentSettings, ConfigError
from agent.site import Site, SiteError, load_site_for
from rules import load_packs

__all__ = ["check", "run"]


def run(config: ConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Run the agent until SIGTERM/SIGINT (what the systemd service starts)."""
    settings = settings_or_exit(config, state_dir)
    configure_logging(settings.log_level, settings.log_format)
    try:
        agent = build_agent(settings)
    except (ConfigError, SiteError) as exc:
        raise fail(str(exc)) from exc
    asyncio.run(AgentService(agent).serve())


def _packs_line(policies: Path, problems: list[str]) -> str:
    """What ``check`` says of the policy packs (a refused operator pack is a problem)."""
    loaded = load_packs(policies)
    problems += [f"policy pack refused: {error}" for error in loaded.errors]
    operator = sum(1 for source in loaded.sources.values() if Path(source).parent == policies)
    return (
        f"policy packs: {len(loaded.packs)} loaded ({operator} from {policies}"
        f"{'' if policies.is_dir() else ', which does not exist'})"
    )


def _plan_lines(settings: AgentSettings, site: Site | None, problems: list[str]) -> list[str]:
    """One line per collector and sink the agent would run (problems collected)."""
    lines = []
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
            continue
        if sink_entry.kind == "local_store":
            lines.append(
                f"  note: sink kind 'local_store' is the aggregator's old name; "
                f"write kind = \"aggregator\" for [[sinks]] {name}"
            )
    if site is not None and not any(e.kind in AGGREGATOR_KINDS for e in settings.sinks):
        aggregator = build_consumer("aggregator", "aggregator", {}, settings)
        lines.append(f"aggregator (added because a site is configured): {aggregator.describe()}")
    return lines


def check(config: ConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Validate settings and the site model, and print what the agent would do."""
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
        f"interval store: {settings.store_path()}",
        *_plan_lines(settings, site, problems),
    ]
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

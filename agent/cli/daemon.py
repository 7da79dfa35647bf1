"""``pue-agent run`` (what systemd starts) and ``pue-agent check`` (what it would do)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import typer

from agent.cli.common import ConfigOption, StateDirOption, err, fail, out, settings_or_exit
from agent.keys import KEY_SECRET, key_path
from agent.logs import configure_logging
from agent.pipeline import build_agent
from agent.plugins import build_collector, build_consumer
from agent.report.render import FontError, cjk_font
from agent.service import AgentService, lock_state_dir
from agent.settings import (
    AGGREGATOR_KINDS,
    AgentSettings,
    ConfigError,
    collector_name_problems,
    secrets_dirs,
)
from agent.site import Site, SiteError, load_site_for
from rules import load_packs

__all__ = ["check", "run"]


def run(config: ConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Run the agent until SIGTERM/SIGINT (what the systemd service starts)."""
    settings = settings_or_exit(config, state_dir)
    configure_logging(settings.log_level, settings.log_format)
    try:
        # Before anything opens the journal: a second agent on this state dir stops here.
        state_lock = lock_state_dir(settings.state_dir)
        agent = build_agent(settings)
    except (ConfigError, SiteError) as exc:
        raise fail(str(exc)) from exc
    try:
        asyncio.run(AgentService(agent).serve())
    finally:
        state_lock.close()


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
                f'write kind = "aggregator" for [[sinks]] {name}'
            )
    if site is not None and not any(e.kind in AGGREGATOR_KINDS for e in settings.sinks):
        aggregator = build_consumer("aggregator", "aggregator", {}, settings)
        lines.append(f"aggregator (added because a site is configured): {aggregator.describe()}")
    return lines


#: Where ``systemctl enable pue-agent-report.timer`` links the monthly report timer.
REPORT_TIMER_LINK = Path("/etc/systemd/system/timers.target.wants/pue-agent-report.timer")


def _site_source(settings: AgentSettings) -> tuple[str, str]:
    """The file the site model is read from, and its text (for line numbers)."""
    path = settings.site_file or settings.config_path
    if path is None:
        return "settings", ""
    try:
        return str(path), path.read_text(encoding="utf-8")
    except OSError:
        return str(path), ""


def _line_of_device(text: str, meter_id: str, device: str) -> int | None:
    """The line of the meter's ``device = "…"`` (else of its ``id``) in the site file."""
    for pattern in (
        rf'^\s*device\s*=\s*"{re.escape(device)}"',
        rf'^\s*id\s*=\s*"{re.escape(meter_id)}"',
    ):
        match = re.search(pattern, text, re.M)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return None


def _meter_device_lines(settings: AgentSettings, site: Site, problems: list[str]) -> list[str]:
    """Every site meter's device must be one a collector polls (problems name file and line).

    Collectors that know their devices (snmp, redfish, sim: ``polled_devices()``) are
    matched exactly (disabled collectors poll nothing). An MQTT collector learns its
    devices from topics at run time, so when one is enabled, meters no other collector
    polls are accepted and listed as expected from MQTT. With no collector enabled (a site
    fed by ``pue-agent import`` only) nothing is matched.
    """
    entries = [(i, e) for i, e in enumerate(settings.collectors) if e.enabled]
    if not entries:
        return ["  meters: no collector enabled (readings come from pue-agent import only)"]
    polled: set[str] = set()
    run_time: list[str] = []
    for i, entry in entries:
        name = entry.name or f"{entry.kind}-{i}"
        try:
            collector = build_collector(entry.kind, name, entry.options(), settings)
        except (ConfigError, ImportError):
            return []  # already a problem of the plan
        devices = getattr(collector, "polled_devices", lambda: None)()
        if devices is None:
            run_time.append(name)
        else:
            polled.update(devices)
    unpolled = [m for m in site.meters if m.device not in polled]
    if not unpolled:
        return []
    if run_time:
        names = ", ".join(sorted({m.device for m in unpolled}))
        return [f"  meters expected from {', '.join(run_time)} (topics, at run time): {names}"]
    source, text = _site_source(settings)
    for meter in unpolled:
        line = _line_of_device(text, meter.id, meter.device)
        problems.append(
            f"{source}{f':{line}' if line else ''}: meter {meter.id!r}: device "
            f"{meter.device!r} is polled by no collector"
        )
    return []


def reports_configured(settings: AgentSettings, site: Site | None) -> bool:
    """Whether this host makes the signed monthly reports.

    That is: a site model is configured, and the report signing key exists (``pue-agent
    keys init`` wrote it, or the ``report_signing_key`` credential is given) or the
    monthly timer ``pue-agent-report.timer`` is enabled.
    """
    if site is None:
        return False
    if key_path(settings).is_file() or REPORT_TIMER_LINK.exists():
        return True
    return any((folder / KEY_SECRET).is_file() for folder in secrets_dirs(settings))


def _report_font_lines(
    settings: AgentSettings, site: Site | None, problems: list[str]
) -> list[str]:
    """When reports are configured, the CJK font the PDF embeds must be installed."""
    if not reports_configured(settings, site):
        return []
    try:
        family, path = cjk_font()
    except FontError as exc:
        problems.append(
            f"reports: {exc}; install it with: apt-get install fonts-noto-cjk fontconfig"
        )
        return []
    return [f"reports: font {family} ({path})"]


def check(config: ConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Validate settings and the site model, and print what the agent would do."""
    settings = settings_or_exit(config, state_dir)
    problems: list[str] = collector_name_problems(settings)
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
        lines += _meter_device_lines(settings, site, problems)
    elif not problems:
        lines.append("site: none configured (readings are journalled, no KPIs computed)")
    lines.append(_packs_line(settings.policies_path(), problems))
    lines += _report_font_lines(settings, site, problems)
    for line in lines:
        # One plan line per output line, never wrapped inside a path: operators grep this.
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if problems:
        for problem in problems:
            err.print(problem, highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print("OK", style="bold green")

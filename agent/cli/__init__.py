"""The ``pue-agent`` command line: one module per command group, assembled here.

Commands are plain functions in their group's module (``daemon``: run and check,
``journal``, ``probe``, ``kpi``, ``green``, ``imports``, ``rules``, ``keys``,
``report``: report and verify, ``demo``); what they share — options, consoles, the
error exit, loading settings and the site — is in :mod:`agent.cli.common`.
"""

from __future__ import annotations

import sys

import typer

from agent.cli import daemon, demo, imports, kpi, report
from agent.cli.common import err
from agent.cli.green import green_app
from agent.cli.journal import journal_app
from agent.cli.keys import keys_app
from agent.cli.probe import probe_app
from agent.cli.rules import rules_app
from agent.settings import ConfigError
from agent.site import SiteError

__all__ = ["app", "main"]

app = typer.Typer(
    name="pue-agent",
    help="Collect datacenter energy telemetry and prove PUE, green share and CUE.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(daemon.run)
app.command()(daemon.check)
app.command()(demo.demo)
app.command("kpi")(kpi.kpi)
app.command("import")(imports.import_readings)
app.command("report")(report.report)
app.command("verify")(report.verify_report)
app.add_typer(journal_app, name="journal")
app.add_typer(probe_app, name="probe")
app.add_typer(green_app, name="green")
app.add_typer(rules_app, name="rules")
app.add_typer(keys_app, name="keys")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except (ConfigError, SiteError) as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(2)

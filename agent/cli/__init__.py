"""The ``pue-agent`` command line: one module per command group, assembled here.

Commands are plain functions in their group's module (``daemon``: run and check,
``journal``, ``probe``, ``kpi``, ``green``, ``imports``, ``rules``, ``keys``,
``report``: report and verify, ``demo``); what they share — options, consoles, the
error exit, loading settings and the site — is in :mod:`agent.cli.common`.
"""

from __future__ import annotations

import sys
import traceback

import typer

from agent import __version__
from agent.cli import daemon, demo, imports, kpi, report
from agent.cli.common import err
from agent.cli.green import green_app
from agent.cli.journal import journal_app
from agent.cli.keys import keys_app
from agent.cli.probe import probe_app
from agent.cli.rules import rules_app
from agent.probe import EXIT_FAILED, EXIT_USAGE, error_exit
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


def _print_version(value: bool) -> None:
    if value:
        # Plain stdout, no Rich markup: scripts and the package test parse this line.
        print(f"pue-agent {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Collect datacenter energy telemetry and prove PUE, green share and CUE."""
    del version


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
    """Console-script entry point.

    With ``--json`` a usage error, a settings error or an unexpected exception is JSON on
    stdout too (``{"error", "code"}``, the traceback of an unexpected one on stderr).
    """
    as_json = "--json" in sys.argv[1:]
    try:
        if not as_json:
            app()
            return
        sys.exit(app(standalone_mode=False) or 0)
    except (ConfigError, SiteError) as exc:
        if as_json:
            raise SystemExit(error_exit(str(exc), EXIT_USAGE, as_json=True).exit_code) from None
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(2)
    except typer.Abort:
        raise SystemExit(error_exit("aborted", EXIT_FAILED, as_json=True).exit_code) from None
    except Exception as exc:  # noqa: BLE001 - --json promises JSON for any failure
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's usage errors
            message, code = exc.format_message(), int(exc.exit_code)
        else:
            traceback.print_exc()
            message, code = f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED
        raise SystemExit(error_exit(message, code, as_json=True).exit_code) from None

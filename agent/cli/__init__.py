"""The ``pue-agent`` command line: one module per command group, assembled here.

Commands are plain functions in their group's module (``daemon``: run and check,
``journal``, ``probe``, ``kpi``, ``green``, ``imports``, ``rules``, ``keys``,
``report``: report and verify, ``demo``); what they share — options, consoles, the
error exit, loading settings and the site — is in :mod:`agent.cli.common`.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import TYPE_CHECKING

import typer
import typer.core
import typer.main

from agent import __version__
from agent.cli.common import err
from agent.probe import EXIT_FAILED, EXIT_USAGE, error_exit
from agent.settings import ConfigError
from agent.site import SiteError

if TYPE_CHECKING:
    # Typer ships its own copy of click; its group methods are typed with that copy's classes.
    from typer._click import Command, Context

__all__ = ["COMMANDS", "app", "main"]

#: Every command and command group by name: the module and the function (or Typer group)
#: that implements it. A module is imported only when its command runs (or ``--help`` lists
#: it): ``pue-agent kpi`` never loads the daemon, the demo's devices, the report's charts or
#: a protocol library, which halves a command's start-up.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("agent.cli.daemon", "run"),
    "check": ("agent.cli.daemon", "check"),
    "demo": ("agent.cli.demo", "demo"),
    "kpi": ("agent.cli.kpi", "kpi"),
    "import": ("agent.cli.imports", "import_readings"),
    "report": ("agent.cli.report", "report"),
    "verify": ("agent.cli.report", "verify_report"),
    "journal": ("agent.cli.journal", "journal_app"),
    "probe": ("agent.cli.probe", "probe_app"),
    "green": ("agent.cli.green", "green_app"),
    "rules": ("agent.cli.rules", "rules_app"),
    "keys": ("agent.cli.keys", "keys_app"),
}


def _load_command(name: str) -> Command:
    """The click command for ``name``, importing its module now."""
    module_name, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_command(target)
    else:
        single = typer.Typer()
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class _LazyGroup(typer.core.TyperGroup):
    """The root group: the commands of :data:`COMMANDS`, each loaded when first asked for."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in COMMANDS:
            return _load_command(cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_LazyGroup,
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

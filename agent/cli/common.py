"""What every command shares: the options, the consoles, the error exit, settings and site.

Commands print results to stdout (:data:`out`) and problems to stderr (:data:`err`);
an error ends the command through :func:`fail` with exit code 2 (usage or
configuration) unless the command documents another (the codes are one table in
README.md, "Exit codes", and constants in :mod:`agent.probe`). With ``--json`` the error
is JSON on stdout too: ``{"error": …, "code": …}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent.probe import EXIT_USAGE, error_exit
from agent.settings import AgentSettings, ConfigError, load_settings
from agent.site import Site, SiteError, load_site_for

__all__ = [
    "ConfigOption",
    "JsonOption",
    "StateDirOption",
    "err",
    "fail",
    "out",
    "settings_or_exit",
    "site_or_exit",
]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Agent TOML file (default /etc/pue-agent/agent.toml)."),
]
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="Override the state directory.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

err = Console(stderr=True)
out = Console()


def fail(message: str, code: int = EXIT_USAGE, *, as_json: bool | None = None) -> typer.Exit:
    """Report an error and return the Exit to raise.

    JSON (``{"error", "code"}`` on stdout) when ``as_json`` is true or, by default, when
    the running command was given ``--json`` (its ``as_json`` parameter).
    """
    return error_exit(message, code, as_json=as_json)


def settings_or_exit(config: Path | None, state_dir: Path | None = None) -> AgentSettings:
    """Load settings or exit with the configuration error."""
    overrides = {"state_dir": state_dir} if state_dir is not None else {}
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from exc


def site_or_exit(settings: AgentSettings, *, needed_for: str) -> Site:
    """The configured site model, or exit saying why ``needed_for`` needs one."""
    try:
        site = load_site_for(settings)
    except SiteError as exc:
        raise fail(str(exc)) from exc
    if site is None:
        raise fail(f"no site model configured (site_file or [site]): {needed_for}")
    return site

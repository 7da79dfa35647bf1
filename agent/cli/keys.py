"""``pue-agent keys init|show``: the site's report-signing key."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.cli.common import ConfigOption, StateDirOption, fail, out, settings_or_exit
from agent.keys import SigningKey, SigningKeyError, init_key, load_signing_key, public_key_pem

__all__ = ["init", "keys_app", "show"]

keys_app = typer.Typer(help="Create and show the report-signing key.", no_args_is_help=True)


def _print_key(key: SigningKey, first_line: str) -> None:
    out.print(first_line, highlight=False, markup=False)
    out.print(f"fingerprint: {key.fingerprint}", highlight=False, markup=False)
    out.print(public_key_pem(key.public), highlight=False, markup=False, end="")


@keys_app.command("init")
def init(
    config: ConfigOption = None,
    state_dir: StateDirOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Generate the site's Ed25519 signing key (private key file mode 0600)."""
    settings = settings_or_exit(config, state_dir)
    try:
        key = init_key(settings, force=force)
    except SigningKeyError as exc:
        raise fail(str(exc)) from exc
    _print_key(key, f"private key: {key.origin} (mode 0600)")


@keys_app.command("show")
def show(config: ConfigOption = None, state_dir: StateDirOption = None) -> None:
    """Print the public key (PEM) and its fingerprint, to hand to auditors."""
    settings = settings_or_exit(config, state_dir)
    try:
        key = load_signing_key(settings)
    except SigningKeyError as exc:
        raise fail(str(exc)) from exc
    _print_key(key, f"source: {key.origin}")

"""``pue-agent probe redfish https://BMC``: discover once, poll once, print what was found.

Exit codes (README.md, "Exit codes"): 0 readings printed; 2 bad arguments; 3 BMC
unreachable (refused, timed out); 4 login or credentials refused; 6 other Redfish
error (TLS certificate not accepted, bad answers, nothing readable); 7 host name cannot
be resolved. With ``--json`` an error is ``{"error": …, "code": …}`` on stdout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import httpx
import typer
from pydantic import SecretStr
from rich.console import Console

from agent.probe import (
    EXIT_AUTH,
    EXIT_PROTOCOL,
    EXIT_UNREACHABLE,
    EXIT_UNRESOLVED,
    EXIT_USAGE,
    error_exit,
    print_readings,
    resolve_host,
)
from collectors.redfish.client import ClientConfig, RedfishClient
from collectors.redfish.errors import (
    RedfishAuthError,
    RedfishConnectError,
    RedfishTimeoutError,
)
from collectors.redfish.plan import PollResult
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import load_profile

__all__ = ["exit_code_for", "probe_once", "register"]


def exit_code_for(errors: list[Exception]) -> int:
    """The exit code for a poll that yielded nothing: its most telling error decides."""
    if any(isinstance(e, RedfishAuthError) for e in errors):
        return EXIT_AUTH
    if any(isinstance(e, RedfishTimeoutError | RedfishConnectError) for e in errors):
        return EXIT_UNREACHABLE
    return EXIT_PROTOCOL


async def probe_once(config: ClientConfig) -> tuple[DevicePoller, PollResult]:
    """Discover and poll one device once; the client is logged out afterwards."""
    client = RedfishClient(config)
    poller = DevicePoller(client, load_profile(), collector="probe")
    try:
        result = await poller.poll()
    finally:
        await client.aclose()
    return poller, result


def register(probe_app: typer.Typer) -> None:
    """Add ``probe redfish`` to the probe command group."""

    @probe_app.command("redfish")
    def redfish(
        url: Annotated[str, typer.Argument(help="BMC base URL, e.g. https://10.0.0.17")],
        user: Annotated[str | None, typer.Option("--user", help="BMC user name.")] = None,
        password_file: Annotated[
            Path | None,
            typer.Option("--password-file", help="File holding the password (never argv)."),
        ] = None,
        ca_file: Annotated[
            Path | None, typer.Option("--ca-file", help="CA bundle for the BMC certificate.")
        ] = None,
        insecure: Annotated[
            bool, typer.Option("--insecure", help="Do not verify the TLS certificate.")
        ] = False,
        basic: Annotated[
            bool, typer.Option("--basic", help="HTTP basic auth instead of a session.")
        ] = False,
        timeout_s: Annotated[float, typer.Option("--timeout", help="Per-request, s.")] = 60.0,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Discover a Redfish service, poll it once and print its readings."""
        err = Console(stderr=True)
        password: SecretStr | None = None
        if password_file is not None:
            try:
                password = SecretStr(password_file.read_text(encoding="utf-8").rstrip("\r\n"))
            except OSError as exc:
                raise error_exit(
                    f"--password-file: {exc.strerror}: {password_file}", EXIT_USAGE
                ) from exc
        if user and password is None:
            raise error_exit("--user needs --password-file", EXIT_USAGE)
        host = httpx.URL(url).host or url
        unresolved = resolve_host(host)
        if unresolved is not None:
            raise error_exit(unresolved, EXIT_UNRESOLVED)
        config = ClientConfig(
            device=host,
            url=url,
            auth=("basic" if basic else "session") if user else "none",
            username=user,
            password=password,
            verify_tls=not insecure,
            ca_file=ca_file,
            timeout_s=timeout_s,
        )
        poller, result = asyncio.run(probe_once(config))
        # Discovery notes go to stderr in --json mode so stdout stays one object per line.
        info = err if as_json else Console()
        if poller.plan is not None:
            for line in poller.plan.summary:
                info.print(line, highlight=False, markup=False)
        failed = poller.plan is None or not result.frame.height
        problems = result.errors[1:] if failed else result.errors
        for problem in problems:
            err.print(f"error: {problem}", highlight=False, markup=False)
        if not failed:
            print_readings(result.frame, as_json=as_json, extra_columns=["source"])
            return
        first = str(result.errors[0]) if result.errors else f"{url}: no readings found"
        raise error_exit(first, exit_code_for(result.errors))

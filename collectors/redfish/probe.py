"""``pue-agent probe redfish https://BMC``: discover once, poll once, print what was found."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import httpx
import typer
from pydantic import SecretStr
from rich.console import Console

from agent.probe import print_readings
from collectors.redfish.client import ClientConfig, RedfishClient
from collectors.redfish.plan import PollResult
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import load_profile

__all__ = ["probe_once", "register"]


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
                err.print(f"error: --password-file: {exc.strerror}: {password_file}")
                raise typer.Exit(2) from exc
        if user and password is None:
            err.print("error: --user needs --password-file")
            raise typer.Exit(2)
        host = httpx.URL(url).host or url
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
        for problem in result.errors:
            err.print(f"error: {problem}", highlight=False, markup=False)
        if result.frame.height:
            print_readings(result.frame, as_json=as_json, extra_columns=["source"])
        if poller.plan is None or not result.frame.height:
            raise typer.Exit(1)

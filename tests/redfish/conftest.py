"""Helpers for the Redfish tests: a poller against a served capture."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from pydantic import SecretStr

from collectors.redfish.client import ClientConfig, RedfishClient
from collectors.redfish.plan import PollResult
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import Tier, load_profile
from tests.servers.redfish import RedfishServer


def config_for(
    server: RedfishServer,
    *,
    device: str = "bmc-1",
    ca_file: Path | None = None,
    verify_tls: bool = True,
    timeout_s: float = 5.0,
    password: str | None = None,
) -> ClientConfig:
    """Client settings matching the server's auth switch."""
    auth = server.auth if server.auth in ("session", "basic") else "none"
    return ClientConfig(
        device=device,
        url=server.url,
        auth=auth,  # type: ignore[arg-type]
        username=server.username if auth != "none" else None,
        password=SecretStr(password or server.password) if auth != "none" else None,
        verify_tls=verify_tls,
        ca_file=ca_file,
        timeout_s=timeout_s,
        connect_timeout_s=timeout_s,
    )


async def poll_once(
    server: RedfishServer, tiers: list[Tier] | None = None, **kwargs: object
) -> tuple[DevicePoller, PollResult]:
    """Discover and poll once; the client is closed afterwards."""
    client = RedfishClient(config_for(server, **kwargs))  # type: ignore[arg-type]
    poller = DevicePoller(client, load_profile(), tiers=tiers)
    try:
        return poller, await poller.poll()
    finally:
        await client.aclose()


def values(frame: pl.DataFrame) -> dict[str, float]:
    """Point -> value of a poll's frame."""
    return dict(zip(frame["point"].to_list(), frame["value"].to_list(), strict=True))


def quality(frame: pl.DataFrame, point: str) -> int:
    """The quality flags of one point."""
    return int(frame.filter(pl.col("point") == point)["quality"].item())

"""The ``redfish`` collector: one poll loop per device, a shared concurrency limit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr, ValidationError

from agent import metrics
from agent.logs import get_logger
from agent.plugins import CollectorContext
from agent.settings import AgentSettings, ConfigError, read_secret, validation_problems
from collectors.redfish.client import ClientConfig, RedfishClient
from collectors.redfish.options import DeviceOptions, RedfishOptions
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import DEFAULT_PROFILE_PATH, Profile, load_profile

__all__ = ["RedfishCollector", "build", "client_config"]

_log = get_logger("redfish")


def client_config(
    device: DeviceOptions, options: RedfishOptions, password: SecretStr | None
) -> ClientConfig:
    """The client settings of one device (device values override collector defaults)."""
    return ClientConfig(
        device=device.name,
        url=device.url,
        auth=device.auth,
        username=device.username,
        password=password,
        verify_tls=device.verify_tls,
        ca_file=device.ca_file,
        timeout_s=device.timeout_s or options.timeout_s,
    )


@dataclass
class RedfishCollector:
    """Polls Redfish BMCs, PDUs and cooling units."""

    name: str
    options: RedfishOptions
    profile: Profile
    passwords: dict[str, SecretStr | None]
    #: Pollers by device, available while :meth:`run` is running (tests, health).
    pollers: dict[str, DevicePoller] = field(default_factory=dict, init=False)
    polls: int = field(default=0, init=False)

    def polled_devices(self) -> list[str]:
        """The device names this collector's readings carry (``pue-agent check``)."""
        return [d.name for d in self.options.devices]

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        return (
            f"redfish: {len(o.devices)} device(s) every {o.interval_s:g} s, "
            f"at most {o.max_concurrency} requests in flight, timeout {o.timeout_s:g} s"
        )

    async def run(self, ctx: CollectorContext) -> None:
        """Poll every device until cancelled."""
        limiter = asyncio.Semaphore(self.options.max_concurrency)
        n = len(self.options.devices)
        async with asyncio.TaskGroup() as group:
            for i, device in enumerate(self.options.devices):
                interval = device.interval_s or self.options.interval_s
                # Spread first polls over the interval so 500 BMCs do not all start at once.
                offset = interval * i / n
                group.create_task(
                    self._loop(device, limiter, ctx, offset), name=f"redfish:{device.name}"
                )

    async def _loop(
        self,
        device: DeviceOptions,
        limiter: asyncio.Semaphore,
        ctx: CollectorContext,
        offset_s: float,
    ) -> None:
        config = client_config(device, self.options, self.passwords.get(device.name))
        client = RedfishClient(config, limiter)
        poller = DevicePoller(
            client,
            self.profile,
            tiers=device.prefer,
            rediscover_s=self.options.rediscover_s,
            collector=self.name,
        )
        self.pollers[device.name] = poller
        interval = device.interval_s or self.options.interval_s
        try:
            await asyncio.sleep(offset_s)
            next_at = time.monotonic()
            while True:
                try:
                    result = await poller.poll()
                except Exception:  # noqa: BLE001 - one device's bug must not stop the others
                    # An answer nobody foresaw: keep the traceback, count a failed poll, and
                    # poll again next interval (in the collector's TaskGroup it would stop
                    # every device).
                    _log.exception("poll crashed", collector=self.name, device=device.name)
                    metrics.POLL_FAILURES.labels(self.name, device.name, "internal").inc()
                    poller.plan = None  # walk the tree again next time
                else:
                    self.polls += 1
                    if result.frame.height:
                        await ctx.emit(result.frame.drop("source"))
                next_at += interval
                now = time.monotonic()
                if next_at < now:
                    # A slow BMC overran its interval: skip the missed ticks, do not burst.
                    next_at = now + (next_at - now) % interval
                await asyncio.sleep(next_at - now)
        finally:
            # Log out so the BMC's session slots are not exhausted by restarts.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10.0):
                    await client.aclose()


def _secret(name: str, device: DeviceOptions, i: int, settings: AgentSettings) -> SecretStr | None:
    if device.password_secret is None:
        return None
    try:
        return read_secret(device.password_secret, settings)
    except ConfigError as exc:
        raise ConfigError(f"collectors.{name}.devices[{i}].password_secret: {exc}") from exc


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> RedfishCollector:
    """Build a Redfish collector from its config table.

    Raises:
        ConfigError: naming ``collectors.<name>.<field>`` (secrets by name only).
    """
    try:
        parsed = RedfishOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, f"collectors.{name}.")) from exc
    resolved = parsed.model_copy(
        update={
            "devices": [
                d.model_copy(update={"ca_file": settings.resolve(d.ca_file)})
                if d.ca_file is not None
                else d
                for d in parsed.devices
            ]
        }
    )
    for i, device in enumerate(resolved.devices):
        if device.ca_file is not None and not device.ca_file.is_file():
            raise ConfigError(f"collectors.{name}.devices[{i}].ca_file: {device.ca_file} not found")
    try:
        profile = load_profile(
            settings.resolve(resolved.profile) if resolved.profile else DEFAULT_PROFILE_PATH
        )
    except ValueError as exc:
        raise ConfigError(f"collectors.{name}.profile: {exc}") from exc
    passwords = {d.name: _secret(name, d, i, settings) for i, d in enumerate(resolved.devices)}
    return RedfishCollector(name=name, options=resolved, profile=profile, passwords=passwords)

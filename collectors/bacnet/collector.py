"""The ``bacnet`` collector: one client socket, one loop per device, COV where supported.

Each device is asked Who-Is once at start (unicast to its address: no broadcast needed,
and routed networks forward it), then polled every ``interval_s``. Where the device
accepts SubscribeCOV for its objects, changes are journalled as they are notified and the
full read runs every ``cov_heartbeat_s`` (by default still every ``interval_s``: a
steady value is never notified, and the realtime view calls a meter silent after 30 s);
a device without COV is simply polled. A failing device is logged once when it fails and
once when it recovers (the poller).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent.logs import get_logger
from agent.plugins import CollectorContext
from agent.settings import AgentSettings, ConfigError, validation_problems
from collectors.bacnet.client import BacnetClient, device_address
from collectors.bacnet.errors import BacnetError, BacnetUnsupportedError
from collectors.bacnet.maps import MapError, ObjectMap, load_maps, parse_object_id
from collectors.bacnet.options import BacnetOptions, DeviceOptions
from collectors.bacnet.poller import DevicePoller
from collectors.bacnet.units import UnitError, UnitTable, load_units

__all__ = ["BacnetCollector", "build"]

_log = get_logger("bacnet")


@dataclass
class BacnetCollector:
    """Polls BACnet/IP devices through their object maps."""

    name: str
    options: BacnetOptions
    maps: dict[str, ObjectMap]
    units: UnitTable
    #: Pollers by device, available while :meth:`run` runs (tests, health).
    pollers: dict[str, DevicePoller] = field(default_factory=dict, init=False)
    #: Devices whose objects are subscribed for COV now.
    cov_active: set[str] = field(default_factory=set, init=False)
    #: Readings emitted from COV notifications (tests, the demo).
    cov_readings: int = field(default=0, init=False)
    client: BacnetClient | None = field(default=None, init=False)

    def polled_devices(self) -> list[str]:
        """The device names this collector's readings carry (``pue-agent check``)."""
        return [d.name for d in self.options.devices]

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        maps = sorted({d.map for d in o.devices})
        return (
            f"bacnet: {len(o.devices)} device(s) every {o.interval_s:g} s from {o.local_address}"
            f" (maps {', '.join(maps)}), COV {o.cov}, timeout {o.timeout_s:g} s x"
            f" {o.retries + 1}"
        )

    async def run(self, ctx: CollectorContext) -> None:
        """Poll every device until cancelled."""
        o = self.options
        self.client = BacnetClient(
            local_address=o.local_address,
            device_id=o.local_device_id,
            timeout_s=o.timeout_s,
            retries=o.retries,
        )
        try:
            n = len(o.devices)
            async with asyncio.TaskGroup() as group:
                for i, device in enumerate(o.devices):
                    interval = device.interval_s or o.interval_s
                    group.create_task(
                        self._loop(ctx, device, interval * i / n), name=f"bacnet:{device.name}"
                    )
        finally:
            self.client.close()

    def _poller(self, device: DeviceOptions) -> DevicePoller:
        assert self.client is not None
        return DevicePoller(
            self.client,
            device=device.name,
            address=device_address(device.address),
            object_map=self.maps[device.map],
            units=self.units,
            objects=device.objects,
            max_objects=self.options.max_objects_per_request,
            collector=self.name,
        )

    async def _identify(self, device: DeviceOptions, poller: DevicePoller) -> None:
        """Who-Is the device (unicast): logs what answered, or that nothing did."""
        assert self.client is not None
        try:
            found = await self.client.who_is(
                poller.address,
                low=device.device_id,
                high=device.device_id,
                wait_s=self.options.timeout_s,
            )
        except BacnetError as exc:
            found = []
            _log.warning("who-is failed", collector=self.name, device=device.name, error=str(exc))
        if found:
            _log.info(
                "device found",
                collector=self.name,
                device=device.name,
                device_id=found[0].device_id,
                vendor_id=found[0].vendor_id,
            )
        else:
            # Some devices behind routers do not answer a directed Who-Is: poll anyway.
            _log.warning(
                "no I-Am from device; polling its address anyway",
                collector=self.name,
                device=device.name,
                device_id=device.device_id,
            )

    async def _loop(self, ctx: CollectorContext, device: DeviceOptions, offset_s: float) -> None:
        poller = self._poller(device)
        self.pollers[device.name] = poller
        interval = device.interval_s or self.options.interval_s
        use_cov = (device.cov or self.options.cov) == "auto"
        cov_task: asyncio.Task[None] | None = None
        await asyncio.sleep(offset_s)
        await self._identify(device, poller)
        next_at = time.monotonic()
        try:
            while True:
                try:
                    result = await poller.poll()
                except Exception:  # noqa: BLE001 - one device's bug must not stop the others
                    _log.exception("poll crashed", collector=self.name, device=device.name)
                else:
                    if result.frame.height:
                        await ctx.emit(result.frame)
                    if use_cov and cov_task is None and not poller.failing:
                        cov_task = asyncio.create_task(
                            self._cov(ctx, device, poller), name=f"bacnet-cov:{device.name}"
                        )
                    if cov_task is not None and cov_task.done():
                        # Subscriptions ended (refused or lost): poll, and try again later
                        # unless the device has no COV at all.
                        failure = cov_task.exception()
                        if failure is not None and not isinstance(failure, BacnetError):
                            _log.error(
                                "COV task crashed; polling",
                                collector=self.name,
                                device=device.name,
                                error=repr(failure),
                            )
                        use_cov = use_cov and not isinstance(failure, BacnetUnsupportedError)
                        cov_task = None
                heartbeat = self.options.cov_heartbeat_s or interval
                cadence = heartbeat if device.name in self.cov_active else interval
                next_at += cadence
                now = time.monotonic()
                if next_at < now:
                    next_at = now + (next_at - now) % cadence  # overran: skip, do not burst
                await self._sleep_until(next_at, device.name)
        finally:
            if cov_task is not None:
                cov_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, BacnetError):
                    await cov_task

    async def _sleep_until(self, at: float, device: str) -> None:
        # Wake early if COV stops while sleeping on the long heartbeat cadence.
        while (left := at - time.monotonic()) > 0:
            if device not in self.cov_active and left > self.options.interval_s:
                return
            await asyncio.sleep(min(left, 1.0))

    async def _cov(
        self, ctx: CollectorContext, device: DeviceOptions, poller: DevicePoller
    ) -> None:
        """Subscribe to every object; renew before the lifetime ends; raise when refused."""
        assert self.client is not None
        client = self.client
        lifetime = self.options.cov_lifetime_s
        try:
            while True:
                async with contextlib.AsyncExitStack() as stack:
                    streams = []
                    for point, obj in poller.objects.items():
                        if obj.conversion is None:
                            continue  # never read (missing object, unknown units): not subscribed
                        stream = await stack.enter_async_context(
                            client.subscribe(device.name, poller.address, obj.objid, lifetime)
                        )
                        streams.append((point, stream))
                    if device.name not in self.cov_active:
                        self.cov_active.add(device.name)
                        _log.info(
                            "COV subscribed",
                            collector=self.name,
                            device=device.name,
                            objects=len(streams),
                        )
                    # Renew by subscribing afresh before the device drops us (80 % of lifetime).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(lifetime * 0.8), asyncio.TaskGroup() as group:
                            for point, stream in streams:
                                group.create_task(self._follow(ctx, poller, point, stream))
        except BacnetUnsupportedError:
            _log.info("COV not supported; polling", collector=self.name, device=device.name)
            raise
        except BacnetError as exc:
            _log.warning(
                "COV subscription failed; polling",
                collector=self.name,
                device=device.name,
                error=str(exc),
            )
            raise
        finally:
            self.cov_active.discard(device.name)

    async def _follow(
        self, ctx: CollectorContext, poller: DevicePoller, point: str, stream: Any
    ) -> None:
        async for prop, value in stream:
            frame = poller.notify(point, prop, value)
            if frame.height:
                self.cov_readings += frame.height
                await ctx.emit(frame)


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> BacnetCollector:
    """Build a BACnet collector from its config table.

    Raises:
        ConfigError: naming ``collectors.<name>.<field>`` for a bad option, an unknown map,
            an object override for a point the map does not have, or a broken map file.
    """
    try:
        parsed = BacnetOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, f"collectors.{name}.")) from None
    extra = [settings.resolve(parsed.maps_dir)] if parsed.maps_dir else []
    try:
        maps = load_maps(extra)
        units = load_units()
    except (MapError, UnitError) as exc:
        raise ConfigError(f"collectors.{name}.maps_dir: {exc}") from None
    for i, d in enumerate(parsed.devices):
        where = f"collectors.{name}.devices.{i}"
        if d.map not in maps:
            raise ConfigError(
                f"{where}.map: unknown map {d.map!r} (known: {', '.join(sorted(maps))})"
            )
        points = {p.point for p in maps[d.map].points}
        for point, objid in d.objects.items():
            if point not in points:
                raise ConfigError(f"{where}.objects.{point}: map {d.map!r} has no such point")
            try:
                parse_object_id(objid)
            except ValueError as exc:
                raise ConfigError(f"{where}.objects.{point}: {exc}") from None
    return BacnetCollector(name=name, options=parsed, maps=maps, units=units)

"""``pue-agent probe bacnet HOST[:PORT]``: read one device once, or list what answers.

``--device-id N`` reads the device through ``--map`` (or, without one, every analog
object whose units the unit table knows); ``--discover`` sends Who-Is to HOST (``*`` for
a local broadcast) and lists each device that answers with its analog objects.

Exit codes (README.md, "Exit codes"): 0 readings printed; 2 bad arguments or unknown map;
3 the device did not answer; 6 it answered but yielded no readings (refused, unknown
objects); 7 the host name cannot be resolved. With ``--json`` an error is
``{"error": …, "code": …}`` on stdout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.probe import (
    EXIT_PROTOCOL,
    EXIT_UNREACHABLE,
    EXIT_UNRESOLVED,
    EXIT_USAGE,
    error_exit,
    print_readings,
    resolve_host,
)
from collectors.bacnet.client import BacnetClient, device_address
from collectors.bacnet.discovery import DeviceObjects, auto_map, list_objects
from collectors.bacnet.errors import BacnetError, BacnetTransportError
from collectors.bacnet.maps import MapError, ObjectMap, load_maps
from collectors.bacnet.poller import DevicePoller, PollResult
from collectors.bacnet.units import load_units

__all__ = ["discover", "probe_once", "register"]


async def probe_once(
    client: BacnetClient, address: str, device_id: int, object_map: ObjectMap | None
) -> tuple[ObjectMap, PollResult]:
    """Read one device once through ``object_map`` (or a map of its analog objects)."""
    units = load_units()
    where = device_address(address)
    if object_map is None:
        object_map = auto_map(await list_objects(client, where, device_id), units)
    poller = DevicePoller(
        client,
        device=f"device-{device_id}",
        address=where,
        object_map=object_map,
        units=units,
        collector="probe",
    )
    return object_map, await poller.poll()


async def discover(
    client: BacnetClient, address: str, device_id: int | None, wait_s: float
) -> list[DeviceObjects]:
    """Who-Is at ``address`` (``*``: local broadcast) and the objects of each device found."""
    where = device_address(address)
    found = await client.who_is(where, low=device_id, high=device_id, wait_s=wait_s)
    devices = []
    for iam in found:
        objects = await list_objects(client, device_address(iam.address), iam.device_id)
        objects.vendor_id = iam.vendor_id
        devices.append(objects)
    return devices


def _numeric(host: str) -> str:
    """``HOST[:PORT]`` with a host name resolved (bacpypes3 takes IP addresses only).

    ``*`` (broadcast) and ``NET:MAC`` (a device behind a BACnet router) pass unchanged.

    Raises:
        LookupError: the name does not resolve (never reported as a timeout).
    """
    name, _, port = host.partition(":")
    if host == "*" or name.isdigit():
        return host
    try:
        ipaddress.ip_address(name)
    except ValueError:
        unresolved = resolve_host(name)
        if unresolved is not None:
            raise LookupError(unresolved) from None
        name = str(socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0])
    return f"{name}:{port}" if port else name


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int | str) or value is None:
        return value
    return str(value)


def _print_devices(devices: list[DeviceObjects], as_json: bool) -> None:
    if as_json:
        for d in devices:
            record = asdict(d)
            for obj in record["objects"]:
                obj["present_value"] = _plain(obj["present_value"])
            print(json.dumps(record, ensure_ascii=False))
        return
    console = Console()
    for d in devices:
        table = Table("object", "name", "units", "present value")
        for obj in d.objects:
            table.add_row(obj.object, obj.name or "", obj.units or "", str(obj.present_value))
        console.print(
            f"device {d.device_id} {d.name or ''} at {d.address} (vendor {d.vendor_id})",
            highlight=False,
            markup=False,
        )
        console.print(table)


def register(probe_app: typer.Typer) -> None:
    """Add ``probe bacnet`` to the probe command group."""

    @probe_app.command("bacnet")
    def bacnet(
        host: Annotated[
            str, typer.Argument(help="HOST[:PORT] (47808 by default), NET:MAC, or * to broadcast")
        ],
        device_id: Annotated[
            int | None, typer.Option("--device-id", help="Device instance to read.")
        ] = None,
        map_name: Annotated[
            str | None, typer.Option("--map", help="Object map (default: all analog objects).")
        ] = None,
        maps_dir: Annotated[
            Path | None, typer.Option("--maps-dir", help="Extra object maps.")
        ] = None,
        do_discover: Annotated[
            bool, typer.Option("--discover", help="Who-Is; list devices and their objects.")
        ] = False,
        local_address: Annotated[
            str,
            typer.Option(
                "--local-address",
                help="Client UDP address (port 0 picks one); ADDR/MASK:47808 to broadcast (*).",
            ),
        ] = "0.0.0.0:0",
        timeout_s: Annotated[float, typer.Option("--timeout", help="APDU timeout, s.")] = 3.0,
        retries: Annotated[int, typer.Option("--retries", help="APDU retries.")] = 1,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Read a BACnet device once through an object map, or discover devices."""
        if not do_discover and device_id is None:
            raise error_exit("give --device-id N (or --discover)", EXIT_USAGE)
        try:
            host = _numeric(host)
            device_address(host)
        except ValueError as exc:
            raise error_exit(str(exc), EXIT_USAGE) from None
        except LookupError as exc:
            raise error_exit(str(exc), EXIT_UNRESOLVED) from None
        object_map: ObjectMap | None = None
        if map_name is not None:
            try:
                maps = load_maps([maps_dir] if maps_dir else None)
            except MapError as exc:
                raise error_exit(f"--maps-dir: {exc}", EXIT_USAGE) from None
            if map_name not in maps:
                raise error_exit(
                    f"unknown map {map_name!r} (known: {', '.join(sorted(maps))})", EXIT_USAGE
                )
            object_map = maps[map_name]

        async def run() -> Any:
            client = BacnetClient(local_address=local_address, timeout_s=timeout_s, retries=retries)
            try:
                if do_discover:
                    return await discover(client, host, device_id, wait_s=timeout_s)
                assert device_id is not None
                return await probe_once(client, host, device_id, object_map)
            finally:
                client.close()

        try:
            outcome = asyncio.run(run())
        except BacnetTransportError as exc:
            raise error_exit(str(exc), EXIT_UNREACHABLE) from None
        except (BacnetError, ValueError) as exc:
            raise error_exit(str(exc), EXIT_PROTOCOL) from None
        except OSError as exc:
            raise error_exit(str(exc.strerror), EXIT_USAGE) from None
        if do_discover:
            if not outcome:
                raise error_exit(f"{host}: no device answered Who-Is", EXIT_UNREACHABLE)
            _print_devices(outcome, as_json)
            return
        used_map, result = outcome
        err = Console(stderr=True)
        if not result.frame.height:
            first = str(result.errors[0]) if result.errors else f"{host}: no readings"
            code = (
                EXIT_UNREACHABLE
                if any(isinstance(e, BacnetTransportError) for e in result.errors)
                else EXIT_PROTOCOL
            )
            raise error_exit(first, code)
        for problem in result.errors:
            err.print(f"error: {problem}", highlight=False, markup=False)
        print_readings(
            result.frame,
            as_json=as_json,
            extra={"profile": used_map.name},
            extra_columns=["quality"],
        )

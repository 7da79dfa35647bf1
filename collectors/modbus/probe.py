"""``pue-agent probe modbus HOST[:PORT] --unit N --map NAME``: read one unit once.

Exit codes (README.md, "Exit codes"): 0 readings printed; 2 bad arguments; 3 no answer
(timeout, connection refused, serial port missing); 5 unknown map, or the map yields no
readings from this unit; 6 the unit answered with an exception code or garbage; 7 host
name cannot be resolved. With ``--json`` an error is ``{"error": …, "code": …}`` on stdout.
``--list-maps`` prints the built-in maps (and those of ``--maps-dir``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agent.probe import (
    EXIT_NO_PROFILE,
    EXIT_PROTOCOL,
    EXIT_UNREACHABLE,
    EXIT_UNRESOLVED,
    error_exit,
    print_readings,
    resolve_host,
)
from agent.readings import ReadingBuffer
from collectors.modbus.client import (
    Bus,
    BusConfig,
    ModbusConnectError,
    ModbusError,
    ModbusTimeoutError,
)
from collectors.modbus.maps import DeviceMap, MapError, load_maps
from collectors.modbus.plan import DevicePlan, needs_split, poll_device
from collectors.snmp.probe import parse_target

__all__ = ["register"]

_PORT = 502


def _target(target: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``; the Modbus TCP port 502 when none is given."""
    host, port = parse_target(target)
    has_port = ("]:" in target) if target.startswith("[") else target.count(":") == 1
    return host, (port if has_port else _PORT)


def _list_maps(maps: dict[str, DeviceMap], as_json: bool) -> None:
    if as_json:
        for m in maps.values():
            print(
                json.dumps(
                    {
                        "map": m.name,
                        "vendor": m.vendor,
                        "model": m.model,
                        "document": m.document.model_dump(),
                        "registers": len(m.registers),
                    },
                    ensure_ascii=False,
                )
            )
        return
    table = Table("map", "vendor", "model", "values", "document (version)")
    for m in maps.values():
        table.add_row(
            m.name,
            m.vendor,
            m.model,
            str(len(m.registers)),
            f"{m.document.title} ({m.document.version})",
        )
    Console().print(table)


async def _probe(
    config: BusConfig, unit: int, plan: DevicePlan, device: str, timeout_s: float
) -> ReadingBuffer:
    bus = Bus(config)
    label = f"{device} unit {unit}"
    buffer = ReadingBuffer()
    try:
        try:
            await poll_device(bus, label, device, unit, plan, buffer, timeout_s=timeout_s)
        except ModbusError as exc:
            if not needs_split(exc, plan):
                raise
            await poll_device(
                bus, label, device, unit, plan.without_holes(), buffer, timeout_s=timeout_s
            )
    finally:
        bus.close()
    return buffer


def register(probe_app: typer.Typer) -> None:
    """Add ``probe modbus`` to the probe group."""

    @probe_app.command("modbus")
    def probe_modbus(
        target: Annotated[
            str | None,
            typer.Argument(help="HOST or HOST:PORT (default port 502); not with --serial."),
        ] = None,
        unit: Annotated[int, typer.Option("--unit", "-u", help="Unit id (slave address).")] = 1,
        map_name: Annotated[
            str | None, typer.Option("--map", "-m", help="Device map, e.g. eastron-sdm630.")
        ] = None,
        transport: Annotated[
            str, typer.Option("--transport", help="tcp or rtu-over-tcp (with HOST).")
        ] = "tcp",
        serial: Annotated[
            str | None, typer.Option("--serial", help="Serial port for RTU, e.g. /dev/ttyUSB0.")
        ] = None,
        baudrate: Annotated[int, typer.Option("--baudrate", help="Serial speed.")] = 9600,
        parity: Annotated[str, typer.Option("--parity", help="N, E or O.")] = "N",
        timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds per request.")] = 1.0,
        max_gap: Annotated[
            int, typer.Option("--max-gap", help="Unmapped registers read through.")
        ] = 8,
        maps_dir: Annotated[
            Path | None, typer.Option("--maps-dir", help="Extra folder of map files.")
        ] = None,
        list_maps: Annotated[
            bool, typer.Option("--list-maps", help="List the device maps and exit.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    ) -> None:
        """Read one Modbus unit once with a device map and print its readings."""
        try:
            maps = load_maps([maps_dir] if maps_dir else [])
        except MapError as exc:
            raise error_exit(f"maps: {exc}", EXIT_NO_PROFILE) from None
        if list_maps:
            _list_maps(maps, as_json)
            return
        if map_name is None:
            raise typer.BadParameter("give --map NAME (see --list-maps)")
        if map_name not in maps:
            raise error_exit(
                f"no map {map_name!r} (known: {', '.join(sorted(maps))})", EXIT_NO_PROFILE
            )
        if not 0 <= unit <= 255:
            raise typer.BadParameter("--unit: 0..255")
        if parity not in ("N", "E", "O"):
            raise typer.BadParameter("--parity: N, E or O")
        if serial is not None:
            if target is not None:
                raise typer.BadParameter("give HOST[:PORT] or --serial, not both")
            config = BusConfig(
                name="probe",
                transport="rtu",
                serial_port=serial,
                baudrate=baudrate,
                parity=parity,  # type: ignore[arg-type]
                timeout_s=timeout_s,
            )
            device = f"{Path(serial).name}#{unit}"
        else:
            if target is None:
                raise typer.BadParameter("give HOST[:PORT] or --serial")
            if transport not in ("tcp", "rtu-over-tcp"):
                raise typer.BadParameter("--transport: tcp or rtu-over-tcp")
            host, port = _target(target)
            unresolved = resolve_host(host)
            if unresolved is not None:
                raise error_exit(unresolved, EXIT_UNRESOLVED)
            config = BusConfig(
                name="probe",
                transport=transport,  # type: ignore[arg-type]
                host=host,
                port=port,
                timeout_s=timeout_s,
            )
            device = f"{host}:{port}#{unit}" if port != _PORT else f"{host}#{unit}"
        plan = DevicePlan(maps[map_name], max_gap=max(0, max_gap))
        try:
            buffer = asyncio.run(_probe(config, unit, plan, device, timeout_s))
        except (ModbusTimeoutError, ModbusConnectError) as exc:
            if exc.reason == "wrong_unit":
                raise error_exit(str(exc), EXIT_PROTOCOL) from None
            raise error_exit(f"{exc.reason}: {exc}", EXIT_UNREACHABLE) from None
        except ModbusError as exc:
            raise error_exit(str(exc), EXIT_PROTOCOL) from None
        readings = buffer.take()
        if readings.is_empty():
            raise error_exit(
                f"no readings: map {map_name!r} yields nothing from unit {unit} "
                "(every value was a sentinel or not a number); try another map",
                EXIT_NO_PROFILE,
            )
        print_readings(readings, as_json=as_json, extra={"profile": map_name})

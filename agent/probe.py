"""How every ``pue-agent probe PROTOCOL …`` prints what one device yields.

Each protocol's sub-command lives in ``collectors/<protocol>/probe.py`` (the
``probe`` group is assembled in :mod:`agent.cli.probe`); all print readings
through :func:`print_readings`, so an operator's scripts read ``--json`` output
from any protocol alike.
"""

from __future__ import annotations

import json
import math
import socket
from typing import Any

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.readings import QUANTITIES

try:  # typer >= 0.20 runs on its own copy of click
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import get_current_context  # type: ignore[no-redef]

__all__ = [
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_NO_PROFILE",
    "EXIT_PROTOCOL",
    "EXIT_UNREACHABLE",
    "EXIT_UNRESOLVED",
    "EXIT_USAGE",
    "error_exit",
    "json_requested",
    "print_readings",
    "resolve_host",
    "unit_of",
]

# The exit codes of every command (the one table is in README.md, "Exit codes").
#: A check, verification or command failed (journal broken, report does not verify, …).
EXIT_FAILED = 1
#: Bad arguments, settings or site model.
EXIT_USAGE = 2
#: The device or server did not answer or refused the connection.
EXIT_UNREACHABLE = 3
#: The device refused the credentials (SNMPv3 auth/priv, MQTT CONNACK, Redfish login).
EXIT_AUTH = 4
#: No profile matches, or the forced ``--profile`` yields no readings from this device.
EXIT_NO_PROFILE = 5
#: The device answered, but not usably (protocol error, TLS refused, no readings).
EXIT_PROTOCOL = 6
#: The host name cannot be resolved (DNS), never reported as a timeout.
EXIT_UNRESOLVED = 7

_stderr = Console(stderr=True)


def json_requested() -> bool:
    """Whether the running command was given ``--json`` (its ``as_json`` parameter)."""
    ctx = get_current_context(silent=True)
    while ctx is not None:
        if ctx.params.get("as_json"):
            return True
        ctx = ctx.parent
    return False


def error_exit(message: str, code: int, *, as_json: bool | None = None) -> typer.Exit:
    """Report a failure and return the :class:`typer.Exit` to raise (every command's error exit).

    With ``as_json`` (by default: when the running command was given ``--json``) the error
    is one JSON object on stdout, ``{"error": message, "code": code}``, so a script reading
    ``--json`` output always gets JSON; otherwise the message goes to stderr. Messages
    never carry secrets (callers pass none).
    """
    if as_json is None:
        as_json = json_requested()
    if as_json:
        print(json.dumps({"error": message, "code": code}, ensure_ascii=False), flush=True)
    else:
        _stderr.print(
            f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
        )
    return typer.Exit(code)


def resolve_host(host: str) -> str | None:
    """``None`` if ``host`` resolves, else why not (so DNS failure is not taken for a timeout)."""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        return f"cannot resolve host name {host!r}: {reason}"
    return None


#: Display unit per quantity (the suffix of the name, spelled as an operator reads it).
_UNITS: dict[str, str] = {
    "power_w": "W",
    "energy_kwh": "kWh",
    "apparent_power_va": "VA",
    "reactive_power_var": "var",
    "apparent_energy_kvah": "kVAh",
    "current_a": "A",
    "voltage_v": "V",
    "frequency_hz": "Hz",
    "power_factor": "",
    "temperature_c": "°C",
    "humidity_pct": "%",
    "load_pct": "%",
    "heat_kw": "kW",
    "heat_energy_kwh": "kWh",
    "battery_charge_pct": "%",
    "runtime_s": "s",
    "uptime_s": "s",
    "status_code": "",
}


def unit_of(quantity: str) -> str:
    """The unit a quantity name carries (``power_w`` -> ``W``)."""
    return _UNITS.get(quantity, quantity.rsplit("_", 1)[-1] if quantity in QUANTITIES else "")


def print_readings(
    batch: pl.DataFrame,
    *,
    as_json: bool,
    extra: dict[str, Any] | None = None,
    extra_columns: list[str] | None = None,
    console: Console | None = None,
) -> None:
    """Print a reading batch as a table, or as one JSON object per line.

    JSON keys: ``device``, ``point``, ``quantity``, ``value``, ``unit``, ``ts``
    (ISO 8601 UTC) plus the constant ``extra`` keys (e.g. ``profile``) and any
    ``extra_columns`` present in ``batch`` (e.g. ``source``).
    """
    extra = extra or {}
    extra_columns = [c for c in (extra_columns or []) if c in batch.columns]
    if as_json:
        for row in batch.iter_rows(named=True):
            value = row["value"]
            record: dict[str, Any] = {
                "device": row["device"],
                "point": row["point"],
                "quantity": row["quantity"],
                "value": value if value is None or math.isfinite(value) else str(value),
                "unit": unit_of(row["quantity"]),
                "ts": row["ts"].isoformat().replace("+00:00", "Z"),
                **extra,
            }
            record.update({c: row[c] for c in extra_columns})
            print(json.dumps(record, ensure_ascii=False))
        return
    console = console or Console()
    table = Table(*["device", "point", "quantity", "value", "unit", *extra_columns])
    for row in batch.iter_rows(named=True):
        table.add_row(
            row["device"],
            row["point"],
            row["quantity"],
            f"{row['value']:g}",
            unit_of(row["quantity"]),
            *(str(row[c]) for c in extra_columns),
        )
    console.print(table)
    if extra:
        console.print(" ".join(f"{k}: {v}" for k, v in extra.items()), highlight=False)

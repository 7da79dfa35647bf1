"""How every ``pue-agent probe PROTOCOL …`` prints what one device yields.

Each protocol's sub-command lives in ``collectors/<protocol>/probe.py`` (the
``probe`` group is assembled in :mod:`agent.cli.probe`); all print readings
through :func:`print_readings`, so an operator's scripts read ``--json`` output
from any protocol alike.
"""

from __future__ import annotations

import json
import math
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from agent.readings import QUANTITIES

__all__ = ["print_readings", "unit_of"]

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

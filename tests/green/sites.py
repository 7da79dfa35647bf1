"""A small site and hourly meter rows for the hourly-matching tests (hand-computed figures)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from agent.schemas import INTERVAL_SCHEMA
from agent.site import Site, parse_site

__all__ = ["LOAD_KWH", "day_rows", "green_site", "hour_utc", "rows_for", "site_table"]

#: The data hall draws 100 kWh every hour in every example.
LOAD_KWH = 100.0


def site_table(**facts: Any) -> dict[str, Any]:
    """grid import/export, PV, IT, battery charge/discharge meters; Asia/Shanghai (UTC+8)."""
    meters = [
        {"id": "grid", "device": "inc", "energy_point": "e", "role": "grid_import"},
        {"id": "export", "device": "inc", "energy_point": "x", "role": "grid_export"},
        {"id": "pv", "device": "pv", "energy_point": "e", "role": "onsite_renewable"},
        {"id": "it", "device": "ups", "energy_point": "e", "role": "it", "flexible": True},
        {"id": "bat-in", "device": "bess", "energy_point": "c", "role": "storage_charge"},
        {"id": "bat-out", "device": "bess", "energy_point": "d", "role": "storage_discharge"},
    ]
    return {
        "id": "green-site",
        "name": "Green test site",
        "pue_category": 1,
        "meters": meters,
        "facts": {
            "emission_factor": {
                "kg_co2_per_kwh": 0.5,
                "source": "test factor",
                "year": 2026,
            },
            **facts,
        },
    }


def green_site(**facts: Any) -> Site:
    """The validated :func:`site_table`."""
    return parse_site(site_table(**facts), source="test")


def hour_utc(day: str, local_hour: int) -> datetime:
    """UTC start of local (UTC+8) hour ``local_hour`` of ``day`` (``YYYY-MM-DD``)."""
    y, m, d = (int(p) for p in day.split("-"))
    return datetime(y, m, d, tzinfo=UTC) + timedelta(hours=local_hour - 8)


def rows_for(hours: list[tuple[datetime, dict[str, float]]]) -> pl.LazyFrame:
    """Interval rows: one per meter and hour, fully covered (the store's hourly roll-up)."""
    records = [
        {
            "meter": meter,
            "interval_start": start,
            "interval_end": start + timedelta(hours=1),
            "energy_kwh": kwh,
            "coverage": 1.0,
            "flags": 0,
            "method": "register",
        }
        for start, meters in hours
        for meter, kwh in meters.items()
    ]
    return pl.DataFrame(records, schema=INTERVAL_SCHEMA).lazy()


def day_rows(
    day: str,
    pv_kwh: dict[int, float],
    *,
    charge_kwh: dict[int, float] | None = None,
    discharge_kwh: dict[int, float] | None = None,
) -> list[tuple[datetime, dict[str, float]]]:
    """24 local hours of a 100 kWh/h load: the incomer imports or exports the balance.

    Balance at the incomer per hour: load + charge - discharge - PV (import if > 0, export if
    < 0), so E_DC = import + PV - export = load + charge - discharge.
    """
    charge_kwh = charge_kwh or {}
    discharge_kwh = discharge_kwh or {}
    out = []
    for h in range(24):
        pv = pv_kwh.get(h, 0.0)
        charge = charge_kwh.get(h, 0.0)
        discharge = discharge_kwh.get(h, 0.0)
        balance = LOAD_KWH + charge - discharge - pv
        out.append(
            (
                hour_utc(day, h),
                {
                    "grid": max(balance, 0.0),
                    "export": max(-balance, 0.0),
                    "pv": pv,
                    "it": LOAD_KWH,
                    "bat-in": charge,
                    "bat-out": discharge,
                },
            )
        )
    return out

"""The console tests' site: the ``sim`` collector's meters, a year of stated interval energy.

Energy per 15-minute interval, every meter fully covered (coverage 1):

* before the current local month: grid 1.10 kWh (two incomers, 0.55 each), PV 0.10 kWh,
  IT 1.00 kWh (four PDUs, 0.25 each), so E_DC = 1.20 kWh and PUE = 1.20;
* in the current local month: grid 1.20 kWh in local hours 00-11 and 1.40 kWh in
  12-23 (PUE 1.30 and 1.50 by hour), so any whole local day has E_DC = 1.40 kWh per
  interval on average and PUE = 1.40, as has the whole month (it is filled to its end);
* cooling 0.05 kWh per unit (six units) and lighting 0.02 kWh throughout; the UPS
  meters are monitors, outside every formula, and have no rows.

TTM PUE = (1.20 x n_before + 1.40 x n_month) / (n_before + n_month) with n the number
of intervals (E_IT is 1.00 kWh in each); metered REF of the month = 0.10 / 1.40.
"""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from agent.periods import month_bounds, ttm_bounds
from agent.schemas import INTERVAL_SCHEMA
from collectors.sim.simulator import SiteSimulator, site_table
from tests.kpi.helpers import constant_intervals

__all__ = [
    "PDUS",
    "SITE_ID",
    "console_site",
    "current_month",
    "fill_intervals",
    "tamper",
    "ttm_pue",
]

SITE_ID = "console-dc"
PDUS = 4
TIMEZONE = "Asia/Shanghai"
#: A meter whose device no collector polls: the console lists it as silent since start.
SPARE_METER = "spare-9.output"

_BEFORE = {"grid-1.input": 0.55, "grid-2.input": 0.55}
_MORNING = {"grid-1.input": 0.60, "grid-2.input": 0.60}
_AFTERNOON = {"grid-1.input": 0.70, "grid-2.input": 0.70}
_COMMON = {
    "pv-1.output": 0.10,
    **{f"pdu-00{i}.output": 0.25 for i in range(1, PDUS + 1)},
    **dict.fromkeys(("chiller-1.input", "chiller-2.input"), 0.05),
    **{f"crac-{i}.input": 0.05 for i in range(1, 5)},
    "lighting-1.input": 0.02,
}


def console_site() -> dict[str, Any]:
    """The ``[site]`` table: the sim collector's meters plus one unpolled monitor meter."""
    table = site_table(SiteSimulator(pdus=PDUS), site_id=SITE_ID)
    table["meters"].append(
        {
            "id": SPARE_METER,
            "device": "spare-9",
            "energy_point": "output.energy",
            "power_point": "output.power",
            "role": "monitor",
        }
    )
    return table


def current_month(now: datetime | None = None) -> str:
    """The site-local month of ``now``."""
    return f"{(now or datetime.now(UTC)).astimezone(ZoneInfo(TIMEZONE)):%Y-%m}"


def fill_intervals(month: str) -> tuple[pl.DataFrame, int, int]:
    """The intervals of the TTM ending with ``month``; with (n_before, n_month)."""
    t_start, _ = ttm_bounds(month, TIMEZONE)
    m_start, m_end = month_bounds(month, TIMEZONE)
    t_start, m_start, m_end = (d.astimezone(UTC) for d in (t_start, m_start, m_end))
    before = constant_intervals({**_BEFORE, **_COMMON}, t_start, m_start)
    common = constant_intervals(_COMMON, m_start, m_end)
    morning = constant_intervals(_MORNING, m_start, m_end)
    afternoon = constant_intervals(_AFTERNOON, m_start, m_end)
    # Shanghai is UTC+8 all year: local hours 00-11 are UTC hours 16-23 and 00-03.
    local_hour = (pl.col("interval_start").dt.hour() + 8) % 24
    grid = pl.concat([morning.filter(local_hour < 12), afternoon.filter(local_hour >= 12)]).sort(
        "meter", "interval_start"
    )
    frame = pl.concat([before, common, grid]).cast(INTERVAL_SCHEMA)
    n_before = int((m_start - t_start) / timedelta(minutes=15))
    n_month = int((m_end - m_start) / timedelta(minutes=15))
    return frame, n_before, n_month


def ttm_pue(n_before: int, n_month: int) -> float:
    """The stated TTM PUE (E_IT is 1.00 kWh in every interval)."""
    return (1.20 * n_before + 1.40 * n_month) / (n_before + n_month)


def tamper(bundle: Path, out: Path) -> Path:
    """A copy of ``bundle`` with one byte of ``data/kpis.json`` changed (same names)."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data/kpis.json"):
                # A digit of the first figure: still JSON, no longer the signed bytes.
                at = data.index(b'"value": ') + 9
                data = data[:at] + (b"9" if data[at : at + 1] != b"9" else b"8") + data[at + 1 :]
            dst.writestr(info, data)
    return out

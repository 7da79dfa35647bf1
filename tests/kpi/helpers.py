"""Small sites and reading frames for the energy/KPI tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from agent.readings import make_batch
from agent.schemas import INTERVAL_SCHEMA
from agent.site import Site, parse_site

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def small_site(*, pv: bool = False, **grid: Any) -> Site:
    """A grid meter (register, optional wrap width), an IT meter, a cooling meter (and PV)."""
    meters = [
        {
            "id": "grid",
            "device": "grid",
            "energy_point": "e",
            "power_point": "p",
            "role": "grid_import",
            "rating_kw": 100.0,
            **grid,
        },
        {"id": "it", "device": "it", "energy_point": "e", "role": "it", "rack": "r1"},
        {"id": "cool", "device": "cool", "power_point": "p", "role": "cooling", "rating_kw": 50.0},
    ]
    if pv:
        meters.append({"id": "pv", "device": "pv", "energy_point": "e", "role": "onsite_renewable"})
    return parse_site(
        {
            "id": "t",
            "name": "test",
            "pue_category": 1,
            "meters": meters,
            "facts": {
                "racks": 2,
                "emission_factor": {"kg_co2_per_kwh": 0.5, "source": "test", "year": 2023},
            },
        },
        source="test",
    )


def reads(
    device: str, point: str, quantity: str, rows: list[tuple[float, float]], quality: int = 0
) -> pl.DataFrame:
    """Readings at ``T0 + seconds`` with values."""
    return make_batch(
        [T0 + timedelta(seconds=s) for s, _ in rows],
        device,
        [point] * len(rows),
        quantity,
        [v for _, v in rows],
        quality,
    )


def energy_reads(rows: list[tuple[float, float]], device: str = "grid") -> pl.DataFrame:
    return reads(device, "e", "energy_kwh", rows)


def power_reads(rows: list[tuple[float, float]], device: str = "grid") -> pl.DataFrame:
    return reads(device, "p", "power_w", rows)


def interval_rows(
    meter: str,
    start: datetime,
    count: int,
    step: timedelta,
    energy_kwh: float,
    coverage: float = 1.0,
) -> pl.DataFrame:
    """``count`` INTERVAL_SCHEMA rows of one meter with constant energy and coverage."""
    starts = [start + i * step for i in range(count)]
    return pl.DataFrame(
        {
            "meter": [meter] * count,
            "interval_start": starts,
            "interval_end": [s + step for s in starts],
            "energy_kwh": [energy_kwh] * count,
            "coverage": [coverage] * count,
            "flags": [0] * count,
            "method": ["register"] * count,
        }
    ).cast(dict(INTERVAL_SCHEMA))


def hourly_parts_summed(store: Any, start: Any, end: Any) -> pl.LazyFrame:
    """The store's hourly part files summed as they are, with no de-duplication.

    The reading path before ``read_rollup``: parts sharing keys (an import over live
    data) count twice here, which the tests and ``bench_ttm_store`` show against the
    exact path.
    """
    files = sorted(str(p) for p in (store.root / "hourly").rglob("*.parquet"))
    frame = pl.scan_parquet(files).filter(
        (pl.col("interval_start") >= start) & (pl.col("interval_start") < end)
    )
    return frame.group_by("meter", "interval_start", "interval_end").agg(pl.col("energy_kwh").sum())


def constant_intervals(
    energy_kwh_by_meter: dict[str, float],
    start: datetime,
    end: datetime,
    step: timedelta = timedelta(minutes=15),
) -> pl.DataFrame:
    """Fully covered register intervals of ``step`` in ``[start, end)``, constant per meter.

    The energy of a meter over any whole number of intervals is its constant times the
    count, so expected KPIs follow by arithmetic stated in the test.
    """
    starts = pl.datetime_range(
        start, end, step, closed="left", eager=True, time_unit="us", time_zone="UTC"
    )
    return pl.concat(
        pl.DataFrame(
            {
                "meter": meter,
                "interval_start": starts,
                "interval_end": starts + step,
                "energy_kwh": energy_kwh,
                "coverage": 1.0,
                "flags": 0,
                "method": "register",
            }
        )
        for meter, energy_kwh in energy_kwh_by_meter.items()
    ).cast(INTERVAL_SCHEMA)

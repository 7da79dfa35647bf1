"""Benchmark: hourly matching of a 2,000-meter site over a year, and the green-window refresh.

Run: ``.venv/bin/python -m tests.bench.bench_green_hourly``.

Goals (issue 19): hourly matching (every hour of the twelve months: battery FIFO,
contracts, certificates, then the day / month / TTM KPIs) <= 2 s; the green-window
forecast refresh <= 100 ms. The input is what ``pue-agent kpi`` reads: one row per
meter and hour (the store's hourly roll-ups), 2,000 meters x 8,760 hours = 17.5 M rows,
in memory (reading the store is timed by ``bench_ttm_store``).

Baseline, same data, same process: the existing period REF computation,
``compute_kpis`` of the month and the TTM (REF, CUE, PUE ... from the same rows), so the
ratio holds on a noisy machine. The forecast is timed against hourly matching of one
day of the same site (a refresh must cost about as little).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from agent.kpi import compute_kpis
from agent.kpi.green_window import forecast_window
from agent.kpi.hourly import (
    CERTIFICATE_SCHEMA,
    CONTRACT_HOURS_SCHEMA,
    GreenSupply,
    hourly_kpis,
    match_hours,
)
from agent.schemas import INTERVAL_SCHEMA, PeriodKind
from agent.site import Site, parse_site

MONTH = "2026-10"
METERS = 2000
MATCH_GOAL_S = 2.0
FORECAST_GOAL_S = 0.1
# Year ending with the local month: 2025-11-01 to 2026-11-01 local (UTC+8).
START = datetime(2025, 10, 31, 16, tzinfo=UTC)
END = datetime(2026, 10, 31, 16, tzinfo=UTC)


def bench_site() -> Site:
    """2 incomers, 1 PV array, a battery (charge and discharge meters), 1,995 PDUs."""
    meters: list[dict[str, Any]] = [
        {"id": f"grid-{i}", "device": f"inc-{i}", "energy_point": "e", "role": "grid_import"}
        for i in range(2)
    ]
    meters += [
        {"id": "pv-1", "device": "pv", "energy_point": "e", "role": "onsite_renewable"},
        {"id": "bat-in", "device": "bess", "energy_point": "c", "role": "storage_charge"},
        {"id": "bat-out", "device": "bess", "energy_point": "d", "role": "storage_discharge"},
    ]
    meters += [
        {
            "id": f"pdu-{i:04d}",
            "device": f"pdu-{i:04d}",
            "energy_point": "e",
            "role": "it",
            "flexible": i % 10 == 0,
        }
        for i in range(METERS - len(meters))
    ]
    return parse_site(
        {
            "id": "bench",
            "name": "bench",
            "pue_category": 1,
            "meters": meters,
            "facts": {"emission_factor": {"kg_co2_per_kwh": 0.58, "source": "bench", "year": 2025}},
        },
        source="bench",
    )


def year_rows(site: Site, rng: np.random.Generator) -> pl.DataFrame:
    """One row per meter and hour: PDUs ~1 kWh, incomers share the load, PV by day."""
    starts = pl.datetime_range(
        START, END, timedelta(hours=1), closed="left", eager=True, time_unit="us", time_zone="UTC"
    )
    n = starts.len()
    ids = [m.id for m in site.meters]
    pdus = len(ids) - 5
    local_hour = ((np.arange(n) + 8) % 24).astype(float)
    pv = np.clip(np.sin((local_hour - 6) / 12 * np.pi), 0, None) * pdus * 0.6
    charge = np.where((local_hour >= 11) & (local_hour < 14), pdus * 0.05, 0.0)
    discharge = np.where((local_hour >= 19) & (local_hour < 22), pdus * 0.045, 0.0)
    grid = np.clip(pdus * 1.25 + charge - discharge - pv, 0, None) / 2
    by_meter = {"pv-1": pv, "bat-in": charge, "bat-out": discharge}
    energy = [
        by_meter.get(m, grid if m.startswith("grid-") else rng.uniform(0.9, 1.1, n)) for m in ids
    ]
    return pl.DataFrame(
        {
            "meter": pl.Series(ids).repeat_by(n).explode(),
            "interval_start": pl.concat([starts] * len(ids)),
            "interval_end": pl.concat([starts] * len(ids)) + timedelta(hours=1),
            "energy_kwh": np.concatenate(energy),
            "coverage": 1.0,
            "flags": 0,
            "method": "register",
        },
        schema=INTERVAL_SCHEMA,
    )


def supply() -> GreenSupply:
    """A PPA delivering 300 kWh every night hour of the month, certificates by day and month."""
    nights = [
        (f"{MONTH}-{d:02d}T{h:02d}", 300.0, "PPA-1") for d in range(1, 32) for h in (0, 1, 2, 3)
    ]
    certificates = [(f"{MONTH}-{d:02d}", "day", 2000.0, f"GEC-D{d}") for d in range(1, 32)]
    certificates.append((MONTH, "month", 50_000.0, "GEC-M"))
    return GreenSupply(
        pl.DataFrame(nights, schema=CONTRACT_HOURS_SCHEMA, orient="row"),
        pl.DataFrame(certificates, schema=CERTIFICATE_SCHEMA, orient="row"),
    )


def timed(run: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    site = bench_site()
    frame = year_rows(site, np.random.default_rng(19))
    green = supply()
    hours_n = frame.height // len(site.meters)
    print(f"{len(site.meters)} meters x {hours_n} hours = {frame.height:,} rows")

    def hourly() -> pl.DataFrame:
        hours = match_hours(frame.lazy(), site, green).collect()
        return hourly_kpis(hours, site, month=MONTH)

    def baseline() -> pl.DataFrame:
        kinds = [PeriodKind.MONTH, PeriodKind.TTM]
        return compute_kpis(frame.lazy(), site, None, month=MONTH, kinds=kinds)

    base_s, _ = timed(baseline)
    match_s, kpis = timed(hourly)
    assert isinstance(kpis, pl.DataFrame)
    share = kpis.filter(
        (pl.col("metric") == "hourly_matched_green_share") & (pl.col("period_kind") == "ttm")
    )["value"][0]
    print(f"baseline compute_kpis (month + TTM REF) {base_s:6.3f} s")
    print(
        f"hourly matching, year + KPIs            {match_s:6.3f} s  "
        f"(x{match_s / base_s:.2f} of baseline; goal <= {MATCH_GOAL_S} s: "
        f"{'ok' if match_s <= MATCH_GOAL_S else 'MISSED'}); TTM hourly share {share:.3f}"
    )

    hours = match_hours(frame.lazy(), site, green).collect()
    now = END - timedelta(hours=10, minutes=30)
    day = frame.filter(pl.col("interval_start") >= END - timedelta(days=1))
    day_s, _ = timed(lambda: match_hours(day.lazy(), site, green).collect(), repeat=5)
    forecast_s, _ = timed(lambda: forecast_window(hours, green.contracts, site, now), repeat=10)
    print(f"baseline hourly matching of one day      {day_s * 1000:6.1f} ms")
    print(
        f"green-window forecast refresh           {forecast_s * 1000:6.1f} ms  "
        f"(x{forecast_s / day_s:.2f} of baseline; goal <= {FORECAST_GOAL_S * 1000:.0f} ms: "
        f"{'ok' if forecast_s <= FORECAST_GOAL_S else 'MISSED'})"
    )


if __name__ == "__main__":
    main()

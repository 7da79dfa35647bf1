"""Worked KPI examples with hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from agent.kpi import GREEN_SCHEMA, compute_kpis, month_bounds
from agent.schemas import KPI_SCHEMA, KpiStatus, PeriodKind
from tests.kpi.helpers import interval_rows, small_site

OCT_START, OCT_END = month_bounds(
    "2026-10", "Asia/Shanghai"
)  # 2026-09-30T16:00Z .. 2026-10-31T16:00Z
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
OCT_HOURS = 31 * 24  # 744


def value(kpis: pl.DataFrame, kind: str, metric: str, period: str | None = None) -> float | None:
    rows = kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric))
    if period is not None:
        rows = rows.filter(pl.col("period") == period)
    assert rows.height == 1, rows
    out = rows["value"][0]
    return None if out is None else float(out)


def row(kpis: pl.DataFrame, kind: str, metric: str) -> dict[str, object]:
    rows = kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric))
    assert rows.height == 1
    return rows.row(0, named=True)


def hourly_month(
    grid: float, it: float, cool: float, it_coverage: float = 1.0, pv: float | None = None
) -> pl.LazyFrame:
    frames = [
        interval_rows("grid", OCT_START, OCT_HOURS, HOUR, grid),
        interval_rows("it", OCT_START, OCT_HOURS, HOUR, it, coverage=it_coverage),
        interval_rows("cool", OCT_START, OCT_HOURS, HOUR, cool),
    ]
    if pv is not None:
        frames.append(interval_rows("pv", OCT_START, OCT_HOURS, HOUR, pv))
    return pl.concat(frames).lazy()


def test_month_boundary_at_local_midnight_plus_eight() -> None:
    # October (local) is 2026-09-30T16:00Z .. 2026-10-31T16:00Z. Minutes of October carry
    # grid 2.0 / IT 1.6 kWh (PUE 1.25); the first hour of November (from 16:00Z) 3.0 / 2.0
    # (PUE 1.5). If a November minute leaked into October the month PUE would move off 1.25.
    site = small_site()
    minutes = OCT_HOURS * 60  # 44,640
    nov_start = datetime(2026, 10, 31, 16, tzinfo=UTC)
    intervals = pl.concat(
        [
            interval_rows("grid", OCT_START, minutes, MINUTE, 2.0),
            interval_rows("it", OCT_START, minutes, MINUTE, 1.6),
            interval_rows("cool", OCT_START, minutes, MINUTE, 0.2),
            interval_rows("grid", nov_start, 60, MINUTE, 3.0),
            interval_rows("it", nov_start, 60, MINUTE, 2.0),
            interval_rows("cool", nov_start, 60, MINUTE, 0.2),
        ]
    ).lazy()
    oct_kpis = compute_kpis(intervals, site, None, month="2026-10")
    assert oct_kpis.schema == KPI_SCHEMA
    assert value(oct_kpis, "month", "pue") == pytest.approx(1.25)
    # E_DC = 2.0 x 44,640 = 89,280 kWh exactly the October minutes.
    assert value(oct_kpis, "month", "e_dc_kwh") == pytest.approx(89_280.0)
    last = oct_kpis.filter(pl.col("period_kind") == "interval").tail(1).row(0, named=True)
    assert last["period"] == "2026-10-31T23:59"
    assert last["period_end"] == nov_start
    assert value(oct_kpis, "day", "pue", "2026-10-31") == pytest.approx(1.25)
    assert row(oct_kpis, "month", "pue")["category"] == 1
    nov = compute_kpis(
        intervals, site, None, month="2026-11", kinds=[PeriodKind.INTERVAL, PeriodKind.MONTH]
    )
    first = nov.filter(pl.col("period_kind") == "interval").head(1).row(0, named=True)
    assert first["period"] == "2026-11-01T00:00"
    assert first["value"] == pytest.approx(1.5)
    # Only one hour of November: coverage 60 / 43,200 minutes -> insufficient.
    month = row(nov, "month", "pue")
    assert month["status"] == KpiStatus.INSUFFICIENT_DATA and month["value"] is None
    assert month["coverage"] == pytest.approx(60 / 43_200)


def test_coverage_94_percent_is_insufficient_data_95_is_ok() -> None:
    site = small_site()
    low = compute_kpis(
        hourly_month(600.0, 500.0, 50.0, it_coverage=0.94), site, None, month="2026-10"
    )
    pue = row(low, "month", "pue")
    assert pue["status"] == "insufficient_data"
    assert pue["value"] is None
    assert pue["coverage"] == pytest.approx(0.94)
    # E_DC alone is fully covered and still reported.
    assert row(low, "month", "e_dc_kwh")["status"] == "ok"
    ok = compute_kpis(
        hourly_month(600.0, 500.0, 50.0, it_coverage=0.95), site, None, month="2026-10"
    )
    # 600 x 744 / (500 x 744) = 1.2
    assert value(ok, "month", "pue") == pytest.approx(1.2)
    # Threshold is configurable.
    lowered = compute_kpis(
        hourly_month(600.0, 500.0, 50.0, it_coverage=0.94),
        site,
        None,
        month="2026-10",
        coverage_threshold=0.9,
    )
    assert value(lowered, "month", "pue") == pytest.approx(1.2)


def test_certificates_exceeding_e_dc_cap_ref_at_one() -> None:
    # Grid 600 + PV 100 kWh/h over 744 h: E_DC = 700 x 744 = 520,800 kWh; metered renewable
    # (PV) = 74,400 kWh -> ref_metered = 74,400 / 520,800 = 1/7. Certificates 1,200 MWh =
    # 1,200,000 kWh: (74,400 + 1,200,000) / 520,800 = 2.447 -> capped at 1; the documentary
    # part is what it adds after the cap: 1 - 1/7 = 6/7.
    site = small_site(pv=True)
    green = pl.DataFrame(
        {
            "month": ["2026-10"],
            "kind": ["certificate"],
            "energy_kwh": [1_200_000.0],
            "reference": ["GEC-1"],
        },
        schema=GREEN_SCHEMA,
    )
    kpis = compute_kpis(hourly_month(600.0, 500.0, 50.0, pv=100.0), site, green, month="2026-10")
    assert value(kpis, "month", "ref") == 1.0
    assert value(kpis, "month", "ref_metered") == pytest.approx(1 / 7)
    assert value(kpis, "month", "ref_documentary") == pytest.approx(6 / 7)
    assert value(kpis, "month", "e_renewable_documentary_kwh") == pytest.approx(1_200_000.0)
    # Everything covered by owned renewable attributes: no fossil energy, CUE 0.
    assert value(kpis, "month", "energy_fossil_kwh") == 0.0
    assert value(kpis, "month", "cue") == 0.0
    # A certificate for another month does not count for October.
    other = green.with_columns(pl.lit("2026-09").alias("month"))
    sep = compute_kpis(hourly_month(600.0, 500.0, 50.0, pv=100.0), site, other, month="2026-10")
    assert value(sep, "month", "ref") == pytest.approx(1 / 7)
    # ... but it does for the trailing twelve months ending in October (only October has
    # meter data, so the TTM itself is insufficient; the documentary energy is there).
    assert value(sep, "ttm", "e_renewable_documentary_kwh") == pytest.approx(1_200_000.0)


def test_cue_ppue_and_rack_occupancy() -> None:
    # Grid 600, PV 100, IT 500, cooling 50 kWh/h, no certificates, factor 0.5 kg/kWh.
    # Fossil = E_DC - PV = 600 x 744 = 446,400 kWh; CO2 = 223,200 kg; E_IT = 372,000 kWh;
    # CUE = 223,200 / 372,000 = 0.6. pPUE(cooling) = (50 + 500) / 500 = 1.1.
    # Rack r1 draws 500 kW > 150 W idle threshold; 2 racks declared -> occupancy 0.5.
    site = small_site(pv=True)
    kpis = compute_kpis(hourly_month(600.0, 500.0, 50.0, pv=100.0), site, None, month="2026-10")
    assert value(kpis, "month", "energy_fossil_kwh") == pytest.approx(446_400.0)
    assert value(kpis, "month", "co2_kg") == pytest.approx(223_200.0)
    assert value(kpis, "month", "cue") == pytest.approx(0.6)
    assert row(kpis, "month", "cue")["unit"] == "kgCO2/kWh"
    assert value(kpis, "month", "ppue_cooling") == pytest.approx(1.1)
    assert value(kpis, "month", "rack_occupancy") == pytest.approx(0.5)
    assert value(kpis, "month", "energy_non_fossil_kwh") == pytest.approx(74_400.0)


def test_period_pue_is_ratio_of_sums_not_mean_of_ratios() -> None:
    # Hour 1: E_DC 100, E_IT 50 (PUE 2.0); hour 2: E_DC 300, E_IT 250 (PUE 1.2).
    # Over both hours: 400 / 300 = 1.3333..., not (2.0 + 1.2) / 2 = 1.6.
    site = small_site()
    h1, h2 = OCT_START, OCT_START + HOUR
    intervals = pl.concat(
        [
            interval_rows("grid", h1, 1, HOUR, 100.0),
            interval_rows("grid", h2, 1, HOUR, 300.0),
            interval_rows("it", h1, 1, HOUR, 50.0),
            interval_rows("it", h2, 1, HOUR, 250.0),
            interval_rows("cool", h1, 2, HOUR, 0.0),
        ]
    ).lazy()
    kpis = compute_kpis(
        intervals,
        site,
        None,
        month="2026-10",
        coverage_threshold=0.0,
        kinds=[PeriodKind.HOUR, PeriodKind.DAY],
    )
    hours = kpis.filter((pl.col("period_kind") == "hour") & (pl.col("metric") == "pue"))
    assert hours["value"].to_list() == pytest.approx([2.0, 1.2])
    assert value(kpis, "day", "pue", "2026-10-01") == pytest.approx(400 / 300)


def test_no_emission_factor_gives_insufficient_cue() -> None:
    site = small_site()
    bare = site.model_copy(
        update={"facts": site.facts.model_copy(update={"emission_factor": None})}
    )
    kpis = compute_kpis(hourly_month(600.0, 500.0, 50.0), bare, None, month="2026-10")
    assert row(kpis, "month", "cue")["status"] == "insufficient_data"


def test_bad_threshold_and_month_rejected() -> None:
    site = small_site()
    with pytest.raises(ValueError, match="coverage_threshold"):
        compute_kpis(hourly_month(1, 1, 1), site, None, month="2026-10", coverage_threshold=95)
    with pytest.raises(ValueError, match="YYYY-MM"):
        compute_kpis(hourly_month(1, 1, 1), site, None, month="2026-13")

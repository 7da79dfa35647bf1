"""Hourly matching: the five hand-computed examples of issue 19, and bad input.

Every site here draws LOAD_KWH = 100 kWh in each local hour (Asia/Shanghai); expected
figures are worked out in each test's docstring.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from agent.green import GreenLedgerError, declared_profile, production_granularity
from agent.kpi import compute_kpis
from agent.kpi.hourly import (
    CERTIFICATE_SCHEMA,
    CONTRACT_HOURS_SCHEMA,
    GreenSupply,
    hourly_kpis,
    match_hours,
)
from agent.schemas import PeriodKind
from agent.site import parse_site
from tests.green.sites import day_rows, green_site, hour_utc, rows_for, site_table

DAY = "2026-06-15"


def _by_local_hour(hours: pl.DataFrame, column: str) -> dict[int, float]:
    local = hours["hour_start"].dt.convert_time_zone("Asia/Shanghai").dt.hour().to_list()
    return dict(zip(local, hours[column].to_list(), strict=True))


def _kpi(kpis: pl.DataFrame, metric: str, kind: str = "day") -> float:
    row = kpis.filter((pl.col("metric") == metric) & (pl.col("period_kind") == kind))
    assert row.height == 1, (metric, kind, row)
    value = row["value"][0]
    assert value is not None
    return float(value)


def _supply(
    contracts: list[tuple[str, float, str]] | None = None,
    certificates: list[tuple[str, str, float, str]] | None = None,
) -> GreenSupply:
    return GreenSupply(
        pl.DataFrame(contracts or [], schema=CONTRACT_HOURS_SCHEMA, orient="row"),
        pl.DataFrame(certificates or [], schema=CERTIFICATE_SCHEMA, orient="row"),
    )


def test_pv_surplus_at_noon_deficit_at_night() -> None:
    """PV 150 kWh in local hours 10-14, 50 kWh in 8, 9, 15, 16, nothing otherwise.

    Matched per hour = min(100, PV): 5 x 100 + 4 x 50 = 700 kWh of 2,400 kWh, a share of
    700 / 2400 = 0.291666...; 19 hours are not fully matched; the 5 surplus hours (PV >=
    load) export 50 kWh each, which does not carry to the evening. CUE by the hour:
    (2400 - 700) x 0.5 kg / 2400 kWh IT = 0.354166... kg/kWh.
    """
    pv = dict.fromkeys(range(10, 15), 150.0) | {8: 50.0, 9: 50.0, 15: 50.0, 16: 50.0}
    site = green_site()
    hours = match_hours(rows_for(day_rows(DAY, pv)), site, GreenSupply.empty()).collect()
    assert hours.height == 24
    matched = _by_local_hour(hours, "matched_kwh")
    assert matched[12] == 100.0 and matched[9] == 50.0 and matched[22] == 0.0
    assert _by_local_hour(hours, "surplus_kwh")[12] == 50.0
    kpis = hourly_kpis(hours, site, month="2026-06", kinds=[PeriodKind.DAY])
    assert _kpi(kpis, "hourly_matched_kwh") == pytest.approx(700.0)
    assert _kpi(kpis, "hourly_matched_green_share") == pytest.approx(700 / 2400)
    assert _kpi(kpis, "hourly_unmatched_hours") == 19
    assert _kpi(kpis, "hourly_green_surplus_hours") == 5
    assert _kpi(kpis, "cue_hourly") == pytest.approx(1700 * 0.5 / 2400)
    # The IT meter is flexible: 500 of its 2,400 kWh ran in the five surplus hours.
    assert _kpi(kpis, "flexible_green_surplus_share") == pytest.approx(500 / 2400)


def test_battery_charged_at_noon_discharged_at_night_first_in_first_out() -> None:
    """PV 150 kWh at 12:00; the battery charges 30 kWh from the grid at 03:00 (grey) and 50
    kWh at 12:00 (the noon surplus, green), then discharges 45 kWh at 20:00 and 35 at 21:00.

    First in, first out: 20:00 takes the 30 grey kWh, then 15 green; 21:00 takes the
    remaining 35 green. Matched: 12:00 100 (PV less the 50 charged), 20:00 15, 21:00 35:
    150 kWh of 2,400 (consumption = E_DC - charge + discharge = 100 every hour).
    """
    rows = day_rows(
        DAY, {12: 150.0}, charge_kwh={3: 30.0, 12: 50.0}, discharge_kwh={20: 45.0, 21: 35.0}
    )
    site = green_site()
    hours = match_hours(rows_for(rows), site, GreenSupply.empty()).collect()
    assert set(_by_local_hour(hours, "consumption_kwh").values()) == {100.0}
    assert _by_local_hour(hours, "green_in_kwh")[12] == 50.0
    assert _by_local_hour(hours, "green_in_kwh")[3] == 0.0
    storage = _by_local_hour(hours, "storage_green_kwh")
    assert storage[20] == pytest.approx(15.0) and storage[21] == pytest.approx(35.0)
    matched = _by_local_hour(hours, "matched_kwh")
    assert matched[12] == 100.0 and matched[20] == pytest.approx(15.0)
    kpis = hourly_kpis(hours, site, month="2026-06", kinds=[PeriodKind.DAY])
    assert _kpi(kpis, "hourly_matched_kwh") == pytest.approx(150.0)
    assert _kpi(kpis, "hourly_storage_green_kwh") == pytest.approx(50.0)


def test_certificates_apply_only_inside_their_production_period() -> None:
    """No PV. Certificates (1 GEC = 1,000 kWh): one produced 2026-06-14 (a day before the
    data: never applied), one produced in local hour 2026-06-15T10 (covers that hour only:
    100 kWh used, 900 unused), one produced on 2026-06-15 (day: the remaining deficit in
    time order, hours 00-09 = 1,000 kWh).

    Matched = 100 + 1,000 = 1,100 of 2,400 kWh; hours 11-23 stay unmatched (13 hours).
    """
    supply = _supply(
        certificates=[
            ("2026-06-14", "day", 1000.0, "GEC-A"),
            ("2026-06-15T10", "hour", 1000.0, "GEC-B"),
            ("2026-06-15", "day", 1000.0, "GEC-C"),
        ]
    )
    site = green_site()
    hours = match_hours(rows_for(day_rows(DAY, {})), site, supply).collect()
    cert = _by_local_hour(hours, "certificate_kwh")
    assert cert[10] == 100.0
    assert [cert[h] for h in range(10)] == [100.0] * 10
    assert sum(cert[h] for h in range(11, 24)) == 0.0
    kpis = hourly_kpis(hours, site, month="2026-06", kinds=[PeriodKind.DAY])
    assert _kpi(kpis, "hourly_certificate_kwh") == pytest.approx(1100.0)
    assert _kpi(kpis, "hourly_unmatched_hours") == 13


def test_contract_over_delivery_is_not_carried_to_the_next_hour() -> None:
    """A contract delivers 300 kWh in local hour 10 and nothing in 11.

    Hour 10: matched min(100, 300) = 100, surplus 200; hour 11: matched 0 (no carry).
    """
    supply = _supply(contracts=[("2026-06-15T10", 300.0, "PPA-1")])
    hours = match_hours(rows_for(day_rows(DAY, {})), green_site(), supply).collect()
    matched = _by_local_hour(hours, "matched_kwh")
    assert matched[10] == 100.0 and matched[11] == 0.0
    assert _by_local_hour(hours, "surplus_kwh")[10] == 200.0
    assert _by_local_hour(hours, "contract_kwh")[11] == 0.0


def test_month_with_annual_ref_100_but_hourly_matched_61_percent() -> None:
    """June 2026, every day alike: PV 64 kWh at 06:00, 100 at 07:00 and 20:00, 178 in each
    of 08:00-19:00: 64 + 200 + 12 x 178 = 2,400 kWh a day, exactly the consumption.

    REF = metered renewable / E_DC = 72,000 / 72,000 = 100 %. Hourly matched a day =
    64 + 14 x 100 = 1,464 kWh: 1,464 / 2,400 = 61 %; the 12 x 78 kWh noon surplus is
    exported and matches nothing at night.
    """
    pv = {6: 64.0, 7: 100.0, 20: 100.0} | dict.fromkeys(range(8, 20), 178.0)
    rows = [r for d in range(1, 31) for r in day_rows(f"2026-06-{d:02d}", pv)]
    site = green_site()
    frame = rows_for(rows)
    annual = compute_kpis(frame, site, None, month="2026-06", kinds=[PeriodKind.MONTH])
    assert _kpi(annual, "ref", "month") == pytest.approx(1.0)
    hours = match_hours(frame, site, GreenSupply.empty()).collect()
    kpis = hourly_kpis(hours, site, month="2026-06", kinds=[PeriodKind.MONTH, PeriodKind.DAY])
    assert _kpi(kpis, "hourly_matched_green_share", "month") == pytest.approx(0.61)
    assert kpis.filter(pl.col("period_kind") == "day")["period"].n_unique() == 30
    # No grid table stated: only the matched energy is traced to a named source.
    assert _kpi(kpis, "hourly_traceability_rate", "month") == pytest.approx(0.61)


def test_grid_table_makes_the_grid_a_named_source() -> None:
    """With Qinghai's (test) monthly table, June share 0.8: the unmatched 2,400 kWh of a day
    without PV are traced to the grid (rate 1.0) and 0.8 x 2,400 = 1,920 kWh is grid renewable.
    """
    table = {
        "province": "Qinghai",
        "source": "test table",
        "year": 2025,
        "by_month": [0.8] * 12,
    }
    site = green_site(grid_renewable_share=table)
    hours = match_hours(rows_for(day_rows(DAY, {})), site, GreenSupply.empty()).collect()
    kpis = hourly_kpis(hours, site, month="2026-06", kinds=[PeriodKind.DAY])
    assert _kpi(kpis, "hourly_traceability_rate") == pytest.approx(1.0)
    assert _kpi(kpis, "hourly_grid_renewable_kwh") == pytest.approx(1920.0)
    assert _kpi(kpis, "hourly_matched_green_share") == 0.0


def test_missing_hours_lower_coverage_and_the_value_is_withheld() -> None:
    """Half the day has no rows: coverage 12/24 = 0.5 < 0.95, so the share is null."""
    rows = day_rows(DAY, {})[:12]
    site = green_site()
    hours = match_hours(rows_for(rows), site, GreenSupply.empty()).collect()
    kpis = hourly_kpis(hours, site, month="2026-06", kinds=[PeriodKind.DAY])
    row = kpis.filter(pl.col("metric") == "hourly_matched_green_share")
    assert row["coverage"][0] == pytest.approx(0.5)
    assert row["value"][0] is None and row["status"][0] == "insufficient_data"


def test_bad_production_periods_and_profiles_are_refused() -> None:
    assert production_granularity("2026-06-15T10") == "hour"
    for bad in ("2026-6", "2026-06-31", "2026-06-15T24", "june"):
        with pytest.raises(GreenLedgerError, match="production"):
            production_granularity(bad)
    with pytest.raises(GreenLedgerError, match="24 values"):
        declared_profile("2026-06", [1.0] * 23)
    # 30 June days x (10 kW in hour 12) = 300 kWh.
    profile = declared_profile("2026-06", [0.0] * 12 + [10.0] + [0.0] * 11)
    assert len(profile) == 30 and sum(profile.values()) == 300.0
    assert hour_utc(DAY, 8).hour == 0


def test_flexible_racks_count_like_flexible_meters() -> None:
    """The IT meter is not flagged itself but feeds rack r1, declared flexible: the same
    500 / 2,400 as in the PV example (its energy in the five surplus hours)."""
    table = site_table(flexible_racks=["r1"])
    table["meters"][3] = {**table["meters"][3], "flexible": False, "rack": "r1"}
    site = parse_site(table, source="test")
    pv = dict.fromkeys(range(10, 15), 150.0)
    hours = match_hours(rows_for(day_rows(DAY, pv)), site, GreenSupply.empty()).collect()
    kpis = hourly_kpis(hours, site, month="2026-06", kinds=[PeriodKind.DAY])
    assert _kpi(kpis, "flexible_green_surplus_share") == pytest.approx(500 / 2400)


def test_zone_with_half_hour_offset_matches_local_hours() -> None:
    """Asia/Kolkata (UTC+5:30): local hours start at UTC :30. A contract delivering 100 kWh
    in local hour 2026-06-15T10 (UTC 04:30-05:30) matches exactly that hour's 100 kWh,
    whose rows come as two half-hour intervals of 50 kWh each."""
    table = site_table()
    table["timezone"] = "Asia/Kolkata"
    site = parse_site(table, source="test")
    start = datetime(2026, 6, 15, 4, 30, tzinfo=UTC)
    halves = [(start + timedelta(minutes=30 * k), {"grid": 50.0, "it": 50.0}) for k in range(4)]
    frame = rows_for(halves).with_columns(
        (pl.col("interval_start") + timedelta(minutes=30)).alias("interval_end")
    )
    supply = _supply(contracts=[("2026-06-15T10", 100.0, "PPA-IN")])
    hours = match_hours(frame, site, supply).collect()
    assert hours["hour_start"].to_list() == [start, start + timedelta(hours=1)]
    assert hours["consumption_kwh"].to_list() == [100.0, 100.0]
    assert hours["matched_kwh"].to_list() == [100.0, 0.0]

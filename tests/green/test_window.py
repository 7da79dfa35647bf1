"""The green-window forecast: same hour over the last 7 days x today's observed ratio."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from agent.kpi.green_window import (
    HORIZON_H,
    GreenWindowUnavailableError,
    forecast_window,
    green_window_for,
)
from agent.kpi.hourly import CONTRACT_HOURS_SCHEMA, GreenSupply, match_hours
from agent.settings import AgentSettings
from agent.site import SiteError
from tests.green.sites import day_rows, green_site, hour_utc, rows_for


def test_forecast_scales_the_7_day_profile_by_todays_ratio() -> None:
    """History 2026-06-08..14: PV 50 kWh at local 09:00 and 100 at 12:00, load 100 kWh/h.

    Today (06-15) at 10:30 local, 09:00 produced 60 kWh against a usual 50: ratio 1.2.
    Today 12:00 (2 hours ahead): on-site 120 kW, load 100, surplus 20 kW, share 1.
    Tomorrow 09:00 (23 ahead): 50 x 1.2 = 60 kW, share 0.6, no surplus. A contract
    delivering 50 kWh at tomorrow 02:00 (16 ahead) gives that hour a share of 0.5.
    """
    site = green_site()
    usual = {9: 50.0, 12: 100.0}
    rows = [r for d in range(8, 15) for r in day_rows(f"2026-06-{d:02d}", usual)]
    rows += day_rows("2026-06-15", {9: 60.0})[:10]  # local 00:00-09:59 so far
    hours = match_hours(rows_for(rows), site, GreenSupply.empty()).collect()
    contracts = pl.DataFrame(
        [("2026-06-16T02", 50.0, "PPA-1")], schema=CONTRACT_HOURS_SCHEMA, orient="row"
    )
    now = hour_utc("2026-06-15", 10) + timedelta(minutes=30)
    window = forecast_window(hours, contracts, site, now)
    assert window.ratio == pytest.approx(1.2)
    table = window.hours
    assert table.height == HORIZON_H + 1
    assert table["hour_start"][0] == hour_utc("2026-06-15", 10)
    noon = table.row(2, named=True)
    assert noon["expected_onsite_kw"] == pytest.approx(120.0)
    assert noon["expected_surplus_kw"] == pytest.approx(20.0)
    assert noon["green_share"] == 1.0
    nine = table.row(23, named=True)
    assert nine["expected_onsite_kw"] == pytest.approx(60.0) and nine["green_share"] == 0.6
    two = table.row(16, named=True)
    assert two["contract_kw"] == 50.0 and two["green_share"] == 0.5
    body = window.to_json()
    assert body["hours"][0]["hour_start"] == "2026-06-15T02:00:00Z"
    assert "7 days" in body["method"]


def test_unreadable_ledger_is_a_clear_error(tmp_path: Path) -> None:
    settings = AgentSettings(state_dir=tmp_path / "state")
    ledger = settings.green_ledger_path()
    ledger.parent.mkdir(parents=True)
    ledger.write_text("{not json", "utf-8")
    with pytest.raises(GreenWindowUnavailableError, match=r"ledger\.json"):
        green_window_for(settings, green_site())
    assert ledger.read_text("utf-8") == "{not json"  # nothing rewritten


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"by_month": [0.5] * 11}, "by_month"),
        ({"by_hour": [1.5] * 24}, "fractions between 0 and 1"),
        ({"by_month": [0.5] * 12, "by_hour": [0.5] * 24}, "one of by_month"),
        ({}, "one of by_month"),
    ],
)
def test_grid_share_table_is_validated(table: dict[str, object], message: str) -> None:
    full = {"province": "Qinghai", "source": "test table", "year": 2025, **table}
    with pytest.raises(SiteError, match=message):
        green_site(grid_renewable_share=full)

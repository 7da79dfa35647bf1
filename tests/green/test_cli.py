"""`pue-agent green add` with production periods and delivery profiles, then `kpi --json`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from agent.cli import app
from agent.green import GreenLedger
from agent.store import IntervalStore
from tests.faults.agentproc import toml_text
from tests.green.sites import day_rows, rows_for, site_table

runner = CliRunner()

#: The 61 % month of test_hourly: REF 100 %, hourly matched 1,464 of 2,400 kWh a day.
PV = {6: 64.0, 7: 100.0, 20: 100.0} | dict.fromkeys(range(8, 20), 178.0)


def _green(config: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["green", "add", "--config", str(config), *args])
    return res.exit_code, res.output


def test_contract_profile_and_certificate_flow_into_kpi_json(tmp_path: Path) -> None:
    """June 2026, 30 days x 2,400 kWh = 72,000 kWh; PV matches 30 x 1,464 = 43,920 kWh.

    A contract's settlement CSV delivers 100 kWh in local hour 2026-06-15T22 (a night hour
    PV leaves unmatched): matched 44,020 kWh, share 44,020 / 72,000 = 0.611388...
    A certificate produced in May (2026-05) and claimed for June matches no June hour, but
    REF (annual, documentary) still reads 100 %.
    """
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\nsite_file = "site.toml"\n', encoding="utf-8")
    (tmp_path / "site.toml").write_text(toml_text(site_table()), encoding="utf-8")
    csv_ok = tmp_path / "ppa.csv"
    csv_ok.write_text("hour,energy_kwh\n2026-06-15 22:00,60\n2026-06-15T22,40\n", "utf-8")
    code, output = _green(
        config, "--period", "2026-06", "--kind", "contract", "--ref", "PPA-7",
        "--profile-csv", str(csv_ok),
    )  # fmt: skip
    assert code == 0, output
    assert "0.1 MWh" in output
    # Bad input: a row outside the month, a wrong production label: clear errors, nothing added.
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("hour,energy_kwh\n2026-06-30T23,1\n2026-07-01T00,5\n", "utf-8")
    code, output = _green(
        config, "--period", "2026-06", "--kind", "contract", "--ref", "PPA-8",
        "--profile-csv", str(csv_bad),
    )  # fmt: skip
    assert code == 2 and "bad.csv:3" in output and "2026-07-01T00" in output
    code, output = _green(
        config, "--period", "2026-06", "--kind", "certificate", "--mwh", "1",
        "--ref", "GEC-X", "--production", "2026-06-31",
    )  # fmt: skip
    assert code == 2 and "--production" in output
    code, output = _green(
        config, "--period", "2026-06", "--kind", "certificate", "--mwh", "2",
        "--ref", "GEC-MAY", "--production", "2026-05",
    )  # fmt: skip
    assert code == 0, output
    ledger = GreenLedger(state / "green" / "ledger.json")
    assert [e.ref for e in ledger.entries()] == ["PPA-7", "GEC-MAY"]
    assert ledger.entries()[0].profile_kwh == {"2026-06-15T22": 100.0}

    rows = [r for d in range(1, 31) for r in day_rows(f"2026-06-{d:02d}", PV)]
    IntervalStore(state / "store").write_intervals(rows_for(rows).collect(), tag="june")
    res = runner.invoke(app, ["kpi", "--config", str(config), "--period", "2026-06", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    month = data["hourly_matching"]["month"]
    assert month["ref"] == 1.0
    assert abs(month["hourly_matched_green_share"] - 44_020 / 72_000) < 1e-9
    assert month["hourly_contract_kwh"] == 100.0
    assert month["hourly_certificate_kwh"] == 0.0
    assert month["hourly_unmatched_hours"] == 30 * 10 - 1  # 00-06 and 21-23
    row = next(
        r
        for r in data["kpis"]
        if r["metric"] == "hourly_matched_green_share" and r["period_kind"] == "month"
    )
    assert row["status"] == "ok" and row["period"] == "2026-06"
    assert data["choices"]["hourly_matching"]["engine"] == "agent.kpi.hourly.match_hours"
    # Stored like every KPI: the API, /metrics and the sinks read these rows.
    stored = IntervalStore(state / "store").read_kpis(month="2026-06", period_kind="day")
    assert stored.filter(pl.col("metric") == "hourly_matched_green_share").height == 30
    # The green window from the CLI: 25 hours (the store holds no recent days: no load
    # expected, so no share either).
    res = runner.invoke(app, ["green", "window", "--config", str(config), "--json"])
    assert res.exit_code == 0, res.output
    window = json.loads(res.output)
    assert len(window["hours"]) == 25 and window["hours"][0]["hours_ahead"] == 0
    listed = runner.invoke(app, ["green", "list", "--config", str(config)])
    flat = " ".join(listed.output.split())  # the console wraps long lines
    assert "hourly profile 1 h (csv:ppa.csv)" in flat and "produced 2026-05" in flat

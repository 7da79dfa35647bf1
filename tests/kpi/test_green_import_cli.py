"""Green ledger, history import and the CLI commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.energy import interval_energy
from agent.green import GreenLedger, GreenLedgerError
from agent.importer import ImportFileError, import_file, load_import_file
from agent.journal import Journal
from agent.readings import Quality
from agent.site import parse_site
from agent.store import IntervalStore
from collectors.sim.simulator import SiteSimulator, site_table
from tests.faults.agentproc import toml_text

runner = CliRunner()


def test_green_ledger_add_list_remove_keeps_who_and_when(tmp_path: Path) -> None:
    ledger = GreenLedger(tmp_path / "green" / "ledger.json")
    now = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    entry = ledger.add("2026-10", "certificate", 1200, "GEC-2026-000123", who="alice", now=now)
    assert entry.added_by == "alice" and entry.added_at == "2026-11-03T09:00:00+00:00"
    # 1 GEC = 1 MWh -> 1,200,000 kWh in the frame the KPI engine reads.
    frame = GreenLedger(tmp_path / "green" / "ledger.json").frame()
    assert frame.to_dicts() == [
        {
            "month": "2026-10",
            "kind": "certificate",
            "energy_kwh": 1_200_000.0,
            "reference": "GEC-2026-000123",
        }
    ]
    with pytest.raises(GreenLedgerError, match="already recorded"):
        ledger.add("2026-11", "certificate", 5, "GEC-2026-000123")
    removed = ledger.remove(entry.id, who="bob", now=now + timedelta(days=1))
    assert removed.removed_by == "bob"
    assert ledger.frame().height == 0
    assert len(ledger.entries(include_removed=True)) == 1  # history stays


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("2026-13", "certificate", 1, "X"), "YYYY-MM"),
        (("2026-10", "voucher", 1, "X"), "kind"),
        (("2026-10", "certificate", -1, "X"), "positive"),
        (("2026-10", "certificate", 1.5, "X"), "whole MWh"),
        (("2026-10", "contract", 1.5, " "), "reference"),
    ],
)
def test_green_ledger_rejects_bad_entries(
    tmp_path: Path, args: tuple[str, str, float, str], message: str
) -> None:
    ledger = GreenLedger(tmp_path / "ledger.json")
    with pytest.raises(GreenLedgerError, match=message):
        ledger.add(*args)
    assert not (tmp_path / "ledger.json").exists()


CSV_OK = """ts,device,point,quantity,value
2026-03-01T00:00:00+08:00,grid,e,energy_kwh,1000.0
2026-03-01T00:15:00+08:00,grid,e,energy_kwh,1010.5
2026-03-01T00:30:00Z,grid,e,energy_kwh,1021
"""


def test_import_csv_into_journal_as_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "hist.csv"
    path.write_text(CSV_OK, encoding="utf-8")
    journal = Journal(tmp_path / "journal.sqlite")
    result = import_file(path, journal, record_dir=tmp_path / "imports")
    (batch,) = journal.read(0)
    assert batch.source.startswith("import:sha256=") and batch.source == result.source
    assert batch.frame.height == 3
    assert (batch.frame["quality"] == int(Quality.IMPORTED)).all()
    # 00:00 +08:00 is 16:00Z the day before.
    assert batch.frame["ts"][0] == datetime(2026, 2, 28, 16, tzinfo=UTC)
    with pytest.raises(ImportFileError, match="already imported"):
        import_file(path, journal, record_dir=tmp_path / "imports")
    assert len(journal.read(0)) == 1


def test_import_bad_rows_reported_by_line_nothing_imported(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        CSV_OK
        + "2026-03-01T00:45:00,grid,e,energy_kwh,1030\n"  # line 5: no offset
        + "2026-03-01T01:00:00+08:00,grid,e,volts,1\n"  # line 6: unknown quantity
        + "2026-03-01T01:15:00+08:00,grid,e,energy_kwh,abc\n",  # line 7: not a number
        encoding="utf-8",
    )
    journal = Journal(tmp_path / "journal.sqlite")
    with pytest.raises(ImportFileError) as info:
        import_file(path, journal, record_dir=tmp_path / "imports")
    text = str(info.value)
    assert "line 5: ts is not ISO 8601 with a UTC offset" in text
    assert "line 6: quantity is unknown" in text
    assert "line 7: value is not a number" in text
    assert "nothing imported" in text
    assert journal.read(0) == []


def test_import_parquet_and_missing_columns(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "ts": [datetime(2026, 3, 1, tzinfo=UTC)],
            "device": ["grid"],
            "point": ["e"],
            "quantity": ["energy_kwh"],
            "value": [1.0],
        }
    )
    frame.write_parquet(tmp_path / "h.parquet")
    batch, digest = load_import_file(tmp_path / "h.parquet")
    assert batch["ts"][0] == datetime(2026, 3, 1, tzinfo=UTC) and len(digest) == 64
    frame.drop("point").write_parquet(tmp_path / "m.parquet")
    with pytest.raises(ImportFileError, match="missing column"):
        load_import_file(tmp_path / "m.parquet")


def test_cli_green_import_and_kpi(tmp_path: Path) -> None:

    state = tmp_path / "state"
    site_path = tmp_path / "site.json"
    sim = SiteSimulator(pdus=4)
    table = site_table(sim)
    site_path.write_text(json.dumps(table), encoding="utf-8")
    # Settings with an inline site: TOML written by hand from the JSON table.
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{state}"\nsite_file = "site.toml"\n', encoding="utf-8")
    (tmp_path / "site.toml").write_text(toml_text(table), encoding="utf-8")
    res = runner.invoke(
        app,
        [
            "green",
            "add",
            "--config",
            str(config),
            "--period",
            "2026-10",
            "--kind",
            "certificate",
            "--mwh",
            "3",
            "--ref",
            "GEC-9",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["green", "list", "--config", str(config), "--json"])
    assert json.loads(res.output)[0]["ref"] == "GEC-9"
    bad = runner.invoke(
        app,
        [
            "green",
            "add",
            "--config",
            str(config),
            "--period",
            "10/2026",
            "--kind",
            "certificate",
            "--mwh",
            "3",
            "--ref",
            "GEC-10",
        ],
    )
    assert bad.exit_code == 2
    # A day of simulated October into the store, then `pue-agent kpi`.
    site = parse_site(table, source="t")
    start = datetime(2026, 10, 10, tzinfo=UTC)
    readings = pl.concat([sim.tick(start + timedelta(minutes=i)) for i in range(120)])
    IntervalStore(state / "store").write_intervals(
        interval_energy(readings.lazy(), site).collect(), tag="t"
    )
    res = runner.invoke(app, ["kpi", "--config", str(config), "--period", "2026-10", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    month_pue = next(
        r for r in data["kpis"] if r["metric"] == "pue" and r["period_kind"] == "month"
    )
    assert month_pue["status"] == "insufficient_data"  # two hours of a month
    assert data["choices"]["coverage_threshold"] == 0.95
    stored = IntervalStore(state / "store").read_kpis(month="2026-10", period_kind="day")
    assert stored.filter(pl.col("metric") == "pue").height == 1

"""InfluxDB sink, 2.x API through influxdb-client, against a real VictoriaMetrics.

No InfluxDB 2.x server can be installed here; VictoriaMetrics implements the
documented ``/api/v2/write`` endpoint, so the 2.x path is checked against it and
read back with ``/api/v1/export``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from agent.journal import Journal
from agent.sinks import influxdb
from collectors.sim.simulator import SiteSimulator
from tests.servers.influxdb import start_influxdb
from tests.servers.victoriametrics import start_victoriametrics
from tests.sinks.helpers import drain, fill_journal, journal_frame, make_settings, sim_site


def _options(url: str) -> dict[str, object]:
    return {"api": "v2", "url": url, "org": "ops", "bucket": "pue", "token_secret": "influx_token"}


async def test_v2_write_through_influxdb_client_read_back_from_export(tmp_path: Path) -> None:
    vm = start_victoriametrics(tmp_path / "vm")
    try:
        sim = SiteSimulator(pdus=4)
        journal = Journal(tmp_path / "journal.sqlite")
        fill_journal(journal, sim, ticks=20)
        settings = make_settings(tmp_path, {"influx_token": "tok-abc-123"})
        sink = influxdb.build("cloud", _options(vm.url), settings)
        await drain(sink, journal, settings, sim_site(sim))
        assert sink.alarm is None
        assert journal.cursor("cloud") == journal.head[0]

        frame = journal_frame(journal)
        for quantity in ("power_w", "energy_kwh"):
            series = vm.export(f"pue_reading_{quantity}")
            expected = frame.filter(frame["quantity"] == quantity)
            assert len(series) == expected.select("device", "point").n_unique()
            got = {
                (s["metric"]["device"], s["metric"]["point"]): dict(
                    zip(s["timestamps"], s["values"], strict=True)
                )
                for s in series
            }
            for device, point, ts, value in expected.select(
                "device", "point", pl.col("ts").dt.epoch("ms"), "value"
            ).iter_rows():
                assert got[(device, point)][ts] == pytest.approx(value, rel=1e-12)
            labels = series[0]["metric"]
            assert labels["site"] == "demo" and labels["quantity"] == quantity
            assert "role" in labels
    finally:
        vm.stop()


async def test_v2_wrong_token_alarms_without_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vm = start_victoriametrics(tmp_path / "vm", basic_auth=("ops", "vm-pass"))
    try:
        journal = Journal(tmp_path / "journal.sqlite")
        fill_journal(journal, SiteSimulator(pdus=1), ticks=2)
        token = "tok-wrong-98765"
        settings = make_settings(tmp_path, {"influx_token": token})
        sink = influxdb.build("cloud", _options(vm.url), settings)
        await drain(sink, journal, settings, None)
        assert sink.alarm is not None
        assert "'cloud'" in sink.alarm and "credentials" in sink.alarm
        assert "'influx_token'" in sink.alarm
        assert journal.cursor("cloud") == 0
        out = capsys.readouterr()
        for text in (sink.alarm, out.out, out.err):
            assert token not in text
    finally:
        vm.stop()


async def test_v2_against_a_server_without_the_v2_api_alarms(tmp_path: Path) -> None:
    """InfluxDB 1.6 has no /api/v2/write: a clear 404 alarm, the data stays in the journal."""
    influx = start_influxdb(tmp_path / "influx")
    try:
        journal = Journal(tmp_path / "journal.sqlite")
        fill_journal(journal, SiteSimulator(pdus=1), ticks=2)
        settings = make_settings(tmp_path, {"influx_token": "t"})
        sink = influxdb.build("cloud", _options(influx.url), settings)
        await drain(sink, journal, settings, None)
        assert sink.alarm is not None and "HTTP 404" in sink.alarm and "'cloud'" in sink.alarm
        assert journal.cursor("cloud") == 0
    finally:
        influx.stop()

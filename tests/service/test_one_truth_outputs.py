"""One computation, one truth: every output gives the same KPIs for one site and month.

Thirteen months of 15-minute interval energy (grid 1.20 kWh, PV 0.10 kWh, IT 1.00 kWh,
cooling 0.25 kWh per interval) and a 1 MWh green certificate for the month. Then
``pue-agent kpi --json``, the HTTP API, the report's ``data/kpis.json``, InfluxDB's
``pue_kpi`` points (a real InfluxDB 1.6.7), the MQTT retained KPI topics (a real
mosquitto) and the Prometheus gauges must give the same PUE (with category), annual
(TTM) PUE, REF (metered, documentary, total), CUE, pPUE and coverage — to the last
printed digit (4 decimals, as ``kpi`` prints them) and far below (1e-12 relative).

Stated arithmetic, every interval alike: E_DC = 1.20 + 0.10 = 1.30 kWh, E_IT = 1.00 kWh,
so PUE = 1.30 for the month and the TTM; pPUE(cooling) = (0.25 + 1.00) / 1.00 = 1.25;
metered REF = 0.10 / 1.30; coverage 1.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from agent import keys
from agent.cli import app
from agent.report.run import run_report
from agent.settings import AgentSettings, load_settings
from agent.store import IntervalStore
from tests.kpi.helpers import constant_intervals
from tests.servers import free_port
from tests.servers.influxdb import start_influxdb
from tests.servers.mosquitto import start_mosquitto
from tests.service.conftest import ThreadedAgent, Tokens

MONTH = "2026-10"
SITE_ID = "dc-truth"
SITE = f"""
[site]
id = "{SITE_ID}"
name = "One truth DC"
timezone = "Asia/Shanghai"
pue_category = 2

[[site.meters]]
id = "grid-1"
device = "grid-1"
energy_point = "energy"
role = "grid_import"
metering_point = "incomer"

[[site.meters]]
id = "pv-1"
device = "pv-1"
energy_point = "energy"
role = "onsite_renewable"
metering_point = "generation"

[[site.meters]]
id = "pdu-1"
device = "pdu-1"
energy_point = "energy"
role = "it"
metering_point = "pdu_output"

[[site.meters]]
id = "chiller-1"
device = "chiller-1"
energy_point = "energy"
role = "cooling"

[site.e_dc]
terms = ["grid-1", "pv-1"]

[site.e_it]
terms = ["pdu-1"]

[site.facts]
racks = 100
province = "Shanxi"
project_type = "new"

[site.facts.emission_factor]
kg_co2_per_kwh = 0.5
source = "test factor"
year = 2023
"""
#: Energy per 15-minute interval, kWh.
ENERGY = {"grid-1": 1.20, "pv-1": 0.10, "pdu-1": 1.00, "chiller-1": 0.25}
#: The metrics compared across every output, by period kind.
COMPARED = {
    "month": ("pue", "ref", "ref_metered", "ref_documentary", "cue", "ppue_cooling"),
    "ttm": ("pue", "ref", "ref_metered", "cue"),
}


def _fill(settings: AgentSettings) -> None:
    start = datetime(2025, 10, 31, 16, tzinfo=UTC)  # 2025-11-01 00:00 +08:00: the TTM's start
    end = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 +08:00
    frame = constant_intervals(ENERGY, start, end)
    IntervalStore(settings.store_path()).write_intervals(frame, tag="000000000001")


async def _retained(host: str, port: int, topic: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client(host, port, identifier="truth-reader") as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.5):
                async for message in client.messages:
                    found[str(message.topic)] = json.loads(bytes(message.payload))
        except TimeoutError:
            pass
    return found


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else None


Figures = dict[tuple[str, str], tuple[float | None, float | None, int | None]]


def _figures(rows: list[dict[str, Any]], *, category_as: type = int) -> Figures:
    """(metric, period kind) -> (value, coverage, category) of the month's compared rows."""
    out: Figures = {}
    for row in rows:
        kind, metric = row["period_kind"], row["metric"]
        if row.get("period", MONTH) != MONTH or metric not in COMPARED.get(kind, ()):
            continue
        category = row.get("category")
        category = None if category in (None, "") else int(category_as(category))
        out[(metric, kind)] = (row.get("value"), row.get("coverage"), category)
    return out


async def test_every_output_gives_the_same_kpis(tmp_path: Path) -> None:
    influx = start_influxdb(tmp_path / "influx")
    broker = start_mosquitto(tmp_path / "broker")
    tokens = Tokens()
    try:
        influx.create_database("pue")
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "site.toml").write_text(SITE, encoding="utf-8")
        config = conf / "agent.toml"
        metrics_port = free_port()
        config.write_text(
            f'state_dir = "{tmp_path / "state"}"\n'
            'site_file = "site.toml"\n'
            f'secrets_dir = "{tokens.write(tmp_path / "secrets")}"\n'
            f'policies_dir = "{tmp_path / "no-operator-packs"}"\n'
            f"[api]\nenabled = true\nport = {free_port()}\nmetrics_port = {metrics_port}\n"
            '[[sinks]]\nkind = "aggregator"\nname = "store"\n'
            f'[[sinks]]\nkind = "influxdb"\nname = "influx"\napi = "v1"\nurl = "{influx.url}"\n'
            'database = "pue"\nderived_interval_s = 0.2\n'
            f'[[sinks]]\nkind = "mqtt"\nname = "bms"\nhost = "{broker.host}"\n'
            f"port = {broker.port}\nderived_interval_s = 0.2\n",
            encoding="utf-8",
        )
        settings = load_settings(config)
        _fill(settings)
        keys.init_key(settings)
        c = str(config)
        _invoke("green", "add", "--period", MONTH, "--kind", "certificate", "--mwh", "1",
                "--ref", "GEC-TRUTH-1", "--config", c)  # fmt: skip

        # 1. pue-agent kpi --json (computes the month and TTM and stores them).
        kpi = _figures(_invoke("kpi", "--period", MONTH, "--json", "--config", c)["kpis"])
        assert set(kpi) == {(m, k) for k, ms in COMPARED.items() for m in ms}, kpi
        # The stated arithmetic.
        assert kpi[("pue", "month")] == (pytest.approx(1.30, rel=1e-12), 1.0, 2)
        assert kpi[("pue", "ttm")] == (pytest.approx(1.30, rel=1e-12), 1.0, 2)
        assert kpi[("ppue_cooling", "month")][0] == pytest.approx(1.25, rel=1e-12)
        assert kpi[("ref_metered", "month")][0] == pytest.approx(0.10 / 1.30, rel=1e-12)

        # 2. The running agent: the API, Prometheus, and the sinks it feeds.
        threaded = ThreadedAgent(settings).start()
        try:
            threaded.wait_ready()
            ops = tokens.header("ops")
            deadline = time.monotonic() + 30
            while True:
                written = influx.rows(
                    f"SELECT * FROM pue_kpi WHERE period = '{MONTH}' GROUP BY *", db="pue"
                )
                if len(_figures(written, category_as=str)) == len(kpi):
                    break
                assert time.monotonic() < deadline, "InfluxDB did not get the KPIs"
                await asyncio.sleep(0.2)
            api_rows = httpx.get(
                f"{threaded.url}/api/v1/kpi", params={"period": MONTH}, headers=ops, timeout=10
            ).json()["kpis"]
            scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            retained = await _retained(broker.host, broker.port, f"pue-agent/{SITE_ID}/kpi/#")
        finally:
            threaded.stop()

        # 3. The signed report's kpis.json.
        bundle_dir = tmp_path / "reports"
        run_report(settings, MONTH, langs=("en",), out_dir=bundle_dir, csv=False)
        (zip_path,) = bundle_dir.glob("*.zip")
        with zipfile.ZipFile(io.BytesIO(zip_path.read_bytes())) as bundle:
            (member,) = [n for n in bundle.namelist() if n.endswith("data/kpis.json")]
            report_rows = json.loads(bundle.read(member))["kpis"]

        prometheus: list[dict[str, Any]] = []
        for family in text_string_to_metric_families(scrape):
            for sample in family.samples:
                if sample.name == "pue_agent_site_kpi":
                    prometheus.append({**sample.labels, "value": sample.value, "coverage": None})
        coverage = {
            (s.labels["metric"], s.labels["period_kind"]): s.value
            for f in text_string_to_metric_families(scrape)
            for s in f.samples
            if s.name == "pue_agent_site_kpi_coverage_ratio" and s.labels["period"] == MONTH
        }
        for row in prometheus:
            row["coverage"] = coverage.get((row["metric"], row["period_kind"]))
        mqtt_rows = [payload for topic, payload in retained.items() if topic.count("_") >= 1]

        outputs = {
            "api": _figures(api_rows),
            "report kpis.json": _figures(report_rows),
            "influxdb pue_kpi": _figures(written, category_as=str),
            "mqtt retained": _figures(mqtt_rows),
            "prometheus": _figures(prometheus, category_as=str),
        }
        for name, figures in outputs.items():
            assert figures.keys() == kpi.keys(), (name, set(kpi) ^ set(figures))
            for key, (value, cov, category) in kpi.items():
                got_value, got_cov, got_category = figures[key]
                assert got_category == category, (name, key)
                assert got_cov == pytest.approx(cov, rel=1e-12), (name, key)
                assert got_value is not None and value is not None, (name, key)
                assert f"{got_value:.4f}" == f"{value:.4f}", (name, key, got_value, value)
                assert got_value == pytest.approx(value, rel=1e-12), (name, key)
    finally:
        broker.stop()
        influx.stop()

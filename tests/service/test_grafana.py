"""The Grafana dashboard queries only measurements, tags and fields the InfluxDB sink writes."""

from __future__ import annotations

import asyncio
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agent.journal import GAP_SCHEMA, Journal
from agent.pipeline import build_agent
from agent.realtime import LatestPower
from agent.settings import AgentSettings
from agent.sinks.influx_schema import MEASUREMENTS, REALTIME_SCHEMA, SiteTags, serialise
from agent.site import parse_site
from agent.store import IntervalStore
from collectors.sim.simulator import SiteSimulator, site_table
from rules.engine import evaluate, load_packs
from tests.paths import ROOT
from tests.servers.influxdb import start_influxdb
from tests.service.test_api import _kpi_frame

DASHBOARD = ROOT / "deploy" / "grafana" / "pue-agent.json"
_LINE = re.compile(r'^((?:[^ \\]|\\.)+) ((?:[^ "\\]|\\.|"(?:[^"\\]|\\.)*")+) (\d+)$')
_FIELD = re.compile(r'(?:^|,)([A-Za-z_]+)=(?:"(?:[^"\\]|\\.)*"|[^,]*)')


def _written_keys() -> dict[str, set[str]]:
    """Tag and field keys per measurement, from lines the sink's serialiser really produces."""
    sim = SiteSimulator(pdus=2)
    site = parse_site(site_table(sim), source="test")
    tags = SiteTags.from_site(site)
    now = datetime(2026, 10, 5, 4, tzinfo=UTC)
    kpis = _kpi_frame()
    gaps = pl.DataFrame(
        [{"device": "pdu-1", "first_ts": now, "last_ts": now, "readings": 3, "reason": "budget"}],
        schema=GAP_SCHEMA,
    )
    findings = evaluate(load_packs(), kpis, site.facts, site="demo", period="2026-10")
    realtime = pl.DataFrame(
        [
            {
                "ts": now,
                "pue": 1.4,
                "e_dc_power_w": 1.4e5,
                "e_it_power_w": 1e5,
                "meters_reporting": 20,
                "meters_total": 20,
            }
        ],
        schema=REALTIME_SCHEMA,
    )
    frames = {
        "readings": sim.tick(now),
        "gaps": gaps,
        "realtime": realtime,
        "kpis": kpis,
        "findings": findings,
    }
    keys: dict[str, set[str]] = {}
    for kind, frame in frames.items():
        for line in serialise(kind, frame, tags).lines.to_list():  # type: ignore[arg-type]
            match = _LINE.match(line)
            assert match, line
            head, fields = match.group(1), match.group(2)
            measurement, *tag_pairs = re.split(r"(?<!\\),", head)
            found = keys.setdefault(measurement, set())
            found.update(pair.split("=", 1)[0] for pair in tag_pairs)
            found.update(_FIELD.findall(fields))
    return keys


def test_dashboard_matches_the_line_protocol_schema() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    written = _written_keys()
    assert set(written) <= set(MEASUREMENTS.values())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("PUE (real-time", "PUE history", "REF", "Power by role", "Device health"):
        assert any(wanted in title for title in titles), wanted
    queries = [t["query"] for p in dashboard["panels"] for t in p["targets"] if "query" in t] + [
        v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    assert len(queries) >= 8
    for query in queries:
        # A measurement may be qualified by the dashboard's retention-policy variable.
        measurements = set(re.findall(r'FROM (?:"\$[a-z_]+"\.)?"([a-z_]+)"', query))
        assert measurements, query
        for measurement in measurements:
            assert measurement in written, (measurement, query)
        # "p" is the dashboard's inner alias; benefit_cny is a finding field that is null
        # (so left out of the line) unless a rule with a benefit formula is met.
        allowed = set().union(*(written[m] for m in measurements)) | {"p", "benefit_cny"}
        identifiers = set(re.findall(r'"([A-Za-z_]+)"', query)) - measurements
        # Aliases after AS are the query's own names, not schema keys.
        identifiers -= set(re.findall(r'AS "([^"]+)"', query))
        assert identifiers <= allowed, (identifiers - allowed, query)
    panel_ids = [p["id"] for p in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


# -- every panel query against a real InfluxDB 1.6.7 fed by a running agent -----------------

GUIDE = ROOT / "deploy" / "influxdb.md"
PDUS = 4


def _guide_statements() -> list[str]:
    """The InfluxQL the guide tells an operator to run for 1.x."""
    return re.findall(r"""^\s+influx -execute (?:'([^']*)'|"([^"]*)")$""", GUIDE.read_text(), re.M)


def _guide_sink() -> dict[str, Any]:
    """The 1.x sink table of the guide."""
    (block,) = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.S)
    sink: dict[str, Any] = tomllib.loads(block)["sinks"][0]
    return sink


def _render(query: str, variables: dict[str, str]) -> str:
    """The query as Grafana sends it (its default time range, a 10-minute $__interval)."""
    for name in sorted(variables, key=len, reverse=True):
        query = query.replace(f"${name}", variables[name])
    return query


def test_guide_sample_configs_and_dashboard_agree() -> None:
    statements = " ".join(a or b for a, b in _guide_statements())
    sink = _guide_sink()
    assert f"CREATE DATABASE {sink['database']} " in statements
    assert f"NAME {sink['retention_policy']}" in statements
    assert f"CREATE RETENTION POLICY {sink['derived_retention_policy']} ON" in statements
    text = GUIDE.read_text()
    hall = tomllib.loads((ROOT / "deploy" / "hall-1000" / "agent.toml").read_text())
    (influx,) = [s for s in hall["sinks"] if s["kind"] == "influxdb"]
    for bucket in (influx["bucket"], influx["derived_bucket"]):
        assert f"influx bucket create --name {bucket} " in text, bucket
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert variables["raw_rp"]["query"] == sink["retention_policy"]
    assert variables["kpi_rp"]["query"] == sink["derived_retention_policy"]
    assert f"--rp {sink['retention_policy']} --default" in text
    assert f"--rp {sink['derived_retention_policy']} " in text


async def _run_agent(settings: AgentSettings) -> None:
    agent = build_agent(settings)
    running = asyncio.create_task(agent.run(install_signals=False))
    try:
        async with asyncio.timeout(90):
            while not agent.collector_tasks or not all(
                t.done() for t in agent.collector_tasks.values()
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a live KPI refresh and a derived send while running
    finally:
        agent.stop()
        await asyncio.wait_for(running, timeout=90)


async def test_every_panel_query_returns_its_series_from_influxdb(tmp_path: Path) -> None:
    server = start_influxdb(tmp_path / "influx")
    try:
        for a, b in _guide_statements():
            server.query(a or b, method="POST", epoch=None)
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        sink = _guide_sink() | {"url": server.url}
        for name in (sink["username_secret"], sink["password_secret"]):
            (secrets / name).write_text(f"{name}-value\n")  # auth is off on the test server
        end = datetime.now(UTC).replace(microsecond=0)
        end -= timedelta(seconds=end.second % 10)
        start = end - timedelta(hours=2)
        sim = SiteSimulator(pdus=PDUS)
        settings = AgentSettings(
            state_dir=tmp_path / "state",
            secrets_dir=secrets,
            site=site_table(sim),
            collectors=[
                {
                    "kind": "sim",
                    "name": "sim",
                    "pdus": PDUS,
                    "interval_s": 10,
                    "speed": 2400,
                    "ticks_per_batch": 6,
                    "start": start.isoformat(),
                    "end": end.isoformat(),
                }
            ],
            sinks=[
                sink,
                {
                    "kind": "aggregator",
                    "name": "store",
                    "kpi_coverage_threshold": 0.0,
                    "kpi_refresh_s": 1.0,
                },
            ],
        )
        # A batch the journal refused (as the pipeline records one over budget): the gaps panel.
        refused = sim.tick(start + timedelta(minutes=30)).filter(pl.col("device") == "pdu-001")
        journal = Journal(settings.journal_path)
        journal.record_gap(refused, source="sim", reason="budget")
        journal.close()
        await _run_agent(settings)

        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        variables = {v["name"]: v.get("query", "") for v in dashboard["templating"]["list"]}
        assert dashboard["time"] == {"from": "now-7d", "to": "now"}
        variables |= {
            "site": "demo",
            "timeFilter": "time >= now() - 7d and time <= now()",
            "__interval": "10m",
        }
        db = sink["database"]
        site_query = next(
            v["query"] for v in dashboard["templating"]["list"] if v["name"] == "site"
        )
        sites = server.rows(_render(site_query, variables), db=db)
        assert [r["value"] for r in sites] == ["demo"]

        def series(panel_id: int, ref: str) -> list[dict[str, Any]]:
            panel = next(p for p in dashboard["panels"] if p["id"] == panel_id)
            query = next(t["query"] for t in panel["targets"] if t["refId"] == ref)
            result = server.query(_render(query, variables), db=db)
            found = [s for r in result["results"] for s in r.get("series", [])]
            assert found, f"panel {panel_id} {panel['title']!r} query {ref} is empty"
            return found

        def last_values(found: list[dict[str, Any]], tag: str) -> dict[str, float]:
            out = {}
            for s in found:
                values = [row[1] for row in s["values"] if row[1] is not None]
                assert values, s
                out[s["tags"][tag]] = values[-1]
            return out

        store = IntervalStore(settings.store_path())
        kpis = store.read_kpis()
        site = parse_site(site_table(sim), source="test")

        # 1: real-time PUE, the agent's pue_realtime; the last equals the site formulas over
        # the journal's latest power readings (agent.realtime, as the API computes it).
        latest = LatestPower(site)
        for batch in Journal(settings.journal_path).iter_batches(kinds=("readings",)):
            latest.update(batch.frame)
        expected_rt = latest.snapshot().pue_realtime
        (rt,) = series(1, "A")
        values = [row[1] for row in rt["values"] if row[1] is not None]
        assert values[-1] == pytest.approx(expected_rt, rel=1e-12)

        # 8: this month's and the TTM PUE, with the category tag, as stored.
        def stored(kind: str, metric: str = "pue") -> pl.DataFrame:
            return kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric)).sort(
                "period_start"
            )

        for ref, kind in (("A", "month"), ("B", "ttm")):
            row = stored(kind).filter(pl.col("value").is_not_null()).row(-1, named=True)
            assert last_values(series(8, ref), "category") == {
                str(row["category"]): pytest.approx(row["value"], rel=1e-12)
            }
        # 2: daily PUE.
        day = stored("day").filter(pl.col("value").is_not_null()).row(-1, named=True)
        assert last_values(series(2, "A"), "category") == {
            str(day["category"]): pytest.approx(day["value"], rel=1e-12)
        }
        # 3: REF of the month, per metric, in percent.
        month_ref = kpis.filter(
            (pl.col("period_kind") == "month")
            & pl.col("metric").str.contains(r"^ref(_metered|_documentary)?$")
            & pl.col("value").is_not_null()
        ).sort("period_start")
        expected_ref = {
            m: pytest.approx(g["value"][-1] * 100, rel=1e-12)
            for (m,), g in month_ref.group_by("metric", maintain_order=True)
        }
        assert expected_ref and last_values(series(3, "A"), "metric") == expected_ref
        # 4: power by role: every role with power meters except monitor.
        roles = {m.role.value for m in site.meters if m.power_point} - {"monitor"}
        assert {s["tags"]["role"] for s in series(4, "A")} == roles
        # 5: a row per device the journal holds.
        devices = set(journal_devices(settings))
        assert {s["tags"]["device"] for s in series(5, "A")} == devices
        # 6: the refused batch.
        (gap,) = series(6, "A")
        assert gap["tags"]["device"] == "pdu-001" and gap["values"][0][1] == refused.height
        # 7: this month's findings, one row per rule.
        findings = store.read_findings()
        latest_period = findings["period"].max()
        rules = set(findings.filter(pl.col("period") == latest_period)["rule_id"].to_list())
        assert {s["tags"]["rule_id"] for s in series(7, "A")} == rules
    finally:
        server.stop()


def journal_devices(settings: AgentSettings) -> list[str]:
    journal = Journal(settings.journal_path)
    frames = [b.frame for b in journal.iter_batches(kinds=("readings",))]
    return pl.concat(frames)["device"].unique().to_list()

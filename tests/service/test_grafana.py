"""The Grafana dashboard queries only measurements, tags and fields the InfluxDB sink writes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import polars as pl

from agent.journal import GAP_SCHEMA
from agent.sinks.influx_schema import MEASUREMENTS, SiteTags, serialise
from agent.site import parse_site
from collectors.sim.simulator import SiteSimulator, site_table
from rules.engine import evaluate, load_packs
from tests.paths import ROOT
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
    frames = {"readings": sim.tick(now), "gaps": gaps, "kpis": kpis, "findings": findings}
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
        measurements = set(re.findall(r'FROM "([a-z_]+)"', query))
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

"""The HTTP API against a real agent: role matrix, metrics, KPIs, findings, report download."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import polars as pl
import pytest
import schemathesis
import structlog
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families

from agent.logs import configure_logging
from agent.schemas import KPI_SCHEMA
from agent.store import IntervalStore
from tests.service.conftest import SITE_PDUS, ThreadedAgent, Tokens, api_settings

MONTH = "2026-10"
REPORT_BYTES = os.urandom(256 * 1024) + b"PK\x05\x06"  # arbitrary bytes: served, not parsed


def _kpi_frame() -> pl.DataFrame:
    start, end = datetime(2026, 9, 30, 16, tzinfo=UTC), datetime(2026, 10, 31, 16, tzinfo=UTC)
    rows = [
        ("month", MONTH, "pue", 1.25, "", "ok", 0.99, 2),
        ("ttm", MONTH, "pue", 1.27, "", "ok", 0.98, 2),
        ("month", MONTH, "ref", 0.31, "", "ok", 0.99, None),
        ("month", MONTH, "cue", None, "kgCO2/kWh", "insufficient_data", 0.5, None),
        ("day", "2026-10-05", "pue", 1.24, "", "ok", 1.0, 2),
    ]
    return pl.DataFrame(
        [
            {
                "site": "demo",
                "period_kind": kind,
                "period": period,
                "period_start": start,
                "period_end": end,
                "metric": metric,
                "value": value,
                "unit": unit,
                "status": status,
                "coverage": coverage,
                "category": category,
            }
            for kind, period, metric, value, unit, status, coverage, category in rows
        ],
        schema=KPI_SCHEMA,
    )


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("logs") / "agent.log"
    handle: TextIO = path.open("w", encoding="utf-8")
    configure_logging("debug", "json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=handle))
    yield path
    handle.close()
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tokens: Tokens, log_file: Path
) -> Iterator[ThreadedAgent]:
    del log_file
    tmp = tmp_path_factory.mktemp("api")
    settings_ = api_settings(tmp, tokens)
    reports = settings_.state_dir / "reports"
    reports.mkdir(parents=True)
    (reports / f"demo-{MONTH}.zip").write_bytes(REPORT_BYTES)
    # KPIs as the aggregator leaves them: in the real local store under state_dir/store.
    IntervalStore(settings_.state_dir / "store").write_kpis(_kpi_frame())
    threaded = ThreadedAgent(settings_)
    # A sink that never reads: its lag must show on /metrics.
    threaded.agent.journal.register_cursor("idle-sink")
    threaded.start()
    try:
        threaded.wait_ready()
        yield threaded
    finally:
        threaded.stop()


_ENDPOINTS: dict[str, set[str] | None] = {
    "/healthz": None,
    "/readyz": None,
    "/openapi.json": None,
    "/metrics": {"ops"},
    "/api/v1/kpi/current": {"ops", "auditor"},
    f"/api/v1/kpi?period={MONTH}": {"ops", "auditor"},
    f"/api/v1/findings?period={MONTH}": {"ops"},
    f"/api/v1/reports/{MONTH}": {"ops", "auditor"},
    "/api/v1/fleet": {"ops", "auditor"},
}
#: What an allowed role gets where it is not 200: this agent has no NATS for the fleet
#: (tests/cluster/test_fleet.py reads a real one).
_ALLOWED_STATUS = {"/api/v1/fleet": 404}
_SEEN: list[str] = []


@pytest.mark.parametrize("role", ["none", "bogus", "ops", "auditor"])
@pytest.mark.parametrize("endpoint", list(_ENDPOINTS))
def test_role_matrix(server: ThreadedAgent, tokens: Tokens, endpoint: str, role: str) -> None:
    headers = tokens.header(role)
    if role == "bogus":
        headers = {"Authorization": "Bearer " + tokens.ops[:-1] + "x"}
    response = httpx.get(server.url + endpoint, headers=headers, timeout=10)
    _SEEN.append(response.text if "reports" not in endpoint else "")
    allowed = _ENDPOINTS[endpoint]
    if allowed is None or role in allowed:
        assert response.status_code == _ALLOWED_STATUS.get(endpoint, 200), response.text
    elif role in {"none", "bogus"}:
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json() == {"error": "a valid bearer token is required", "status": 401}
    else:
        assert response.status_code == 403, response.text
        assert response.json()["status"] == 403


def test_other_auth_schemes_are_refused(server: ThreadedAgent, tokens: Tokens) -> None:
    for header in (f"Basic {tokens.ops}", f"Token {tokens.ops}", "Bearer", f"Bearer{tokens.ops}"):
        response = httpx.get(server.url + "/metrics", headers={"Authorization": header}, timeout=10)
        assert response.status_code == 401, header


def test_metrics_parse_and_cover_the_agent(server: ThreadedAgent, tokens: Tokens) -> None:
    # One refused request, so the auth failure counter has a sample.
    httpx.get(server.url + "/metrics", timeout=10)
    deadline = time.monotonic() + 20
    while True:
        response = httpx.get(server.url + "/metrics", headers=tokens.header("ops"), timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        lag = {
            s.labels["consumer"]: s.value for s in families["pue_agent_journal_lag_batches"].samples
        }
        if lag.get("idle-sink", 0) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for name in (
        "pue_agent_polls",
        "pue_agent_poll_failures",
        "pue_agent_poll_seconds",
        "pue_agent_readings_rejected",
        "pue_agent_journal_payload_bytes",
        "pue_agent_journal_lag_batches",
        "pue_agent_api_auth_failures",
    ):
        assert name in families, name
    assert lag["idle-sink"] >= 2
    payload = families["pue_agent_journal_payload_bytes"].samples[0].value
    assert payload == server.agent.journal.payload_bytes or payload > 0
    readings = {s.name: s.value for s in families["pue_agent_journal_readings"].samples}
    assert readings["pue_agent_journal_readings_total"] > 0
    failures = {
        s.labels["reason"]: s.value
        for s in families["pue_agent_api_auth_failures"].samples
        if s.name.endswith("_total")
    }
    assert failures["unauthenticated"] >= 1


def test_realtime_kpi_comes_from_the_journal(server: ThreadedAgent, tokens: Tokens) -> None:
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = httpx.get(
            server.url + "/api/v1/kpi/current", headers=tokens.header("auditor"), timeout=10
        ).json()
        if body["meters_reporting"] == body["meters_total"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert body["label"] == "realtime"
    assert body["site"] == "demo"
    assert body["meters_total"] > SITE_PDUS  # PDUs plus grid, PV, UPS and cooling meters
    assert body["meters_reporting"] == body["meters_total"]
    # The simulated site is designed to run at a PUE of about 1.2-1.4.
    assert 1.1 < body["pue_realtime"] < 1.6
    assert body["pue_realtime"] == pytest.approx(body["e_dc_power_w"] / body["e_it_power_w"])
    assert body["power_by_role_w"]["it"] > 0
    assert datetime.fromisoformat(body["as_of"]).tzinfo is not None


def test_period_kpis_from_the_store(server: ThreadedAgent, tokens: Tokens) -> None:
    url = server.url + "/api/v1/kpi"
    body = httpx.get(url, params={"period": MONTH}, headers=tokens.header("auditor")).json()
    assert body["site"] == "demo"
    got = {(r["period_kind"], r["metric"]): r for r in body["kpis"]}
    assert set(got) == {("month", "pue"), ("ttm", "pue"), ("month", "ref"), ("month", "cue")}
    assert got[("ttm", "pue")]["value"] == 1.27
    assert got[("ttm", "pue")]["category"] == 2
    assert got[("month", "cue")]["value"] is None
    assert got[("month", "cue")]["status"] == "insufficient_data"
    assert got[("month", "pue")]["period_start"].startswith("2026-09-30T16:00:00")
    only_ttm = httpx.get(
        url, params={"period": MONTH, "kind": "ttm"}, headers=tokens.header("ops")
    ).json()
    assert [r["period_kind"] for r in only_ttm["kpis"]] == ["ttm"]
    day = httpx.get(url, params={"period": "2026-10-05"}, headers=tokens.header("ops")).json()
    assert [r["value"] for r in day["kpis"]] == [1.24]
    for bad in ({"period": "October"}, {"period": MONTH, "kind": "week"}, {}):
        response = httpx.get(url, params=bad, headers=tokens.header("ops"))
        assert response.status_code == 400, bad


def test_findings_from_the_rules_engine(server: ThreadedAgent, tokens: Tokens) -> None:
    url = server.url + "/api/v1/findings"
    body = httpx.get(url, params={"period": MONTH}, headers=tokens.header("ops")).json()
    assert body["site"] == "demo"
    assert body["period"] == MONTH
    assert body["findings"], "the built-in packs yield one finding per rule"
    results = {f["result"] for f in body["findings"]}
    assert results <= {"eligible", "not_eligible", "insufficient_data", "not_applicable"}
    # The demo site declares province Shanxi: its pack's TTM PUE rule sees 1.27.
    shanxi = [f for f in body["findings"] if f["policy_id"].startswith("shanxi")]
    assert any(f["measured_value"] == 1.27 for f in shanxi)
    response = httpx.get(url, params={"period": "2026-10-05"}, headers=tokens.header("ops"))
    assert response.status_code == 400


def test_report_download_is_byte_for_byte(server: ThreadedAgent, tokens: Tokens) -> None:
    on_disk = server.settings.state_dir / "reports" / f"demo-{MONTH}.zip"
    for role in ("ops", "auditor"):
        response = httpx.get(
            f"{server.url}/api/v1/reports/{MONTH}", headers=tokens.header(role), timeout=10
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/zip"
        assert f"demo-{MONTH}.zip" in response.headers["Content-Disposition"]
        assert response.content == on_disk.read_bytes()
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(REPORT_BYTES).digest()
    missing = httpx.get(f"{server.url}/api/v1/reports/2026-09", headers=tokens.header("ops"))
    assert missing.status_code == 404
    for bad in ("2026-13", "..%2Fjournal", "demo-2026-10.zip"):
        response = httpx.get(f"{server.url}/api/v1/reports/{bad}", headers=tokens.header("ops"))
        assert response.status_code in {400, 404}, bad
        assert response.content != REPORT_BYTES


def test_tokens_never_in_logs_or_responses(
    server: ThreadedAgent, tokens: Tokens, log_file: Path
) -> None:
    httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {tokens.ops}x"})
    httpx.get(server.url + "/metrics", headers=tokens.header("auditor"))
    log = log_file.read_text(encoding="utf-8")
    assert "API request without a valid token" in log
    assert "API request refused for role" in log
    for token in (tokens.ops, tokens.auditor):
        assert token not in log
        assert token[4:20] not in log
        assert all(token not in text for text in _SEEN)


def test_openapi_conformance(server: ThreadedAgent, tokens: Tokens) -> None:
    # schemathesis against the running server: every documented operation, with an ops
    # token, must answer with a documented status, content type and body. (The pytest
    # plugin's from_fixture does not run under pytest 9, so the strategies are driven here.)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    labels = []
    for result in schema.get_all_operations():
        assert not isinstance(result, schemathesis.core.result.Err), result
        operation = result.ok()
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=tokens.header("ops"))

        check()
    # schemathesis leaves out the description's own path; every other endpoint is tested.
    assert set(labels) >= {
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/v1/kpi/current",
        "GET /api/v1/kpi",
        "GET /api/v1/findings",
        "GET /api/v1/reports/{month}",
        "GET /api/v1/fleet",
    }

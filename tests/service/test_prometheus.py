"""``/metrics`` for Prometheus shops: the site's figures, build info, process metrics, promtool.

A real agent (sim collector over a finished ten-minute window, the API with a token-less
metrics listener) with KPIs stored as the aggregator leaves them; the gauges must equal
what ``GET /api/v1/kpi/current`` and the store say, and ``promtool check metrics`` must
find nothing to lint.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.journal import Journal
from agent.schemas import KPI_SCHEMA
from agent.settings import CollectorEntry, SinkEntry
from agent.site import parse_site
from agent.store import IntervalStore
from tests.servers import free_port
from tests.service.conftest import SITE_PDUS, ThreadedAgent, Tokens, api_settings, sim_site

START = datetime(2026, 10, 5, tzinfo=UTC)
TICKS = 60  # ten simulated minutes every 10 s
COLLECTOR = "sim-prom"


def _kpis() -> pl.DataFrame:
    day = datetime(2026, 10, 4, 16, tzinfo=UTC)  # 2026-10-05 in Asia/Shanghai
    month = datetime(2026, 9, 30, 16, tzinfo=UTC)
    ttm = datetime(2025, 10, 31, 16, tzinfo=UTC)
    rows = [
        # (kind, period, start, metric, value, unit, status, coverage, category)
        ("day", "2026-10-04", day - timedelta(days=1), "pue", 1.30, "", "ok", 1.0, 2),
        ("day", "2026-10-05", day, "pue", 1.24, "", "ok", 0.97, 2),
        ("month", "2026-10", month, "pue", 1.25, "", "ok", 0.99, 2),
        ("ttm", "2026-10", ttm, "pue", 1.27, "", "ok", 0.98, 2),
        ("month", "2026-10", month, "ref", 0.31, "", "ok", 0.99, None),
        ("month", "2026-10", month, "cue", None, "kgCO2/kWh", "insufficient_data", 0.5, None),
    ]
    return pl.DataFrame(
        [
            {
                "site": "demo",
                "period_kind": kind,
                "period": period,
                "period_start": start,
                "period_end": start + timedelta(days=1),
                "metric": metric,
                "value": value,
                "unit": unit,
                "status": status,
                "coverage": coverage,
                "category": category,
            }
            for kind, period, start, metric, value, unit, status, coverage, category in rows
        ],
        schema=KPI_SCHEMA,
    )


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedAgent]:
    tmp = tmp_path_factory.mktemp("prom")
    settings = api_settings(Path(tmp), Tokens(), metrics_port=free_port())
    settings.collectors = [
        CollectorEntry(
            kind="sim",
            name=COLLECTOR,
            pdus=SITE_PDUS,
            interval_s=10,
            speed=6000,
            start=START.isoformat(),
            end=(START + timedelta(seconds=10 * TICKS)).isoformat(),
        )
    ]
    # No aggregator: the store holds exactly the KPIs written here.
    settings.sinks = [SinkEntry(kind="aggregator", name="store", enabled=False)]
    IntervalStore(settings.store_path()).write_kpis(_kpis())
    threaded = ThreadedAgent(settings).start()
    try:
        threaded.wait_ready()
        deadline = time.monotonic() + 30
        while not all(t.done() for t in threaded.agent.collector_tasks.values()):
            assert time.monotonic() < deadline, "the simulated window did not finish"
            time.sleep(0.05)
        time.sleep(1.5)  # the real-time follower reads the last batches (it polls every 1 s)
        yield threaded
    finally:
        threaded.stop()


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_metrics_listener_needs_no_token_and_serves_only_metrics(agent: ThreadedAgent) -> None:
    port = agent.settings.api.metrics_port
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/kpi/current", timeout=10).status_code == 404
    assert httpx.get(f"{agent.url}/metrics", timeout=10).status_code == 401  # the API still asks


def test_site_figures_build_and_process_metrics(agent: ThreadedAgent) -> None:
    port = agent.settings.api.metrics_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = _samples(text)
    assert agent.settings.secrets_dir is not None
    token = (agent.settings.secrets_dir / "api_token_ops").read_text().strip()
    ops = {"Authorization": f"Bearer {token}"}
    current = httpx.get(f"{agent.url}/api/v1/kpi/current", headers=ops, timeout=10).json()

    assert samples["pue_agent_build_info"] == [({"version": __version__}, 1.0)]
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert samples[name][0][1] > 0, name

    # Real time: the same snapshot as the API, and by the site's formulas the last tick's
    # sum(sign × power) over E_DC terms / over E_IT terms.
    (rt,) = samples["pue_agent_site_pue_realtime"]
    assert rt == ({"site": "demo"}, current["pue_realtime"])
    site = parse_site(sim_site(), source="test")
    last = list(Journal(agent.settings.journal_path).iter_batches(kinds=("readings",)))[-1].frame
    last = last.filter((pl.col("quantity") == "power_w") & (pl.col("ts") == pl.col("ts").max()))
    power = {(d, p): v for d, p, v in last.select("device", "point", "value").iter_rows()}
    meter = {m.id: (m.device, m.power_point) for m in site.meters}

    def total(formula: str) -> float:
        return sum(sign * power[meter[m]] for sign, m in site.expand(formula))

    assert rt[1] == pytest.approx(total("e_dc") / total("e_it"), rel=1e-12)
    by_role = {labels["role"]: value for labels, value in samples["pue_agent_site_power_watts"]}
    assert by_role == current["power_by_role_w"] and "monitor" not in by_role

    # Stored KPIs: the latest day, month and TTM row of each metric, with category/coverage;
    # the older day and the insufficient CUE value are not exported.
    kpi = {
        (labels["metric"], labels["period_kind"], labels["period"], labels["category"]): value
        for labels, value in samples["pue_agent_site_kpi"]
    }
    assert kpi == {
        ("pue", "day", "2026-10-05", "2"): 1.24,
        ("pue", "month", "2026-10", "2"): 1.25,
        ("pue", "ttm", "2026-10", "2"): 1.27,
        ("ref", "month", "2026-10", ""): 0.31,
    }
    coverage = {
        (labels["metric"], labels["period_kind"]): value
        for labels, value in samples["pue_agent_site_kpi_coverage_ratio"]
    }
    assert coverage == {
        ("pue", "day"): 0.97,
        ("pue", "month"): 0.99,
        ("pue", "ttm"): 0.98,
        ("ref", "month"): 0.99,
        ("cue", "month"): 0.5,
    }

    # Every simulated device: 60 polls (10 simulated minutes every 10 s), and a fresh poll.
    devices = {d for d, _ in power}
    polls = {
        labels["device"]: value
        for labels, value in samples["pue_agent_polls_total"]
        if labels["collector"] == COLLECTOR
    }
    assert polls == dict.fromkeys(devices, float(TICKS))
    fresh = {
        labels["device"]: value
        for labels, value in samples["pue_agent_seconds_since_last_good_poll"]
        if labels["collector"] == COLLECTOR
    }
    assert fresh.keys() == devices and all(0 <= v < 60 for v in fresh.values())


def test_promtool_check_metrics_is_clean(agent: ThreadedAgent) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed: run scripts/setup.sh (Debian package prometheus)")
    port = agent.settings.api.metrics_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""

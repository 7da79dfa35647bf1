"""The green window where schedulers read it: the HTTP API, /metrics and a retained MQTT topic.

One real agent (API on a loopback port, no collectors) and one real mosquitto broker are
shared by the module. The store holds 7 whole days of history before today (local,
Asia/Shanghai) with PV 50 kWh and load 100 kWh in every hour, and today's hours so far
with PV 60 kWh. Today's ratio is 60 / 50 = 1.2 (1.0 in local hour 0, when no hour of today
has passed), so every hour of the window expects 50 x ratio kW on-site against 100 kW of
load: share 0.5 x ratio, no surplus.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.kpi.green_window import green_window_for
from agent.settings import AgentSettings, load_settings
from agent.sinks import mqtt
from agent.site import parse_site
from agent.store import IntervalStore
from tests.green.sites import day_rows, rows_for, site_table
from tests.paths import ROOT
from tests.servers import free_port
from tests.servers.mosquitto import Mosquitto, start_mosquitto
from tests.service.conftest import ThreadedAgent, Tokens


def _expected_share() -> float:
    local_hour = datetime.now(UTC).astimezone(parse_site(site_table(), source="t").zone).hour
    return 0.5 * (1.2 if local_hour > 0 else 1.0)


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, tokens: Tokens) -> AgentSettings:
    tmp = tmp_path_factory.mktemp("green-window")
    settings_ = load_settings(
        None,
        state_dir=tmp / "state",
        secrets_dir=tokens.write(tmp / "secrets"),
        site=site_table(),
        collectors=[],
        api={"enabled": True, "listen": "127.0.0.1", "port": free_port()},
    )
    site = parse_site(site_table(), source="t")
    today = datetime.now(UTC).astimezone(site.zone).date()
    flat = dict.fromkeys(range(24), 50.0)
    rows = [r for d in range(7, 0, -1) for r in day_rows(str(today - timedelta(days=d)), flat)]
    now = datetime.now(UTC)
    rows += [r for r in day_rows(str(today), dict.fromkeys(range(24), 60.0)) if r[0] < now]
    IntervalStore(settings_.store_path()).write_intervals(rows_for(rows).collect(), tag="h")
    return settings_


@pytest.fixture(scope="module")
def agent(settings: AgentSettings) -> Iterator[ThreadedAgent]:
    threaded = ThreadedAgent(settings).start()
    try:
        threaded.wait_ready()
        yield threaded
    finally:
        threaded.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    started = start_mosquitto(tmp_path_factory.mktemp("broker"))
    try:
        yield started
    finally:
        started.stop()


def test_api_green_window(agent: ThreadedAgent, tokens: Tokens) -> None:
    url = agent.url + "/api/v1/green-window"
    assert httpx.get(url, timeout=10).status_code == 401
    response = httpx.get(url, headers=tokens.header("auditor"), timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["site"] == "green-site" and len(body["hours"]) == 25
    assert "same local hour over the last 7 days" in body["method"]
    share = _expected_share()
    for hour in body["hours"]:
        assert hour["expected_load_kw"] == pytest.approx(100.0)
        assert hour["green_share"] == pytest.approx(share)
        assert hour["expected_surplus_kw"] == 0.0
    assert [h["hours_ahead"] for h in body["hours"]] == list(range(25))


def test_metrics_green_window_gauges(agent: ThreadedAgent, tokens: Tokens) -> None:
    response = httpx.get(agent.url + "/metrics", headers=tokens.header("ops"), timeout=10)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    shares = {
        s.labels["hours_ahead"]: s.value
        for s in families["pue_agent_green_window_share_ratio"].samples
    }
    assert len(shares) == 25 and shares["24"] == pytest.approx(_expected_share())
    surplus = families["pue_agent_green_window_surplus_watts"].samples
    assert {s.value for s in surplus} == {0.0}


async def _retained(broker: Mosquitto, topic: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port, identifier="reader") as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    assert message.retain
                    found[str(message.topic)] = bytes(message.payload)
        except TimeoutError:
            pass
    return found


async def test_mqtt_retained_green_window(settings: AgentSettings, broker: Mosquitto) -> None:
    sink = mqtt.build("bms", {"host": broker.host, "port": broker.port}, settings)
    sink.site = parse_site(site_table(), source="t")
    window = await asyncio.to_thread(green_window_for, settings, sink.site)
    assert await sink.publish_green_window(window)
    # The same hours again: nothing is republished.
    assert not await sink.publish_green_window(window)
    found = await _retained(broker, "pue-agent/green-site/#")
    body = json.loads(found["pue-agent/green-site/green-window"])
    assert len(body["hours"]) == 25
    assert body["hours"][0]["green_share"] == pytest.approx(_expected_share())


SCRIPT = ROOT / "deploy" / "green-window" / "slurm-green-window.sh"


@pytest.mark.parametrize(("min_share", "action"), [("0.9", "hold 101"), ("0.5", "release 102")])
def test_slurm_script_holds_or_releases_by_the_window(
    agent: ThreadedAgent, tokens: Tokens, tmp_path: Path, min_share: str, action: str
) -> None:
    """The current hour's share is 0.6 (0.5 at local midnight): closed below 0.9, open at 0.5.

    Slurm itself cannot run here: a stand-in ``squeue`` lists job 101 pending and job 102
    held; ``DRY_RUN=1`` makes the script print the ``scontrol`` commands it would run.
    """
    share = _expected_share()
    if share < float(min_share):
        action = "hold 101"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text("#!/bin/sh\nprintf '101 Priority\\n102 JobHeldUser\\n'\n", "utf-8")
    squeue.chmod(0o755)
    token = tmp_path / "token"
    token.write_text(tokens.auditor, "utf-8")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PUE_AGENT_URL": agent.url,
        "PUE_AGENT_TOKEN_FILE": str(token),
        "GREEN_MIN_SHARE": min_share,
        "DRY_RUN": "1",
    }
    done = subprocess.run(
        ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert f"scontrol {action}" in done.stdout
    assert tokens.auditor not in done.stdout + done.stderr

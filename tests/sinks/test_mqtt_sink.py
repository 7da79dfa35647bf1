"""MQTT sink against a real mosquitto: retained KPI and finding messages after the agent stops."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import polars as pl
import pytest

from agent.journal import Journal
from agent.pipeline import Agent
from agent.realtime import LatestPower
from agent.schemas import FINDING_SCHEMA, KPI_SCHEMA
from agent.sinks import mqtt
from collectors.sim import SimOptions
from collectors.sim.collector import SimCollector
from tests.servers.mosquitto import Mosquitto, start_mosquitto
from tests.sinks.helpers import make_settings, sim_site


async def _retained(broker: Mosquitto, topic: str, **client: object) -> dict[str, bytes]:
    """Every retained message under ``topic`` (a filter), read by a fresh subscriber."""
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(broker.host, broker.port, identifier="reader", **client) as c:  # type: ignore[arg-type]
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(1.5):
                async for message in c.messages:
                    assert message.retain
                    found[str(message.topic)] = bytes(message.payload)
        except TimeoutError:
            pass
    return found


def _kpis(today: str) -> pl.DataFrame:
    start = datetime.fromisoformat(today).replace(tzinfo=UTC) - timedelta(hours=8)
    rows = [
        ("day", today, start, "pue", 1.27, "ok"),
        ("day", "2000-01-01", start - timedelta(days=9000), "pue", 1.9, "ok"),
        ("month", today[:7], start - timedelta(days=3), "pue", 1.3, "ok"),
        ("month", today[:7], start - timedelta(days=3), "ref", 0.22, "ok"),
        ("ttm", today[:7], start - timedelta(days=3), "ref", 0.18, "ok"),
    ]
    return pl.DataFrame(
        [
            {
                "site": "demo",
                "period_kind": k,
                "period": p,
                "period_start": s,
                "period_end": s + timedelta(days=1),
                "metric": m,
                "value": v,
                "unit": "ratio",
                "status": st,
                "coverage": 1.0,
                "category": 2,
            }
            for k, p, s, m, v, st in rows
        ],
        schema=KPI_SCHEMA,
    )


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls+auth"])
async def test_retained_kpis_present_after_the_agent_stops(
    tmp_path: Path, secure: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    password = "mqtt-secret-pw-31337"
    broker = start_mosquitto(
        tmp_path / "broker", tls=secure, users={"agent": password} if secure else None
    )
    try:
        settings = make_settings(tmp_path, {"mqtt_pw": password})
        options: dict[str, object] = {
            "host": broker.host,
            "port": broker.port,
            "realtime_interval_s": 0.5,
        }
        reader: dict[str, object] = {}
        if secure:
            assert broker.ca_file is not None
            options |= {
                "tls": True,
                "ca_file": str(broker.ca_file),
                "username": "agent",
                "password_secret": "mqtt_pw",
            }
            import ssl  # noqa: PLC0415

            context = ssl.create_default_context(cafile=str(broker.ca_file))
            reader = {"username": "agent", "password": password, "tls_context": context}
        sink = mqtt.build("bms", options, settings)
        collector = SimCollector("sim", SimOptions(pdus=8, interval_s=10, speed=200))
        site = sim_site(collector.simulator)
        journal = Journal(settings.journal_path)
        agent = Agent(
            settings=settings, site=site, collectors=[collector], consumers=[sink], journal=journal
        )
        running = asyncio.create_task(agent.run(install_signals=False))
        await asyncio.sleep(1.5)
        today = datetime.now(site.zone).date().isoformat()
        assert await sink.publish_frames("kpis", _kpis(today)) == 6
        finding = dict.fromkeys(FINDING_SCHEMA.names()) | {
            "site": "demo",
            "period": today[:7],
            "policy_id": "shanxi-2024-35",
            "rule_id": "shanxi-2024-35-4",
            "document": "晋政办发〔2024〕35号",
            "result": "not_eligible",
            "metric": "pue",
            "measured_value": 1.3,
            "comparator": "<=",
            "threshold": 1.25,
            "advisory": False,
        }
        await sink.publish_frames("findings", pl.DataFrame([finding], schema=FINDING_SCHEMA))
        await asyncio.sleep(1.0)
        agent.stop()
        await asyncio.wait_for(running, timeout=60)

        journal = Journal(settings.journal_path)
        assert journal.cursor("bms") == journal.head[0]
        latest = LatestPower(site)
        for batch in journal.iter_batches(kinds=("readings",)):
            latest.update(batch.frame)
        expected = latest.snapshot()
        assert expected.pue_realtime is not None

        found = await _retained(broker, "pue-agent/demo/#", **reader)
        realtime = json.loads(found["pue-agent/demo/kpi/pue_realtime"])
        assert realtime["value"] == pytest.approx(expected.pue_realtime, rel=1e-12)
        assert realtime["label"] == "realtime"
        assert realtime["meters_reporting"] == expected.meters_reporting
        assert json.loads(found["pue-agent/demo/kpi/pue_today"])["value"] == 1.27
        assert json.loads(found["pue-agent/demo/kpi/pue_day"])["period"] == today
        assert json.loads(found["pue-agent/demo/kpi/ref"])["value"] == 0.18  # ttm preferred
        assert json.loads(found["pue-agent/demo/kpi/ref_month"])["value"] == 0.22
        rule = json.loads(found["pue-agent/demo/finding/shanxi-2024-35-4"])
        assert rule["document"] == "晋政办发〔2024〕35号" and rule["result"] == "not_eligible"
        out = capsys.readouterr()
        assert password not in out.out + out.err
        assert password not in repr(sink)
    finally:
        broker.stop()


async def test_broker_down_alarms_and_keeps_the_cursor(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "broker", users={"agent": "right"})
    try:
        settings = make_settings(tmp_path, {"mqtt_pw": "wrong-pw-777"})
        sink = mqtt.build(
            "bms",
            {
                "host": broker.host,
                "port": broker.port,
                "username": "agent",
                "password_secret": "mqtt_pw",
            },
            settings,
        )
        journal = Journal(settings.journal_path)
        collector = SimCollector("sim", SimOptions(pdus=2))
        journal.append(collector.simulator.tick(datetime.now(UTC)), source="sim")
        journal.register_cursor("bms")
        from agent.plugins import ConsumerContext  # noqa: PLC0415

        stopping = asyncio.Event()
        stopping.set()
        ctx = ConsumerContext(
            journal=journal,
            settings=settings,
            site=sim_site(collector.simulator),
            stopping=stopping,
        )
        await asyncio.wait_for(sink.run(ctx), timeout=30)
        assert sink.alarm is not None and "'bms'" in sink.alarm
        assert "wrong-pw-777" not in sink.alarm
        assert journal.cursor("bms") == 0
    finally:
        broker.stop()

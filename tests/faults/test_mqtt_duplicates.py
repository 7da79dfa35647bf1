"""Broker restarts under load: each message journalled once (issue 22).

Before: after broker restarts the journal held 23,102 duplicate messages. QoS 1 is
"at least once": the broker re-sends what it had not seen acknowledged when it went
down, and a publisher re-sends what the broker had not acknowledged to it; the broker
forwards those re-sent copies as new messages (no DUP flag). The collector recognises
copies of messages it journalled shortly before a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

from agent.journal import Journal
from agent.pipeline import Agent
from agent.sinks import influxdb
from tests.mqtt.helpers import (
    journal_frame,
    make_collector,
    publish,
    publisher,
    running_agent,
    wait_subscribed,
    wait_until,
)
from tests.servers.influxdb import start_influxdb
from tests.servers.mosquitto import Mosquitto, start_mosquitto

RESTARTS = 3
TOPICS = 4


def _mapping(folder: Path) -> Path:
    path = folder / "dup.toml"
    path.write_text(
        '[[rules]]\ntopic = "dup/+/p"\nsegments = "_/device"\n'
        'fields = [{ path = "p", point = "p", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    return path


def _publish_steadily(broker: Mosquitto, stop: threading.Event, sent: list[float]) -> None:
    """Publish unique QoS 1 messages (~1,000/s) until ``stop``; waits for every PUBACK."""
    client = publisher(broker, client_id="dup-publisher")
    infos = []
    i = 0
    try:
        while not stop.is_set():
            if client.is_connected():  # while the broker is down, wait like a device would
                for _ in range(50):
                    topic = f"dup/m{i % TOPICS}/p"
                    payload = json.dumps({"p": float(i)}).encode()
                    infos.append(client.publish(topic, payload, qos=1))
                    sent.append(float(i))
                    i += 1
            time.sleep(0.05)
        # paho re-sends, after reconnecting, what the broker had not acknowledged.
        deadline = time.monotonic() + 60
        while not all(info.is_published() for info in infos):
            assert time.monotonic() < deadline, "publisher never got every PUBACK"
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()


async def test_three_broker_restarts_under_load_journal_each_message_once(
    tmp_path: Path,
) -> None:
    broker = start_mosquitto(tmp_path / "broker")
    try:
        collector, settings = make_collector(
            tmp_path,
            broker,
            "dup",
            mappings=[str(_mapping(tmp_path))],
            subscriptions=[{"topic": "dup/#", "qos": 1}],
            client_id="pue-test-dup",
        )
        sent: list[float] = []
        stop = threading.Event()
        async with running_agent(settings, collector):
            await wait_subscribed(collector)
            thread = threading.Thread(target=_publish_steadily, args=(broker, stop, sent))
            thread.start()
            try:
                for restart in range(RESTARTS):
                    await wait_until(lambda: collector.stats["accepted"] > 0, what="traffic")
                    time_s = 0.7
                    await asyncio.sleep(time_s)
                    broker.restart()
                    await wait_subscribed(collector, sessions=restart + 2)
                await asyncio.sleep(0.7)
            finally:
                stop.set()
                await asyncio.to_thread(thread.join, 90)
            await wait_until(
                lambda: collector.stats["accepted"] >= len(sent), timeout_s=60, what="all sent"
            )
            await asyncio.sleep(1.0)  # late copies would arrive now
        values = journal_frame(settings)["value"].to_list()
        duplicates = len(values) - len(set(values))
        assert duplicates == 0, f"{duplicates} duplicates; stats {dict(collector.stats)}"
        assert sorted(values) == sorted(sent)  # and nothing lost
        assert collector.connections == RESTARTS + 1
    finally:
        broker.stop()


async def test_a_broker_back_from_an_old_save_resends_nothing_into_the_journal(
    tmp_path: Path,
) -> None:
    # mosquitto saves its queue every autosave_interval (1800 s by default) and at a clean
    # stop. Killed, it comes back with the last save and re-sends what that save had
    # queued for us - here 300 messages already journalled and acknowledged - as new
    # messages (no DUP flag). Deterministic reproduction of the duplicates.
    broker = start_mosquitto(tmp_path / "broker", extra_config=["autosave_interval 3600"])
    options = {
        "mappings": [str(_mapping(tmp_path))],
        "subscriptions": [{"topic": "dup/#", "qos": 1}],
        "client_id": "pue-test-old-save",
    }
    try:
        first, settings = make_collector(tmp_path, broker, "dup", **options)
        async with running_agent(settings, first):
            await wait_subscribed(first)  # the persistent session and its subscription
        sent = [float(i) for i in range(300)]
        publish(
            broker,
            [(f"dup/m{i % TOPICS}/p", json.dumps({"p": v}).encode()) for i, v in enumerate(sent)],
        )
        broker.restart()  # clean stop: the save now holds the 300 queued messages
        collector, _ = make_collector(tmp_path, broker, "dup", **options)
        async with running_agent(settings, collector):
            await wait_until(lambda: collector.stats["accepted"] == len(sent), what="queue")
            broker.kill()  # no save: the old one, with all 300 still queued, comes back
            broker.restart()
            await wait_subscribed(collector, sessions=2)
            await wait_until(
                lambda: collector.stats["duplicate"] == len(sent), what="copies recognised"
            )
            await asyncio.sleep(0.5)
        values = journal_frame(settings)["value"].to_list()
        assert sorted(values) == sent  # each once
        assert collector.stats["accepted"] == len(sent)
        # And InfluxDB, fed from the journal by the real sink, holds each reading once.
        influx = start_influxdb(tmp_path / "influx")
        try:
            influx.create_database("pue")
            sink = influxdb.build("influx", {"api": "v1", "url": influx.url, "database": "pue"},
                                  settings)  # fmt: skip
            drain = Agent(settings=settings, site=None, collectors=[], consumers=[sink],
                          journal=Journal(settings.journal_path))  # fmt: skip
            task = asyncio.create_task(drain.run(install_signals=False))
            drain.stop()  # consumers catch up with the journal before run() returns
            await asyncio.wait_for(task, 60)
            rows = influx.rows(
                "SELECT count(power_w) AS n, sum(power_w) AS s FROM pue_reading", db="pue"
            )
            assert (rows[0]["n"], rows[0]["s"]) == (len(sent), sum(sent))
        finally:
            influx.stop()
    finally:
        broker.stop()

"""Shared helpers for the MQTT tests: publish with paho, run an agent in-process."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion

from agent.journal import Journal
from agent.pipeline import Agent
from agent.settings import AgentSettings, load_settings
from collectors.mqtt import MqttCollector, build
from tests.mqtt.conftest import BROKER_PASSWORD, BROKER_USER
from tests.servers.mosquitto import Mosquitto

SECRET_NAME = "mqtt_password"


def settings_for(tmp_path: Path, broker: Mosquitto) -> AgentSettings:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    if broker.users:
        (secrets / SECRET_NAME).write_text(BROKER_PASSWORD + "\n", encoding="utf-8")
    return load_settings(None, state_dir=tmp_path / "state", secrets_dir=secrets)


def collector_options(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    if broker.tls:
        options.update(tls=True, ca_file=str(broker.ca_file))
    if broker.users:
        options.update(username=BROKER_USER, password_secret=SECRET_NAME)
    options.update(extra)
    return options


def make_collector(
    tmp_path: Path, broker: Mosquitto, name: str, **extra: Any
) -> tuple[MqttCollector, AgentSettings]:
    settings = settings_for(tmp_path, broker)
    return build(name, collector_options(broker, **extra), settings), settings


def publisher(broker: Mosquitto, client_id: str = "") -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(1000)
    if broker.tls:
        client.tls_set_context(ssl.create_default_context(cafile=str(broker.ca_file)))
    if broker.users:
        client.username_pw_set(BROKER_USER, BROKER_PASSWORD)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def publish(
    broker: Mosquitto, messages: Iterable[tuple[str, bytes]], *, qos: int = 1, retain: bool = False
) -> int:
    """Publish and wait until the broker has them all (QoS 1 acked); returns the count."""
    client = publisher(broker)
    try:
        infos = [
            client.publish(topic, payload, qos=qos, retain=retain) for topic, payload in messages
        ]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
        return len(infos)
    finally:
        client.disconnect()
        client.loop_stop()


@asynccontextmanager
async def running_agent(settings: AgentSettings, collector: MqttCollector) -> AsyncIterator[Agent]:
    journal = Journal(settings.journal_path)
    agent = Agent(
        settings=settings, site=None, collectors=[collector], consumers=[], journal=journal
    )
    task = asyncio.create_task(agent.run(install_signals=False))
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        await asyncio.sleep(0.02)


async def wait_subscribed(collector: MqttCollector, sessions: int = 1) -> None:
    await wait_until(lambda: collector.subscribed >= sessions, what="SUBACK")


def journal_frame(settings: AgentSettings) -> pl.DataFrame:
    journal = Journal(settings.journal_path)
    try:
        frames = [b.frame for b in journal.iter_batches()]
    finally:
        journal.close()
    return pl.concat(frames) if frames else pl.DataFrame()

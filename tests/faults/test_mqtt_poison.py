"""Poison MQTT messages through a real mosquitto: rejected, counted, acknowledged (issue 22).

Before the fix one ``number`` payload of 400 digits raised ``OverflowError`` in the
decoder: the collector crashed and restarted in a loop, the message was never
acknowledged, and the broker redelivered it forever, so nothing after it arrived.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.journal import Journal
from agent.pipeline import Agent
from agent.settings import AgentSettings
from collectors.mqtt import MqttCollector
from tests.mqtt.helpers import journal_frame, make_collector, publisher
from tests.servers.mosquitto import Mosquitto, start_mosquitto

# 309 nines exceed the largest float (about 1.8e308); 308 nines are a valid reading.
_HUGE_INT = st.integers(min_value=309, max_value=4000).map(lambda n: "9" * n)
_NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1e400"])
_DEEP = st.integers(min_value=1_001, max_value=200_000).map(lambda n: "[" * n + "]" * n)
_DEEP_OBJECT = st.integers(min_value=1_001, max_value=20_000).map(
    lambda n: '{"p": ' * n + "1" + "}" * n
)
_MEGABYTE = st.integers(min_value=900_000, max_value=1_100_000).map(
    lambda n: '{"p": ' + "1" * n + "}"
)
#: A scalar that can never become a reading of the ``number`` and ``json`` rules below.
_POISON_SCALAR = _HUGE_INT | st.just("-" + "9" * 400) | _NON_FINITE
_POISON_TEXT = (
    _POISON_SCALAR
    | _POISON_SCALAR.map(lambda v: f'{{"p": {v}}}')
    | _DEEP
    | _DEEP_OBJECT
    | _MEGABYTE
    | st.sampled_from(['{"p": "12"}', '{"p": true}', "[]", "{", '{"p": null}'])
)
_POISON = st.tuples(
    st.sampled_from(["pz/d/num", "pz/d/json"]),
    _POISON_TEXT.map(str.encode) | st.binary(min_size=1, max_size=300).map(lambda b: b"\xff" + b),
)


@dataclass
class _Rig:
    collector: MqttCollector
    settings: AgentSettings
    agent: Agent
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread


def _rules(folder: Path) -> Path:
    mapping = folder / "poison.toml"
    mapping.write_text(
        '[[rules]]\ntopic = "pz/+/num"\nsegments = "_/device"\nformat = "number"\n'
        'fields = [{ point = "n", quantity = "power_w" }]\n'
        '[[rules]]\ntopic = "pz/+/json"\nsegments = "_/device"\n'
        'fields = [{ path = "p", point = "j", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    return mapping


def _start(collector: MqttCollector, agent_settings: AgentSettings) -> _Rig:
    """Run an in-process agent on its own event-loop thread (hypothesis tests are sync)."""
    agent = Agent(
        settings=agent_settings,
        site=None,
        collectors=[collector],
        consumers=[],
        journal=Journal(agent_settings.journal_path),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(agent.run(install_signals=False)), daemon=True
    )
    thread.start()
    return _Rig(collector, agent_settings, agent, loop, thread)


def _stop(rig: _Rig) -> None:
    if rig.thread.is_alive():
        rig.loop.call_soon_threadsafe(rig.agent.stop)
        rig.thread.join(30)
    if not rig.loop.is_closed():
        rig.loop.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A plain persistent broker."""
    server = start_mosquitto(tmp_path / "broker")
    try:
        yield server
    finally:
        server.stop()


def _collector(tmp_path: Path, broker: Mosquitto) -> tuple[MqttCollector, AgentSettings]:
    return make_collector(
        tmp_path,
        broker,
        "poison",
        mappings=[str(_rules(tmp_path))],
        # Big enough that the 1 MB payloads are parsed, not rejected unread as oversize.
        max_payload_bytes=2_000_000,
        subscriptions=[{"topic": "pz/#", "qos": 1}],
        batch_linger_s=0.02,
    )


def _wait(predicate: object, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_good_messages_after_poison_ones_reach_the_journal(
    tmp_path: Path, broker: Mosquitto
) -> None:
    rig = _start(*_collector(tmp_path, broker))
    try:
        _run_rounds(rig, broker)
    finally:
        _stop(rig)
    frame = journal_frame(rig.settings)
    assert sorted(frame["value"].to_list()) == [float(i + 1) for i in range(frame.height)]
    assert frame.height >= 40
    # Every poison message was acknowledged: the persistent session holds nothing for us,
    # so a restarted agent (same client id) receives no redelivery.
    again = _start(*_collector(tmp_path, broker))
    try:
        _wait(lambda: again.collector.subscribed >= 1, "SUBACK after restart")
        time.sleep(1.0)  # redeliveries arrive right after the session resumes
        assert sum(again.collector.stats.values()) == 0, again.collector.stats
    finally:
        _stop(again)


def _run_rounds(rig: _Rig, broker: Mosquitto) -> None:
    collector = rig.collector
    _wait(lambda: collector.subscribed >= 1, "SUBACK")
    client = publisher(broker)
    sent_good: list[float] = []
    sent_poison = 0

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(_POISON, min_size=1, max_size=3))
    def one_round(poison: list[tuple[str, bytes]]) -> None:
        nonlocal sent_poison
        good = float(len(sent_good) + 1)
        for topic, payload in poison:
            client.publish(topic, payload, qos=1).wait_for_publish(timeout=30)
        client.publish("pz/d/num", str(good).encode(), qos=1).wait_for_publish(timeout=30)
        sent_poison += len(poison)
        sent_good.append(good)
        # The good message behind the poison is journalled: the collector kept going.
        _wait(lambda: collector.stats["accepted"] >= len(sent_good), f"good message {good}")

    try:
        one_round()
    finally:
        client.disconnect()
        client.loop_stop()
    rejected = sum(v for k, v in collector.stats.items() if k.startswith("rejected:"))
    assert rejected == sent_poison, sorted(collector.stats.items())
    assert collector.stats["accepted"] == len(sent_good)
    assert collector.stats["rejected:decode_error"] == 0  # every case has a named reason
    # One session throughout: no crash, no reconnect, so every poison message was acked.
    assert collector.connections == 1

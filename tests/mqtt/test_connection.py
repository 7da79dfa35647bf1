"""The receive fast path: PUBLISH packets handled without paho's Properties parse or message
objects, and the socket read in large pieces instead of three reads per packet."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import paho.mqtt._packet as paho_packet
import pytest

from collectors.mqtt.connection import BatchingClient, ConnectionSpec, Inbox
from tests.mqtt.helpers import (
    journal_frame,
    make_collector,
    publish,
    running_agent,
    wait_subscribed,
    wait_until,
)
from tests.servers.mosquitto import Mosquitto


def _publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    *,
    mid: int = 7,
    props: bytes = b"\x00",
    dup: bool = False,
    retain: bool = False,
) -> tuple[int, bytes]:
    command = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    return command, body + props + payload


#: (command byte, packet after the fixed header, handled without paho's Properties parse)
PACKETS = [
    (*_publish(b"m/a/json", b'{"p": 1}', 0), True),
    (*_publish(b"m/a/json", b'{"p": 2}', 1, mid=65535, dup=True, retain=True), True),
    (*_publish(b"m/a/json", b"", 1, mid=1), True),
    (*_publish(b"m/\xff/bad-utf8", b"1", 0), True),
    (*_publish(b"$SYS/broker/publish/messages/dropped", b"3", 0), True),
    # Properties present (payload format indicator = 1): paho's own handler.
    (*_publish(b"m/a/json", b'{"p": 3}', 1, props=b"\x02\x01\x01"), False),
]


def _received(
    client: BatchingClient,
    sys_seen: list[tuple[str, bytes]],
    command: int,
    packet: bytes,
    handler: Callable[[], object],
) -> list[object]:
    client.inbox.items.clear()
    sys_seen.clear()
    client._paho._in_packet["command"] = command
    client._paho._in_packet["packet"] = bytearray(packet)
    handler()
    # Receive time differs between the two calls; everything else must match.
    return [(t, bytes(p), q, m, d) for t, p, _, q, m, d in client.inbox.items] + list(sys_seen)


@pytest.mark.parametrize(("command", "packet", "fast"), PACKETS)
async def test_fast_publish_path_matches_paho(
    command: int, packet: bytes, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys_seen: list[tuple[str, bytes]] = []
    client = BatchingClient(
        ConnectionSpec(host="127.0.0.1", port=1, identifier="t", protocol="5"),
        Inbox(),
        on_sys=lambda topic, payload: sys_seen.append((topic, bytes(payload))),
    )
    client.ack = lambda mid, qos: None  # type: ignore[method-assign]  # not connected
    expected = _received(client, sys_seen, command, packet, client._paho_handle_publish)
    assert expected
    if fast:
        # The fast path must not build paho's Properties object at all.
        def _no_properties(*args: object) -> None:
            raise AssertionError("Properties parsed")

        monkeypatch.setattr(paho_packet, "Properties", _no_properties)
    assert _received(client, sys_seen, command, packet, client._paho._handle_publish) == expected


@pytest.mark.parametrize("qos", [0, 1])
async def test_fast_publish_path_matches_paho_for_mqtt_311(qos: int) -> None:
    client = BatchingClient(
        ConnectionSpec(host="127.0.0.1", port=1, identifier="t", protocol="3.1.1"), Inbox()
    )
    client.ack = lambda mid, qos: None  # type: ignore[method-assign]  # not connected
    # MQTT 3.1.1 has no property length: the payload follows the topic (and packet id).
    command, packet = _publish(b"m/a/json", b'{"p": 4}', qos, props=b"", mid=513)
    expected = _received(client, [], command, packet, client._paho_handle_publish)
    assert expected == [("m/a/json", b'{"p": 4}', qos, 513 if qos else 0, False)]
    assert _received(client, [], command, packet, client._paho._handle_publish) == expected


class _Chunks:
    """A socket stand-in: returns the given pieces one recv at a time, then 'would block'."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.calls = 0

    def recv(self, bufsize: int) -> bytes:
        self.calls += 1
        if not self.pieces:
            raise BlockingIOError
        return self.pieces.pop(0)


async def test_buffered_reads_parse_packets_split_and_joined_anyhow() -> None:
    client = BatchingClient(
        ConnectionSpec(host="127.0.0.1", port=1, identifier="t", protocol="5"), Inbox()
    )
    frames = b""
    for i in range(50):
        command, packet = _publish(b"m/a/json", b'{"p": %d}' % i, 0)
        frames += bytes([command, len(packet)]) + packet
    # Packets joined in one read, and split mid-header and mid-payload across reads.
    sock = _Chunks([frames[:1000], frames[1000:1001], frames[1001:1003], frames[1003:]])
    client._paho._sock = sock  # type: ignore[assignment]  # recv() is all paho reads here
    while True:
        rc = client._paho._packet_read()
        if rc != 0:
            break
    assert [p for _, p, _, _, _, _ in client.inbox.items] == [b'{"p": %d}' % i for i in range(50)]
    assert sock.calls == 5  # four pieces and the final "would block", not 3 per packet
    client._paho._sock = None


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_fast_path_through_a_real_broker_keeps_every_message(
    protocol: str, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[[rules]]\ntopic = "fp/+/p"\nsegments = "_/device"\nsequence_path = "seq"\n'
        'fields = [{ path = "p", point = "p", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    collector, settings = make_collector(
        tmp_path,
        mosquitto,
        f"fp{protocol}",
        mappings=[str(mapping)],
        protocol=protocol,
        qos=1,
        max_payload_bytes=200_000,
    )
    # Many small packets in few socket reads, and one larger than a read (64 KiB).
    messages = [(f"fp/d{i % 3}/p", b'{"seq": %d, "p": %d}' % (i // 3, i)) for i in range(600)]
    messages.append(("fp/big/p", b'{"p": 1.5, "pad": "' + b"x" * 100_000 + b'"}'))
    async with running_agent(settings, collector) as agent:
        await wait_subscribed(collector)
        publish(mosquitto, messages)
        await wait_until(lambda: agent.committed_readings == 601, what="601 readings")
    assert collector.stats["accepted"] == 601
    assert collector.stats["lost"] == 0
    values = sorted(journal_frame(settings)["value"].to_list())
    assert values == sorted([*map(float, range(600)), 1.5])

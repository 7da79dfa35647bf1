"""The receive fast path: MQTT 5 PUBLISH packets handled without paho's Properties parse."""

from __future__ import annotations

import struct
from collections.abc import Callable

import paho.mqtt._packet as paho_packet
import pytest

from collectors.mqtt.connection import BatchingClient, ConnectionSpec, Inbox


def _publish(
    topic: bytes, payload: bytes, qos: int, *, mid: int = 7, props: bytes = b"\x00",
    dup: bool = False, retain: bool = False,
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
    client: BatchingClient, sys_seen: list[tuple[str, bytes]], command: int, packet: bytes,
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

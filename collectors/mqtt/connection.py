"""The MQTT connection: aiomqtt 2.x with a batching inbox, manual acks, TLS and backoff.

Why a subclass of :class:`aiomqtt.Client`: aiomqtt hands every message through
an ``asyncio.Queue`` and one task plus ``asyncio.wait`` per message, which caps
a subscriber at roughly 8,000 msg/s; and it acknowledges QoS 1/2 messages as
soon as paho parsed them. Here paho's ``on_message`` appends a tuple to a plain
list (the :class:`Inbox`) that the collector drains in batches, and paho's
manual-ack mode is switched on so a QoS 1 message is acknowledged only after
its readings are durable in the journal. Both rely on aiomqtt's paho client
attribute ``_client`` and its ``_on_message`` / ``_on_disconnect`` hooks,
stable across aiomqtt 2.x (pinned ``<3`` in pyproject.toml; the tests fail if
that changes).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "BatchingClient",
    "ConnectionSpec",
    "Inbox",
    "Received",
    "backoff_delays",
    "tls_context",
]

#: Packets parsed per readable-socket wakeup before yielding to the event loop.
_PACKETS_PER_WAKE = 256
#: Bytes asked of the socket per read (paho asks for a packet's bytes piece by piece).
_RECV_BYTES = 65_536

#: One received message: (topic, payload, receive time s, qos, mid, dup flag).
Received = tuple[str, bytes | bytearray, float, int, int, bool]


def backoff_delays(
    initial_s: float, max_s: float, rng: random.Random | None = None
) -> Iterator[float]:
    """Capped exponential backoff with jitter: each delay uniform in [d/2, d], d doubling to max.

    Jitter spreads the reconnects of many agents after a broker restart, so they do
    not all hit the broker in the same instant.
    """
    rng = rng or random.Random()
    delay = initial_s
    while True:
        yield delay * (0.5 + 0.5 * rng.random())
        delay = min(delay * 2.0, max_s)


def tls_context(
    ca_file: str | None,
    client_cert_file: str | None = None,
    client_key_file: str | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client TLS context: verify the broker against ``ca_file`` (or the system CAs).

    Raises:
        OSError / ssl.SSLError: if a file cannot be read or is not a certificate/key.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    if client_cert_file:
        context.load_cert_chain(client_cert_file, client_key_file or None)
    return context


class Inbox:
    """Messages received and not yet taken; the collector drains it in batches."""

    def __init__(self, *, max_pending: int = 200_000) -> None:
        """Hold at most ``max_pending`` QoS 0 messages (QoS 1/2 are bounded by the broker)."""
        self.items: list[Received] = []
        self.max_pending = max_pending
        #: QoS 0 messages dropped because the collector fell this far behind.
        self.overflow = 0
        self.closed: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wake_at = 1

    def put(self, item: Received) -> None:
        """Add a message (called from paho's callback on the event loop)."""
        items = self.items
        if item[3] == 0 and len(items) >= self.max_pending:
            self.overflow += 1
            return
        items.append(item)
        waiter = self._waiter
        if waiter is not None and len(items) >= self._wake_at and not waiter.done():
            waiter.set_result(None)

    def close(self, reason: BaseException) -> None:
        """The connection is gone: wake the taker."""
        self.closed = reason
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, count: int, timeout_s: float | None) -> None:
        """Return once ``count`` messages are held, the connection closed, or after the timeout."""
        await self._wait(count, timeout_s)

    async def _wait(self, count: int, timeout_s: float | None) -> None:
        if len(self.items) >= count or self.closed is not None:
            return
        self._wake_at = count
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout_s)
        except TimeoutError:
            pass
        finally:
            self._waiter = None

    async def take(self, max_messages: int, linger_s: float, idle_s: float) -> list[Received]:
        """Wait for messages and return a batch.

        The batch is returned when ``max_messages`` are there, when ``linger_s`` has
        passed since the first, or when nothing new arrived for ``idle_s`` (the
        broker's in-flight window may be full, waiting for our acknowledgements).

        Raises:
            aiomqtt.MqttError: when the connection is closed and nothing is left.
        """
        while not self.items:
            if self.closed is not None:
                raise aiomqtt.MqttError("disconnected") from self.closed
            await self._wait(1, None)
        deadline = time.monotonic() + linger_s
        while len(self.items) < max_messages and self.closed is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            seen = len(self.items)
            # Wake on a full batch or after idle_s; never per message.
            await self._wait(max_messages, min(idle_s, remaining))
            if len(self.items) == seen:
                break
        batch, self.items = self.items, []
        return batch


@dataclass(frozen=True)
class ConnectionSpec:
    """Everything needed to open one connection (the password stays out of ``repr``)."""

    host: str
    port: int
    identifier: str
    protocol: str = "5"
    persistent: bool = True
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 1000
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    manual_ack: bool = True
    timeout_s: float = 10.0

    def __repr__(self) -> str:
        return (
            f"ConnectionSpec(host={self.host!r}, port={self.port}, "
            f"identifier={self.identifier!r}, protocol={self.protocol!r}, "
            f"tls={self.tls is not None}, username={self.username!r})"
        )


class BatchingClient(aiomqtt.Client):
    """An aiomqtt client that feeds an :class:`Inbox` and acknowledges on request."""

    def __init__(
        self,
        spec: ConnectionSpec,
        inbox: Inbox,
        *,
        on_sys: Callable[[str, bytes | bytearray], None] | None = None,
    ) -> None:
        """Prepare (not open) a connection described by ``spec``.

        Args:
            spec: Broker, session and security settings.
            inbox: Where received messages go.
            on_sys: Called with ``$SYS/...`` messages (broker statistics) instead of
                putting them in the inbox.
        """
        v5 = spec.protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # Without a session expiry an MQTT 5 session ends at disconnect: nothing queued.
            properties.SessionExpiryInterval = spec.session_expiry_s if spec.persistent else 0
            # How many unacknowledged QoS 1/2 messages the broker may send us at once;
            # acks wait for the journal's fsync, so a small window would cap throughput.
            properties.ReceiveMaximum = spec.receive_maximum
        super().__init__(
            spec.host,
            spec.port,
            username=spec.username,
            password=spec.password,
            identifier=spec.identifier,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else not spec.persistent,
            clean_start=(not spec.persistent) if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=spec.keepalive_s,
            timeout=spec.timeout_s,
            properties=properties,
            tls_context=spec.tls,
        )
        self.inbox = inbox
        self._on_sys = on_sys
        self._paho: paho.Client = self._client
        self._paho.manual_ack_set(spec.manual_ack)
        self._paho_handle_publish = self._paho._handle_publish
        self._v5 = v5
        self._paho._handle_publish = self._handle_publish  # type: ignore[method-assign]
        #: Bytes read from the socket that paho has not asked for yet (see _buffered_recv).
        self._rx = bytearray()
        self._paho_sock_recv = self._paho._sock_recv
        self._paho._sock_recv = self._buffered_recv  # type: ignore[method-assign]

    def _buffered_recv(self, bufsize: int) -> bytes:
        """Paho's socket read, served from one large read.

        paho reads a packet in at least three ``recv`` calls (command byte, length
        bytes, the rest), i.e. three system calls per message; reading up to
        ``_RECV_BYTES`` at once and handing paho slices of it makes that one call per
        few thousand small messages. paho's own ``_sock_recv`` still does the read, so
        its translation of TLS want-read/want-write and closed sockets is unchanged.
        Buffered bytes are invisible to the event loop, which is why ``_read_packets``
        keeps parsing until paho reports "no data" (``MQTT_ERR_AGAIN``: buffer empty).
        """
        rx = self._rx
        if not rx:
            data = self._paho_sock_recv(_RECV_BYTES)
            if len(data) <= bufsize:
                return data  # also b"" (connection closed), as paho expects
            rx += data
        chunk = bytes(rx[:bufsize])
        del rx[:bufsize]  # O(1): bytearray deletes from the front by moving its start
        return chunk

    def _handle_publish(self) -> MQTTErrorCode:
        """Paho's PUBLISH handler, cut short for the messages the collector receives.

        A QoS 0 or QoS 1 (manual ack) PUBLISH with a UTF-8 topic not under ``$`` and,
        in MQTT 5, no properties goes straight into the inbox as a ``Received`` tuple.
        paho would build a ``Properties`` object (MQTT 5, ~15 us), an ``MQTTMessage``
        (with a ``threading.Condition``) and dispatch it through its callback lock and
        topic matcher to ``_on_message`` - together several times the cost of decoding
        and mapping the JSON (~3 us). Anything else goes to paho's handler.
        """
        client = self._paho
        command: int = client._in_packet["command"]
        packet = client._in_packet["packet"]
        qos = (command & 0x06) >> 1
        if (qos == 0 or (qos == 1 and client._manual_ack)) and len(packet) > 2:
            topic_len = (packet[0] << 8) | packet[1]
            at = 2 + topic_len + (2 if qos else 0)  # MQTT 5: the property length (0 or more)
            if self._v5:
                fast = len(packet) > at and packet[at] == 0
                payload_at = at + 1
            else:
                fast = len(packet) >= at
                payload_at = at
            if topic_len and fast:
                mid = (packet[at - 2] << 8) | packet[at - 1] if qos else 0
                try:
                    topic = packet[2 : 2 + topic_len].decode("utf-8")
                except UnicodeDecodeError:
                    topic = "$"  # rare: through _on_message, which names it as paho does
                if topic[:1] != "$":
                    self.inbox.put(
                        (
                            topic,
                            bytes(packet[payload_at:]),
                            time.time(),
                            qos,
                            mid,
                            bool(command & 0x08),
                        )
                    )
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
                # $SYS statistics and undecodable topics: paho's message, our callback.
                message = paho.MQTTMessage(mid=mid, topic=bytes(packet[2 : 2 + topic_len]))
                message.dup = bool(command & 0x08)
                message.qos = qos
                message.retain = bool(command & 0x01)
                message.payload = bytes(packet[payload_at:])
                message.timestamp = paho.time_func()
                client._handle_on_message(message)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._paho_handle_publish()

    def _on_message(
        self,
        client: paho.Client,
        userdata: Any,
        message: paho.MQTTMessage,
    ) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")
        if topic[:1] == "$" and self._on_sys is not None:
            self._on_sys(topic, message.payload)
            self.ack(message.mid, message.qos)
            return
        self.inbox.put(
            (topic, message.payload, time.time(), message.qos, message.mid, bool(message.dup))
        )

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # aiomqtt's reader callback runs paho's loop_read(), which parses ONE packet per
        # readable event: one event-loop iteration (epoll, callback dispatch) per message.
        # Register ours after aiomqtt's (same fd; add_reader replaces it): it parses the
        # packets already buffered, up to _PACKETS_PER_WAKE so other tasks still run.
        self._rx.clear()  # nothing of an earlier socket belongs to this one
        super()._on_socket_open(client, userdata, sock)
        self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), self._read_packets)

    def _read_packets(self) -> None:
        """Parse up to ``_PACKETS_PER_WAKE`` packets (paho's ``loop_read`` reads one)."""
        client = self._paho
        try:
            for _ in range(_PACKETS_PER_WAKE):
                if client._sock is None:
                    return
                rc = client._packet_read()
                if rc > 0:
                    client._loop_rc_handle(rc)
                    return
                if rc == paho.MQTT_ERR_AGAIN:
                    return
            # More may be waiting, possibly decrypted inside the TLS object where the fd
            # does not signal it: come back after the other ready callbacks.
            self._loop.call_soon(self._read_packets)
        except Exception as exc:  # noqa: BLE001 - as aiomqtt: a broken connection
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: Any,
        properties: Properties | None = None,
    ) -> None:
        super()._on_disconnect(client, userdata, flags, reason_code, properties)
        if self._disconnected.done() and not self._disconnected.cancelled():
            # We learn of disconnects from the inbox, not aiomqtt's iterator: mark it seen.
            self._disconnected.exception()
        self.inbox.close(aiomqtt.MqttError(f"disconnected: {reason_code}"))

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a QoS 1/2 message (PUBACK / PUBCOMP); no-op for QoS 0."""
        if qos:
            self._paho.ack(mid, qos)

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up (paho's view)."""
        return bool(self._paho.is_connected())

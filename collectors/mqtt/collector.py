"""The ``mqtt`` collector: subscribe, decode batches with mappings, journal, then acknowledge.

Delivery contract (see README): a QoS 1/2 message is acknowledged to the broker
only after ``await ctx.emit(frame)`` returned, i.e. after its readings (or its
rejection) are fsynced; with a persistent session the broker keeps and
redelivers everything unacknowledged across agent restarts and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge
from pydantic import SecretStr, ValidationError

from agent import metrics
from agent.journal import JournalError
from agent.logs import get_logger
from agent.plugins import CollectorContext
from agent.readings import ReadingBatchError
from agent.settings import AgentSettings, ConfigError, read_secret
from collectors.mqtt.connection import (
    BatchingClient,
    ConnectionSpec,
    Inbox,
    Received,
    backoff_delays,
    tls_context,
)
from collectors.mqtt.decode import Decoder, DecodeResult
from collectors.mqtt.mapping import Rule, TopicRouter, load_mapping
from collectors.mqtt.options import MqttOptions, Subscription

__all__ = [
    "MQTT_BROKER_DROPPED",
    "MQTT_LOST",
    "MQTT_MESSAGES",
    "MqttCollector",
    "RateLimitedLog",
    "build",
]

_log = get_logger("collector.mqtt")

MQTT_MESSAGES = PromCounter(
    "pue_agent_mqtt_messages",
    "MQTT messages handled, by outcome (accepted, rejected, ignored, duplicate).",
    ["collector", "outcome"],
    registry=metrics.REGISTRY,
)
MQTT_LOST = PromCounter(
    "pue_agent_mqtt_messages_lost",
    "MQTT messages known to be lost: sequence gaps in payloads, or client queue overflow.",
    ["collector", "reason"],
    registry=metrics.REGISTRY,
)
MQTT_BROKER_DROPPED = Gauge(
    "pue_agent_mqtt_broker_dropped",
    "Broker's $SYS/broker/publish/messages/dropped since we first saw it (all clients).",
    ["collector"],
    registry=metrics.REGISTRY,
)
MQTT_CONNECTED = Gauge(
    "pue_agent_mqtt_connected",
    "1 while connected to the broker.",
    ["collector"],
    registry=metrics.REGISTRY,
)

_SYS_DROPPED = "$SYS/broker/publish/messages/dropped"
_FINAL_FLUSH_TIMEOUT_S = 10.0


class RateLimitedLog:
    """Log a recurring problem at most once per ``interval_s`` per key, with a count."""

    def __init__(self, interval_s: float = 60.0) -> None:
        """Allow one line per key per ``interval_s``."""
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, key: str, event: str, count: int = 1, **fields: Any) -> None:
        """Log ``event`` now or count it towards the next line for ``key``."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] += count
            return
        self._last[key] = now
        earlier = self._suppressed.pop(key, 0)
        _log.warning(event, count=count, suppressed_since_last=earlier, **fields)


@dataclass
class MqttCollector:
    """Subscribes to a broker and turns mapped messages into readings."""

    name: str
    options: MqttOptions
    rules: list[Rule]
    password: SecretStr | None = None
    #: Per configured mapping (built-in name or path): the quantities it can produce.
    mapping_quantities: dict[str, list[str]] = field(default_factory=dict)
    decoder: Decoder = field(init=False)
    #: Messages handled so far by outcome (for tests and ``describe``).
    stats: Counter[str] = field(default_factory=Counter, init=False)
    #: Hashes of (topic, payload) of the last QoS 1/2 messages journalled. The broker
    #: redelivers (DUP flag) what it has no PUBACK for - also when our PUBACK was lost
    #: with the connection - so a DUP message seen here is acked, not journalled twice.
    #: Right after a (re)connect copies come without the DUP flag too (a broker restarted
    #: from an older saved queue, a publisher re-sending): then every QoS 1/2 message is
    #: checked against ``_before`` (what was journalled before the session), until
    #: ``_dedupe_until`` (monotonic seconds).
    _recent: Counter[int] = field(default_factory=Counter, init=False)
    _dedupe_until: float = field(default=0.0, init=False)
    _before: Counter[int] = field(default_factory=Counter, init=False)
    _recent_order: deque[int] = field(default_factory=deque, init=False)
    _logs: RateLimitedLog = field(default_factory=RateLimitedLog, init=False)
    _sys_dropped_base: int | None = field(default=None, init=False)
    #: Sessions opened / sessions whose subscriptions the broker acknowledged.
    connections: int = field(default=0, init=False)
    subscribed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.decoder = Decoder(
            TopicRouter(self.rules),
            max_payload_bytes=self.options.max_payload_bytes,
            max_skew_s=self.options.max_skew_s,
        )

    # -- description --------------------------------------------------------------------------

    def subscriptions(self) -> list[Subscription]:
        """Explicit subscriptions, else each distinct mapping topic at the default QoS."""
        if self.options.subscriptions:
            return list(self.options.subscriptions)
        topics = list(dict.fromkeys(rule.topic for rule in self.rules))
        return [Subscription(topic=t, qos=self.options.qos) for t in topics]

    def polled_devices(self) -> list[str] | None:
        """``None``: an MQTT collector's devices come from the topics at run time."""
        return None

    def describe(self) -> str:
        """For ``pue-agent check``: the connection, then per mapping what it can produce.

        A mapping that produces neither energy nor power is warned about: its readings
        can never enter a PUE, which is rarely what was meant.
        """
        o = self.options
        subs = ", ".join(f"{s.topic} (QoS {s.qos})" for s in self.subscriptions())
        text = (
            f"mqtt: {'mqtts' if o.tls else 'mqtt'}://{o.host}:{o.broker_port()} "
            f"MQTT {o.protocol}, client id {o.identifier(self.name)!r}, "
            f"{'persistent' if o.persistent_session else 'clean'} session; {subs}"
        )
        for ref, quantities in self.mapping_quantities.items():
            text += f"\n  mapping {ref}: {', '.join(quantities)}"
            if not {"energy_kwh", "power_w"} & set(quantities):
                text += (
                    f"\n  warning: mapping {ref} produces neither energy (energy_kwh) nor "
                    "power (power_w): its readings cannot enter PUE"
                )
        return text

    def connection_spec(self) -> ConnectionSpec:
        """The connection settings (reads TLS files; blocking, done once per connect)."""
        o = self.options
        context = None
        if o.tls:
            context = tls_context(
                str(o.ca_file) if o.ca_file else None,
                str(o.client_cert_file) if o.client_cert_file else None,
                str(o.client_key_file) if o.client_key_file else None,
                check_hostname=o.tls_check_hostname,
            )
        return ConnectionSpec(
            host=o.host,
            port=o.broker_port(),
            identifier=o.identifier(self.name),
            protocol=o.protocol,
            persistent=o.persistent_session,
            session_expiry_s=o.session_expiry_s,
            receive_maximum=o.receive_maximum,
            keepalive_s=o.keepalive_s,
            username=o.username,
            password=self.password.get_secret_value() if self.password else None,
            tls=context,
        )

    # -- running ------------------------------------------------------------------------------

    async def run(self, ctx: CollectorContext) -> None:
        """Connect, consume and reconnect (capped backoff with jitter) until cancelled."""
        delays = backoff_delays(self.options.reconnect_initial_s, self.options.reconnect_max_s)
        while True:
            connected_before = self.connections
            try:
                await self._session(ctx)
            except (aiomqtt.MqttError, OSError) as exc:
                # aiomqtt's messages name the broker and the reason, never the password.
                self._logs.warning(
                    "connection",
                    "broker connection failed or lost; reconnecting",
                    collector=self.name,
                    error=str(exc) or type(exc).__name__,
                )
            except JournalError as exc:
                # Nothing of the batch was acknowledged: the broker redelivers it.
                _log.error(
                    "journal write failed; reconnecting", collector=self.name, error=str(exc)
                )
            finally:
                MQTT_CONNECTED.labels(self.name).set(0)
            if self.connections != connected_before:
                delays = backoff_delays(
                    self.options.reconnect_initial_s, self.options.reconnect_max_s
                )
            await asyncio.sleep(next(delays))

    async def _session(self, ctx: CollectorContext) -> None:
        o = self.options
        inbox = Inbox(max_pending=o.max_pending_messages)
        client = BatchingClient(self.connection_spec(), inbox, on_sys=self._on_sys)
        async with client:
            self.connections += 1
            self._dedupe_until = time.monotonic() + o.dedupe_window_s
            # What was journalled before this session: the only messages a copy without
            # the DUP flag can repeat (a snapshot, cheap next to a reconnect).
            self._before = Counter(self._recent) if o.dedupe_window_s else Counter()
            MQTT_CONNECTED.labels(self.name).set(1)
            _log.info("connected", collector=self.name, host=o.host, port=o.broker_port())
            subs: list[tuple[str, int]] = [(s.topic, s.qos) for s in self.subscriptions()]
            if o.watch_broker_drops:
                subs.append((_SYS_DROPPED, 0))
            granted = await client.subscribe(subs)
            for (topic, _), code in zip(subs, granted, strict=False):
                value = getattr(code, "value", code)
                if isinstance(value, int) and value >= 0x80 and topic != _SYS_DROPPED:
                    _log.error("subscription refused", collector=self.name, topic=topic)
            self.subscribed += 1
            overflow_seen = 0
            while True:
                try:
                    batch = await inbox.take(o.batch_max_messages, o.batch_linger_s, o.batch_idle_s)
                except asyncio.CancelledError:
                    await self._final_flush(ctx, client, inbox)
                    raise
                if inbox.overflow != overflow_seen:
                    MQTT_LOST.labels(self.name, "client_overflow").inc(
                        inbox.overflow - overflow_seen
                    )
                    overflow_seen = inbox.overflow
                await self._handle(ctx, client, batch)

    async def _final_flush(
        self, ctx: CollectorContext, client: BatchingClient, inbox: Inbox
    ) -> None:
        """On stop: journal and ack what was received, so a restart neither loses nor repeats."""
        batch, inbox.items = inbox.items, []
        if batch:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._handle(ctx, client, batch), _FINAL_FLUSH_TIMEOUT_S)

    async def _handle(
        self, ctx: CollectorContext, client: BatchingClient, batch: list[Received]
    ) -> None:
        fresh: list[Received] = batch
        duplicates = 0
        recent, before = self._recent, self._before
        resumed = bool(before) and time.monotonic() < self._dedupe_until
        if recent and (resumed or any(item[5] for item in batch)):
            fresh = []
            for item in batch:
                if item[5] or (resumed and item[3]):
                    key = hash((item[0], bytes(item[1])))
                    # A DUP may repeat anything journalled; a copy without the flag only
                    # what was journalled before this session began, so that a device
                    # repeating a payload within the session is never taken for a copy.
                    # A dropped copy leaves ``recent`` as it is: the same message can come
                    # back again (our PUBACK of the first copy lost in the next restart).
                    if recent[key] > 0 and (item[5] or before[key] > 0):
                        if before[key] > 0:
                            before[key] -= 1
                        duplicates += 1
                        continue
                fresh.append(item)
        result = self.decoder.decode([(t, p, r) for t, p, r, _, _, _ in fresh])
        self._count(result, duplicates)
        if result.frame.height:
            emit = asyncio.ensure_future(ctx.emit(result.frame))
            try:
                await asyncio.shield(emit)
            except asyncio.CancelledError:
                # Stopping: the pipeline still commits what is queued; wait for it, then ack.
                try:
                    await asyncio.wait_for(emit, _FINAL_FLUSH_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - not durable: do not ack, broker redelivers
                    raise asyncio.CancelledError from None
                self._remember(fresh)
                self._ack(client, batch)
                raise
            except ReadingBatchError as exc:
                # A mapping produced an invalid frame (our bug, counted by the pipeline):
                # ack anyway, or the broker would redeliver it forever.
                _log.error("batch refused by the pipeline", collector=self.name, error=str(exc))
        self._remember(fresh)
        self._ack(client, batch)

    def _remember(self, journalled: list[Received]) -> None:
        recent, order = self._recent, self._recent_order
        for topic, payload, _, qos, _, _ in journalled:
            if qos:
                key = hash((topic, bytes(payload)))
                recent[key] += 1
                order.append(key)
        while len(order) > self.options.dedupe_memory:
            old = order.popleft()
            recent[old] -= 1
            if recent[old] <= 0:
                del recent[old]

    def _ack(self, client: BatchingClient, batch: list[Received]) -> None:
        if not (client.is_connected and client.inbox.closed is None):
            return  # the mids belong to a dead connection; the broker redelivers (DUP)
        for _, _, _, qos, mid, _ in batch:
            if qos:
                client.ack(mid, qos)

    def _count(self, result: DecodeResult, duplicates: int) -> None:
        name = self.name
        self.stats["accepted"] += result.accepted
        self.stats["ignored"] += result.ignored
        self.stats["duplicate"] += duplicates
        if result.accepted:
            MQTT_MESSAGES.labels(name, "accepted").inc(result.accepted)
        if result.ignored:
            MQTT_MESSAGES.labels(name, "ignored").inc(result.ignored)
        if duplicates:
            MQTT_MESSAGES.labels(name, "duplicate").inc(duplicates)
        for reason, count in result.rejected.items():
            self.stats[f"rejected:{reason}"] += count
            MQTT_MESSAGES.labels(name, "rejected").inc(count)
            metrics.READINGS_REJECTED.labels(name, reason).inc(count)
            self._logs.warning(
                f"reject:{reason}",
                "mqtt messages rejected",
                count=count,
                collector=name,
                reason=reason,
                example_topic=result.examples.get(reason),
            )
        if result.lost:
            self.stats["lost"] += result.lost
            MQTT_LOST.labels(name, "sequence_gap").inc(result.lost)
            self._logs.warning(
                "lost",
                "mqtt messages missing (sequence gap)",
                count=result.lost,
                collector=name,
            )

    def _on_sys(self, topic: str, payload: bytes | bytearray) -> None:
        if topic != _SYS_DROPPED:
            return
        try:
            total = int(payload)
        except ValueError:
            return
        if self._sys_dropped_base is None or total < self._sys_dropped_base:
            self._sys_dropped_base = total  # first sight, or the broker restarted
        dropped = total - self._sys_dropped_base
        MQTT_BROKER_DROPPED.labels(self.name).set(dropped)
        self.stats["broker_dropped"] = dropped
        if dropped:
            self._logs.warning(
                "broker_dropped",
                "broker reports dropped messages (QoS 0 queue overflow?)",
                collector=self.name,
                broker_dropped_total=dropped,
            )


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> MqttCollector:
    """Build an MQTT collector from its config table.

    Raises:
        ConfigError: naming ``collectors.<name>.<field>`` (never a secret's value).
    """
    try:
        parsed = MqttOptions.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"collectors.{name}.{'.'.join(str(p) for p in e['loc']) or '(table)'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise ConfigError(problems) from None
    rules: list[Rule] = []
    quantities: dict[str, list[str]] = {}
    for ref in parsed.mappings:
        try:
            mapping = load_mapping(ref)
        except ConfigError as exc:
            raise ConfigError(f"collectors.{name}.mappings: {exc}") from None
        rules.extend(mapping.rules)
        quantities[ref] = mapping.quantities()
    password = None
    if parsed.password_secret is not None:
        try:
            password = read_secret(parsed.password_secret, settings)
        except ConfigError as exc:
            raise ConfigError(f"collectors.{name}.password_secret: {exc}") from None
    for path_field in ("ca_file", "client_cert_file", "client_key_file"):
        path = getattr(parsed, path_field)
        if path is not None and not path.is_file():
            raise ConfigError(f"collectors.{name}.{path_field}: {path} is not a readable file")
    return MqttCollector(
        name=name, options=parsed, rules=rules, password=password, mapping_quantities=quantities
    )

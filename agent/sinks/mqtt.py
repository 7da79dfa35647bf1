"""The MQTT sink: site KPIs and rule findings as retained JSON messages (QoS 1).

Topics, under ``topic_prefix`` (default ``pue-agent/<site>``):

* ``kpi/pue_realtime`` — the instantaneous PUE from the latest power readings,
  computed from the journal (labelled ``realtime``; never a period PUE);
* ``kpi/pue_today``, ``kpi/ref`` and ``kpi/<metric>_<period_kind>`` — the latest
  value of each KPI handed to :meth:`MqttSink.publish_frames` (``KPI_SCHEMA``);
* ``finding/<rule_id>`` — the latest finding of each rule (``FINDING_SCHEMA``);
* ``green-window`` — the green-window signal for schedulers (expected green surplus and
  share now and for 24 hours, :mod:`agent.kpi.green_window`), republished when it changes.

KPIs and findings come from the local store (the aggregator refreshes them,
:mod:`agent.aggregator.refresh`): after the journal work of each loop iteration (at
most every ``derived_interval_s``) the newest two months of KPIs and the newest
month of findings are published when their content changed since the last
acknowledged publication (hash kept in ``state_dir/sinks/<sink>/derived.json``);
at shutdown the sink waits for the aggregator's last refresh first.

Messages are retained, so a building system that subscribes later gets the
current values at once. The cursor moves only after the broker acknowledged
(PUBACK) the real-time message covering those batches. Broker settings (TLS,
user, password secret) use the same option names as the MQTT collector.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiomqtt
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agent import metrics
from agent.aggregator.feed import DerivedFeed
from agent.kpi.green_window import GreenWindow, GreenWindowUnavailableError, green_window_for
from agent.logs import get_logger
from agent.plugins import ConsumerContext
from agent.realtime import LatestPower
from agent.settings import AgentSettings, ConfigError, read_secret, validation_problems
from agent.sinks.health import SINK_FAILURES, SINK_POINTS, SinkHealth
from agent.site import Site

__all__ = ["MqttSink", "MqttSinkOptions", "build", "kpi_messages"]

_log = get_logger("sinks.mqtt")


class MqttSinkOptions(BaseModel):
    """Options of a ``[[sinks]]`` table with ``kind = "mqtt"``."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Broker host name or address.")
    port: int | None = Field(None, ge=1, le=65535, description="Default 1883, 8883 with TLS.")
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str | None = None
    username: str | None = None
    password_secret: str | None = Field(None, description="Name of the password secret.")
    tls: bool = False
    ca_file: Path | None = Field(None, description="CA bundle (default: system CAs).")
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    tls_check_hostname: bool = True
    keepalive_s: int = Field(30, ge=5, le=65535)
    topic_prefix: str | None = Field(None, description="Default: pue-agent/<site id>.")
    realtime_interval_s: float = Field(
        10.0, gt=0, description="Shortest time between two real-time PUE messages."
    )
    derived: bool = Field(True, description="Publish KPIs and findings from the local store.")
    derived_interval_s: float = Field(
        5.0, gt=0, description="Shortest time between two looks at the local store."
    )
    reconnect_initial_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)

    def broker_port(self) -> int:
        """The port, defaulting by TLS."""
        return self.port or (8883 if self.tls else 1883)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row_json(row: dict[str, Any]) -> bytes:
    return json.dumps(
        {k: _json_value(v) for k, v in row.items()}, ensure_ascii=False, sort_keys=True
    ).encode()


def kpi_messages(frame: pl.DataFrame, *, today: str | None = None) -> dict[str, bytes]:
    """Topic suffix -> payload for the latest row of each (metric, period kind).

    ``pue_today`` is the day PUE whose period label is ``today`` (site-local
    date, ``YYYY-MM-DD``); ``ref`` is the latest REF of any period kind but
    ``interval``, preferring the longest window.
    """
    if frame.height == 0:
        return {}
    latest = (
        frame.sort("period_start")
        .group_by("metric", "period_kind", maintain_order=True)
        .last()
        .sort("metric", "period_kind")
    )
    out: dict[str, bytes] = {}
    rows = latest.to_dicts()
    for row in rows:
        out[f"kpi/{row['metric']}_{row['period_kind']}"] = _row_json(row)
    for row in rows:
        if row["metric"] == "pue" and row["period_kind"] == "day" and row["period"] == today:
            out["kpi/pue_today"] = _row_json(row)
    order = {"ttm": 0, "month": 1, "day": 2, "hour": 3}
    refs = sorted(
        (r for r in rows if r["metric"] == "ref" and r["period_kind"] in order),
        key=lambda r: order[r["period_kind"]],
    )
    if refs:
        out["kpi/ref"] = _row_json(refs[0])
    return out


@dataclass
class MqttSink:
    """Consumer of kind ``mqtt``."""

    name: str
    options: MqttSinkOptions
    password: SecretStr | None = field(default=None, repr=False)
    health: SinkHealth = field(default_factory=lambda: SinkHealth(sink="mqtt"))
    site: Site | None = None
    published: int = field(default=0, init=False)
    _client: aiomqtt.Client | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    settings: AgentSettings | None = field(default=None, repr=False)
    _feed: DerivedFeed | None = field(default=None, init=False, repr=False)
    _derived_at: float = field(default=float("-inf"), init=False, repr=False)
    _window_sent: str | None = field(default=None, init=False, repr=False)
    _window_failing: bool = field(default=False, init=False, repr=False)

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        scheme = "mqtts" if o.tls else "mqtt"
        return (
            f"mqtt sink: {scheme}://{o.host}:{o.broker_port()} retained QoS 1 under "
            f"{self.prefix()}/kpi/... and .../finding/..."
        )

    @property
    def alarm(self) -> str | None:
        """The current alarm, if any."""
        return self.health.alarm

    def prefix(self) -> str:
        """The topic prefix (``pue-agent/<site>`` unless configured)."""
        if self.options.topic_prefix:
            return self.options.topic_prefix.rstrip("/")
        return f"pue-agent/{self.site.id if self.site is not None else 'site'}"

    def _tls(self) -> ssl.SSLContext | None:
        o = self.options
        if not o.tls:
            return None
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(o.ca_file) if o.ca_file else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = o.tls_check_hostname
        if o.client_cert_file is not None:
            key = str(o.client_key_file) if o.client_key_file else None
            context.load_cert_chain(str(o.client_cert_file), key)
        return context

    def _new_client(self) -> aiomqtt.Client:
        o = self.options
        return aiomqtt.Client(
            o.host,
            o.broker_port(),
            username=o.username,
            password=self.password.get_secret_value() if self.password else None,
            identifier=o.client_id or f"pue-agent-sink-{self.name}",
            protocol=(
                aiomqtt.ProtocolVersion.V5 if o.protocol == "5" else aiomqtt.ProtocolVersion.V311
            ),
            keepalive=o.keepalive_s,
            tls_context=self._tls(),
            timeout=10,
        )

    async def _publish(self, client: aiomqtt.Client, messages: dict[str, bytes]) -> None:
        prefix = self.prefix()
        for suffix, payload in messages.items():
            # aiomqtt resolves a QoS 1 publish on the broker's PUBACK.
            await client.publish(f"{prefix}/{suffix}", payload, qos=1, retain=True)
            self.published += 1
            SINK_POINTS.labels(self.name, suffix.split("/", 1)[0]).inc()

    async def publish_frames(self, kind: str, frame: pl.DataFrame) -> int:
        """Publish KPI rows (``kpis``) or findings (``findings``); returns messages sent.

        Uses the running connection when :meth:`run` has one, else a short-lived one.
        """
        if kind == "kpis":
            today = datetime.now(self.site.zone if self.site else UTC).date().isoformat()
            messages = kpi_messages(frame, today=today)
        elif kind == "findings":
            latest = frame.group_by("rule_id", maintain_order=True).last()
            messages = {f"finding/{r['rule_id']}": _row_json(r) for r in latest.to_dicts()}
        else:
            raise ValueError(f"mqtt sink publishes kpis and findings, not {kind!r}")
        async with self._lock:
            if self._client is not None:
                await self._publish(self._client, messages)
            else:
                async with self._new_client() as client:
                    await self._publish(client, messages)
        return len(messages)

    async def publish_green_window(self, window: GreenWindow) -> bool:
        """Publish the green window (retained) unless the same hours were sent last.

        Returns whether a message was sent.
        """
        body = window.to_json()
        # Only the forecast itself decides a republication, not when it was computed.
        key = json.dumps({k: v for k, v in body.items() if k != "computed_at"}, sort_keys=True)
        if key == self._window_sent:
            return False
        message = {"green-window": json.dumps(body, ensure_ascii=False).encode()}
        async with self._lock:
            if self._client is not None:
                await self._publish(self._client, message)
            else:
                async with self._new_client() as client:
                    await self._publish(client, message)
        self._window_sent = key
        return True

    async def publish_derived(self) -> None:
        """Publish the store's latest KPIs and findings if they changed (retained, QoS 1).

        A broker error propagates (the caller reconnects); the hash moves only after
        every message of the publication was acknowledged.
        """
        feed = self._feed
        if feed is None:
            return
        self._derived_at = time.monotonic()
        today = datetime.now(self.site.zone if self.site else UTC).date().isoformat()

        async def kpis(frame: pl.DataFrame) -> int:
            return await self.publish_frames("kpis", frame)

        async def findings(frame: pl.DataFrame) -> int:
            return await self.publish_frames("findings", frame)

        try:
            await feed.publish_latest("kpis", 2, kpis, salt=today)
            await feed.publish_latest("findings", 1, findings)
        except (OSError, pl.exceptions.PolarsError) as exc:
            _log.error("cannot read the local store", sink=self.name, error=str(exc))
        if self.settings is not None and self.site is not None:
            try:
                window = await asyncio.to_thread(green_window_for, self.settings, self.site)
            except GreenWindowUnavailableError as exc:
                if not self._window_failing:  # logged once when it fails, once when it recovers
                    _log.error("green window unavailable", sink=self.name, error=str(exc))
                self._window_failing = True
            else:
                if self._window_failing:
                    _log.info("green window available again", sink=self.name)
                self._window_failing = False
                await self.publish_green_window(window)

    def _realtime_message(self, latest: LatestPower) -> dict[str, bytes]:
        snap = latest.snapshot()
        payload = {
            "metric": "pue_realtime",
            "label": snap.label,
            "value": snap.pue_realtime,
            "unit": "ratio",
            "as_of": snap.as_of,
            "e_dc_power_w": snap.e_dc_power_w,
            "e_it_power_w": snap.e_it_power_w,
            "power_by_role_w": snap.power_by_role_w,
            "meters_reporting": snap.meters_reporting,
            "meters_total": snap.meters_total,
        }
        return {"kpi/pue_realtime": _row_json(payload)}

    async def run(self, ctx: ConsumerContext) -> None:
        """Follow the journal, publish the real-time PUE; reconnect with backoff."""
        if self.site is None:
            self.site = ctx.site
        latest = LatestPower(self.site) if self.site is not None else None
        if self.options.derived and self.site is not None and self._feed is None:
            self._feed = await asyncio.to_thread(
                DerivedFeed.for_sink, self.name, self.settings or ctx.settings, ctx.aggregators
            )
        cursor = await asyncio.to_thread(ctx.journal.cursor, self.name)
        delay = self.options.reconnect_initial_s
        while True:
            try:
                async with self._new_client() as client:
                    self._client = client
                    self.health.clear()
                    delay = self.options.reconnect_initial_s
                    cursor = await self._follow(ctx, client, latest, cursor)
                    return
            except aiomqtt.MqttError as exc:
                self._client = None
                SINK_FAILURES.labels(self.name, "broker").inc()
                self.health.raise_alarm(
                    "unavailable",
                    f"sink {self.name!r}: MQTT broker {self.options.host}:"
                    f"{self.options.broker_port()} unavailable ({exc}); retrying",
                )
                if ctx.stopping.is_set():
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
            finally:
                self._client = None

    async def _follow(
        self,
        ctx: ConsumerContext,
        client: aiomqtt.Client,
        latest: LatestPower | None,
        cursor: int,
    ) -> int:
        last_publish = 0.0
        unpublished = cursor
        quiet_since: float | None = None
        while True:
            batches = await asyncio.to_thread(
                ctx.journal.read, cursor, limit=64, kinds=("readings",)
            )
            for batch in batches:
                if latest is not None:
                    latest.update(batch.frame)
                cursor = batch.seq
            due = time.monotonic() - last_publish >= self.options.realtime_interval_s
            caught_up = not batches
            if cursor > unpublished and (due or (caught_up and ctx.stopping.is_set())):
                if latest is not None:
                    async with self._lock:
                        await self._publish(client, self._realtime_message(latest))
                await asyncio.to_thread(ctx.journal.advance_cursor, self.name, cursor)
                metrics.JOURNAL_LAG.labels(self.name).set(ctx.journal.head[0] - cursor)
                unpublished, last_publish = cursor, time.monotonic()
            if batches:
                quiet_since = None
                continue
            if ctx.stopping.is_set():
                # Late commits of the pipeline's last batches arrive after `stopping`.
                now = time.monotonic()
                if quiet_since is None:
                    quiet_since = now
                    ctx.new_data.clear()
                if now - quiet_since >= 1.0 and cursor == unpublished:
                    if self._feed is not None:
                        await self._feed.wait_for_aggregator(ctx.journal.head[0])
                        await self.publish_derived()
                    return cursor
                await _sleep_or(ctx.new_data, 0.25)
                continue
            if time.monotonic() - self._derived_at >= self.options.derived_interval_s:
                await self.publish_derived()
            ctx.new_data.clear()
            await _sleep_or(
                ctx.new_data,
                min(self.options.realtime_interval_s, self.options.derived_interval_s),
                ctx.stopping,
            )


async def _sleep_or(
    event: asyncio.Event, seconds: float, other: asyncio.Event | None = None
) -> None:
    waiters = [asyncio.ensure_future(event.wait())]
    if other is not None:
        waiters.append(asyncio.ensure_future(other.wait()))
    await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> MqttSink:
    """Build the sink from its ``[[sinks]]`` table; the password secret is read now.

    Raises:
        ConfigError: naming ``sinks.<name>.<field>`` (never a secret's value).
    """
    try:
        parsed = MqttSinkOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"sinks.{name}: {validation_problems(exc)}") from exc
    parsed = settings.resolve_tls_files(parsed)
    password = None
    secrets: list[str] = []
    if parsed.password_secret is not None:
        password = read_secret(parsed.password_secret, settings)
        secrets.append(password.get_secret_value())
    return MqttSink(
        name=name,
        options=parsed,
        password=password,
        health=SinkHealth(sink=name, secrets=secrets),
        settings=settings,
    )

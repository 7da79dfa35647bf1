"""The NATS JetStream sink: this agent's journal, batch by batch, on a replicated stream.

Kind ``nats`` in ``[[sinks]]``. The sink follows its own journal cursor and publishes
every committed batch (readings and gap records) exactly as stored: the journal
payload (Arrow IPC, LZ4) and the batch's own hash-chain fields in headers, on subject
``<subject_prefix>.<agent_id>`` (wire format: :mod:`collectors.nats.link`). The site
aggregator (the ``nats`` collector) re-derives every link, so the chain of custody
crosses hosts unchanged.

Exactly-once: each message carries ``Nats-Msg-Id = <agent id>:<seq>``. The cursor
moves only after JetStream acknowledged every message of a page (the ack means the
stream stored it on a quorum of replicas). After an outage or a crash the sink re-sends
from its cursor; what was stored but not yet counted is dropped by JetStream's
duplicate window (and, beyond it, by the aggregator's per-agent chain position).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from pydantic import Field, ValidationError

from agent import metrics
from agent.journal import RawBatch
from agent.logs import get_logger
from agent.plugins import ConsumerContext
from agent.settings import AgentSettings, ConfigError, validation_problems
from agent.sinks.health import SINK_FAILURES, SINK_POINTS, SinkHealth
from collectors.nats.link import (
    Credentials,
    LinkError,
    NatsLinkOptions,
    close_quietly,
    connect,
    encode_headers,
    ensure_stream,
    raise_if_cancelled,
    translate,
)

__all__ = ["NatsSink", "NatsSinkOptions", "build"]

_log = get_logger("sinks.nats")

#: Errors of a publish that mean "NATS is not usable now": reconnect and re-send.
_LINK_ERRORS = (
    LinkError,
    OSError,
    TimeoutError,
    nats.errors.Error,
    nats.js.errors.Error,
)


class NatsSinkOptions(NatsLinkOptions):
    """Options of a ``[[sinks]]`` table with ``kind = "nats"``."""

    agent_id: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="This agent's id on the stream (default: the host name).",
    )
    page_batches: int = Field(256, gt=0, description="Journal batches published per ack wait.")
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


@dataclass
class NatsSink:
    """Consumer of kind ``nats``."""

    name: str
    options: NatsSinkOptions
    credentials: Credentials = field(default_factory=Credentials, repr=False)
    health: SinkHealth = field(default_factory=lambda: SinkHealth(sink="nats"))
    #: Batches acknowledged by JetStream (re-sends the duplicate window dropped included).
    published: int = field(default=0, init=False)
    #: Of those, re-sends JetStream recognised as duplicates.
    duplicates: int = field(default=0, init=False)

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        return (
            f"nats sink: journal of agent {o.agent_id!r} to stream {o.stream} "
            f"(R{o.replicas}) on {o.subject(o.agent_id)} via {', '.join(o.servers)}"
        )

    @property
    def alarm(self) -> str | None:
        """The current alarm, if any."""
        return self.health.alarm

    async def run(self, ctx: ConsumerContext) -> None:
        """Publish from the cursor until stopped and caught up; reconnect with backoff."""
        cursor = await asyncio.to_thread(ctx.journal.cursor, self.name)
        delay = self.options.reconnect_initial_s
        while True:
            client = None
            try:
                client = await connect(self.options, self.credentials, f"pue-agent-{self.name}")
                js = client.jetstream(timeout=self.options.request_timeout_s)
                await ensure_stream(js, self.options)
                cursor = await self._follow(ctx, js, cursor, client.max_payload)
                return
            except _LINK_ERRORS as exc:
                raise_if_cancelled()
                SINK_FAILURES.labels(self.name, "nats").inc()
                self.health.raise_alarm(
                    "unavailable",
                    f"sink {self.name!r}: {translate(exc, self.options)}; re-sending from "
                    f"journal batch {cursor + 1} when it is back",
                )
                if ctx.stopping.is_set():
                    return  # the cursor keeps the rest for the next start
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_s)
            finally:
                await close_quietly(client, self.options.request_timeout_s)

    async def _follow(
        self, ctx: ConsumerContext, js: JetStreamContext, cursor: int, max_payload: int
    ) -> int:
        o = self.options
        subject = o.subject(o.agent_id)
        while True:
            page = await asyncio.to_thread(ctx.journal.read_raw, cursor, limit=o.page_batches)
            if page:
                _check_sizes(page, max_payload)
                # Pipelined: every message of the page in flight at once, then all acks.
                futures = [
                    await js.publish_async(
                        subject, batch.payload, headers=encode_headers(o.agent_id, batch)
                    )
                    for batch in page
                ]
                acks = await asyncio.wait_for(asyncio.gather(*futures), o.request_timeout_s)
                self.published += len(acks)
                self.duplicates += sum(1 for ack in acks if ack.duplicate)
                SINK_POINTS.labels(self.name, "batches").inc(len(acks))
                cursor = page[-1].seq
                await asyncio.to_thread(ctx.journal.advance_cursor, self.name, cursor)
                metrics.JOURNAL_LAG.labels(self.name).set(ctx.journal.head[0] - cursor)
                self.health.clear()
                continue
            self.health.clear()
            if ctx.stopping.is_set():
                return cursor
            ctx.new_data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.new_data.wait(), timeout=1.0)
            raise_if_cancelled()  # a kill that met the timeout above came out as TimeoutError


def _check_sizes(page: list[RawBatch], max_payload: int) -> None:
    """Refuse to send a batch the server would refuse, with the fix in the message.

    A journal batch is one message and is never split (it is one link of the chain):
    a server whose ``max_payload`` is below it must be configured larger. The cursor
    stays, so nothing is lost while the alarm is up.
    """
    for batch in page:
        size = len(batch.payload) + 1024  # headers
        if size > max_payload:
            raise LinkError(
                f"journal batch {batch.seq} is {size} bytes, over the server's max_payload "
                f"of {max_payload}: raise max_payload in nats-server.conf (8MB in deploy/campus)"
            )


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> NatsSink:
    """Build the sink from its ``[[sinks]]`` table; secrets are read now.

    Raises:
        ConfigError: naming ``sinks.<name>.<field>`` (never a secret's value).
    """
    try:
        parsed = NatsSinkOptions.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"sinks.{name}: {validation_problems(exc)}") from exc
    parsed = settings.resolve_tls_files(parsed)
    credentials = Credentials.read(parsed, settings)
    return NatsSink(
        name=name,
        options=parsed,
        credentials=credentials,
        health=SinkHealth(sink=name, secrets=credentials.secrets()),
    )

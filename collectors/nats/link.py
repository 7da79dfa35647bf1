"""What the ``nats`` sink (publisher) and the ``nats`` collector (site aggregator) share.

The connection options (servers, TLS, per-agent credentials), the one place NATS
library errors are translated, the stream both sides create idempotently, and the
wire format of one journal batch on the stream:

* subject ``<subject_prefix>.<agent id>``;
* payload: the journal's own batch payload (Arrow IPC, LZ4) byte for byte, so the
  receiver re-derives the publisher's hash chain without re-encoding anything;
* headers: ``Nats-Msg-Id = <agent id>:<seq>`` (JetStream's duplicate window drops a
  re-send) and the chain fields ``Pue-*`` listed in :data:`HEADERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.journal import RawBatch, chain_hash
from agent.settings import AgentSettings, read_secret, secrets_dirs

__all__ = [
    "HEADERS",
    "Credentials",
    "LinkError",
    "NatsLinkOptions",
    "WireBatch",
    "close_quietly",
    "connect",
    "encode_headers",
    "ensure_stream",
    "is_permission_violation",
    "parse_message",
    "raise_if_cancelled",
    "translate",
]

#: Header names of a journal batch on the stream (besides ``Nats-Msg-Id``).
HEADERS = {
    "agent": "Pue-Agent",
    "seq": "Pue-Seq",
    "kind": "Pue-Kind",
    "source": "Pue-Source",
    "n_rows": "Pue-Rows",
    "created_us": "Pue-Created-Us",
    "prev_hash": "Pue-Prev-Hash",
    "hash": "Pue-Hash",
}


class LinkError(RuntimeError):
    """NATS is unreachable, refused us, or answered unusably (message never has a secret)."""


class NatsLinkOptions(BaseModel):
    """Connection and stream options shared by the sink and the collector."""

    model_config = ConfigDict(extra="forbid")

    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        min_length=1,
        description="Client URLs of the cluster's nodes (any reachable one will do).",
    )
    stream: str = Field("PUE_JOURNAL", pattern=r"^[A-Za-z0-9_-]+$")
    subject_prefix: str = Field("pue.journal", pattern=r"^[A-Za-z0-9_.-]+$")
    replicas: int = Field(1, ge=1, le=5, description="3 on a three-node cluster.")
    max_age_days: float = Field(
        14.0, gt=0, description="How long the stream keeps batches (the standby's replay)."
    )
    duplicate_window_s: float = Field(
        3600.0, gt=0, description="JetStream's de-duplication window for Nats-Msg-Id."
    )
    create_stream: bool = Field(True, description="Create the stream if it does not exist.")
    user: str | None = None
    password_secret: str | None = Field(None, description="Name of the password secret.")
    creds_secret: str | None = Field(
        None, description="Name of the secret holding a NATS .creds file (JWT + NKey seed)."
    )
    tls: bool = False
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)

    def subject(self, agent_id: str) -> str:
        """The subject an agent publishes its journal on."""
        return f"{self.subject_prefix}.{agent_id}"


@dataclass(frozen=True, slots=True)
class WireBatch:
    """One journal batch as received from the stream, chain fields checked for form."""

    agent: str
    seq: int
    kind: str
    source: str
    n_rows: int
    created_us: int
    prev_hash: bytes
    hash: bytes
    payload: bytes
    stream_seq: int

    def link_ok(self) -> bool:
        """Whether ``hash`` is the chain link of this batch's header, payload and ``prev_hash``."""
        return (
            chain_hash(
                self.prev_hash,
                self.seq,
                self.kind,
                self.source,
                self.n_rows,
                self.created_us,
                self.payload,
            )
            == self.hash
        )


def encode_headers(agent_id: str, batch: RawBatch) -> dict[str, str]:
    """The headers of one journal batch (``Nats-Msg-Id`` first)."""
    return {
        "Nats-Msg-Id": f"{agent_id}:{batch.seq}",
        HEADERS["agent"]: agent_id,
        HEADERS["seq"]: str(batch.seq),
        HEADERS["kind"]: batch.kind,
        HEADERS["source"]: batch.source,
        HEADERS["n_rows"]: str(batch.n_rows),
        HEADERS["created_us"]: str(batch.created_us),
        HEADERS["prev_hash"]: batch.prev_hash.hex(),
        HEADERS["hash"]: batch.hash.hex(),
    }


def parse_message(msg: Msg) -> WireBatch:
    """Read the chain fields of a stream message.

    Raises:
        ValueError: naming the header that is missing or malformed.
    """
    headers = msg.headers or {}

    def field_of(key: str) -> str:
        value = headers.get(HEADERS[key])
        if value is None:
            raise ValueError(f"header {HEADERS[key]} is missing")
        return value

    try:
        return WireBatch(
            agent=field_of("agent"),
            seq=int(field_of("seq")),
            kind=field_of("kind"),
            source=field_of("source"),
            n_rows=int(field_of("n_rows")),
            created_us=int(field_of("created_us")),
            prev_hash=bytes.fromhex(field_of("prev_hash")),
            hash=bytes.fromhex(field_of("hash")),
            payload=bytes(msg.data),
            stream_seq=int(msg.metadata.sequence.stream),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a journal batch: {exc}") from exc


def _tls(options: NatsLinkOptions) -> ssl.SSLContext | None:
    if not options.tls:
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(options.ca_file) if options.ca_file else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if options.client_cert_file is not None:
        key = str(options.client_key_file) if options.client_key_file else None
        context.load_cert_chain(str(options.client_cert_file), key)
    return context


@dataclass(frozen=True, slots=True)
class Credentials:
    """Secrets read at build time (never logged)."""

    password: SecretStr | None = None
    creds_file: Path | None = None

    @classmethod
    def read(cls, options: NatsLinkOptions, settings: AgentSettings) -> Credentials:
        """Read the configured secrets now (a missing one is a :class:`ConfigError`)."""
        password = (
            read_secret(options.password_secret, settings) if options.password_secret else None
        )
        creds_file = None
        if options.creds_secret is not None:
            read_secret(options.creds_secret, settings)  # fail at build time if absent
            # nats-py reads the .creds file itself: hand it the path, never the content.
            creds_file = next(
                d / options.creds_secret
                for d in secrets_dirs(settings)
                if (d / options.creds_secret).is_file()
            )
        return cls(password=password, creds_file=creds_file)

    def secrets(self) -> list[str]:
        """Secret values to redact from messages (defence in depth)."""
        return [self.password.get_secret_value()] if self.password is not None else []


async def connect(
    options: NatsLinkOptions,
    credentials: Credentials,
    name: str,
    *,
    async_errors: list[Exception] | None = None,
) -> Client:
    """Connect to the cluster (no endless reconnect: the caller retries with backoff).

    Args:
        options: Servers, TLS and timeouts.
        credentials: User/password or creds file.
        name: The client's name, as the server shows it.
        async_errors: If given, every error the server reports asynchronously on this
            connection is appended (a refused publish comes back this way, while the
            publish itself only times out).

    Raises:
        LinkError: unreachable, refused or TLS failure (never naming a secret).
    """
    kwargs: dict[str, Any] = {
        "servers": options.servers,
        "name": name,
        "connect_timeout": options.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": 3,
        "reconnect_time_wait": 0.2,
        "tls": _tls(options),
    }
    if options.user is not None:
        kwargs["user"] = options.user
    if credentials.password is not None:
        kwargs["password"] = credentials.password.get_secret_value()
    if credentials.creds_file is not None:
        kwargs["user_credentials"] = str(credentials.creds_file)

    seen: list[Exception] = []

    async def _remember(exc: Exception) -> None:
        # Logged once by the caller's failing/recovered log, not per attempt; kept because
        # nats-py ends a refused login with NoServersError, which alone says "unreachable".
        seen.append(exc)
        if async_errors is not None:
            async_errors.append(exc)

    try:
        client: Client = await nats.connect(error_cb=_remember, **kwargs)
    except Exception as exc:
        if any(_is_refusal(e) for e in seen):
            raise LinkError(f"NATS refused the credentials ({', '.join(options.servers)})") from exc
        raise translate(exc, options) from exc
    return client


async def close_quietly(client: Client | None, timeout_s: float) -> None:
    """Close ``client`` within ``timeout_s``, ignoring errors.

    Bounded: a stop or a finished command must not wait on a cluster that no longer
    answers, and a failed close has nothing left to lose.
    """
    if client is None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), timeout_s)


def is_permission_violation(exc: BaseException) -> bool:
    """Whether the server refused a publish or subscribe on a subject the user may not use."""
    return "permissions violation" in str(exc).lower()


def _is_refusal(exc: BaseException) -> bool:
    # During the handshake nats-py reports the server's -ERR as a plain Error whose text
    # is the server's ("nats: 'Authorization Violation'"), not as AuthorizationError.
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def translate(exc: BaseException, options: NatsLinkOptions) -> LinkError:
    """The one translation of NATS library errors into :class:`LinkError`."""
    servers = ", ".join(options.servers)
    if isinstance(exc, LinkError):
        return exc
    # Before OSError: TimeoutError is one, and a server that is there but silent is not
    # an unreachable one.
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        return LinkError(f"NATS did not answer in time ({servers})")
    if isinstance(exc, nats.errors.NoServersError | OSError | nats.errors.ConnectionClosedError):
        return LinkError(f"NATS unreachable ({servers}): {type(exc).__name__}")
    if _is_refusal(exc):
        return LinkError(f"NATS refused the credentials ({servers})")
    if isinstance(exc, nats.js.errors.APIError):
        return LinkError(f"JetStream refused the request: {exc.description or exc.code}")
    return LinkError(f"NATS error ({servers}): {type(exc).__name__}")


async def ensure_stream(js: JetStreamContext, options: NatsLinkOptions) -> None:
    """Create the journal stream if it is missing (and allowed to); idempotent.

    Raises:
        LinkError: if the stream is missing and may not be created, or creation fails.
    """
    try:
        await js.stream_info(options.stream)
        return
    except nats.js.errors.NotFoundError:
        if not options.create_stream:
            raise LinkError(f"stream {options.stream} does not exist") from None
    config = StreamConfig(
        name=options.stream,
        subjects=[f"{options.subject_prefix}.>"],
        num_replicas=options.replicas,
        max_age=options.max_age_days * 86400.0,
        duplicate_window=options.duplicate_window_s,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(options.stream)  # created concurrently by another agent


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the running task was told to stop.

    nats-py awaits replies with ``asyncio.wait_for``, which on Python 3.11 turns a
    cancellation that arrives together with its timeout into a ``TimeoutError``: without
    this check a stopping collector or sink takes it for a link error and reconnects,
    and the agent never stops. Called wherever a link error is handled, and in loops.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

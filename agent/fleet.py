"""The fleet: every site's KPI summary in one JetStream KV bucket, signed with the site's key.

Several sites share one NATS account. Each site's agent runs the ``fleet`` sink
(``[[sinks]] kind = "fleet"``): whenever its aggregator rewrote the stored KPIs (the
live refresh), and at least every ``heartbeat_s``, it puts a compact summary of the
newest month under key ``<site id>`` of bucket ``pue_fleet``. ``pue-agent kpi --fleet``
and ``GET /api/v1/fleet`` read the bucket through one function, :func:`fleet_list`.

A summary is JSON: ``{"summary": {...}, "signature": <base64 Ed25519 or null>}``. The
signature covers the canonical bytes of ``summary`` (keys sorted, no spaces, ASCII)
and is made with the site's report-signing key (:mod:`agent.keys`); the summary
carries the public key and its fingerprint, so a reader tells *valid* (intact, signed
by the key shown), *unsigned* and *INVALID* (altered, key and fingerprint disagree,
published under another site's key, or not the key the reader pinned in
``trusted_keys``). Without pinning, *valid* proves integrity under the fingerprint
shown: compare it with the site's report key (``pue-agent keys show``).

The sink only reads the store and writes the bucket: a failed publish raises the
sink's alarm once, clears it on the next success, and never touches ingest. Decisions
and configuration: ``docs/cluster.md`` (Fleet).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import nats.errors
import nats.js.errors
import polars as pl
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from pydantic import Field, ValidationError

from agent import __version__
from agent.aggregator import DerivedFeed, locate_store
from agent.keys import SigningKey, SigningKeyError, fingerprint, load_public_key, load_signing_key
from agent.logs import get_logger
from agent.plugins import ConsumerContext
from agent.settings import AgentSettings, ConfigError, validation_problems
from agent.sinks.health import SinkHealth
from agent.site import Site
from agent.store import IntervalStore
from collectors.nats.link import (
    Credentials,
    LinkError,
    NatsLinkOptions,
    close_quietly,
    connect,
    is_permission_violation,
    raise_if_cancelled,
    translate,
)

__all__ = [
    "FLEET_BUCKET",
    "SUMMARY_SCHEMA_VERSION",
    "FleetNotConfiguredError",
    "FleetOptions",
    "FleetRow",
    "FleetSink",
    "SignatureStatus",
    "build",
    "build_summary",
    "canonical_bytes",
    "envelope",
    "fleet_list",
    "fleet_options",
    "kpi_stamp",
    "link_failure_code",
    "read_fleet",
    "retire_site",
    "row_of",
    "trusted_keys",
]

_log = get_logger("fleet")

FLEET_BUCKET = "pue_fleet"
#: Version of the summary's fields; a reader shows other versions as they come.
SUMMARY_SCHEMA_VERSION = 1

SignatureStatus = Literal["valid", "unsigned", "INVALID"]

#: Errors of a publish or read that mean "NATS is not usable now".
_LINK_ERRORS = (LinkError, OSError, TimeoutError, nats.errors.Error, nats.js.errors.Error)


class FleetNotConfiguredError(ConfigError):
    """No NATS connection for the fleet in the config (and no override given)."""


class FleetOptions(NatsLinkOptions):
    """Options of a ``[[sinks]]`` table with ``kind = "fleet"`` (also what a reader uses).

    Connection fields (``servers``, TLS, ``user``/``password_secret``/``creds_secret``,
    ``replicas``) not given here are taken from the agent's ``nats`` collector, else its
    ``nats`` sink: the same NATS account the site already uses.
    """

    bucket: str = Field(FLEET_BUCKET, pattern=r"^[A-Za-z0-9_-]+$")
    heartbeat_s: float = Field(
        60.0, gt=0, description="Longest time between two summaries of a running site."
    )
    check_s: float = Field(2.0, gt=0, description="How often the store's KPIs are looked at.")
    sign: bool = Field(True, description="Sign with the site's report key when there is one.")
    stale_after_s: float | None = Field(
        None, gt=0, description="Reader: older summaries are stale (default 2 x heartbeat_s)."
    )
    trusted_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Reader: site id -> its public key (PEM file, or raw key in hex/base64).",
    )
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)


# -- the summary ------------------------------------------------------------------------------


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _newest_month_file(store_root: Path) -> tuple[str, Path] | None:
    """The newest month's stored KPI file (the store's ``kpis/month=YYYY-MM`` layout)."""
    files = sorted((store_root / "kpis").glob("month=*/kpis.parquet"))
    if not files:
        return None
    return files[-1].parent.name.removeprefix("month="), files[-1]


def kpi_stamp(store_root: Path) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of the newest month's KPI file: changes on every refresh."""
    found = _newest_month_file(store_root)
    if found is None:
        return None
    try:
        st = found[1].stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def build_summary(
    site: Site,
    store_root: Path,
    *,
    key: SigningKey | None,
    heartbeat_s: float,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """The site's summary of its newest stored month (``None`` before the first KPIs).

    Values are the stored ``month`` and ``ttm`` rows of that month exactly as the live
    refresh (or ``pue-agent kpi``) wrote them; ``computed_at`` is when they were written.
    """
    found = _newest_month_file(store_root)
    if found is None:
        return None
    month, path = found
    try:
        computed_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        rows = IntervalStore(store_root).read_kpis(month=month)
    except (OSError, pl.exceptions.PolarsError):
        return None
    rows = rows.filter(
        (pl.col("period") == month)
        & pl.col("period_kind").is_in(["month", "ttm"])
        & (pl.col("site") == site.id)
    )
    if rows.height == 0:
        return None
    by = {(r["period_kind"], r["metric"]): r for r in rows.iter_rows(named=True)}

    def value(kind: str, metric: str) -> float | None:
        row = by.get((kind, metric))
        return None if row is None else _finite(row["value"])

    def of(kind: str, metric: str, column: str) -> Any:
        row = by.get((kind, metric))
        return None if row is None else row[column]

    ttm_start, ttm_end = of("ttm", "pue", "period_start"), of("ttm", "pue", "period_end")
    category = of("month", "pue", "category")
    summary: dict[str, Any] = {
        "schema": SUMMARY_SCHEMA_VERSION,
        "site": site.id,
        "name": site.name,
        "month": month,
        "ttm_start": None if ttm_start is None else _iso(ttm_start),
        "ttm_end": None if ttm_end is None else _iso(ttm_end),
        "category": None if category is None else int(category),
        "pue_month": value("month", "pue"),
        "pue_month_status": of("month", "pue", "status"),
        "coverage_month": _finite(of("month", "pue", "coverage")),
        "pue_ttm": value("ttm", "pue"),
        "pue_ttm_status": of("ttm", "pue", "status"),
        "coverage_ttm": _finite(of("ttm", "pue", "coverage")),
        "ref_month": value("month", "ref"),
        "ref_ttm": value("ttm", "ref"),
        "cue_month": value("month", "cue"),
        "cue_ttm": value("ttm", "cue"),
        "computed_at": _iso(computed_at),
        "published_at": _iso(now or datetime.now(UTC)),
        "heartbeat_s": heartbeat_s,
        "agent_version": __version__,
        "key_fingerprint": None if key is None else key.fingerprint,
        "public_key": None if key is None else _raw_public(key.public).hex(),
    }
    return summary


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def canonical_bytes(summary: dict[str, Any]) -> bytes:
    """The bytes a summary's signature covers: JSON, keys sorted, no spaces, ASCII."""
    return json.dumps(
        summary, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def envelope(summary: dict[str, Any], key: SigningKey | None) -> bytes:
    """What is stored under the site's key: the summary and its signature (or null)."""
    signature = (
        None
        if key is None
        else base64.b64encode(key.private.sign(canonical_bytes(summary))).decode("ascii")
    )
    return json.dumps({"summary": summary, "signature": signature}, sort_keys=True).encode()


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One site as ``kpi --fleet`` and ``GET /api/v1/fleet`` show it."""

    site: str
    name: str | None
    month: str | None
    category: int | None
    pue_month: float | None
    pue_month_status: str | None
    coverage_month: float | None
    pue_ttm: float | None
    pue_ttm_status: str | None
    coverage_ttm: float | None
    ref_month: float | None
    ref_ttm: float | None
    cue_month: float | None
    cue_ttm: float | None
    computed_at: str | None
    published_at: str | None
    #: Seconds since the summary was published (when the reader read it).
    age_s: float | None
    stale: bool
    signature: SignatureStatus
    #: Why a signature is INVALID (empty otherwise).
    signature_detail: str
    key_fingerprint: str | None
    agent_version: str | None

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object."""
        return asdict(self)


def _verify(
    site_key: str, document: dict[str, Any], trusted: dict[str, Ed25519PublicKey]
) -> tuple[SignatureStatus, str]:
    summary = document.get("summary")
    signature = document.get("signature")
    if not isinstance(summary, dict):
        return "INVALID", "not a fleet summary"
    if summary.get("site") != site_key:
        return "INVALID", f"published under key {site_key!r} but names site {summary.get('site')!r}"
    pinned = trusted.get(site_key)
    if signature is None:
        if pinned is not None:
            return "INVALID", "unsigned, but a trusted key is configured for this site"
        return "unsigned", ""
    try:
        raw = bytes.fromhex(str(summary.get("public_key")))
        public = Ed25519PublicKey.from_public_bytes(raw)
        signed = base64.b64decode(str(signature), validate=True)
        message = canonical_bytes(summary)
    except (ValueError, TypeError):
        return "INVALID", "public key or signature unreadable"
    if fingerprint(public) != summary.get("key_fingerprint"):
        return "INVALID", "key fingerprint does not match the public key"
    if pinned is not None and _raw_public(pinned) != raw:
        return "INVALID", "signed with a key other than the trusted one"
    try:
        public.verify(signed, message)
    except InvalidSignature:
        return "INVALID", "signature does not match the summary"
    return "valid", ""


def _seconds_since(stamp: object, now: datetime) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (now - moment).total_seconds())


def row_of(
    site_key: str,
    data: bytes | None,
    *,
    trusted: dict[str, Ed25519PublicKey],
    stale_after_s: float | None,
    now: datetime,
) -> FleetRow:
    """One bucket entry as a row: values, age, staleness and signature status."""
    try:
        document = json.loads(data or b"")
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {}
    status, detail = _verify(site_key, document, trusted)
    raw_summary = document.get("summary")
    summary: dict[str, Any] = raw_summary if isinstance(raw_summary, dict) else {}

    def text(name: str) -> str | None:
        got = summary.get(name)
        return got if isinstance(got, str) else None

    age_s = _seconds_since(summary.get("published_at"), now)
    heartbeat = _finite(summary.get("heartbeat_s"))
    limit = stale_after_s if stale_after_s is not None else 2 * (heartbeat or 60.0)
    category = summary.get("category")
    return FleetRow(
        site=site_key,
        name=text("name"),
        month=text("month"),
        category=category if isinstance(category, int) else None,
        pue_month=_finite(summary.get("pue_month")),
        pue_month_status=text("pue_month_status"),
        coverage_month=_finite(summary.get("coverage_month")),
        pue_ttm=_finite(summary.get("pue_ttm")),
        pue_ttm_status=text("pue_ttm_status"),
        coverage_ttm=_finite(summary.get("coverage_ttm")),
        ref_month=_finite(summary.get("ref_month")),
        ref_ttm=_finite(summary.get("ref_ttm")),
        cue_month=_finite(summary.get("cue_month")),
        cue_ttm=_finite(summary.get("cue_ttm")),
        computed_at=text("computed_at"),
        published_at=text("published_at"),
        age_s=age_s,
        stale=age_s is None or age_s > limit,
        signature=status,
        signature_detail=detail,
        key_fingerprint=text("key_fingerprint"),
        agent_version=text("agent_version"),
    )


async def _bucket(js: JetStreamContext, options: FleetOptions, *, create: bool) -> KeyValue | None:
    try:
        return await js.key_value(options.bucket)
    except nats.js.errors.BucketNotFoundError:
        if not create:
            return None
    # One value per site, no TTL: a site that stopped stays listed (as stale), not hidden.
    config = KeyValueConfig(bucket=options.bucket, history=1, replicas=options.replicas)
    try:
        return await js.create_key_value(config)
    except nats.js.errors.BadRequestError:
        return await js.key_value(options.bucket)  # created concurrently by another site


@contextlib.asynccontextmanager
async def _open_bucket(
    options: FleetOptions,
    credentials: Credentials,
    client_name: str,
    *,
    async_errors: list[Exception] | None = None,
) -> AsyncIterator[KeyValue | None]:
    """A short-lived connection to the fleet bucket (``None`` if it does not exist yet)."""
    client = await connect(options, credentials, client_name, async_errors=async_errors)
    try:
        js = client.jetstream(timeout=options.request_timeout_s)
        yield await _bucket(js, options, create=False)
    finally:
        await close_quietly(client, options.request_timeout_s)


async def read_fleet(
    options: FleetOptions,
    credentials: Credentials,
    *,
    trusted: dict[str, Ed25519PublicKey],
    stale_after_s: float | None = None,
) -> list[FleetRow]:
    """Every site's row, sorted by site id (empty when no site has published yet).

    Raises:
        LinkError: NATS unreachable, refused, or JetStream refused the read.
    """
    stale = stale_after_s if stale_after_s is not None else options.stale_after_s
    try:
        async with _open_bucket(options, credentials, "pue-agent-fleet-reader") as kv:
            if kv is None:
                return []
            try:
                keys = await kv.keys()
            except nats.js.errors.NoKeysError:
                return []
            now = datetime.now(UTC)
            rows = []
            for key in sorted(keys):
                try:
                    entry = await kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    continue  # deleted between the listing and the read
                rows.append(row_of(key, entry.value, trusted=trusted, stale_after_s=stale, now=now))
            return rows
    except _LINK_ERRORS as exc:
        raise translate(exc, options) from exc


def link_failure_code(exc: LinkError) -> Literal["unreachable", "refused", "protocol"]:
    """What kind of failure a :class:`LinkError` from :func:`read_fleet` is (for exit codes)."""
    message = str(exc)
    if message.startswith("NATS refused"):
        return "refused"
    if message.startswith(("NATS unreachable", "NATS did not answer")):
        return "unreachable"
    return "protocol"


def _link_fields(settings: AgentSettings) -> dict[str, Any]:
    """The connection fields of the agent's ``nats`` collector, else its ``nats`` sink."""
    wanted = set(NatsLinkOptions.model_fields)
    for entries in (settings.collectors, settings.sinks):
        for entry in entries:
            if entry.kind == "nats" and entry.enabled:
                return {k: v for k, v in entry.options().items() if k in wanted}
    return {}


def fleet_options(settings: AgentSettings, *, servers: list[str] | None = None) -> FleetOptions:
    """The fleet options of this agent: its ``fleet`` table over its NATS connection.

    Args:
        settings: The agent's settings.
        servers: Override of the NATS servers (``kpi --fleet --nats-url``).

    Raises:
        FleetNotConfiguredError: no NATS configured and no ``servers`` given.
        ConfigError: bad options.
    """
    own: dict[str, Any] | None = None
    name = "fleet"
    for entry in settings.sinks:
        if entry.kind == "fleet" and entry.enabled:
            own, name = entry.options(), entry.name or entry.kind
            break
    base = _link_fields(settings)
    if own is None and not base and servers is None:
        raise FleetNotConfiguredError(
            'no NATS configured for the fleet: add a [[sinks]] table with kind = "fleet" '
            "(or a nats collector or sink), or pass --nats-url"
        )
    merged = {**base, **(own or {})}
    if servers is not None:
        merged["servers"] = servers
    try:
        parsed = FleetOptions.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"sinks.{name}: {validation_problems(exc)}") from exc
    return settings.resolve_tls_files(parsed)


def trusted_keys(options: FleetOptions, settings: AgentSettings) -> dict[str, Ed25519PublicKey]:
    """The pinned public keys by site id.

    Raises:
        ConfigError: naming the site whose key cannot be read.
    """
    out: dict[str, Ed25519PublicKey] = {}
    for site_id, value in options.trusted_keys.items():
        candidate = settings.resolve(Path(value))
        try:
            out[site_id] = load_public_key(candidate if candidate.is_file() else value)
        except SigningKeyError as exc:
            raise ConfigError(f"fleet trusted_keys.{site_id}: {exc}") from exc
    return out


async def fleet_list(
    settings: AgentSettings,
    *,
    servers: list[str] | None = None,
    stale_after_s: float | None = None,
    trust: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every site's row as JSON objects: what ``kpi --fleet --json`` prints and the API returns.

    Args:
        settings: The reader's settings (NATS connection, ``trusted_keys``).
        servers: Override of the NATS servers.
        stale_after_s: Override of the staleness limit.
        trust: More pinned keys (site id -> key), over the configured ones.

    Raises:
        FleetNotConfiguredError: no NATS configured and no ``servers`` given.
        ConfigError: bad options or keys.
        LinkError: NATS unreachable or refused (:func:`link_failure_code` tells which).
    """
    options = fleet_options(settings, servers=servers)
    if trust:
        options = options.model_copy(update={"trusted_keys": {**options.trusted_keys, **trust}})
    credentials = Credentials.read(options, settings)
    keys = trusted_keys(options, settings)
    rows = await read_fleet(options, credentials, trusted=keys, stale_after_s=stale_after_s)
    return [row.to_json() for row in rows]


async def retire_site(
    settings: AgentSettings, site_id: str, *, servers: list[str] | None = None
) -> str:
    """Purge ``site_id``'s summary from the fleet bucket: a decommissioned site leaves the list.

    Without this a site that stopped for good stays listed as stale (the bucket has no
    TTL, on purpose: a site that goes quiet must show). Run with the site's own config:
    as deployed, its NATS user may write its own key and no other, and a purge is a
    write. The bucket keeps no history of the key after a purge.

    Args:
        settings: The site's settings (its ``fleet`` sink's connection).
        site_id: The site whose summary goes.
        servers: Override of the NATS servers.

    Returns:
        The bucket's name.

    Raises:
        FleetNotConfiguredError: no NATS configured and no ``servers`` given.
        ConfigError: bad options.
        LinkError: NATS unreachable or refused, the bucket missing, or the purge refused.
    """
    options = fleet_options(settings, servers=servers)
    credentials = Credentials.read(options, settings)
    refusals: list[Exception] = []
    try:
        async with _open_bucket(
            options, credentials, "pue-agent-fleet-retire", async_errors=refusals
        ) as kv:
            if kv is None:
                raise LinkError(f"the fleet bucket {options.bucket} does not exist")
            await kv.purge(site_id)
            return options.bucket
    except _LINK_ERRORS as exc:
        if any(is_permission_violation(e) for e in refusals):
            # The server says why on the side; the purge itself only times out.
            raise LinkError(
                f"NATS refused the purge of {options.bucket}/{site_id}: this user may not "
                "write that key (permissions violation)"
            ) from exc
        raise translate(exc, options) from exc


# -- the publishing sink ----------------------------------------------------------------------


@dataclass
class FleetSink:
    """Consumer of kind ``fleet``: the site's summary into the fleet bucket."""

    name: str
    options: FleetOptions
    key: SigningKey | None
    credentials: Credentials = field(default_factory=Credentials, repr=False)
    health: SinkHealth = field(default_factory=lambda: SinkHealth(sink="fleet"))
    #: Summaries put into the bucket.
    published: int = field(default=0, init=False)
    _kv: KeyValue | None = field(default=None, init=False, repr=False)
    _client: Client | None = field(default=None, init=False, repr=False)
    _published_stamp: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _next_heartbeat: float = field(default=float("-inf"), init=False, repr=False)
    _next_attempt: float = field(default=float("-inf"), init=False, repr=False)
    _delay_s: float = field(default=0.5, init=False, repr=False)

    def __post_init__(self) -> None:
        self._delay_s = self.options.reconnect_initial_s

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        o = self.options
        signed = f"signed by key {self.key.fingerprint[:16]}…" if self.key else "unsigned"
        return (
            f"fleet: site KPI summary to KV bucket {o.bucket} via {', '.join(o.servers)} "
            f"({signed}, at least every {o.heartbeat_s:g} s)"
        )

    @property
    def alarm(self) -> str | None:
        """The current alarm, if any."""
        return self.health.alarm

    async def run(self, ctx: ConsumerContext) -> None:
        """Publish on each KPI refresh and heartbeat until stopped; never reads the journal."""
        store = locate_store(ctx.settings)
        feed = DerivedFeed.for_sink(self.name, ctx.settings, ctx.aggregators)
        try:
            while True:
                stopping = ctx.stopping.is_set()
                try:
                    await self._step(ctx, feed, store.root, stopping=stopping)
                except Exception as exc:  # noqa: BLE001 - a summary must never stop the agent
                    raise_if_cancelled()
                    self._alarm("failed", f"{type(exc).__name__}: {exc}")
                if stopping:
                    return
                ctx.new_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.new_data.wait(), timeout=self.options.check_s)
                raise_if_cancelled()
        finally:
            await self._close()

    async def _step(
        self, ctx: ConsumerContext, feed: DerivedFeed, store_root: Path, *, stopping: bool
    ) -> None:
        """Move the cursor to the head; publish if the KPIs changed or a heartbeat is due."""
        # Nothing of the journal is needed: the cursor stays at the head so this sink never
        # holds batches back from pruning.
        head = ctx.journal.head[0]
        if ctx.journal.cursor(self.name) < head:
            await asyncio.to_thread(ctx.journal.advance_cursor, self.name, head)
        if stopping:
            # The last summary reflects the aggregator's last refresh, like the other sinks.
            await feed.wait_for_aggregator(head)
        stamp = await asyncio.to_thread(kpi_stamp, store_root)
        now = time.monotonic()
        due = stamp != self._published_stamp or now >= self._next_heartbeat or stopping
        if ctx.site is None or stamp is None or not due or now < self._next_attempt:
            return
        if await self._publish(ctx.site, store_root):
            self._published_stamp = stamp
            self._next_heartbeat = now + self.options.heartbeat_s
            self._delay_s = self.options.reconnect_initial_s
        else:
            self._next_attempt = now + self._delay_s
            self._delay_s = min(self._delay_s * 2, self.options.reconnect_max_s)

    def _alarm(self, kind: str, reason: str) -> None:
        """Raise the alarm once per outage (logged once; cleared, and logged, on success)."""
        if self.health.alarm is None:
            self.health.raise_alarm(
                kind, f"sink {self.name!r}: fleet summary not published: {reason}"
            )

    async def _publish(self, site: Site, store_root: Path) -> bool:
        """Put one summary; ``False`` (alarm raised) if NATS is not usable now."""
        summary = await asyncio.to_thread(
            build_summary, site, store_root, key=self.key, heartbeat_s=self.options.heartbeat_s
        )
        if summary is None:
            return True
        try:
            kv = await asyncio.wait_for(self._bucket(), self.options.request_timeout_s * 2)
            await kv.put(site.id, envelope(summary, self.key))
        except _LINK_ERRORS as exc:
            raise_if_cancelled()
            await self._close()
            self._alarm("unavailable", str(translate(exc, self.options)))
            return False
        self.published += 1
        self.health.clear()
        return True

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._client = await connect(self.options, self.credentials, f"pue-agent-{self.name}")
            js = self._client.jetstream(timeout=self.options.request_timeout_s)
            kv = await _bucket(js, self.options, create=True)
            assert kv is not None  # create=True never answers None
            self._kv = kv
        return self._kv

    async def _close(self) -> None:
        client, self._client, self._kv = self._client, None, None
        await close_quietly(client, self.options.request_timeout_s)


def _signing_key(settings: AgentSettings, name: str) -> SigningKey | None:
    try:
        return load_signing_key(settings)
    except SigningKeyError as exc:
        # No key is a normal deployment (summaries go out unsigned); an unreadable one is
        # worth a warning, and still must not stop the agent.
        _log.warning("fleet summaries unsigned", sink=name, reason=str(exc))
        return None


def build(name: str, options: dict[str, Any], settings: AgentSettings) -> FleetSink:
    """Build the sink from its ``[[sinks]]`` table (connection inherited, see FleetOptions).

    Raises:
        ConfigError: naming ``sinks.<name>.<field>`` (never a secret's value).
    """
    merged = {**_link_fields(settings), **options}
    try:
        parsed = FleetOptions.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"sinks.{name}: {validation_problems(exc)}") from exc
    parsed = settings.resolve_tls_files(parsed)
    credentials = Credentials.read(parsed, settings)
    key = _signing_key(settings, name) if parsed.sign else None
    return FleetSink(
        name=name,
        options=parsed,
        key=key,
        credentials=credentials,
        health=SinkHealth(sink=name, secrets=credentials.secrets()),
    )

"""The web console: static pages, browser sessions and the JSON the pages read.

The console is served by the agent's own HTTP API (same listener, TLS and tokens; see
``docs/console.md``). It adds:

* the page itself (``agent/api/static/``: hand-written HTML, CSS and JS, no build
  step, nothing fetched from the internet), public because it holds no secrets;
* **sessions**: ``POST /api/v1/console/login`` exchanges an API token for an opaque
  session id in a cookie (``HttpOnly; SameSite=Strict``, ``Secure`` over TLS). The
  server keeps only the token's SHA-256 digest per session and asks the live
  :class:`agent.api.auth.TokenTable` for its role on every request, so a token removed
  at a reload ends its sessions at once;
* the ops view's figures (``overview``: stored KPIs of today, this month and the TTM,
  the last 24 hours; ``live`` and the ``events`` SSE stream: real-time PUE, power by
  role, silent meters, journal lag and alarms) and the auditor view's (``audit``:
  reports on disk, their findings and the signing key's fingerprint; ``verify``: the
  checks of ``pue-agent verify`` run on an uploaded bundle).

Every figure comes from the source the rest of the API uses (the stored KPI rows,
the real-time follower, the report bundles); nothing is computed a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from aiohttp import web

from agent import __version__, keys, metrics
from agent.api.auth import Role, TokenTable, parse_bearer, token_digest
from agent.api.prometheus import latest_kpis
from agent.api.sources import (
    KpiSource,
    RealtimeFollower,
    SourceUnavailableError,
    report_path,
)
from agent.logs import get_logger
from agent.periods import MONTH_RE
from agent.pipeline import Agent
from agent.report.bundle import FINDINGS
from agent.report.manifest import sha256_stream
from agent.report.verify import verify_bundle

__all__ = [
    "CONSOLE_ROUTE_ROLES",
    "LAG_ALARM_BATCHES",
    "SESSION_COOKIE",
    "STATIC_DIR",
    "Console",
    "SessionTable",
    "overview_figures",
]

_log = get_logger("api.console")

STATIC_DIR = Path(__file__).parent / "static"
SESSION_COOKIE = "pue_session"
#: A session ends this long after login (the token stays valid; log in again).
SESSION_TTL_S = 12 * 3600
#: Oldest sessions are dropped beyond this many (each login adds one).
MAX_SESSIONS = 1024
#: A consumer this many journal batches behind the head is shown as an alarm.
LAG_ALARM_BATCHES = 1000
#: A meter whose device had no good poll for this long is listed as silent.
SILENT_AFTER_S = 60.0
#: Largest bundle accepted by the verification page.
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
#: Seconds between two live (SSE) updates.
LIVE_PERIOD_S = 2.0

_OPS = frozenset({Role.OPS})
_BOTH = frozenset({Role.OPS, Role.AUDITOR})

#: Roles per console route (merged into ``ROUTE_ROLES``); routes not listed are public.
CONSOLE_ROUTE_ROLES: dict[str, frozenset[Role]] = {
    "/api/v1/console/session": _BOTH,
    "/api/v1/console/overview": _OPS,
    "/api/v1/console/live": _OPS,
    "/api/v1/console/events": _OPS,
    "/api/v1/console/audit": _BOTH,
    "/api/v1/console/verify": _BOTH,
    "/api/v1/reports/{month}/pdf": _BOTH,
}

#: Static files by URL name, with their media types (nothing else under /console/ is served).
_STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Scripts and styles only from this origin; no inline script; never framed.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


# -- sessions -------------------------------------------------------------------------------


@dataclass
class SessionTable:
    """Browser sessions: session id → (token digest, expiry). Never the token itself."""

    ttl_s: float = SESSION_TTL_S
    limit: int = MAX_SESSIONS
    _sessions: dict[str, tuple[bytes, float]] = field(default_factory=dict)

    def open(self, digest: bytes) -> str:
        """A new session for the token with ``digest``; returns its id."""
        now = time.monotonic()
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        while len(self._sessions) >= self.limit:
            # Dicts keep insertion order: the first entry is the oldest login.
            self._sessions.pop(next(iter(self._sessions)))
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (digest, now + self.ttl_s)
        return session

    def digest_of(self, session: str | None) -> bytes | None:
        """The token digest of a live session, or ``None``."""
        if not session:
            return None
        entry = self._sessions.get(session)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._sessions.pop(session, None)
            return None
        return entry[0]

    def close(self, session: str | None) -> None:
        """End a session (logout)."""
        if session:
            self._sessions.pop(session, None)

    def __len__(self) -> int:
        return len(self._sessions)


# -- figures --------------------------------------------------------------------------------


def _kpi_cell(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "period": row["period"],
        "value": _finite(row["value"]),
        "unit": row["unit"] or "",
        "status": row["status"],
        "coverage": _finite(row["coverage"]),
        "category": row["category"],
    }


def overview_figures(kpis: pl.DataFrame, site_id: str, tz: str, now: datetime) -> dict[str, Any]:
    """Stored KPIs for the ops view: today, this month, the TTM and the last 24 hours.

    Today is the stored ``day`` row of the site-local date of ``now`` (else the latest
    day before it); the month and TTM rows are the latest stored, as ``/metrics`` and
    ``pue-agent kpi --json`` give them. The 24-hour series are the stored ``hour`` rows
    starting in the 24 hours before ``now``: energy PUE and mean power (kWh in one
    hour = kW).

    Args:
        kpis: The KPI history (``KPI_SCHEMA``).
        site_id: The site.
        tz: The site's time zone name.
        now: The current time (timezone-aware).
    """
    site_rows = kpis.filter(pl.col("site").is_null() | (pl.col("site") == site_id))
    today = now.astimezone(ZoneInfo(tz)).date().isoformat()
    days = site_rows.filter((pl.col("period_kind") == "day") & (pl.col("period") <= today))
    latest = latest_kpis(site_rows.filter(pl.col("period_kind") != "day"), site_id)
    latest = pl.concat([latest, latest_kpis(days, site_id)], how="vertical_relaxed")
    cells: dict[str, dict[str, Any]] = {}
    for row in latest.iter_rows(named=True):
        cells.setdefault(row["period_kind"], {})[row["metric"]] = _kpi_cell(row)
    hours = (
        site_rows.filter(
            (pl.col("period_kind") == "hour")
            & (pl.col("period_start") >= now - timedelta(hours=24))
            & (pl.col("period_start") < now)
            & pl.col("metric").is_in(["pue", "e_dc_kwh", "e_it_kwh"])
        )
        .sort("period_start")
        .group_by("period_start", "metric", maintain_order=True)
        .last()
    )
    series: dict[str, dict[str, Any]] = {}
    for row in hours.iter_rows(named=True):
        start = _iso(row["period_start"]) or ""
        point = series.setdefault(start, {"start": start})
        point[row["metric"]] = _finite(row["value"])
    chart = [
        {
            "start": p["start"],
            "pue": p.get("pue"),
            # One hour's energy in kWh is its mean power in kW.
            "e_dc_power_kw": p.get("e_dc_kwh"),
            "e_it_power_kw": p.get("e_it_kwh"),
        }
        for p in series.values()
    ]
    return {
        "site": site_id,
        "today": cells.get("day", {}),
        "month": cells.get("month", {}),
        "ttm": cells.get("ttm", {}),
        "hourly": chart,
    }


def _device_health() -> dict[str, dict[str, float]]:
    """Per device: seconds since its last good poll and its failed polls (from metrics)."""
    found: dict[str, dict[str, float]] = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            device = sample.labels.get("device")
            if device is None:
                continue
            entry = found.setdefault(device, {})
            if sample.name == "pue_agent_seconds_since_last_good_poll":
                age = entry.get("age_s")
                entry["age_s"] = sample.value if age is None else min(age, sample.value)
            elif sample.name == "pue_agent_poll_failures_total":
                entry["failures"] = entry.get("failures", 0.0) + sample.value
    return found


# -- the console ------------------------------------------------------------------------------


@dataclass
class Console:
    """The console's routes for one running agent (built by ``ApiServer.start``)."""

    agent: Agent
    kpi_source: KpiSource
    #: The live token table (replaced on reload): asked on every request.
    tokens: Callable[[], TokenTable]
    follower: Callable[[], RealtimeFollower | None]
    tls: bool = False
    live_period_s: float = LIVE_PERIOD_S
    sessions: SessionTable = field(default_factory=SessionTable)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _verify_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _key_missing: bool = False

    def add_routes(self, app: web.Application) -> None:
        """Register the console's pages and endpoints on the API application."""
        app.router.add_get("/", self._root)
        app.router.add_get("/console/", self._index)
        app.router.add_get("/console/{name}", self._static)
        app.router.add_post("/api/v1/console/login", self._login)
        app.router.add_post("/api/v1/console/logout", self._logout)
        app.router.add_get("/api/v1/console/session", self._session)
        app.router.add_get("/api/v1/console/overview", self._overview)
        app.router.add_get("/api/v1/console/live", self._live)
        app.router.add_get("/api/v1/console/events", self._events)
        app.router.add_get("/api/v1/console/audit", self._audit)
        app.router.add_post("/api/v1/console/verify", self._verify)
        app.router.add_get("/api/v1/reports/{month}/pdf", self._pdf)

    def close(self) -> None:
        """End the live streams (before the server stops, so it need not wait for them)."""
        self._closing.set()

    def role_of(self, request: web.Request) -> Role | None:
        """The role of the request's session cookie, asked of the current token table."""
        digest = self.sessions.digest_of(request.cookies.get(SESSION_COOKIE))
        return None if digest is None else self.tokens().role_of_digest(digest)

    # -- pages ----------------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.StreamResponse:
        del request
        raise web.HTTPFound("/console/")

    async def _index(self, request: web.Request) -> web.StreamResponse:
        del request
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        # Only plain names of shipped files: no path separators, no dot files.
        if "/" in name or name.startswith(".") or Path(name).suffix not in _STATIC_TYPES:
            return _error(404, "not found")
        if not (STATIC_DIR / name).is_file():
            return _error(404, "not found")
        return self._file(name)

    def _file(self, name: str) -> web.StreamResponse:
        path = STATIC_DIR / name
        return web.FileResponse(
            path,
            headers={
                "Content-Type": _STATIC_TYPES[path.suffix],
                "Content-Security-Policy": _CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    # -- sessions -------------------------------------------------------------------------

    def _same_origin(self, request: web.Request) -> bool:
        """A browser's POST must come from the console's own origin (besides SameSite)."""
        origin = request.headers.get("Origin")
        # No Origin: not a cross-site browser request (curl, scripts with a bearer token).
        return origin is None or origin == f"{request.scheme}://{request.host}"

    async def _login(self, request: web.Request) -> web.Response:
        if not self._same_origin(request):
            return _error(403, "cross-origin login refused")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, 'the body must be JSON: {"token": "..."}')
        raw = body.get("token") if isinstance(body, dict) else None
        token = parse_bearer(f"Bearer {raw}") if isinstance(raw, str) else None
        role = self.tokens().role_of(token)
        if token is None or role is None:
            # The peer is logged, the presented value never is.
            _log.warning("console login refused", peer=request.remote)
            return _error(401, "unknown token")
        session = self.sessions.open(token_digest(token))
        response = web.json_response({"role": role.value})
        response.set_cookie(
            SESSION_COOKIE,
            session,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            max_age=SESSION_TTL_S,
        )
        _log.info("console login", role=role.value, peer=request.remote)
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        if not self._same_origin(request):
            return _error(403, "cross-origin logout refused")
        self.sessions.close(request.cookies.get(SESSION_COOKIE))
        response = web.json_response({"status": "logged out"})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    def _request_role(self, request: web.Request) -> Role:
        header = parse_bearer(request.headers.get("Authorization"))
        role = self.tokens().role_of(header) if header else self.role_of(request)
        # The middleware let the request through, so one of the two holds a role.
        return role or Role.AUDITOR

    async def _session(self, request: web.Request) -> web.Response:
        site = self.agent.site
        return web.json_response(
            {
                "role": self._request_role(request).value,
                "site": None if site is None else site.id,
                "site_name": None if site is None else site.name,
                "site_name_zh": None if site is None else site.name_zh,
                "timezone": "UTC" if site is None else site.timezone,
                "version": __version__,
            },
            dumps=_dumps,
        )

    # -- ops view -------------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> web.Response:
        del request
        site = self.agent.site
        if site is None:
            return _error(503, "no site model is configured")
        try:
            kpis = await asyncio.to_thread(self.kpi_source, self.agent.settings)
        except SourceUnavailableError as exc:
            return _error(503, str(exc))
        figures = await asyncio.to_thread(
            overview_figures, kpis, site.id, site.timezone, datetime.now(UTC)
        )
        return web.json_response(figures, dumps=_dumps)

    async def live_figures(self) -> dict[str, Any]:
        """Real-time PUE and power by role, silent meters, journal lag and alarms."""
        follower = self.follower()
        site = self.agent.site
        snap = follower.snapshot() if follower is not None else None
        lag = await asyncio.to_thread(self.agent.journal.lag)
        now = time.time()
        health = _device_health()
        silent: list[dict[str, Any]] = []
        for meter in site.meters if site is not None else []:
            seen = health.get(meter.device, {})
            age = seen.get("age_s")
            failures = int(seen.get("failures", 0))
            if age is not None and age < SILENT_AFTER_S:
                continue
            since = datetime.fromtimestamp(now - age, UTC) if age is not None else self.started
            silent.append(
                {
                    "meter": meter.id,
                    "device": meter.device,
                    "role": meter.role.value,
                    "since": since.isoformat(),
                    # Never polled since the agent started vs. polled once and gone quiet.
                    "state": "never" if age is None else "silent",
                    "failures": failures,
                }
            )
        alarms = [
            {"alarm": alarm, "component": component, "reason": reason}
            for (alarm, component), reason in sorted(metrics.raised_alarms().items())
        ]
        if self.agent.journal.alarm:
            alarms.append(
                {
                    "alarm": "journal_budget",
                    "component": "journal",
                    "reason": self.agent.journal.alarm,
                }
            )
        return {
            "realtime": None
            if snap is None
            else {
                "label": snap.label,
                "pue_realtime": _finite(snap.pue_realtime),
                "e_dc_power_w": _finite(snap.e_dc_power_w),
                "e_it_power_w": _finite(snap.e_it_power_w),
                "power_by_role_w": {k: _finite(v) for k, v in sorted(snap.power_by_role_w.items())},
                "meters_reporting": snap.meters_reporting,
                "meters_total": snap.meters_total,
                "as_of": _iso(snap.as_of),
            },
            "silent_meters": silent,
            "lag": [
                {"consumer": name, "batches": behind, "alarm": behind >= LAG_ALARM_BATCHES}
                for name, behind in sorted(lag.items())
            ],
            "lag_alarm_batches": LAG_ALARM_BATCHES,
            "journal": {
                "head_seq": self.agent.journal.head[0],
                "payload_bytes": self.agent.journal.payload_bytes,
                "budget_bytes": self.agent.journal.budget_bytes,
            },
            "alarms": alarms,
            "sent_at": datetime.now(UTC).isoformat(),
        }

    async def _live(self, request: web.Request) -> web.Response:
        del request
        return web.json_response(await self.live_figures(), dumps=_dumps)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a ``live`` event every ``live_period_s`` until either side stops."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        stopping = self.agent.stopping
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while not (stopping.is_set() or self._closing.is_set()):
                payload = _dumps(await self.live_figures())
                await response.write(f"event: live\ndata: {payload}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.live_period_s)
        return response

    # -- auditor view ---------------------------------------------------------------------

    def _public_key(self) -> tuple[str | None, str | None]:
        """(fingerprint, PEM) of the site's signing key, or ``(None, None)`` without one."""
        try:
            key = keys.load_signing_key(self.agent.settings)
        except keys.SigningKeyError as exc:
            # Logged once when it goes missing and once when it is back, not per page view.
            if not self._key_missing:
                _log.warning("console: no usable signing key", error=str(exc))
            self._key_missing = True
            return None, None
        if self._key_missing:
            _log.info("console: signing key usable again", fingerprint=key.fingerprint)
        self._key_missing = False
        return key.fingerprint, keys.public_key_pem(key.public)

    def _reports(self) -> list[dict[str, Any]]:
        site = self.agent.site
        if site is None:
            return []
        folder = self.agent.settings.state_dir / "reports"
        months: list[dict[str, Any]] = []
        for path in sorted(folder.glob(f"{site.id}-*.zip"), reverse=True):
            month = path.stem.removeprefix(f"{site.id}-")
            if not MONTH_RE.fullmatch(month) or report_path(folder.parent, site.id, month) != path:
                continue
            try:
                with zipfile.ZipFile(path) as bundle:
                    pdfs = list(_pdf_members(bundle))
                    findings = _bundle_findings(bundle, bundle.namelist())
            except (OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
                months.append({"month": month, "error": f"unreadable bundle: {exc}"})
                continue
            months.append(
                {
                    "month": month,
                    "size_bytes": path.stat().st_size,
                    "signed_at": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(),
                    "pdf_langs": pdfs,
                    "findings": findings,
                }
            )
        return months

    async def _audit(self, request: web.Request) -> web.Response:
        del request
        fingerprint, pem = await asyncio.to_thread(self._public_key)
        months = await asyncio.to_thread(self._reports)
        site = self.agent.site
        return web.json_response(
            {
                "site": None if site is None else site.id,
                "key_fingerprint": fingerprint,
                "public_key_pem": pem,
                "months": months,
            },
            dumps=_dumps,
        )

    async def _pdf(self, request: web.Request) -> web.StreamResponse:
        month = request.match_info["month"]
        lang = request.query.get("lang", "zh")
        if not MONTH_RE.fullmatch(month):
            return _error(400, "month must be YYYY-MM")
        if lang not in ("zh", "en"):
            return _error(400, "lang must be zh or en")
        site = self.agent.site
        if site is None:
            return _error(404, "no site model is configured, so no reports")
        path = report_path(self.agent.settings.state_dir, site.id, month)
        try:
            body = await asyncio.to_thread(_read_pdf, path, lang)
        except (OSError, zipfile.BadZipFile) as exc:
            return _error(404, f"no report bundle for {month}: {exc.__class__.__name__}")
        if body is None:
            return _error(404, f"the {month} bundle has no {lang} PDF")
        return web.Response(
            body=body,
            headers={
                "Content-Type": "application/pdf",
                "Content-Disposition": f'attachment; filename="{site.id}-{month}.{lang}.pdf"',
            },
        )

    async def _verify(self, request: web.Request) -> web.Response:
        """Run ``pue-agent verify``'s checks on the uploaded bundle, with the site's key."""
        if not self._same_origin(request):
            return _error(403, "cross-origin upload refused")
        if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
            return _error(413, f"a bundle may be at most {MAX_UPLOAD_BYTES // 2**20} MiB")
        too_large = _error(413, f"a bundle may be at most {MAX_UPLOAD_BYTES // 2**20} MiB")
        fingerprint, pem = await asyncio.to_thread(self._public_key)
        with _upload_file() as path:
            size = 0
            with path.open("wb") as out:
                async for chunk in request.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        return too_large
                    out.write(chunk)
            digest = await asyncio.to_thread(_sha256, path)
            # One verification at a time: each re-computes a month of KPIs.
            async with self._verify_lock:
                result = await asyncio.to_thread(verify_bundle, path, pubkey=pem)
        failure = result.first_failure
        _log.info("console verify", ok=result.ok, failed=None if failure is None else failure.name)
        return web.json_response(
            {
                "ok": result.ok,
                "sha256": digest,
                "size_bytes": size,
                "key_fingerprint": fingerprint,
                "failed_check": None if failure is None else failure.name,
                "checks": [
                    {"name": c.name, "outcome": c.outcome, "detail": c.detail}
                    for c in result.checks
                ],
            },
            dumps=_dumps,
        )


_HTML_LANG = re.compile(rb'<html[^>]*\slang="([a-zA-Z-]+)"')


def _pdf_members(bundle: zipfile.ZipFile) -> dict[str, str]:
    """Language → PDF member of a bundle.

    The second language's files are ``report.<lang>.pdf``; the first language's are
    ``report.pdf``, whose language is read from ``report.html``'s ``lang`` attribute.
    """
    names = bundle.namelist()
    found: dict[str, str] = {}
    for name in names:
        leaf = name.rsplit("/", 1)[-1]
        for lang in ("zh", "en"):
            if leaf == f"report.{lang}.pdf":
                found[lang] = name
    primary = next((n for n in names if n.rsplit("/", 1)[-1] == "report.pdf"), None)
    html = next((n for n in names if n.rsplit("/", 1)[-1] == "report.html"), None)
    if primary is not None and html is not None:
        with bundle.open(html) as handle:
            match = _HTML_LANG.search(handle.read(4096))
        if match is not None:
            found.setdefault(match.group(1).decode("ascii")[:2].lower(), primary)
    return {lang: found[lang] for lang in ("zh", "en") if lang in found}


def _bundle_findings(bundle: zipfile.ZipFile, names: list[str]) -> list[dict[str, Any]]:
    member = next((n for n in names if n.endswith(FINDINGS)), None)
    if member is None:
        return []
    rows = json.loads(bundle.read(member)).get("findings", [])
    keep = (
        "policy_id",
        "rule_id",
        "document",
        "clause",
        "result",
        "metric",
        "window",
        "measured_value",
        "comparator",
        "threshold",
        "benefit_cny",
        "advisory",
    )
    return [{k: row.get(k) for k in keep} for row in rows if isinstance(row, dict)]


def _read_pdf(path: Path, lang: str) -> bytes | None:
    with zipfile.ZipFile(path) as bundle:
        member = _pdf_members(bundle).get(lang)
        return None if member is None else bundle.read(member)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_stream(handle)[0]


@contextlib.contextmanager
def _upload_file() -> Iterator[Path]:
    """A private temporary file for an uploaded bundle, removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="pue-agent-verify-", suffix=".zip")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)

"""The HTTP API server (aiohttp) running inside the agent's event loop.

aiohttp rather than an ASGI stack: one dependency gives the server, TLS and
``sendfile`` file responses, and it runs as a few tasks in the agent's own loop
(``AppRunner``/``TCPSite``) without taking over signals or the loop the way an
embedded uvicorn would. See ``docs/api.md``.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from agent import __version__, metrics
from agent.api.auth import Role, TokenTable, parse_bearer
from agent.api.console import CONSOLE_ROUTE_ROLES, Console
from agent.api.guard import ConnectionGuard, GuardedRunner, connection_limit
from agent.api.openapi import openapi_document
from agent.api.prometheus import refresh_green_window, refresh_site_metrics
from agent.api.sources import (
    KpiSource,
    RealtimeFollower,
    SourceUnavailableError,
    evaluate_findings,
    filter_kpis,
    report_path,
    stored_kpis,
)
from agent.fleet import FleetNotConfiguredError, fleet_list
from agent.kpi.green_window import GreenWindowUnavailableError, green_window_for
from agent.logs import get_logger
from agent.periods import MONTH_RE, PERIOD_RE
from agent.pipeline import Agent
from agent.schemas import PeriodKind
from agent.settings import ConfigError, secrets_dirs
from collectors.nats.link import LinkError


class Readiness(Protocol):
    """What ``/readyz`` asks of the service running the agent."""

    @property
    def ready(self) -> bool:
        """True from READY=1 until the agent is asked to stop."""
        ...


__all__ = ["AUTH_FAILURES", "ROUTE_ROLES", "ApiServer"]

_log = get_logger("api")

AUTH_FAILURES = Counter(
    "pue_agent_api_auth_failures",
    "API requests refused: missing or unknown token (401), role not allowed (403).",
    ["reason"],
    registry=metrics.REGISTRY,
)

_PUBLIC: frozenset[Role] = frozenset()
_OPS = frozenset({Role.OPS})
_KPI_READERS = frozenset({Role.OPS, Role.AUDITOR})

#: Roles allowed per route; an empty set means public (health probes, the description).
ROUTE_ROLES: dict[str, frozenset[Role]] = {
    "/healthz": _PUBLIC,
    "/readyz": _PUBLIC,
    "/openapi.json": _PUBLIC,
    "/metrics": _OPS,
    "/api/v1/kpi/current": _KPI_READERS,
    "/api/v1/kpi": _KPI_READERS,
    "/api/v1/findings": _OPS,
    "/api/v1/green-window": _KPI_READERS,
    "/api/v1/fleet": _KPI_READERS,
    "/api/v1/reports/{month}": _KPI_READERS,
    # The web console (agent/api/console.py): its page is public, its data is not.
    **CONSOLE_ROUTE_ROLES,
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


def _plain(value: Any) -> Any:
    """JSON-safe values: datetimes as ISO 8601, NaN/inf as null."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dicts()]


def _secret_path(name: str, agent: Agent) -> Path:
    for folder in secrets_dirs(agent.settings):
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"api.tls_key_secret: secret {name!r} not found in the secrets directory")


@dataclass
class ApiServer:
    """One aiohttp application bound to ``[api] listen:port`` for the running agent."""

    agent: Agent
    #: The service running the agent (``/readyz`` asks it); ``None``: ready once bound.
    service: Readiness | None = None
    kpi_source: KpiSource = stored_kpis
    tokens: TokenTable = field(init=False)
    follower: RealtimeFollower | None = field(default=None, init=False)
    url: str = field(default="", init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    #: ``[api] metrics_port``: the token-less /metrics listener, when enabled.
    metrics_url: str = field(default="", init=False)
    _metrics_runner: web.AppRunner | None = field(default=None, init=False)
    console: Console | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = TokenTable.load(self.agent.settings.api, self.agent.settings)

    # -- lifecycle ----------------------------------------------------------------------------

    def reload_tokens(self) -> None:
        """Re-read the token secrets (SIGHUP): how a token is rotated without a restart."""
        self.tokens = TokenTable.load(self.agent.settings.api, self.agent.settings)
        _log.info("API tokens reloaded", tokens=len(self.tokens))

    def _ssl_context(self) -> ssl.SSLContext | None:
        api = self.agent.settings.api
        if api.tls_cert_file is None or api.tls_key_secret is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(
                self.agent.settings.resolve(api.tls_cert_file),
                _secret_path(api.tls_key_secret, self.agent),
            )
        except (OSError, ssl.SSLError) as exc:
            # The message names files, never key material.
            raise ConfigError(f"api: cannot load the TLS certificate or key: {exc}") from exc
        return context

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            ConfigError: when the address cannot be bound or TLS material is unusable.
        """
        api = self.agent.settings.api
        context = self._ssl_context()
        app = web.Application(middlewares=[self._auth_middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/v1/kpi/current", self._kpi_current)
        app.router.add_get("/api/v1/kpi", self._kpi_period)
        app.router.add_get("/api/v1/findings", self._findings)
        app.router.add_get("/api/v1/green-window", self._green_window)
        app.router.add_get("/api/v1/fleet", self._fleet)
        app.router.add_get("/api/v1/reports/{month}", self._report)
        self.console = Console(
            self.agent,
            self.kpi_source,
            tokens=lambda: self.tokens,
            follower=lambda: self.follower,
            tls=context is not None,
        )
        self.console.add_routes(app)
        self._runner = await self._listen(app, api.listen, api.port, context, "")
        scheme = "https" if context else "http"
        host = f"[{api.listen}]" if ":" in api.listen else api.listen
        self.url = f"{scheme}://{host}:{api.port}"
        if self.agent.site is not None:
            self.follower = RealtimeFollower(self.agent.journal, self.agent.site)
            self.follower.start()
        if api.metrics_port is not None:
            await self._start_metrics_listener(api.metrics_listen, api.metrics_port)
        if not len(self.tokens):
            _log.warning("API enabled without any token: only /healthz and /readyz will answer")
        _log.info("API listening", url=self.url, tokens=len(self.tokens))

    async def _listen(
        self,
        app: web.Application,
        listen: str,
        port: int,
        context: ssl.SSLContext | None,
        what: str,
    ) -> web.AppRunner:
        """Serve ``app`` on ``listen:port`` behind the connection guard; a bind error is config.

        No access log: request lines are logged by the middleware, never headers.
        """
        api = self.agent.settings.api
        guard = ConnectionGuard(connection_limit(api.max_connections), api.header_timeout_s)
        runner = GuardedRunner(
            app,
            guard=guard,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=api.idle_timeout_s,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, listen, port, ssl_context=context).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"api: cannot listen{what} on {listen}:{port}: {exc.strerror or exc}"
            ) from exc
        return runner

    async def _start_metrics_listener(self, listen: str, port: int) -> None:
        """``[api] metrics_port``: GET /metrics alone, without a token (docs/api.md)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        # The same connection limits as the API: a port without a token is still bounded.
        try:
            self._metrics_runner = await self._listen(app, listen, port, None, " for metrics")
        except ConfigError:
            await self.stop()
            raise
        host = f"[{listen}]" if ":" in listen else listen
        self.metrics_url = f"http://{host}:{port}/metrics"
        _log.info("metrics listening without a token", url=self.metrics_url)

    async def stop(self) -> None:
        """Stop serving (open requests get a short grace period)."""
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        if self.follower is not None:
            await self.follower.stop()
        if self.console is not None:
            self.console.close()  # live streams end, so the runner need not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- authentication -----------------------------------------------------------------------

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else None
        allowed = ROUTE_ROLES.get(canonical or "")
        if allowed is None or not allowed:
            return await handler(request)
        header = request.headers.get("Authorization")
        role = self.tokens.role_of(parse_bearer(header))
        if header is None and self.console is not None:
            # A console session (cookie) stands for the token it was opened with.
            role = self.console.role_of(request)
        if role is None:
            AUTH_FAILURES.labels("unauthenticated").inc()
            # The path and peer are logged; the header never is.
            _log.warning(
                "API request without a valid token", path=request.path, peer=request.remote
            )
            return _error(
                401,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": 'Bearer realm="pue-agent"'},
            )
        if role not in allowed:
            AUTH_FAILURES.labels("forbidden").inc()
            _log.warning("API request refused for role", path=request.path, role=role.value)
            return _error(403, f"role {role.value} may not read {canonical}")
        return await handler(request)

    # -- handlers -----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        del request
        # The version here lets a fleet check which build each host runs without a token.
        return web.json_response({"status": "ok", "version": __version__})

    async def _readyz(self, request: web.Request) -> web.Response:
        del request
        reasons: list[str] = []
        if self.service is not None and not self.service.ready:
            reasons.append("starting")
        if self.agent.stopping.is_set():
            reasons.append("stopping")
        if self.agent.journal.alarm:
            reasons.append("journal_budget")
        # Storage alarms (disk full, EIO, EMFILE): "storage:<component>", e.g. storage:journal.
        reasons += sorted(f"{alarm}:{component}" for alarm, component in metrics.raised_alarms())
        return web.json_response(
            {"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200
        )

    async def _openapi(self, request: web.Request) -> web.Response:
        del request
        return web.json_response(openapi_document())

    async def _metrics(self, request: web.Request) -> web.Response:
        del request
        # Gauges that describe the journal are refreshed at scrape time, so they are
        # exact when read and cost nothing between scrapes.
        lag = await asyncio.to_thread(self.agent.journal.lag)
        metrics.JOURNAL_LAG.clear()
        for consumer, behind in lag.items():
            metrics.JOURNAL_LAG.labels(consumer).set(behind)
        metrics.JOURNAL_BYTES.set(self.agent.journal.payload_bytes)
        await self._refresh_site_metrics()
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refresh_site_metrics(self) -> None:
        """The site's real-time PUE, power by role and stored KPIs (agent.api.prometheus)."""
        if self.agent.site is None:
            return
        snapshot = self.follower.snapshot() if self.follower is not None else None
        try:
            kpis = await asyncio.to_thread(self.kpi_source, self.agent.settings)
        except SourceUnavailableError as exc:
            _log.warning("metrics: stored KPIs unavailable", error=str(exc))
            kpis = None
        refresh_site_metrics(self.agent.site.id, snapshot, kpis)
        try:
            window = await asyncio.to_thread(green_window_for, self.agent.settings, self.agent.site)
        except GreenWindowUnavailableError as exc:
            _log.warning("metrics: green window unavailable", error=str(exc))
            window = None
        refresh_green_window(self.agent.site.id, window)

    def _site_id(self) -> str:
        if self.agent.site is None:
            raise SourceUnavailableError("no site model is configured")
        return self.agent.site.id

    async def _kpi_current(self, request: web.Request) -> web.Response:
        del request
        if self.follower is None or self.agent.site is None:
            return _error(503, "no site model is configured: no real-time KPIs")
        snap = self.follower.snapshot()
        return web.json_response(
            {
                "label": snap.label,
                "site": self.agent.site.id,
                "pue_realtime": _plain(snap.pue_realtime),
                "e_dc_power_w": _plain(snap.e_dc_power_w),
                "e_it_power_w": _plain(snap.e_it_power_w),
                "power_by_role_w": snap.power_by_role_w,
                "meters_reporting": snap.meters_reporting,
                "meters_total": snap.meters_total,
                "as_of": _plain(snap.as_of),
            }
        )

    async def _kpi_period(self, request: web.Request) -> web.Response:
        period = request.query.get("period", "")
        kind = request.query.get("kind")
        if not PERIOD_RE.fullmatch(period):
            return _error(400, "period must be YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH")
        if kind is not None and kind not in {k.value for k in PeriodKind}:
            return _error(400, f"kind must be one of {', '.join(k.value for k in PeriodKind)}")
        try:
            site = self._site_id()
            kpis = await asyncio.to_thread(self.kpi_source, self.agent.settings)
        except SourceUnavailableError as exc:
            return _error(503, str(exc))
        rows = _rows(filter_kpis(kpis, period, kind))
        return web.json_response({"site": site, "period": period, "kind": kind, "kpis": rows})

    async def _green_window(self, request: web.Request) -> web.Response:
        del request
        if self.agent.site is None:
            return _error(503, "no site model is configured: no green window")
        try:
            window = await asyncio.to_thread(green_window_for, self.agent.settings, self.agent.site)
        except GreenWindowUnavailableError as exc:
            return _error(503, str(exc))
        return web.json_response(window.to_json())

    async def _fleet(self, request: web.Request) -> web.Response:
        """Every site's summary from the fleet bucket: the rows of ``kpi --fleet --json``."""
        stale_after_s: float | None = None
        raw = request.query.get("stale_after_s")
        if raw is not None:
            try:
                stale_after_s = float(raw)
            except ValueError:
                stale_after_s = -1.0
            if not math.isfinite(stale_after_s) or stale_after_s <= 0:
                return _error(400, "stale_after_s must be a positive number of seconds")
        try:
            rows = await fleet_list(self.agent.settings, stale_after_s=stale_after_s)
        except FleetNotConfiguredError as exc:
            return _error(404, str(exc))
        except ConfigError as exc:
            return _error(503, str(exc))
        except LinkError as exc:
            return _error(503, f"fleet: {exc}")
        return web.json_response(rows)

    async def _findings(self, request: web.Request) -> web.Response:
        period = request.query.get("period", "")
        if not MONTH_RE.fullmatch(period):
            return _error(400, "period must be a month, YYYY-MM")
        site = self.agent.site
        if site is None:
            return _error(503, "no site model is configured")
        try:
            kpis = await asyncio.to_thread(self.kpi_source, self.agent.settings)
            findings = await asyncio.to_thread(
                evaluate_findings, kpis, site, period, self.agent.settings.policies_path()
            )
        except SourceUnavailableError as exc:
            return _error(503, str(exc))
        except ValueError as exc:  # the engine refuses a month it cannot place
            return _error(400, f"bad period: {exc}")
        return web.json_response(
            {"site": site.id, "period": period, "findings": _rows(findings)},
            dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
        )

    async def _report(self, request: web.Request) -> web.StreamResponse:
        month = request.match_info["month"]
        if not MONTH_RE.fullmatch(month):
            return _error(400, "month must be YYYY-MM")
        if self.agent.site is None:
            return _error(404, "no site model is configured, so no reports")
        path = report_path(self.agent.settings.state_dir, self.agent.site.id, month)
        if not path.is_file():
            return _error(404, f"no report bundle for {month}")
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="{path.name}"',
            },
        )

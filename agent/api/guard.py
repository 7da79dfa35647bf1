"""Keep hostile or slow HTTP clients from taking the agent down (issue 22).

aiohttp on its own never closes a client that sends half a request head, and
accepts connections until the process runs out of file descriptors; the
agent's next journal or store write then fails with EMFILE. This module wraps
aiohttp's connection handler so that:

- at most ``max_connections`` connections are open; a new one beyond that
  closes the oldest connection that has no request in progress (a slow or idle
  client), so a health probe still gets through while an attacker holds idle
  sockets; if every connection is busy, the new one is closed instead;
- a connection that has not sent a complete request head ``header_timeout_s``
  after it opened is closed (idle keep-alive connections are closed by aiohttp's
  ``keepalive_timeout``, set from ``idle_timeout_s``);
- a request the HTTP parser refuses (a control byte in a header, say) is
  answered with a fixed body and logged by peer and error *type* only: aiohttp's
  own message quotes the offending header, which may be a bearer token.

The limit is also capped so that :data:`FD_RESERVE` descriptors stay free below
the process's ``RLIMIT_NOFILE`` for the journal, the store and the sinks.
"""

from __future__ import annotations

import asyncio
import resource
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from prometheus_client import Counter

from agent import metrics
from agent.logs import get_logger

__all__ = [
    "API_CONNECTIONS_CLOSED",
    "FD_RESERVE",
    "ConnectionGuard",
    "GuardedRunner",
    "connection_limit",
]

_log = get_logger("api")

#: File descriptors kept free for the agent's own files and sockets, below RLIMIT_NOFILE.
FD_RESERVE = 512

API_CONNECTIONS_CLOSED = Counter(
    "pue_agent_api_connections_closed",
    "API connections closed by the agent to protect itself, by reason "
    "(header_timeout, evicted_idle, over_limit).",
    ["reason"],
    registry=metrics.REGISTRY,
)


def connection_limit(configured: int, reserve: int = FD_RESERVE) -> int:
    """The connection limit that leaves ``reserve`` descriptors free.

    Args:
        configured: ``[api] max_connections``.
        reserve: Descriptors kept for the agent's own writes.

    Returns:
        ``configured``, or less when ``RLIMIT_NOFILE`` is too small for it (at least 1).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    allowed = max(1, soft - reserve)
    if allowed < configured:
        _log.warning(
            "API connection limit lowered to keep descriptors for the agent",
            configured=configured,
            limit=allowed,
            rlimit_nofile=soft,
            reserve=reserve,
        )
    return min(configured, allowed)


class ConnectionGuard:
    """The open connections of one server, oldest first."""

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        """Allow ``max_connections``; close a connection without a request head in time."""
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        #: Insertion-ordered: the first key is the oldest connection.
        self.open: dict[_GuardedHandler, None] = {}

    def admit(self, handler: _GuardedHandler) -> bool:
        """Register a new connection; False when it must be closed (all others busy)."""
        if len(self.open) >= self.max_connections:
            victim = next((h for h in self.open if not h.busy), None)
            if victim is None:
                API_CONNECTIONS_CLOSED.labels("over_limit").inc()
                return False
            API_CONNECTIONS_CLOSED.labels("evicted_idle").inc()
            self.forget(victim)
            victim.force_close()
        self.open[handler] = None
        return True

    def forget(self, handler: _GuardedHandler) -> None:
        """Drop a closed connection."""
        self.open.pop(handler, None)


class _GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol with a head deadline and a quiet error page."""

    _guard: ConnectionGuard
    _head_timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> bool:
        """A request is being handled (never evicted for a newcomer)."""
        return bool(self._request_in_progress)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._guard.admit(self):
            self.force_close()
            return
        self._head_timer = asyncio.get_running_loop().call_later(
            self._guard.header_timeout_s, self._head_deadline
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._guard.forget(self)
        super().connection_lost(exc)

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._request_count == 0:  # not one complete request head yet: a slow client
            API_CONNECTIONS_CLOSED.labels("header_timeout").inc()
            self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            return super().handle_error(request, status, exc, message)
        # The parser's message (and exception) quote the bad header's value: never log or
        # echo them. The peer and the error's type are enough to find the client.
        _log.warning(
            "malformed HTTP request refused",
            status=status,
            peer=request.remote,
            error=type(exc).__name__ if exc is not None else None,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        response = web.Response(status=status, text=f"{status} {phrase}\n")
        response.force_close()
        return response


class _GuardedServer(Server):
    """Makes :class:`_GuardedHandler` protocols sharing one :class:`ConnectionGuard`."""

    guard: ConnectionGuard

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler._guard = self.guard
        return handler


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are limited and timed out by ``guard``."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        """Run ``app``; ``kwargs`` go to ``web.AppRunner`` (``keepalive_timeout`` etc.)."""
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # aiohttp builds the Server itself; re-class it so __call__ makes our handlers.
        server.__class__ = _GuardedServer
        server.guard = self.guard  # type: ignore[attr-defined]
        return server

"""Redfish services serving real captures (``../shared/fixtures/redfish/``) with live power.

URL path ``/redfish/v1/...`` maps to ``<capture>/redfish/v1/.../index.json``; chosen JSON
properties are replaced by live values from the simulator on every request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["LiveProperty", "RedfishService"]


@dataclass(frozen=True)
class LiveProperty:
    """A property replaced on each GET: resource path, key path inside it, value source."""

    resource: str
    keys: tuple[str | int, ...]
    value: Callable[[], float]


@dataclass
class RedfishService:
    """One simulated BMC on its own loopback port."""

    root: Path
    live: list[LiveProperty] = field(default_factory=list)
    port: int = 0
    requests: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        path = request.path.rstrip("/")
        document = self.root / path.lstrip("/") / "index.json"
        if not document.is_file():
            return web.json_response(
                {"error": {"code": "Base.1.0.ResourceMissingAtURI"}}, status=404
            )
        body: Any = json.loads(document.read_text(encoding="utf-8"))
        for prop in self.live:
            if prop.resource.rstrip("/") == path:
                target = body
                for key in prop.keys[:-1]:
                    target = target[key]
                target[prop.keys[-1]] = round(prop.value(), 1)
        return web.json_response(body)

    async def start(self) -> int:
        """Serve on 127.0.0.1 (plain HTTP: the demo runs on loopback only)."""
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

"""An async Redfish client for one BMC: keep-alive, session or basic auth, one request at a time.

Each BMC gets its own :class:`httpx.AsyncClient` (its own TLS settings and a single kept-alive
connection), so a slow BMC only ever occupies its own connection; a process-wide semaphore
bounds how many requests are in flight across all BMCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from agent.logs import get_logger
from collectors.redfish.errors import (
    RedfishAuthError,
    RedfishBadResponseError,
    RedfishError,
    RedfishHTTPError,
    RedfishNotFoundError,
    translate,
)

__all__ = ["SERVICE_ROOT", "ClientConfig", "RedfishClient"]

_log = get_logger("redfish")

SERVICE_ROOT = "/redfish/v1"
_SESSIONS = "/redfish/v1/SessionService/Sessions"


@dataclass(frozen=True)
class ClientConfig:
    """How to reach and authenticate to one BMC."""

    device: str
    url: str
    auth: Literal["session", "basic", "none"] = "session"
    username: str | None = None
    password: SecretStr | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 15.0


@functools.cache
def _ssl_context_for(verify_tls: bool, ca_file: Path | None) -> ssl.SSLContext:
    # One context per (verify, CA bundle), shared by every BMC using it: loading a CA store
    # costs ~20 ms of CPU, which 500 BMCs would otherwise pay 500 times at start-up.
    return _ssl_context(ClientConfig(device="", url="", verify_tls=verify_tls, ca_file=ca_file))


def _ssl_context(config: ClientConfig) -> ssl.SSLContext:
    if not config.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    # The CA bundle is read once per client, at start-up.
    cafile = str(config.ca_file) if config.ca_file is not None else None
    return ssl.create_default_context(cafile=cafile)


class RedfishClient:
    """GET JSON resources from one BMC, logging in (and again after a 401) as needed."""

    def __init__(self, config: ClientConfig, limiter: asyncio.Semaphore | None = None) -> None:
        """Create the client (no I/O happens until the first request).

        Args:
            config: Address, credentials and TLS settings of the BMC.
            limiter: Process-wide bound on requests in flight (shared by all BMCs).
        """
        self.config = config
        self._limiter = limiter
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._session_uri: str | None = None
        self.logins = 0
        self.requests = 0
        if config.url.startswith("https") and not config.verify_tls:
            _log.warning(
                "TLS certificate verification is off for this device",
                device=config.device,
                url=config.url,
            )
        auth: httpx.Auth | None = None
        if config.auth == "basic":
            auth = httpx.BasicAuth(config.username or "", _reveal(config.password))
        self._http = httpx.AsyncClient(
            base_url=config.url.rstrip("/"),
            auth=auth,
            # Plain http needs no TLS context at all (httpx would build a default one).
            verify=_ssl_context_for(config.verify_tls, config.ca_file)
            if config.url.startswith("https")
            else False,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"Accept": "application/json", "OData-Version": "4.0"},
            follow_redirects=False,
        )

    async def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` and return its JSON object.

        Raises:
            RedfishError: (a subclass naming the device and path) on any failure.
        """
        async with self._lock:
            if self.config.auth == "session" and self._token is None:
                await self._login()
            response = await self._request("GET", path)
            if response.status_code == 401 and self.config.auth == "session":
                # The session expired or the BMC restarted: log in again, once.
                self._token = None
                self._session_uri = None
                await self._login()
                response = await self._request("GET", path)
            return self._decode(path, response)

    async def aclose(self) -> None:
        """Log out (best effort) and close the connection."""
        async with self._lock:
            if self._token is not None and self._session_uri is not None:
                with contextlib.suppress(RedfishError):
                    await self._request("DELETE", self._session_uri)
            self._token = None
            self._session_uri = None
            await self._http.aclose()

    # -- internals ----------------------------------------------------------------------------

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        headers = {"X-Auth-Token": self._token} if self._token else None
        try:
            if self._limiter is None:
                return await self._send(method, path, headers, body)
            async with self._limiter:
                return await self._send(method, path, headers, body)
        except Exception as exc:  # translated in one place
            raise translate(exc, self.config.device, path) from exc

    async def _send(
        self, method: str, path: str, headers: dict[str, str] | None, body: dict[str, Any] | None
    ) -> httpx.Response:
        self.requests += 1
        response = await self._http.request(method, path, headers=headers, json=body)
        await response.aread()
        return response

    async def _login(self) -> None:
        if not self.config.username or self.config.password is None:
            raise RedfishAuthError(
                self.config.device, _SESSIONS, "session auth needs a username and a password"
            )
        body = {"UserName": self.config.username, "Password": _reveal(self.config.password)}
        response = await self._request("POST", _SESSIONS, body)
        if response.status_code in (401, 403):
            raise RedfishAuthError(
                self.config.device, _SESSIONS, f"login refused (HTTP {response.status_code})"
            )
        if response.status_code >= 400:
            raise RedfishHTTPError(self.config.device, _SESSIONS, response.status_code, "login")
        token = response.headers.get("X-Auth-Token")
        if not token:
            raise RedfishAuthError(
                self.config.device, _SESSIONS, "login answered without an X-Auth-Token"
            )
        self._token = token
        location = response.headers.get("Location")
        if location:
            # Location may be absolute; keep the path so logout goes to the same base URL.
            self._session_uri = httpx.URL(location).path or location
        self.logins += 1

    def _decode(self, path: str, response: httpx.Response) -> dict[str, Any]:
        device = self.config.device
        status = response.status_code
        if status == 404:
            raise RedfishNotFoundError(device, path, 404)
        if status in (401, 403):
            raise RedfishAuthError(device, path, f"access refused (HTTP {status})")
        if status >= 400:
            raise RedfishHTTPError(device, path, status, _short(response.text))
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RedfishBadResponseError(device, path, f"invalid JSON: {exc}") from None
        except RecursionError:  # nesting deeper than the parser's recursion limit
            raise RedfishBadResponseError(device, path, "invalid JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise RedfishBadResponseError(
                device, path, f"expected a JSON object, got {type(data).__name__}"
            )
        return data


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"

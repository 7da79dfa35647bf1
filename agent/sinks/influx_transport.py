"""The two InfluxDB write APIs behind one interface: post a body, get an outcome.

* :class:`V2Transport` — InfluxDB 2.x / 3.x / Cloud through ``influxdb-client``'s
  synchronous ``WriteApi`` (``POST /api/v2/write``, token auth), run in a worker
  thread. The client's own retries are off: the sink decides what to retry.
* :class:`V1Transport` — InfluxDB 1.x ``POST /write?db=&rp=&precision=u`` with
  httpx (basic auth, so the password never appears in a URL or a log line).

Neither raises on a failed write: they return a :class:`WriteOutcome` with the
HTTP status (0 when no response came back), the server's message and the
``Retry-After`` delay, and the sink classifies it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import ssl
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

__all__ = [
    "HttpOptions",
    "Transport",
    "V1Transport",
    "V2Transport",
    "WriteOutcome",
    "parse_retry_after",
]


@dataclass(frozen=True)
class WriteOutcome:
    """What one write request came back with."""

    status: int
    message: str = ""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return 200 <= self.status < 300


class Transport(Protocol):
    """Posts a body of line protocol (uncompressed; the transport compresses)."""

    def describe(self) -> str:
        """Where writes go (no secret)."""
        ...

    async def write(self, body: bytes) -> WriteOutcome:
        """Post ``body``; never raises for HTTP or network errors."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _gzip(body: bytes) -> bytes:
    # Level 1: on a LAN the point is fewer bytes, not the last few percent of them.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def _ssl_context(ca_file: Path | None, verify: bool) -> ssl.SSLContext | bool:
    if not verify:
        return False
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(ca_file))


@dataclass(frozen=True)
class HttpOptions:
    """What both API versions' HTTP clients are configured with."""

    gzip: bool = True
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout_s: float = 30.0
    max_connections: int = 4


class V1Transport:
    """InfluxDB 1.x ``/write``."""

    def __init__(
        self,
        url: str,
        *,
        database: str,
        retention_policy: str | None = None,
        username: str | None = None,
        password: SecretStr | None = None,
        http: HttpOptions | None = None,
    ) -> None:
        """Prepare a connection pool (nothing is contacted yet)."""
        http = http or HttpOptions()
        self.url = url.rstrip("/")
        self.params = {"db": database, "precision": "u"}
        if retention_policy:
            self.params["rp"] = retention_policy
        self.gzip = http.gzip
        auth = (
            httpx.BasicAuth(username, password.get_secret_value())
            if username is not None and password is not None
            else None
        )
        self._client = httpx.AsyncClient(
            base_url=self.url,
            auth=auth,
            verify=_ssl_context(http.ca_file, http.verify_tls),
            timeout=httpx.Timeout(http.timeout_s),
            limits=httpx.Limits(
                max_connections=http.max_connections,
                max_keepalive_connections=http.max_connections,
            ),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    def describe(self) -> str:
        """Where writes go."""
        rp = f", rp {self.params['rp']}" if "rp" in self.params else ""
        return f"InfluxDB 1.x {self.url} db {self.params['db']}{rp}"

    async def write(self, body: bytes) -> WriteOutcome:
        """Post one body to ``/write``."""
        headers: dict[str, str] = {}
        content = body
        if self.gzip:
            content = await asyncio.to_thread(_gzip, body)
            headers["Content-Encoding"] = "gzip"
        try:
            response = await self._client.post(
                "/write", params=self.params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            return WriteOutcome(0, f"{type(exc).__name__}: {exc}")
        if response.is_success:
            return WriteOutcome(response.status_code)
        return WriteOutcome(
            response.status_code,
            _v1_message(response),
            parse_retry_after(response.headers.get("Retry-After")),
        )

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()


def _v1_message(response: httpx.Response) -> str:
    try:
        decoded: Any = response.json()
    except ValueError:
        return response.text.strip()[:2000] or response.reason_phrase
    if isinstance(decoded, dict) and "error" in decoded:
        return str(decoded["error"])
    return response.text.strip()[:2000]


class V2Transport:
    """InfluxDB 2.x / 3.x / Cloud through ``influxdb-client`` (``/api/v2/write``)."""

    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: SecretStr,
        http: HttpOptions | None = None,
    ) -> None:
        """Create the client (nothing is contacted yet)."""
        from influxdb_client.client.influxdb_client import (  # noqa: PLC0415 - only when configured
            InfluxDBClient,
        )
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415

        http = http or HttpOptions()
        self.url = url.rstrip("/")
        self.org, self.bucket = org, bucket
        self._client = InfluxDBClient(
            url=self.url,
            token=token.get_secret_value(),
            org=org,
            enable_gzip=http.gzip,
            timeout=int(http.timeout_s * 1000),
            ssl_ca_cert=str(http.ca_file) if http.ca_file is not None else None,
            verify_ssl=http.verify_tls,
            connection_pool_maxsize=http.max_connections,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def describe(self) -> str:
        """Where writes go."""
        return f"InfluxDB v2 API {self.url} org {self.org} bucket {self.bucket}"

    def _write_sync(self, body: bytes) -> WriteOutcome:
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415
        from influxdb_client.rest import ApiException  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        try:
            self._api.write(
                bucket=self.bucket,
                org=self.org,
                record=body,
                # The stubs type WritePrecision.US as str, though it is what write() wants.
                write_precision=WritePrecision.US,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            message = exc.message
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            return WriteOutcome(
                int(exc.status or 0),
                _v2_message(str(message or exc.reason or "")),
                parse_retry_after(exc.retry_after),
            )
        except (HTTPError, OSError) as exc:
            return WriteOutcome(0, f"{type(exc).__name__}: {exc}")
        return WriteOutcome(204)

    async def write(self, body: bytes) -> WriteOutcome:
        """Post one body through the client's synchronous write API in a worker thread."""
        return await asyncio.to_thread(self._write_sync, body)

    async def aclose(self) -> None:
        """Close the client."""
        await asyncio.to_thread(self._client.close)


def _v2_message(text: str) -> str:
    text = text.strip()
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text[:2000]
        if isinstance(decoded, dict) and "message" in decoded:
            return str(decoded["message"])
    return text[:2000]

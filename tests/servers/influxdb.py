"""Start a real InfluxDB 1.x (Debian's ``influxdb``) on loopback for tests and benchmarks.

Everything lives in a temporary directory (meta, data, WAL); the HTTP API and the
RPC port are bound to 127.0.0.1 on free ports. ``stop()`` / ``start()`` keep the
data directory, so a test can take the server away and bring it back (outage).
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port, require_binary, stop_process, wait_tcp

__all__ = ["InfluxDB1", "start_influxdb"]

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = false
  write-tracing = false
  max-body-size = 0

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
"""


@dataclass
class InfluxDB1:
    """A running ``influxd`` with helpers for InfluxQL queries."""

    root: Path
    port: int
    rpc_port: int
    auth: bool
    admin: tuple[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or restart) the server on the same port and data."""
        binary = require_binary("influxd")
        config = self.root / "influxdb.conf"
        config.write_text(
            _CONFIG.format(
                root=self.root,
                port=self.port,
                rpc_port=self.rpc_port,
                auth="true" if self.auth else "false",
            ),
            encoding="utf-8",
        )
        log = (self.root / "influxd.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, "-config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_tcp(self.port, timeout_s=30, proc=self.proc)
        self._wait_ping()

    def _wait_ping(self) -> None:
        import time  # noqa: PLC0415 - helper only

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as resp:
                    if resp.status == 204:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("influxd did not answer /ping")

    def stop(self) -> None:
        """Stop the server (data is kept for a later :meth:`start`)."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def query(
        self,
        q: str,
        *,
        db: str | None = None,
        auth: tuple[str, str] | None = None,
        epoch: str | None = "u",
        method: str = "GET",
    ) -> dict[str, Any]:
        """Run InfluxQL and return the decoded JSON (raises on an HTTP error)."""
        params = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        url = f"{self.url}/query?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, method=method)
        credentials = auth or self.admin
        if credentials is not None:
            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=60) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        for statement in result.get("results", []):
            if "error" in statement:
                raise RuntimeError(f"InfluxQL error: {statement['error']}")
        return result

    def rows(self, q: str, *, db: str) -> list[dict[str, Any]]:
        """Run a SELECT and return its rows as dicts (tags of GROUP BY merged in)."""
        out: list[dict[str, Any]] = []
        for statement in self.query(q, db=db).get("results", []):
            for series in statement.get("series", []):
                tags = series.get("tags", {})
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE`` (idempotent)."""
        self.query(f'CREATE DATABASE "{name}"', method="POST", epoch=None)


def start_influxdb(
    tmp_dir: Path, *, auth: bool = False, admin: tuple[str, str] = ("admin", "admin-pw")
) -> InfluxDB1:
    """Start InfluxDB 1.x in ``tmp_dir``; with ``auth`` an admin user is created first.

    With ``auth`` the server starts with ``auth-enabled = true``; InfluxDB lets the
    first ``CREATE USER ... WITH ALL PRIVILEGES`` through without credentials.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    server = InfluxDB1(root=tmp_dir, port=free_port(), rpc_port=free_port(), auth=auth)
    server.start()
    if auth:
        user, password = admin
        server.query(
            f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES",
            method="POST",
            epoch=None,
        )
        server.admin = admin
    return server

"""Start a real VictoriaMetrics (Debian's ``victoria-metrics``) on loopback.

VictoriaMetrics implements InfluxDB's ``/api/v2/write`` (any org, bucket and
token unless ``-httpAuth.*`` is set), so it stands in for InfluxDB 2.x in the
tests. It answers 204 even to malformed lines: use InfluxDB 1.x to test
write-error handling.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.servers import free_port, require_binary, stop_process, wait_tcp

__all__ = ["VictoriaMetrics", "start_victoriametrics"]


@dataclass
class VictoriaMetrics:
    """A running ``victoria-metrics`` single-node server."""

    root: Path
    port: int
    basic_auth: tuple[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server on ``port`` with its data in ``root``."""
        args = [
            require_binary("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.root / 'data'}",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ]
        if self.basic_auth is not None:
            args += [
                f"-httpAuth.username={self.basic_auth[0]}",
                f"-httpAuth.password={self.basic_auth[1]}",
            ]
        log = (self.root / "victoria-metrics.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_tcp(self.port, timeout_s=30, proc=self.proc)

    def stop(self) -> None:
        """Stop the server."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def _get(self, path: str) -> bytes:
        request = urllib.request.Request(f"{self.url}{path}")
        if self.basic_auth is not None:
            import base64  # noqa: PLC0415 - only with auth

            raw = f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(raw).decode())
        with urllib.request.urlopen(request, timeout=60) as resp:
            data: bytes = resp.read()
        return data

    def export(self, match: str) -> list[dict[str, Any]]:
        """Flush, then return ``/api/v1/export`` series (``metric``, ``values``, ``timestamps``)."""
        self._get("/internal/force_flush")
        query = urllib.parse.urlencode({"match[]": match})
        text = self._get(f"/api/v1/export?{query}").decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def start_victoriametrics(
    tmp_dir: Path, *, basic_auth: tuple[str, str] | None = None
) -> VictoriaMetrics:
    """Start VictoriaMetrics with its data in ``tmp_dir``."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    server = VictoriaMetrics(root=tmp_dir, port=free_port(), basic_auth=basic_auth)
    server.start()
    return server

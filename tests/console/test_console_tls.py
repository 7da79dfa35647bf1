"""The console over TLS (the cookie is ``Secure``) and a shutdown with a live stream open."""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import httpx

from tests.service.conftest import ThreadedAgent, Tokens, api_settings
from tests.service.test_tls import _self_signed


def test_secure_cookie_over_tls_and_streams_end_at_shutdown(tmp_path: Path) -> None:
    tokens = Tokens()
    cert, _ = _self_signed(tmp_path)
    settings = api_settings(tmp_path, tokens, tls_cert_file=cert, tls_key_secret="api_tls_key")
    trust = ssl.create_default_context(cafile=str(cert))
    server = ThreadedAgent(settings).start()
    stream_ended = threading.Event()
    try:
        server.wait_ready(verify=trust)
        client = httpx.Client(base_url=server.url, verify=trust, timeout=30)
        login = client.post("/api/v1/console/login", json={"token": tokens.ops})
        assert login.status_code == 200
        cookie = login.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        first_event = threading.Event()

        def follow() -> None:
            with client.stream("GET", "/api/v1/console/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        first_event.set()
            stream_ended.set()

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        assert first_event.wait(15), "no live event over TLS"
    finally:
        started = time.monotonic()
        server.stop()
        stopped_s = time.monotonic() - started
    # The open stream neither holds the shutdown (aiohttp would wait up to 60 s for it)
    # nor is left hanging: the server ends it.
    assert stopped_s < 10, stopped_s
    assert stream_ended.wait(5)
    reader.join(5)
    client.close()

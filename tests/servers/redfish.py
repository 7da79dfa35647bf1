"""A Redfish test server serving the real captures: URL path -> ``<tree>/<path>/index.json``.

Switches for the error paths the collector must survive: session auth (SessionService
login, X-Auth-Token, logout), basic auth, expiring every session (401 on the next request),
404 / 500 for chosen paths, slow answers, overridden bodies (the malformed telegraf files),
and HTTPS with a self-signed CA made with ``cryptography``.

Also :func:`serve_many` (``python -m tests.servers.redfish``): many BMCs on many ports in one
asyncio process with pre-rendered answers, for the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.paths import FIXTURES

__all__ = [
    "REDFISH",
    "RedfishServer",
    "TlsFiles",
    "make_tls",
    "redfish_server",
    "serve_many",
    "tree",
]

REDFISH = FIXTURES / "redfish"
SESSIONS = "/redfish/v1/SessionService/Sessions"


def tree(name: str) -> Path:
    """The folder serving ``/redfish/v1`` for a capture: ``real/dell`` or ``dmtf/public-pdu``."""
    base = REDFISH / name
    nested = base / "redfish" / "v1"
    return nested if nested.is_dir() else base


@dataclass
class TlsFiles:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(folder: Path, label: str = "test") -> TlsFiles:
    """Create a self-signed CA and a server certificate for 127.0.0.1/localhost."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} CA"))
        .issuer_name(_name(f"{label} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        folder / f"{label}-ca.pem", folder / f"{label}-cert.pem", folder / f"{label}-key.pem"
    )
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass
class RedfishServer:
    """State and switches of a running test server (change them from the test)."""

    root: Path
    auth: str = "none"  # "none" | "basic" | "session"
    username: str = "admin"
    password: str = "s3cret-pw"
    url: str = ""
    #: Seconds to wait before every answer (simulates a slow BMC).
    delay_s: float = 0.0
    #: Path -> status to answer instead (404, 500, ...).
    fail: dict[str, int] = field(default_factory=dict)
    #: Path -> raw body to answer instead of the file (malformed JSON, derived variants).
    overrides: dict[str, bytes] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> session path
    logins: int = 0
    logouts: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expire_sessions(self) -> None:
        """Forget every session: the next request with an old token gets 401."""
        with self.lock:
            self.tokens.clear()

    def count(self, path: str, method: str = "GET") -> int:
        """How many requests for ``path`` were answered."""
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and p == path)

    def file_for(self, path: str) -> Path | None:
        """The fixture file serving ``path``, or ``None``."""
        rel = path.split("?", 1)[0].rstrip("/")
        if not rel.startswith("/redfish/v1"):
            return None
        rel = rel.removeprefix("/redfish/v1").lstrip("/")
        if ".." in rel.split("/"):
            return None
        candidate = self.root / rel / "index.json"
        return candidate if candidate.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment: without these, Nagle + delayed ACK add ~40 ms
    # to every keep-alive request.
    disable_nagle_algorithm = True
    wbufsize = -1
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests assert on state, not on stderr

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append((self.command, self.path.split("?", 1)[0], status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("OData-Version", "4.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        state = self.server.state
        if state.auth == "basic":
            expected = base64.b64encode(f"{state.username}:{state.password}".encode()).decode()
            return self.headers.get("Authorization") == f"Basic {expected}"
        if state.auth == "session":
            with state.lock:
                return self.headers.get("X-Auth-Token", "") in state.tokens
        return True

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        if self.path.rstrip("/") != SESSIONS:
            self._reply(405)
            return
        try:
            creds = json.loads(body)
        except ValueError:
            self._reply(400)
            return
        if creds.get("UserName") != state.username or creds.get("Password") != state.password:
            self._reply(401, b'{"error": "bad credentials"}')
            return
        token = secrets.token_hex(16)
        with state.lock:
            state.logins += 1
            session = f"{SESSIONS}/{state.logins}"
            state.tokens[token] = session
        self._reply(
            201,
            json.dumps({"@odata.id": session}).encode(),
            {"X-Auth-Token": token, "Location": session},
        )

    def do_DELETE(self) -> None:
        state = self.server.state
        self._body()
        with state.lock:
            token = self.headers.get("X-Auth-Token", "")
            ok = state.tokens.get(token) == self.path
            if ok:
                del state.tokens[token]
                state.logouts += 1
        self._reply(204 if ok else 401)

    def do_GET(self) -> None:
        state = self.server.state
        if state.delay_s:
            time.sleep(state.delay_s)
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if not self._authorised():
            self._reply(401, b'{"error": "unauthorised"}')
            return
        if path in state.fail:
            self._reply(state.fail[path], b'{"error": "injected"}')
            return
        if path in state.overrides:
            self._reply(200, state.overrides[path])
            return
        file = state.file_for(path)
        if file is None:
            self._reply(404, b'{"error": "not found"}')
            return
        self._reply(200, file.read_bytes())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: RedfishServer


@contextmanager
def redfish_server(
    root: Path, *, auth: str = "none", tls: TlsFiles | None = None
) -> Iterator[RedfishServer]:
    """Serve a capture tree on 127.0.0.1 (a port it picks) in a thread; stop on exit."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    state = RedfishServer(root=root, auth=auth)
    httpd.state = state
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    state.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# -- many BMCs for the benchmark ----------------------------------------------------------------


def _render(root: Path) -> dict[bytes, bytes]:
    """Pre-render an HTTP/1.1 answer for every resource of a tree."""
    answers: dict[bytes, bytes] = {}
    for file in root.rglob("index.json"):
        rel = file.parent.relative_to(root).as_posix()
        path = "/redfish/v1" + ("" if rel == "." else "/" + rel)
        body = file.read_bytes()
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        answers[path.encode()] = head + body
    return answers


_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class _FastBmc(asyncio.Protocol):
    """Minimal keep-alive HTTP/1.1 GET responder (no auth) with pre-rendered answers."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            line = head.split(b"\r\n", 1)[0].split(b" ")
            path = line[1].split(b"?", 1)[0].rstrip(b"/") if len(line) > 1 else b""
            assert self.transport is not None
            self.transport.write(self.answers.get(path, _NOT_FOUND))


async def serve_many(root: Path, count: int) -> None:
    """Listen on ``count`` ports, print them as one JSON line, serve until killed."""
    answers = _render(root)
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda: _FastBmc(answers), "127.0.0.1", 0, backlog=64)
        for _ in range(count)
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def main() -> None:
    """``python -m tests.servers.redfish --tree real/dell --count 500``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", default="real/dell")
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(serve_many(tree(args.tree), args.count))


if __name__ == "__main__":
    main()

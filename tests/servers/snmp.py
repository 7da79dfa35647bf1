"""Start real SNMP agents on loopback for tests and benchmarks: snmpsim and net-snmp's snmpd.

snmpsim serves a whole directory of ``.snmprec`` walks from one process (the v2c
community or the v3 context name selects the file), so one process is shared by
a whole test session. snmpd serves fixed values from ``override`` lines in a
temporary configuration, for SNMPv3 tests and benchmarks (it is ~35x faster).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import free_udp_port, require_binary, stop_process

__all__ = [
    "SnmpdServer",
    "SnmpsimServer",
    "V3User",
    "black_hole",
    "bulk_dropping_relay",
    "snmpd",
    "snmpsim",
    "wait_snmp",
]

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class V3User:
    """An SNMPv3 USM user as the agent is configured with it."""

    name: str
    auth_key: str
    priv_key: str
    #: snmpsim spelling (SHA, SHA256, …) — also used to derive snmpd's.
    auth_proto: str = "SHA256"
    #: snmpsim spelling (AES, AES192, AES256, DES).
    priv_proto: str = "AES256"


@dataclass
class SnmpsimServer:
    """A running snmpsim command responder."""

    port: int
    proc: subprocess.Popen[bytes]
    engine_id: str
    users: list[V3User] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"


@dataclass
class SnmpdServer:
    """A running net-snmp snmpd."""

    port: int
    proc: subprocess.Popen[bytes]
    community: str
    users: list[V3User] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"


def _get_request(community: str) -> bytes:
    """A hand-built v2c GET of sysUpTime.0 (so the readiness check needs no SNMP library)."""
    oid = bytes([0x06, 0x08, 0x2B, 6, 1, 2, 1, 1, 3, 0])
    varbind = bytes([0x30, len(oid) + 2]) + oid + b"\x05\x00"
    varbinds = bytes([0x30, len(varbind)]) + varbind
    pdu_body = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + varbinds
    pdu = bytes([0xA0, len(pdu_body)]) + pdu_body
    comm = community.encode()
    body = b"\x02\x01\x01" + bytes([0x04, len(comm)]) + comm + pdu
    return bytes([0x30, len(body)]) + body


def wait_snmp(
    port: int, community: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0
) -> None:
    """Wait until an agent on 127.0.0.1:port answers a v2c GET (fail if it exits)."""
    deadline = time.monotonic() + timeout_s
    request = _get_request(community)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"SNMP agent exited with {proc.returncode} before answering")
            sock.sendto(request, ("127.0.0.1", port))
            try:
                sock.recvfrom(65535)
                return
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise TimeoutError(f"no SNMP answer on 127.0.0.1:{port} after {timeout_s} s")


@contextlib.contextmanager
def snmpsim(
    data_dir: Path,
    *,
    users: Sequence[V3User] = (),
    engine_id: str = "80001f8880a1b2c3d4e5f60708",
    probe_community: str | None = None,
    log_path: Path | None = None,
) -> Iterator[SnmpsimServer]:
    """Run snmpsim serving every walk in ``data_dir`` (community/context = file stem).

    All v3 users are served by the one engine (each ``--v3-user`` is followed by
    its own keys and protocols, in snmpsim's spelling: ``AES192`` is the Reeder key
    extension, ``AES192BLMT`` the Blumenthal one).
    """
    exe = Path(sys.executable).with_name("snmpsim-command-responder")
    if not exe.exists():
        require_binary("snmpsim-command-responder")
    port = free_udp_port()
    cache = Path(tempfile.mkdtemp(prefix="snmpsim-cache-"))
    args = [
        str(exe),
        "--process-user=root",
        "--process-group=root",
        f"--cache-dir={cache}",
        "--log-level=error",
        f"--v3-engine-id={engine_id}",
        f"--data-dir={data_dir}",
    ]
    for user in users:
        args.append(f"--v3-user={user.name}")
        if user.auth_proto != "NONE":
            args += [f"--v3-auth-key={user.auth_key}", f"--v3-auth-proto={user.auth_proto}"]
        if user.priv_proto != "NONE":
            args += [f"--v3-priv-key={user.priv_key}", f"--v3-priv-proto={user.priv_proto}"]
    args.append(f"--agent-udpv4-endpoint=127.0.0.1:{port}")
    log = log_path.open("wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        community = probe_community or next(p.stem for p in sorted(data_dir.glob("*.snmprec")))
        wait_snmp(port, community, proc)
        yield SnmpsimServer(port, proc, engine_id, list(users))
    finally:
        stop_process(proc)
        if log_path:
            log.close()  # type: ignore[union-attr]


_SNMPD_AUTH = {
    "SHA": "SHA",
    "SHA224": "SHA-224",
    "SHA256": "SHA-256",
    "SHA384": "SHA-384",
    "SHA512": "SHA-512",
    "MD5": "MD5",
}
_SNMPD_PRIV = {
    "AES": "AES",
    "AES128": "AES",
    "AES192": "AES-192",
    "AES256": "AES-256",
    # net-snmp's Cisco-style ("Reeder") key extension for AES-192/256.
    "AES192C": "AES-192-C",
    "AES256C": "AES-256-C",
    "DES": "DES",
}


@contextlib.contextmanager
def snmpd(
    overrides: Sequence[tuple[str, str, str]],
    *,
    community: str = "public",
    users: Sequence[V3User] = (),
    context: str = "",
    port: int | None = None,
    state_dir: Path | None = None,
) -> Iterator[SnmpdServer]:
    """Run net-snmp's snmpd answering ``overrides`` (``(oid, type, value)``, snmpd.conf syntax).

    Args:
        overrides: ``override`` lines, e.g. ``("1.3.6.1.4.1.99.1.0", "integer", "42")``.
        community: The read-only v2c community.
        users: USM users (authPriv) created with ``createUser`` and granted ``rouser``.
        context: Context name the v3 users may read (empty = default context).
        port: UDP port (default: a free one).
        state_dir: Folder for the config, log and persistent state (default: a new one).
            Start again with the same folder and port for a reboot: same engine id,
            snmpEngineBoots + 1.
    """
    exe = require_binary("snmpd")
    port = port or free_udp_port()
    tmp = state_dir or Path(tempfile.mkdtemp(prefix="snmpd-"))
    lines = [
        f"agentAddress udp:127.0.0.1:{port}",
        f"rocommunity {community} 127.0.0.1",
        "dontLogTCPWrappersConnects yes",
    ]
    for user in users:
        # auth_proto/priv_proto "NONE" make authNoPriv and noAuthNoPriv users.
        if user.auth_proto == "NONE":
            lines.append(f"createUser {user.name}")
            level = "noauth"
        elif user.priv_proto == "NONE":
            lines.append(f"createUser {user.name} {_SNMPD_AUTH[user.auth_proto]} {user.auth_key}")
            level = "auth"
        else:
            lines.append(
                f"createUser {user.name} {_SNMPD_AUTH[user.auth_proto]} {user.auth_key} "
                f"{_SNMPD_PRIV[user.priv_proto]} {user.priv_key}"
            )
            level = "priv"
        lines.append(f"rouser {user.name} {level}" + (f" -n {context}" if context else ""))
    for oid, kind, value in overrides:
        lines.append(f"override {oid} {kind} {value}")
    persisted = tmp / "state" / "snmpd.conf"
    if persisted.exists():
        # -C skips the persistent file: carry the engine id and boot count over by hand,
        # so a restart is a reboot of the same engine (snmpEngineBoots + 1).
        lines += [
            line
            for line in persisted.read_text(encoding="utf-8").splitlines()
            if line.startswith(("engineBoots ", "oldEngineID "))
        ]
    conf = tmp / "snmpd.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # -C: only our config; -f: foreground; log to a file; no MIB loading (faster start).
    proc = subprocess.Popen(
        [
            exe,
            "-f",
            "-C",
            "-c",
            str(conf),
            "-Lf",
            str(tmp / "snmpd.log"),
            "-M",
            "/dev/null",
            "-m",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Persistent data (engine id, boots) in its own folder: it is also called snmpd.conf.
        env={"SNMP_PERSISTENT_DIR": str(tmp / "state"), "PATH": "/usr/sbin:/usr/bin"},
    )
    try:
        wait_snmp(port, community, proc)
        yield SnmpdServer(port, proc, community, list(users))
    finally:
        stop_process(proc)


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A UDP port that swallows every datagram and never answers (an unreachable device)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def bulk_dropping_relay(target_port: int) -> Iterator[int]:
    """A UDP relay to a real agent that silently drops GETBULK requests (PDU tag 0xA5).

    It stands for the agents that mishandle GETBULK (old firmware that never answers
    it); everything else is forwarded unchanged to ``127.0.0.1:target_port``.
    """
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    front.settimeout(0.1)
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    back.settimeout(0.1)
    stop = threading.Event()
    clients: dict[bytes, tuple[str, int]] = {}

    def is_bulk(data: bytes) -> bool:
        # v2c: 30 L 02 01 01 04 L community <PDU tag>; lengths < 128 in these tests.
        pos = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)
        pos += 3
        pos += 2 + data[pos + 1]
        return data[pos] == 0xA5

    def pump() -> None:
        while not stop.is_set():
            try:
                data, addr = front.recvfrom(65535)
                if not is_bulk(data):
                    clients[b"last"] = addr
                    back.sendto(data, ("127.0.0.1", target_port))
            except (TimeoutError, OSError):
                pass
            try:
                answer, _ = back.recvfrom(65535)
                if b"last" in clients:
                    front.sendto(answer, clients[b"last"])
            except (TimeoutError, OSError):
                pass

    front.settimeout(0.005)
    back.settimeout(0.005)
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield int(front.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        front.close()
        back.close()

"""Start a real mosquitto broker on a loopback port for tests and benchmarks.

Usage::

    broker = start_mosquitto(tmp_path, tls=True, users={"agent": "s3cret"})
    try:
        ...  # connect to broker.host:broker.port, CA in broker.ca_file
        broker.restart()  # same port; sessions survive when persistence=True
    finally:
        broker.stop()

Why the directory juggling: started as root, mosquitto drops to the ``mosquitto``
user before it reads certificates, the password file and the persistence
database. pytest's ``tmp_path`` lives under a 0700 root directory the
``mosquitto`` user cannot traverse, so the broker's files go in a private
directory under ``/tmp`` (mode 0755, files owned by ``mosquitto``) that
:meth:`Mosquitto.stop` removes. ``tmp_dir`` keeps a copy of the config and the
broker log for post-mortems.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.servers import free_port, require_binary, stop_process, wait_tcp

__all__ = ["Mosquitto", "start_mosquitto"]


@dataclass
class Mosquitto:
    """A running broker. ``ca_file`` / ``client_cert_file`` / ``client_key_file`` with TLS."""

    host: str
    port: int
    proc: subprocess.Popen[bytes]
    config_file: Path
    log_file: Path
    workdir: Path
    tmp_dir: Path
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    users: dict[str, str] = field(default_factory=dict)
    _binary: str = ""

    @property
    def tls(self) -> bool:
        """Whether the listener speaks TLS."""
        return self.ca_file is not None

    def log_text(self) -> str:
        """The broker log so far (e.g. to look for "Outgoing messages are being dropped")."""
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop the broker (SIGTERM, so a persistent broker saves its database).

        Args:
            cleanup: Also remove the private working directory (pass False to
                stop and later :meth:`restart`).
        """
        stop_process(self.proc)
        if cleanup:
            if self.log_file.exists():
                shutil.copy2(self.log_file, self.tmp_dir / "mosquitto.log")
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """Kill the broker hard (SIGKILL: no database save), keeping its files for restart."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port with the same files."""
        if self.proc.poll() is None:
            stop_process(self.proc)
        self.proc = _launch(self._binary, self.config_file, self.port)


def _launch(binary: str, config_file: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [binary, "-c", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_tcp(port, timeout_s=15.0, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def _write_certs(folder: Path) -> tuple[Path, Path, Path, Path, Path]:
    """A throw-away CA, a server cert for IP 127.0.0.1 / localhost and a client cert."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pue-agent test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
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

    def leaf(cn: str, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                    if server
                    else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    ca_file = folder / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths = []
    for cn, server in (("127.0.0.1", True), ("pue-agent-test-client", False)):
        cert_pem, key_pem = leaf(cn, server)
        stem = "server" if server else "client"
        cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        paths += [cert_path, key_path]
    return ca_file, paths[0], paths[1], paths[2], paths[3]


def _hand_to_broker_user(folder: Path) -> None:
    """Make ``folder`` and its files usable by the user mosquitto drops to (when root)."""
    folder.chmod(0o755)
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam("mosquitto")
    except KeyError:
        return  # no such user: mosquitto then stays root and reads everything
    for path in [folder, *folder.iterdir()]:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start_mosquitto(
    tmp_dir: Path,
    *,
    tls: bool = False,
    users: dict[str, str] | None = None,
    persistence: bool = True,
    require_client_cert: bool = False,
    max_queued_messages: int = 100_000,
    extra_config: Sequence[str] = (),
) -> Mosquitto:
    """Start mosquitto on a free 127.0.0.1 port and wait until it accepts connections.

    Args:
        tmp_dir: Where the config copy and final log are kept (e.g. pytest's ``tmp_path``).
        tls: Serve TLS with a fresh test CA (server cert has SAN ``IP:127.0.0.1``).
        users: Username -> password; when given, anonymous access is refused.
        persistence: Keep sessions and queued QoS 1/2 messages across :meth:`Mosquitto.restart`.
        require_client_cert: With ``tls``, refuse clients without a cert from the test CA.
        max_queued_messages: Per-client queue while offline / in flight (mosquitto's
            default of 1000 is too small for the restart and benchmark tests).
        extra_config: More ``mosquitto.conf`` lines, appended verbatim.

    Returns:
        The running broker; call :meth:`Mosquitto.stop` when done.
    """
    binary = require_binary("mosquitto")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pue-mosquitto-"))
    port = free_port()
    lines = [
        "per_listener_settings false",
        f"listener {port} 127.0.0.1",
        f"allow_anonymous {'false' if users else 'true'}",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {workdir}/",
        "autosave_interval 1",
        f"max_queued_messages {max_queued_messages}",
        "max_queued_bytes 0",
        f"log_dest file {workdir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp_format %H:%M:%S",
        "connection_messages true",
    ]
    ca_file = client_cert = client_key = None
    if tls:
        ca_file, server_cert, server_key, client_cert, client_key = _write_certs(workdir)
        lines += [f"cafile {ca_file}", f"certfile {server_cert}", f"keyfile {server_key}"]
        if require_client_cert:
            lines.append("require_certificate true")
    if users:
        password_file = workdir / "passwords"
        password_file.touch()
        passwd = require_binary("mosquitto_passwd")
        for user, password in users.items():
            # -b puts the password on argv: acceptable for throw-away test credentials only.
            subprocess.run(
                [passwd, "-b", str(password_file), user, password],
                check=True,
                capture_output=True,
            )
        lines.append(f"password_file {password_file}")
    lines += list(extra_config)
    config_file = workdir / "mosquitto.conf"
    config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "mosquitto.log").touch()
    _hand_to_broker_user(workdir)
    shutil.copy2(config_file, tmp_dir / "mosquitto.conf")
    proc = _launch(binary, config_file, port)
    return Mosquitto(
        host="127.0.0.1",
        port=port,
        proc=proc,
        config_file=config_file,
        log_file=workdir / "mosquitto.log",
        workdir=workdir,
        tmp_dir=tmp_dir,
        ca_file=ca_file,
        client_cert_file=client_cert,
        client_key_file=client_key,
        users=dict(users or {}),
        _binary=binary,
    )

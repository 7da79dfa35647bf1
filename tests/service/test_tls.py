"""The API over TLS: certificate from a path, private key from the secrets directory."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.settings import ConfigError
from tests.service.conftest import ThreadedAgent, Tokens, api_settings, running


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pue-agent test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "api.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = folder / "secrets" / "api_tls_key"
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_with_key_from_secrets(tmp_path: Path, tokens: Tokens) -> None:
    cert, _ = _self_signed(tmp_path)
    settings = api_settings(tmp_path, tokens, tls_cert_file=cert, tls_key_secret="api_tls_key")
    trust = ssl.create_default_context(cafile=str(cert))
    for server in running(settings, verify=trust):
        response = httpx.get(
            server.url + "/api/v1/kpi/current", headers=tokens.header("auditor"), verify=trust
        )
        assert response.status_code == 200
        assert response.json()["label"] == "realtime"
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url.replace("https", "http") + "/healthz", timeout=3)


def test_missing_key_secret_fails_start_naming_the_secret(tmp_path: Path, tokens: Tokens) -> None:
    cert, key = _self_signed(tmp_path)
    key.unlink()
    settings = api_settings(tmp_path, tokens, tls_cert_file=cert, tls_key_secret="api_tls_key")
    threaded = ThreadedAgent(settings).start()
    assert threaded.thread is not None
    threaded.thread.join(20)
    assert isinstance(threaded.error, ConfigError)
    assert "api_tls_key" in str(threaded.error)


def test_port_in_use_is_a_config_error(tmp_path: Path, tokens: Tokens) -> None:
    settings = api_settings(tmp_path, tokens)
    for _server in running(settings):
        second = ThreadedAgent(settings.model_copy(update={"state_dir": tmp_path / "other"}))
        second.start()
        assert second.thread is not None
        second.thread.join(20)
        assert isinstance(second.error, ConfigError)
        assert f"127.0.0.1:{settings.api.port}" in str(second.error)

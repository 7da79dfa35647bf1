"""``pue-agent keys``: key file mode, secrets-directory loading, passphrase, no leaks."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from agent.cli import app as agent_app
from agent.keys import (
    KEY_SECRET,
    SigningKeyError,
    fingerprint,
    init_key,
    key_path,
    load_public_key,
    load_signing_key,
    public_key_pem,
)
from agent.settings import load_settings


@pytest.fixture
def app() -> typer.Typer:
    return agent_app


def test_keys_init_writes_0600_and_show_prints_public_key(app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "state"
    result = runner.invoke(app, ["keys", "init", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    path = state / "keys" / "report-signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "PRIVATE KEY" not in result.output
    shown = runner.invoke(app, ["keys", "show", "--state-dir", str(state)])
    assert shown.exit_code == 0
    key = load_signing_key(load_settings(None, state_dir=state))
    assert f"fingerprint: {key.fingerprint}" in shown.output
    assert public_key_pem(key.public).strip() in shown.output
    assert "PRIVATE KEY" not in shown.output
    again = runner.invoke(app, ["keys", "init", "--state-dir", str(state)])
    assert again.exit_code != 0 and "already exists" in again.output


def test_key_from_secrets_dir_with_passphrase_never_leaks(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    passphrase = "correct horse battery staple 7731"
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    (secrets / KEY_SECRET).write_bytes(pem)
    (secrets / "signing_key_passphrase").write_text(passphrase + "\n", encoding="utf-8")
    settings = load_settings(None, state_dir=tmp_path / "state", secrets_dir=secrets)
    key = load_signing_key(settings)
    assert key.fingerprint == fingerprint(private.public_key())
    assert key.origin == f"secret {KEY_SECRET!r}"
    (secrets / "signing_key_passphrase").write_text("wrong-passphrase-123", encoding="utf-8")
    with pytest.raises(SigningKeyError) as info:
        load_signing_key(load_settings(None, state_dir=tmp_path / "state", secrets_dir=secrets))
    message = str(info.value)
    assert "wrong-passphrase-123" not in message and passphrase not in message
    assert "BEGIN" not in message


def test_passphrase_setting_encrypts_the_key_file(tmp_path: Path) -> None:
    settings = load_settings(None, state_dir=tmp_path, signing_key_passphrase="s3cret-pass")
    key = init_key(settings)
    assert b"ENCRYPTED PRIVATE KEY" in key_path(settings).read_bytes()
    assert load_signing_key(settings).fingerprint == key.fingerprint
    with pytest.raises(SigningKeyError):
        load_signing_key(load_settings(None, state_dir=tmp_path))


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    settings = load_settings(None, state_dir=tmp_path)
    init_key(settings)
    os.chmod(key_path(settings), 0o644)
    with pytest.raises(SigningKeyError, match="readable by others"):
        load_signing_key(settings)


def test_public_key_formats(tmp_path: Path) -> None:
    public = Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "k.pem"
    pem.write_text(public_key_pem(public), encoding="ascii")
    raw = public.public_bytes_raw()
    for value in (pem, str(pem), raw.hex(), base64.b64encode(raw).decode()):
        assert fingerprint(load_public_key(value)) == fingerprint(public)
    with pytest.raises(SigningKeyError):
        load_public_key("not a key")

"""The site's Ed25519 report-signing key: create it, load it, show its public half.

The private key is a PKCS#8 PEM file. ``pue-agent keys init`` writes it to
``state_dir/keys/report-signing.key`` with mode 0600 (directory 0700), encrypted
when a passphrase is configured. A deployment that keeps keys out of the state
directory puts the same PEM text in the secrets directory under the name
:data:`KEY_SECRET` (systemd ``LoadCredential=``); that copy wins.

The fingerprint is the SHA-256 of the 32 raw public-key bytes, in hex: anyone
holding the public key can recompute it with standard tools (see
``docs/report.md``). Key material and the passphrase never appear in messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.settings import AgentSettings, ConfigError, read_secret

__all__ = [
    "KEY_FILE_NAME",
    "KEY_SECRET",
    "PASSPHRASE_SECRET",
    "SigningKey",
    "SigningKeyError",
    "fingerprint",
    "init_key",
    "key_path",
    "load_public_key",
    "load_signing_key",
    "public_key_pem",
]

KEY_FILE_NAME = "report-signing.key"
#: Name of the secret holding the private key PEM (overrides the state-directory file).
KEY_SECRET = "report_signing_key"  # noqa: S105 - a secret's name, not its value
#: Name of the secret holding the key's passphrase (also ``signing_key_passphrase`` setting).
PASSPHRASE_SECRET = "signing_key_passphrase"  # noqa: S105 - a name


class SigningKeyError(RuntimeError):
    """The signing key is missing, unreadable or of the wrong type (message names no secret)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A loaded private key with where it came from (for messages, never the key itself)."""

    private: Ed25519PrivateKey
    origin: str

    @property
    def public(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private.public_key()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the raw public key, hex."""
        return fingerprint(self.public)


def key_path(settings: AgentSettings) -> Path:
    """Where ``keys init`` keeps the private key."""
    return settings.state_dir / "keys" / KEY_FILE_NAME


def fingerprint(public: Ed25519PublicKey) -> str:
    """Return the key's fingerprint: SHA-256 of its 32 raw bytes, lower-case hex."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public: Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM (what ``openssl pkey -pubin`` reads)."""
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _passphrase(settings: AgentSettings) -> bytes | None:
    if settings.signing_key_passphrase is not None:
        return settings.signing_key_passphrase.get_secret_value().encode()
    try:
        return read_secret(PASSPHRASE_SECRET, settings).get_secret_value().encode()
    except ConfigError:
        return None


def init_key(settings: AgentSettings, *, force: bool = False) -> SigningKey:
    """Generate a new key and write it with mode 0600.

    Args:
        settings: Gives the state directory and the optional passphrase.
        force: Replace an existing key (old reports stay verifiable with the old public key).

    Raises:
        SigningKeyError: if a key exists and ``force`` is false, or the file cannot be written.
    """
    path = key_path(settings)
    if path.exists() and not force:
        raise SigningKeyError(f"a signing key already exists at {path} (use --force to replace it)")
    private = Ed25519PrivateKey.generate()
    passphrase = _passphrase(settings)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        # Create with 0600 from the start: a chmod after writing would leave a readable window.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise SigningKeyError(f"cannot write the signing key to {path}: {exc.strerror}") from exc
    return SigningKey(private, str(path))


def _parse_private(pem: bytes, passphrase: bytes | None, origin: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:
        # cryptography says "password was not given" / "was given but not encrypted".
        raise SigningKeyError(f"signing key {origin}: passphrase missing or not needed") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"signing key {origin}: not a readable PEM key or wrong passphrase"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {origin}: not an Ed25519 key")
    return key


def load_signing_key(settings: AgentSettings) -> SigningKey:
    """Load the private key: the ``report_signing_key`` secret if present, else the file.

    Raises:
        SigningKeyError: if there is no key, or it cannot be decrypted/parsed.
    """
    passphrase = _passphrase(settings)
    try:
        secret = read_secret(KEY_SECRET, settings)
    except ConfigError:
        secret = None
    if secret is not None:
        origin = f"secret {KEY_SECRET!r}"
        pem = secret.get_secret_value().encode()
        return SigningKey(_parse_private(pem, passphrase, origin), origin)
    path = key_path(settings)
    if not path.is_file():
        raise SigningKeyError(
            f"no signing key: neither secret {KEY_SECRET!r} nor {path} exists "
            "(run `pue-agent keys init`)"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SigningKeyError(
            f"signing key {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    return SigningKey(_parse_private(path.read_bytes(), passphrase, str(path)), str(path))


def load_public_key(value: str | Path) -> Ed25519PublicKey:
    """Load a public key from a PEM file, or from 64 hex / base64 characters of the raw key.

    Raises:
        SigningKeyError: naming what could not be parsed.
    """
    text: str
    path = Path(value)
    if isinstance(value, Path) or (len(str(value)) < 4096 and path.is_file()):
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningKeyError(f"cannot read public key file {path}") from exc
    else:
        text = str(value)
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError("public key: not a readable PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError("public key: not an Ed25519 key")
        return key
    raw: bytes | None = None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != 32:
        raise SigningKeyError("public key: expected a PEM file or the 32-byte key in hex or base64")
    return Ed25519PublicKey.from_public_bytes(raw)

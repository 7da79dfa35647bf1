r"""The bundle manifest (SHA-256 of every file) and its Ed25519 signature.

``manifest.sig`` is the raw 64-byte Ed25519 signature of the exact bytes of
``manifest.json``, so an auditor can check it with OpenSSL alone::

    openssl pkeyutl -verify -pubin -inkey site.pub.pem -rawin \
        -in manifest.json -sigfile manifest.sig

and every file with ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "SIGNATURE",
    "bundle_files",
    "encode_manifest",
    "sha256_stream",
    "sign_manifest",
]

BUNDLE_FORMAT = "pue-agent-report/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_CHUNK = 4 << 20


def sha256_stream(handle: IO[bytes]) -> tuple[str, int]:
    """SHA-256 (hex) and size of a binary stream, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def bundle_files(root: Path) -> list[str]:
    """Every file under ``root`` (POSIX relative paths, sorted) except the manifest and signature.

    Symbolic links are listed too (and later fail hashing) so nothing is skipped silently.
    """
    names = []
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            name = path.relative_to(root).as_posix()
            if name not in (MANIFEST, SIGNATURE):
                names.append(name)
    return sorted(names)


def encode_manifest(meta: dict[str, Any], files: Iterable[tuple[str, str, int]]) -> bytes:
    """Canonical manifest bytes: ``meta`` plus ``files`` {name: {sha256, bytes}}, sorted keys."""
    document = dict(meta)
    document["files"] = {name: {"sha256": digest, "bytes": size} for name, digest, size in files}
    text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def sign_manifest(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The 64-byte Ed25519 signature of the manifest bytes."""
    return key.sign(manifest)

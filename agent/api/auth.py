"""Bearer tokens and roles for the HTTP API.

Tokens live in the secrets directory (systemd ``LoadCredential=``) under the
names the ``[api]`` table lists; this module holds only their SHA-256 digests,
so a token is never kept, logged or echoed. A presented token is hashed and
compared with every known digest using :func:`hmac.compare_digest`, without
stopping at the first match, so timing says nothing about which (or whether a)
token matched.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field

from agent.logs import get_logger
from agent.settings import AgentSettings, ApiSettings, ConfigError, read_secret

__all__ = ["Role", "TokenTable", "parse_bearer", "token_digest"]

_log = get_logger("api.auth")


class Role(enum.StrEnum):
    """Who may call what: ``ops`` reads everything, ``auditor`` reads KPIs and reports."""

    OPS = "ops"
    AUDITOR = "auditor"


def token_digest(token: str) -> bytes:
    """SHA-256 of a token: what is kept in memory instead of the token (tables, sessions)."""
    # surrogateescape: aiohttp hands undecodable header bytes over as lone surrogates.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _visible_ascii(token: str) -> bool:
    """Only printable ASCII (RFC 6750 token68 and the like): no controls, no 8-bit bytes."""
    return token.isascii() and token.isprintable() and " " not in token


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``.

    A token with any byte outside printable ASCII is ``None`` (so a 401, counted as an
    auth failure): no configured token can contain one, and such bytes must never reach
    an encoder or a log line.
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not _visible_ascii(token):
        return None
    return token


@dataclass
class TokenTable:
    """Digests of the configured tokens with their roles."""

    entries: list[tuple[bytes, Role]] = field(default_factory=list)

    @classmethod
    def load(cls, api: ApiSettings, settings: AgentSettings) -> TokenTable:
        """Read every configured token secret; a missing one is logged by *name* and skipped.

        An API whose tokens are all missing still answers ``/healthz`` and
        ``/readyz`` and refuses everything else with 401, which is the safe side.
        """
        entries: list[tuple[bytes, Role]] = []
        for role, names in ((Role.OPS, api.ops_tokens), (Role.AUDITOR, api.auditor_tokens)):
            for name in names:
                try:
                    secret = read_secret(name, settings).get_secret_value()
                except ConfigError:
                    _log.warning("API token secret not found", secret=name, role=role.value)
                    continue
                if not secret.strip():
                    _log.warning("API token secret is empty; ignored", secret=name)
                    continue
                entries.append((token_digest(secret.strip()), role))
        return cls(entries)

    def role_of(self, token: str | None) -> Role | None:
        """The role of ``token`` (the highest if it is listed twice), or ``None``."""
        if token is None:
            return None
        return self.role_of_digest(token_digest(token))

    def role_of_digest(self, presented: bytes) -> Role | None:
        """The role of the token whose :func:`token_digest` is ``presented``, or ``None``.

        A console session keeps only this digest and asks again on every request, so a
        token removed at a reload ends its sessions at once.
        """
        found: Role | None = None
        for digest, role in self.entries:
            # No early exit: every digest is compared, whatever matched before.
            if hmac.compare_digest(presented, digest) and found is not Role.OPS:
                found = role
        return found

    def __len__(self) -> int:
        return len(self.entries)

"""Redfish errors, and the one place where transport exceptions are translated into them.

Every message names the device and the resource path, never a credential: URLs carry no
user info (rejected in the options) and auth headers are never formatted.
"""

from __future__ import annotations

import ssl

import httpx

__all__ = [
    "RedfishAuthError",
    "RedfishBadResponseError",
    "RedfishConnectError",
    "RedfishError",
    "RedfishHTTPError",
    "RedfishNotFoundError",
    "RedfishTLSError",
    "RedfishTimeoutError",
    "RedfishTransportError",
    "translate",
]


class RedfishError(Exception):
    """A request to a BMC failed; ``reason`` is a short label for metrics."""

    reason = "error"

    def __init__(self, device: str, path: str, detail: str) -> None:
        self.device = device
        self.path = path
        self.detail = detail
        super().__init__(f"redfish device {device!r}: {path}: {detail}")


class RedfishTransportError(RedfishError):
    """The BMC could not be reached or did not answer: the rest of the poll is skipped."""

    reason = "transport"


class RedfishTLSError(RedfishTransportError):
    """The BMC's certificate was not accepted (wrong CA, wrong name, expired)."""

    reason = "tls"


class RedfishTimeoutError(RedfishTransportError):
    """The BMC did not answer within the device's timeout."""

    reason = "timeout"


class RedfishConnectError(RedfishTransportError):
    """The connection was refused or dropped."""

    reason = "connect"


class RedfishAuthError(RedfishError):
    """Login failed or the BMC refused the credentials."""

    reason = "auth"


class RedfishHTTPError(RedfishError):
    """The BMC answered with an error status."""

    reason = "http"

    def __init__(self, device: str, path: str, status: int, detail: str = "") -> None:
        self.status = status
        super().__init__(device, path, f"HTTP {status}{': ' + detail if detail else ''}")


class RedfishNotFoundError(RedfishHTTPError):
    """404: the resource moved or vanished; the device is re-discovered."""

    reason = "not_found"


class RedfishBadResponseError(RedfishError):
    """The body is not valid JSON, or a value is not what the schema says."""

    reason = "bad_response"


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


def translate(exc: Exception, device: str, path: str) -> RedfishError:
    """Turn an httpx/ssl/OS exception from a request into a :class:`RedfishError`."""
    if isinstance(exc, RedfishError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        # Checked first: a timeout inside TLS reads also carries an ssl exception in its chain.
        return RedfishTimeoutError(device, path, f"no answer in time ({type(exc).__name__})")
    tls = _ssl_cause(exc)
    if tls is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        detail = (
            getattr(tls, "verify_message", None)
            or getattr(tls, "reason", None)
            or str(tls or exc)
            or type(tls or exc).__name__
        )
        if isinstance(tls, ssl.SSLCertVerificationError):
            detail = f"certificate not accepted ({detail}); check the device's ca_file"
        return RedfishTLSError(device, path, f"TLS handshake failed: {detail}")
    if isinstance(exc, httpx.TransportError | OSError):
        return RedfishConnectError(device, path, f"{type(exc).__name__}: {exc}")
    return RedfishError(device, path, f"{type(exc).__name__}: {exc}")

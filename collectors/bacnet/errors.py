"""BACnet errors, and the one place where bacpypes3's answers and exceptions are translated.

bacpypes3 raises the Error, Reject and Abort PDUs themselves, and they derive from
``BaseException``, not ``Exception``: every call into the library goes through
:func:`translate` (callers catch :data:`LIBRARY_ERRORS`), so an ``except Exception``
elsewhere never lets a device's refusal escape as if it were a cancellation.
"""

from __future__ import annotations

from bacpypes3.apdu import (
    AbortPDU,
    AbortReason,
    ErrorPDU,
    ErrorRejectAbortNack,
    RejectPDU,
    RejectReason,
)
from bacpypes3.basetypes import ErrorType

__all__ = [
    "LIBRARY_ERRORS",
    "BacnetError",
    "BacnetPropertyError",
    "BacnetRefusedError",
    "BacnetTimeoutError",
    "BacnetTransportError",
    "BacnetUnknownObjectError",
    "BacnetUnsupportedError",
    "from_error_value",
    "translate",
]

#: What a call into bacpypes3 may raise for a device's answer or silence.
LIBRARY_ERRORS: tuple[type[BaseException], ...] = (ErrorRejectAbortNack, OSError, TimeoutError)


class BacnetError(Exception):
    """A request to a BACnet device failed; ``reason`` is a short label for metrics."""

    reason = "error"

    def __init__(self, device: str, what: str, detail: str) -> None:
        self.device = device
        self.what = what
        self.detail = detail
        super().__init__(f"bacnet device {device!r}: {what}: {detail}")


class BacnetTransportError(BacnetError):
    """The device could not be reached: the rest of the poll is skipped."""

    reason = "transport"


class BacnetTimeoutError(BacnetTransportError):
    """No answer within the APDU timeout and its retries."""

    reason = "timeout"


class BacnetRefusedError(BacnetError):
    """The device rejected or aborted the request (malformed, too long, busy...)."""

    reason = "refused"


class BacnetUnsupportedError(BacnetRefusedError):
    """The device does not implement the service (e.g. ReadPropertyMultiple, SubscribeCOV)."""

    reason = "unsupported"


class BacnetPropertyError(BacnetError):
    """The device answered with a BACnet Error for one object or property."""

    reason = "property_error"

    def __init__(self, device: str, what: str, error_class: str, error_code: str) -> None:
        self.error_class = error_class
        self.error_code = error_code
        super().__init__(device, what, f"{error_class}: {error_code}")


class BacnetUnknownObjectError(BacnetPropertyError):
    """The object does not exist on the device (a wrong map or instance)."""

    reason = "unknown_object"


#: Reject / abort reasons and error codes that mean "this service is not implemented".
_UNSUPPORTED = {
    "unrecognized-service",
    "service-request-denied",
    "optional-functionality-not-supported",
}
_TIMEOUTS = {
    int(AbortReason.noResponse),
    int(AbortReason.tsmTimeout),
    int(AbortReason.serverTimeout),
}


def _property_error(device: str, what: str, error_class: str, error_code: str) -> BacnetError:
    if error_code == "unknown-object":
        return BacnetUnknownObjectError(device, what, error_class, error_code)
    if error_code in _UNSUPPORTED:
        return BacnetUnsupportedError(device, what, f"{error_class}: {error_code}")
    return BacnetPropertyError(device, what, error_class, error_code)


def from_error_value(value: ErrorType, device: str, what: str) -> BacnetError:
    """A per-property Error inside a ReadPropertyMultiple answer as a :class:`BacnetError`."""
    return _property_error(device, what, str(value.errorClass), str(value.errorCode))


def translate(exc: BaseException, device: str, what: str) -> BacnetError:
    """Turn what bacpypes3 raised for a request into a :class:`BacnetError`."""
    if isinstance(exc, BacnetError):
        return exc
    if isinstance(exc, ErrorPDU):
        return _property_error(device, what, str(exc.errorClass), str(exc.errorCode))
    if isinstance(exc, AbortPDU):
        reason = exc.apduAbortRejectReason
        if reason is not None and int(reason) in _TIMEOUTS:
            return BacnetTimeoutError(device, what, "no answer in time")
        return BacnetRefusedError(
            device, what, f"abort: {AbortReason(reason) if reason is not None else '?'}"
        )
    if isinstance(exc, RejectPDU):
        from_reject = exc.apduAbortRejectReason
        text = _reject_text(from_reject)
        if text in _UNSUPPORTED:
            return BacnetUnsupportedError(device, what, f"reject: {text}")
        return BacnetRefusedError(device, what, f"reject: {text}")
    if isinstance(exc, TimeoutError):
        return BacnetTimeoutError(device, what, "no answer in time")
    if isinstance(exc, OSError):
        return BacnetTransportError(device, what, f"{type(exc).__name__}: {exc}")
    return BacnetError(device, what, f"{type(exc).__name__}: {exc}")


def _reject_text(reason: int | None) -> str:
    if reason is None:
        return "?"
    return str(RejectReason(reason))

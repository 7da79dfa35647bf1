"""The BACnet/IP client: one bacpypes3 application (one UDP socket) per collector.

Requests to different devices run side by side (bacpypes3 does not throttle); every call
into the library is translated by :func:`collectors.bacnet.errors.translate`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.basetypes import ErrorType
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import ObjectIdentifier, PropertyIdentifier

from collectors.bacnet.errors import (
    LIBRARY_ERRORS,
    BacnetError,
    BacnetRefusedError,
    from_error_value,
    translate,
)

__all__ = ["BacnetClient", "IAm", "ReadValue", "device_address"]

#: Cancelling a subscription: the device's refusal, or the context already gone (KeyError).
_UNSUBSCRIBE_ERRORS: tuple[type[BaseException], ...] = (*LIBRARY_ERRORS, KeyError)

#: A property's value as read, or why it could not be read.
ReadValue = Any


@cache
def _property_id(name: str) -> PropertyIdentifier:
    return PropertyIdentifier(name)


def device_address(host: str, port: int | None = None) -> Address:
    """The BACnet address of ``host`` (``10.0.0.5``, ``10.0.0.5:47809``, or ``net:mac``)."""
    text = host if port is None else f"{host}:{port}"
    try:
        return Address(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a BACnet address: {text!r} ({exc})") from None


def _check_free(local_address: str) -> None:
    """Bind ``local_address`` once, plainly, before bacpypes3 does.

    bacpypes3 binds with SO_REUSEPORT (two agents on 47808 would silently share, and steal
    each other's answers) and retries a failed bind forever without a word: this makes a
    port in use an error at start.

    Raises:
        OSError: the address is in use or not local, naming it.
    """
    host, _, port = local_address.rpartition(":")
    if int(port) == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host.split("/", 1)[0], int(port)))  # 10.40.0.5/24: the mask is ours
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind {local_address}: {exc.strerror}") from None


@dataclass(frozen=True)
class IAm:
    """A device that answered Who-Is."""

    device_id: int
    address: str
    vendor_id: int
    max_apdu: int


class BacnetClient:
    """A bacpypes3 application acting as a client; create it inside the running loop."""

    def __init__(
        self,
        *,
        local_address: str = "0.0.0.0:0",
        device_id: int = 4194302,
        timeout_s: float = 3.0,
        retries: int = 1,
    ) -> None:
        """Bind the UDP socket at ``local_address`` (``host:port``; port 0 picks one).

        Args:
            local_address: Where to bind; a device answers to the request's source port.
                With a mask (``10.40.0.5/24:47808``) broadcasts go to that subnet's address;
                bound to ``0.0.0.0`` there is no broadcast address to send Who-Is to.
            device_id: This client's own device instance (it answers Who-Is with it).
            timeout_s: APDU timeout per try.
            retries: APDU retries after a timeout.
        """
        self.timeout_s = timeout_s
        self.retries = retries
        _check_free(local_address)
        device = DeviceObject(
            objectIdentifier=("device", device_id),
            objectName="pue-agent",
            vendorIdentifier=999,
            apduTimeout=int(timeout_s * 1000),
            numberOfApduRetries=retries,
        )
        self.app = NormalApplication(device, IPv4Address(local_address))

    @property
    def budget_s(self) -> float:
        """How long one confirmed request may take at most (tries x timeout, plus slack)."""
        return self.timeout_s * (self.retries + 1) + 1.0

    def close(self) -> None:
        """Close the socket."""
        self.app.close()

    async def who_is(
        self,
        address: Address | None = None,
        *,
        low: int | None = None,
        high: int | None = None,
        wait_s: float = 2.0,
    ) -> list[IAm]:
        """Who-Is, unicast to ``address`` (or broadcast); the I-Ams that came within ``wait_s``."""
        if (low is None) != (high is None):
            low, high = (low or high), (high or low)
        try:
            answers = await self.app.who_is(low, high, address, timeout=wait_s)
        except LIBRARY_ERRORS as exc:
            raise translate(exc, str(address or "broadcast"), "who-is") from None
        found: dict[int, IAm] = {}
        for apdu in answers or []:
            objid = apdu.iAmDeviceIdentifier
            found[int(objid[1])] = IAm(
                device_id=int(objid[1]),
                address=str(apdu.pduSource),
                vendor_id=int(apdu.vendorID),
                max_apdu=int(apdu.maxAPDULengthAccepted),
            )
        return [found[k] for k in sorted(found)]

    async def read(
        self,
        device: str,
        address: Address,
        objid: ObjectIdentifier,
        prop: str,
        array_index: int | None = None,
    ) -> Any:
        """ReadProperty of one property (one element of an array with ``array_index``).

        Raises:
            BacnetError: the device refused, answered an Error, or did not answer.
        """
        what = f"{objid[0]},{objid[1]} {prop}"
        try:
            async with asyncio.timeout(self.budget_s):
                return await self.app.read_property(address, objid, _property_id(prop), array_index)
        except LIBRARY_ERRORS as exc:
            raise translate(exc, device, what) from None

    async def read_multiple(
        self,
        device: str,
        address: Address,
        objects: Sequence[ObjectIdentifier],
        properties: Sequence[str],
    ) -> dict[tuple[ObjectIdentifier, str], ReadValue | BacnetError]:
        """ReadPropertyMultiple of ``properties`` of every object, in one request.

        Per-property errors (unknown object, property absent) come back as
        :class:`BacnetError` values; a failed request raises one.
        """
        # Identifiers, not names: bacpypes3 parses a name anew on every request.
        references = [_property_id(p) for p in properties]
        request: list[Any] = []
        for objid in objects:
            request += [objid, references]
        what = f"read-property-multiple of {len(objects)} objects"
        try:
            async with asyncio.timeout(self.budget_s):
                answer = await self.app.read_property_multiple(address, request)
        except LIBRARY_ERRORS as exc:
            raise translate(exc, device, what) from None
        if isinstance(answer, ErrorRejectAbortNack):  # some paths return it, not raise it
            raise translate(answer, device, what)
        if answer is None:
            raise BacnetRefusedError(device, what, "not a ReadPropertyMultiple answer")
        values: dict[tuple[ObjectIdentifier, str], ReadValue | BacnetError] = {}
        for objid, prop, _index, value in answer:
            key = (objid, str(prop))
            if isinstance(value, ErrorType):
                values[key] = from_error_value(value, device, f"{objid[0]},{objid[1]} {prop}")
            else:
                values[key] = value
        return values

    @asynccontextmanager
    async def subscribe(
        self, device: str, address: Address, objid: ObjectIdentifier, lifetime_s: int
    ) -> AsyncIterator[AsyncIterator[tuple[str, Any]]]:
        """SubscribeCOV to one object; yields an iterator of ``(property, value)`` notifications.

        Raises:
            BacnetError: the subscription was refused (:class:`BacnetUnsupportedError` when
                the device has no COV service) or not answered.
        """
        manager = self.app.change_of_value(
            address, objid, issue_confirmed_notifications=False, lifetime=lifetime_s
        )
        what = f"subscribe-cov {objid[0]},{objid[1]}"
        try:
            async with asyncio.timeout(self.budget_s):
                await manager.__aenter__()
        except LIBRARY_ERRORS as exc:
            raise translate(exc, device, what) from None

        async def notifications() -> AsyncIterator[tuple[str, Any]]:
            while True:
                prop, value = await manager.get_value()
                yield str(prop), value

        try:
            yield notifications()
        except BaseException as exc:
            # Stopping or failing: abandon the subscription without a request (the device
            # drops it when its lifetime ends), so a dead device cannot hold up a shutdown.
            await manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        # Renewal: cancel the subscription politely, within one request's budget.
        try:
            async with asyncio.timeout(self.budget_s):
                await manager.__aexit__(None, None, None)
        except _UNSUBSCRIBE_ERRORS:
            pass

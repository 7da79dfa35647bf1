"""SNMP sessions: the lean v2c path, the pysnmp path (v2c and v3), and error translation.

Both session kinds answer ``get``/``get_next``/``get_bulk`` with varbinds as
``(oid BER content bytes, value)`` (see :mod:`collectors.snmp.ber`), so the
poller does not care which one it talks to. Every failure leaves this module as
an :class:`SnmpError` subclass whose message names the device and, for SNMPv3,
the user — never a key: keys are held as ``SecretStr`` and only unwrapped when
handed to pysnmp.

* :class:`V2cSession` — SNMPv2c on one shared UDP socket (:class:`UdpDispatcher`),
  pre-encoded requests, request-id matching; a few tens of microseconds per poll.
* :class:`PysnmpSession` — pysnmp 7's asyncio API; used for SNMPv3 (USM
  authentication, privacy, engine-id discovery, context name) and available for
  v2c as the reference implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from collectors.snmp import ber
from collectors.snmp.ber import Value

__all__ = [
    "AUTH_PROTOCOLS",
    "PRIV_PROTOCOLS",
    "AuthProtocol",
    "PrivProtocol",
    "PysnmpSession",
    "Session",
    "SnmpAgentError",
    "SnmpAuthError",
    "SnmpError",
    "SnmpProtocolError",
    "SnmpTimeoutError",
    "UdpDispatcher",
    "UnknownUserError",
    "V2cSession",
    "V3Credentials",
    "WrongAuthKeyError",
    "WrongPrivKeyError",
]

VarBinds = list[tuple[bytes, Value]]

AuthProtocol = Literal["SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5", "none"]
PrivProtocol = Literal["AES", "AES128", "AES192", "AES256", "DES", "none"]
AUTH_PROTOCOLS: tuple[str, ...] = ("SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5", "none")
PRIV_PROTOCOLS: tuple[str, ...] = ("AES", "AES128", "AES192", "AES256", "DES", "none")

#: RFC 3416 error-status names, for messages.
_ERROR_STATUS = {
    1: "tooBig",
    2: "noSuchName",
    3: "badValue",
    4: "readOnly",
    5: "genErr",
    6: "noAccess",
    16: "authorizationError",
}


class SnmpError(Exception):
    """A poll failed; ``reason`` is a short label for metrics and logs."""

    reason = "error"


class SnmpTimeoutError(SnmpError):
    """No answer within the timeout after all retries."""

    reason = "timeout"


class SnmpProtocolError(SnmpError):
    """The agent answered something that is not a usable SNMP response."""

    reason = "protocol"


class SnmpAgentError(SnmpError):
    """The agent answered with a non-zero error-status."""

    reason = "agent_error"

    def __init__(self, message: str, status: int, index: int) -> None:
        """Keep the error-status and error-index next to the message."""
        super().__init__(message)
        self.status = status
        self.index = index


class SnmpAuthError(SnmpError):
    """SNMPv3 authentication or privacy failed (message names the user, never a key)."""

    reason = "auth"


class UnknownUserError(SnmpAuthError):
    """The agent does not know the USM user."""

    reason = "auth_unknown_user"


class WrongAuthKeyError(SnmpAuthError):
    """The agent rejected the message digest: wrong authentication key or protocol."""

    reason = "auth_wrong_key"


class WrongPrivKeyError(SnmpAuthError):
    """The agent could not decrypt the request: wrong privacy key or protocol."""

    reason = "auth_wrong_priv_key"


class Session(Protocol):
    """One device's SNMP conversation; methods raise :class:`SnmpError`."""

    label: str

    async def get(self, oids: list[bytes]) -> VarBinds:
        """GET: one varbind per requested OID, in order."""
        ...

    async def get_next(self, oids: list[bytes]) -> VarBinds:
        """GETNEXT: the next OID after each requested one."""
        ...

    async def get_bulk(self, oids: list[bytes], max_repetitions: int) -> VarBinds:
        """GETBULK with no non-repeaters."""
        ...

    def close(self) -> None:
        """Release what the session holds."""
        ...


# -- the lean v2c path --------------------------------------------------------------------------


_RID_LOW = 0x01000000
_RID_HIGH = 0x7FFFFFFF


class UdpDispatcher(asyncio.DatagramProtocol):
    """One UDP socket for many devices; answers are matched to requests by request id.

    Late answers (after a timeout) and answers from the wrong address are dropped:
    a request id is only honoured from the address it was sent to.
    """

    def __init__(self) -> None:
        """Create an unopened dispatcher; call :meth:`open`."""
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, tuple[asyncio.Future[ber.Response], tuple[str, int]]] = {}
        self._next_id = random.randrange(_RID_LOW, _RID_HIGH)
        self.dropped = 0

    async def open(self) -> None:
        """Bind an ephemeral IPv4 UDP socket."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Bursts of answers from thousands of devices must not overflow the kernel buffer.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        sock.bind(("0.0.0.0", 0))  # noqa: S104 - a client socket; devices are anywhere
        sock.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self.transport = transport

    def close(self) -> None:
        """Close the socket; pending requests fail with a timeout."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(SnmpTimeoutError("dispatcher closed"))
        self._pending.clear()

    def new_request_id(self) -> int:
        """The next request id (kept 4 bytes long in BER, see ``ber.RequestTemplate``)."""
        rid = self._next_id
        self._next_id = rid + 1 if rid < _RID_HIGH else _RID_LOW
        return rid

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Resolve the request this answer belongs to."""
        try:
            _, response = ber.decode_response(data)
        except ber.BerError:
            self.dropped += 1
            return
        entry = self._pending.get(response.request_id)
        if entry is None or entry[1] != (addr[0], addr[1]):
            self.dropped += 1
            return
        future = entry[0]
        if not future.done():
            future.set_result(response)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable) arrive here without an address: ignore them.

        The request simply times out, which is also what happens with a silent device.
        """

    async def request(
        self,
        message: bytes | None,
        template: ber.RequestTemplate | None,
        addr: tuple[str, int],
        timeout_s: float,
        retries: int,
    ) -> ber.Response:
        """Send one request (retrying on timeout with the same request id) and await the answer.

        Raises:
            SnmpTimeoutError: if no answer arrived after ``retries + 1`` sends.
        """
        transport = self.transport
        if transport is None:
            raise SnmpTimeoutError("dispatcher is not open")
        loop = asyncio.get_running_loop()
        rid = self.new_request_id()
        data = template.build(rid) if template is not None else message
        assert data is not None
        future: asyncio.Future[ber.Response] = loop.create_future()
        self._pending[rid] = (future, addr)
        try:
            for _attempt in range(retries + 1):
                transport.sendto(data, addr)
                handle = loop.call_later(timeout_s, _expire, future)
                try:
                    return await future
                except _ExpiredError:
                    # Same request id on the retry: a late answer to the first try still counts.
                    future = loop.create_future()
                    self._pending[rid] = (future, addr)
                finally:
                    handle.cancel()
            raise SnmpTimeoutError(f"no answer after {retries + 1} tries of {timeout_s:g} s")
        finally:
            self._pending.pop(rid, None)


class _ExpiredError(Exception):
    pass


def _expire(future: asyncio.Future[ber.Response]) -> None:
    if not future.done():
        future.set_exception(_ExpiredError())


@dataclass
class V2cSession:
    """SNMPv2c to one device over a shared :class:`UdpDispatcher`."""

    dispatcher: UdpDispatcher
    host: str
    port: int
    community: SecretStr
    timeout_s: float = 2.0
    retries: int = 1
    label: str = ""

    def __post_init__(self) -> None:
        self._addr = (self.host, self.port)
        self._community = self.community.get_secret_value().encode()
        self._templates: dict[tuple[int, tuple[bytes, ...], int], ber.RequestTemplate] = {}
        if not self.label:
            self.label = f"{self.host}:{self.port}"

    async def _call(self, pdu_type: int, oids: list[bytes], max_repetitions: int = 0) -> VarBinds:
        key = (pdu_type, tuple(oids), max_repetitions)
        template = self._templates.get(key)
        if template is None:
            template = ber.RequestTemplate(
                pdu_type, self._community, oids, max_repetitions=max_repetitions
            )
            # Walk requests change with every step; keep only the fixed ones (GETs).
            if pdu_type == ber.GET and len(self._templates) < 64:
                self._templates[key] = template
        try:
            response = await self.dispatcher.request(
                None, template, self._addr, self.timeout_s, self.retries
            )
        except SnmpTimeoutError as exc:
            raise SnmpTimeoutError(f"{self.label}: {exc}") from None
        if response.error_status:
            name = _ERROR_STATUS.get(response.error_status, str(response.error_status))
            raise SnmpAgentError(
                f"{self.label}: agent answered {name} (index {response.error_index})",
                response.error_status,
                response.error_index,
            )
        return response.varbinds

    async def get(self, oids: list[bytes]) -> VarBinds:
        """GET ``oids`` in one PDU."""
        varbinds = await self._call(ber.GET, oids)
        if len(varbinds) != len(oids) or any(
            vb[0] != oid for vb, oid in zip(varbinds, oids, strict=False)
        ):
            raise SnmpProtocolError(f"{self.label}: GET answer does not match the request")
        return varbinds

    async def get_next(self, oids: list[bytes]) -> VarBinds:
        """GETNEXT ``oids`` in one PDU."""
        return await self._call(ber.GETNEXT, oids)

    async def get_bulk(self, oids: list[bytes], max_repetitions: int) -> VarBinds:
        """GETBULK ``oids`` (all repeaters)."""
        return await self._call(ber.GETBULK, oids, max_repetitions)

    def close(self) -> None:
        """Nothing to release: the socket belongs to the dispatcher."""


# -- the pysnmp path (v3, and v2c reference) ----------------------------------------------------


@dataclass(frozen=True)
class V3Credentials:
    """SNMPv3 USM parameters. Keys are secrets: never formatted into text."""

    user: str
    auth_protocol: AuthProtocol = "SHA256"
    auth_key: SecretStr | None = None
    priv_protocol: PrivProtocol = "AES"
    priv_key: SecretStr | None = None
    context: str = ""
    #: Hex engine id of the agent; ``None`` = discover it (RFC 3414 discovery).
    engine_id: str | None = None

    @property
    def level(self) -> str:
        """``noAuthNoPriv``, ``authNoPriv`` or ``authPriv``."""
        if self.auth_key is None or self.auth_protocol == "none":
            return "noAuthNoPriv"
        if self.priv_key is None or self.priv_protocol == "none":
            return "authNoPriv"
        return "authPriv"


def _usm(creds: V3Credentials, *, with_priv: bool = True) -> Any:
    from pysnmp.hlapi.v3arch import asyncio as h  # noqa: PLC0415 - heavy; only for v3

    auth = {
        "SHA": h.usmHMACSHAAuthProtocol,
        "SHA224": h.usmHMAC128SHA224AuthProtocol,
        "SHA256": h.usmHMAC192SHA256AuthProtocol,
        "SHA384": h.usmHMAC256SHA384AuthProtocol,
        "SHA512": h.usmHMAC384SHA512AuthProtocol,
        "MD5": h.usmHMACMD5AuthProtocol,
        "none": h.usmNoAuthProtocol,
    }
    priv = {
        "AES": h.usmAesCfb128Protocol,
        "AES128": h.usmAesCfb128Protocol,
        "AES192": h.usmAesCfb192Protocol,
        "AES256": h.usmAesCfb256Protocol,
        "DES": h.usmDESPrivProtocol,
        "none": h.usmNoPrivProtocol,
    }
    level = creds.level
    kwargs: dict[str, Any] = {}
    if level != "noAuthNoPriv":
        assert creds.auth_key is not None
        kwargs["authKey"] = creds.auth_key.get_secret_value()
        kwargs["authProtocol"] = auth[creds.auth_protocol]
    if level == "authPriv" and with_priv:
        assert creds.priv_key is not None
        kwargs["privKey"] = creds.priv_key.get_secret_value()
        kwargs["privProtocol"] = priv[creds.priv_protocol]
    if creds.engine_id:
        from pysnmp.proto.rfc1902 import OctetString  # noqa: PLC0415

        kwargs["securityEngineId"] = OctetString(hexValue=creds.engine_id)
    # noAuthNoPriv/authNoPriv are offered because the issue asks for them; the sample
    # config and README recommend authPriv.
    return h.UsmUserData(creds.user, **kwargs)  # noqa: S509


def _from_pysnmp(value: Any) -> Value:
    """Pysnmp value -> the plain value the BER codec would have produced."""
    from pyasn1.type import univ  # noqa: PLC0415
    from pysnmp.proto import rfc1905  # noqa: PLC0415

    if isinstance(value, rfc1905.NoSuchObject):
        return ber.NO_SUCH_OBJECT
    if isinstance(value, rfc1905.NoSuchInstance):
        return ber.NO_SUCH_INSTANCE
    if isinstance(value, rfc1905.EndOfMibView):
        return ber.END_OF_MIB_VIEW
    if isinstance(value, univ.ObjectIdentifier):
        return tuple(value)
    if isinstance(value, univ.OctetString):  # also IpAddress and Opaque
        return bytes(value)
    if isinstance(value, univ.Null):
        return None
    return int(value)


class PysnmpSession:
    """pysnmp 7 (asyncio) session for one device: SNMPv3 USM or v2c."""

    def __init__(
        self,
        engine: Any,
        host: str,
        port: int,
        *,
        community: SecretStr | None = None,
        v3: V3Credentials | None = None,
        timeout_s: float = 2.0,
        retries: int = 1,
        label: str = "",
    ) -> None:
        """Describe the session; the transport is created on first use."""
        if (community is None) == (v3 is None):
            raise ValueError("give exactly one of community (v2c) or v3 credentials")
        self.engine = engine
        self.host = host
        self.port = port
        self.community = community
        self.v3 = v3
        self.timeout_s = timeout_s
        self.retries = retries
        self.label = label or f"{host}:{port}"
        self._target: Any = None
        self._auth: Any = None
        self._context: Any = None
        self._objects: dict[tuple[bytes, ...], list[Any]] = {}

    async def _setup(self) -> None:
        from pysnmp.hlapi.v3arch import asyncio as h  # noqa: PLC0415

        self._target = await h.UdpTransportTarget.create(
            (self.host, self.port), timeout=self.timeout_s, retries=self.retries
        )
        if self.v3 is not None:
            self._auth = _usm(self.v3)
            self._context = h.ContextData(contextName=self.v3.context.encode())
        else:
            assert self.community is not None
            # v2c is what most PDUs and UPS cards speak; v3 is offered next to it.
            self._auth = h.CommunityData(self.community.get_secret_value(), mpModel=1)  # noqa: S508
            self._context = h.ContextData()

    async def _run(self, kind: str, oids: list[bytes], max_repetitions: int = 0) -> VarBinds:
        from pysnmp.hlapi.v3arch import asyncio as h  # noqa: PLC0415

        if self._target is None:
            await self._setup()
        key = tuple(oids)
        objects = self._objects.get(key)
        if objects is None:
            # Building ObjectTypes is a large share of pysnmp's per-request cost: reuse them
            # for the fixed GETs of every poll (walk steps change and are not kept).
            objects = [h.ObjectType(h.ObjectIdentity(ber.decode_oid(o))) for o in oids]
            if kind == "get" and len(self._objects) < 64:
                self._objects[key] = objects
        if kind == "get":
            result = await h.get_cmd(
                self.engine, self._auth, self._target, self._context, *objects, lookupMib=False
            )
        elif kind == "next":
            result = await h.next_cmd(
                self.engine, self._auth, self._target, self._context, *objects, lookupMib=False
            )
        else:
            result = await h.bulk_cmd(
                self.engine,
                self._auth,
                self._target,
                self._context,
                0,
                max_repetitions,
                *objects,
                lookupMib=False,
            )
        indication, status, index, varbinds = result
        if indication:
            raise await self._translate(indication)
        if int(status):
            name = _ERROR_STATUS.get(int(status), str(status))
            raise SnmpAgentError(
                f"{self.label}: agent answered {name} (index {int(index)})", int(status), int(index)
            )
        return [(ber.encode_oid(tuple(name)), _from_pysnmp(value)) for name, value in varbinds]

    async def _translate(self, indication: Any) -> SnmpError:
        """Turn a pysnmp error indication into one of ours (user named, key never)."""
        kind = type(indication).__name__
        user = self.v3.user if self.v3 else ""
        if kind == "RequestTimedOut":
            if self.v3 is not None and self.v3.level == "authPriv" and await self._auth_only_ok():
                return WrongPrivKeyError(
                    f"{self.label}: SNMPv3 user {user!r}: authPriv requests get no answer while "
                    "authNoPriv requests are authenticated - wrong privacy key or protocol"
                )
            return SnmpTimeoutError(
                f"{self.label}: no answer after {self.retries + 1} tries of {self.timeout_s:g} s"
            )
        if kind == "UnknownUserName":
            return UnknownUserError(f"{self.label}: SNMPv3 user {user!r} is unknown to the agent")
        if kind in ("WrongDigest", "AuthenticationFailure", "AuthenticationError"):
            return WrongAuthKeyError(
                f"{self.label}: SNMPv3 user {user!r}: authentication failed - wrong "
                "authentication key or protocol"
            )
        if kind == "DecryptionError":
            return WrongPrivKeyError(
                f"{self.label}: SNMPv3 user {user!r}: the agent could not decrypt the request - "
                "wrong privacy key or protocol"
            )
        if kind == "UnsupportedSecLevel":
            return SnmpAuthError(
                f"{self.label}: SNMPv3 user {user!r}: security level "
                f"{self.v3.level if self.v3 else '?'} not supported by the agent for this user"
            )
        if kind in ("NotInTimeWindow", "UnknownEngineID"):
            return SnmpAuthError(f"{self.label}: SNMPv3 user {user!r}: {indication}")
        return SnmpProtocolError(f"{self.label}: {indication}")

    async def _auth_only_ok(self) -> bool:
        """Does an authNoPriv GET from the same user get an authenticated answer?

        net-snmp's snmpd silently drops a request it cannot decrypt, so a wrong
        privacy key looks like a timeout. If the same user with the same
        authentication key is answered at authNoPriv (even with an access error or
        an unsupportedSecLevel report), the agent is up and the key that differs
        is the privacy key.
        """
        from pysnmp.hlapi.v3arch import asyncio as h  # noqa: PLC0415

        assert self.v3 is not None
        target = await h.UdpTransportTarget.create(
            (self.host, self.port), timeout=self.timeout_s, retries=0
        )
        indication, _, _, _ = await h.get_cmd(
            self.engine,
            _usm(self.v3, with_priv=False),
            target,
            self._context,
            h.ObjectType(h.ObjectIdentity("1.3.6.1.2.1.1.3.0")),
            lookupMib=False,
        )
        return not indication or type(indication).__name__ == "UnsupportedSecLevel"

    async def get(self, oids: list[bytes]) -> VarBinds:
        """GET ``oids`` in one PDU."""
        return await self._run("get", oids)

    async def get_next(self, oids: list[bytes]) -> VarBinds:
        """GETNEXT ``oids`` in one PDU."""
        return await self._run("next", oids)

    async def get_bulk(self, oids: list[bytes], max_repetitions: int) -> VarBinds:
        """GETBULK ``oids``."""
        return await self._run("bulk", oids, max_repetitions)

    def close(self) -> None:
        """Drop the transport target (the engine is shared and closed by its owner)."""
        self._target = None


def new_engine() -> Any:
    """A pysnmp SnmpEngine (one per collector: engine ids and USM caches are shared)."""
    from pysnmp.hlapi.v3arch import asyncio as h  # noqa: PLC0415

    return h.SnmpEngine()


def close_engine(engine: Any) -> None:
    """Close a pysnmp engine's transports."""
    with contextlib.suppress(Exception):  # best effort at shutdown
        engine.close_dispatcher()

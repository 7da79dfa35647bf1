"""SNMP sessions: the lean v2c and v3 paths, the pysnmp path (reference), and error translation.

All session kinds answer ``get``/``get_next``/``get_bulk`` with varbinds as
``(oid BER content bytes, value)`` (see :mod:`collectors.snmp.ber`), so the
poller does not care which one it talks to. Every failure leaves this module as
an :class:`SnmpError` subclass whose message names the device and, for SNMPv3,
the user — never a key: keys are held as ``SecretStr`` and only unwrapped when
handed to pysnmp.

* :class:`V2cSession` — SNMPv2c on one shared UDP socket (:class:`UdpDispatcher`),
  pre-encoded requests, request-id matching; a few tens of microseconds per poll.
* :class:`V3Session` — SNMPv3 (USM, :mod:`collectors.snmp.usm`) on the same shared
  socket: engine-id discovery, keys localized per engine, boots/time tracking and
  re-synchronisation, reports turned into distinct errors.
* :class:`PysnmpSession` — pysnmp 7's asyncio API: the reference implementation for
  both versions (``engine = "pysnmp"``), imported only when configured.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import math
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from collectors.snmp import ber, usm
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
    "SnmpResolveError",
    "SnmpTimeoutError",
    "UdpDispatcher",
    "UnknownEngineError",
    "UnknownUserError",
    "UnsupportedSecLevelError",
    "V2cSession",
    "V3Credentials",
    "V3Session",
    "WrongAuthKeyError",
    "WrongPrivKeyError",
]

VarBinds = list[tuple[bytes, Value]]

AuthProtocol = Literal["SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5", "none"]
PrivProtocol = Literal["AES", "AES128", "AES192", "AES256", "AES192C", "AES256C", "DES", "none"]
AUTH_PROTOCOLS: tuple[str, ...] = ("SHA", "SHA224", "SHA256", "SHA384", "SHA512", "MD5", "none")
PRIV_PROTOCOLS: tuple[str, ...] = (
    "AES",
    "AES128",
    "AES192",
    "AES256",
    "AES192C",
    "AES256C",
    "DES",
    "none",
)

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


class SnmpResolveError(SnmpError):
    """The device's host name does not resolve: nothing was sent (not a timeout)."""

    reason = "dns"


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


async def resolve_address(host: str, port: int) -> tuple[str, int]:
    """``(IPv4 address, port)`` to send to ``host``.

    The dispatcher honours an answer only from the address its request went to, and
    ``recvfrom`` reports that as a number: a request sent to a name would never match
    its answer. Resolved off the loop (``getaddrinfo`` blocks).

    Raises:
        SnmpResolveError: the name does not resolve.
    """
    if _is_ipv4(host):
        return host, port
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SnmpResolveError(f"cannot resolve host name {host!r}: {reason}") from None
    if not infos:
        raise SnmpResolveError(f"cannot resolve host name {host!r}: no IPv4 address")
    return str(infos[0][4][0]), port


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


class UnknownEngineError(SnmpAuthError):
    """The agent's engine id is not the one configured for the device."""

    reason = "auth_unknown_engine"


class UnsupportedSecLevelError(SnmpAuthError):
    """The agent does not offer the user at the requested security level."""

    reason = "auth_unsupported_level"


def _auth_error(kind: str, label: str, user: str, level: str) -> SnmpError:
    """One text per SNMPv3 failure for both v3 paths: names the user, never a key."""
    if kind == "unknownUserName":
        return UnknownUserError(f"{label}: SNMPv3 user {user!r} is unknown to the agent")
    if kind == "wrongDigest":
        return WrongAuthKeyError(
            f"{label}: SNMPv3 user {user!r}: authentication failed - wrong "
            "authentication key or protocol"
        )
    if kind == "decryptionError":
        return WrongPrivKeyError(
            f"{label}: SNMPv3 user {user!r}: the agent could not decrypt the request - "
            "wrong privacy key or protocol"
        )
    if kind == "privProbe":
        return WrongPrivKeyError(
            f"{label}: SNMPv3 user {user!r}: authPriv requests get no answer while "
            "authNoPriv requests are authenticated - wrong privacy key or protocol"
        )
    if kind == "unsupportedSecLevel":
        return UnsupportedSecLevelError(
            f"{label}: SNMPv3 user {user!r}: security level {level} not supported by the "
            "agent for this user"
        )
    if kind == "unknownEngineID":
        return UnknownEngineError(
            f"{label}: SNMPv3 user {user!r}: the agent does not accept the engine id "
            "(configured engine_id wrong, or the agent's engine id changed)"
        )
    if kind == "notInTimeWindow":
        return SnmpAuthError(
            f"{label}: SNMPv3 user {user!r}: still outside the agent's time window after "
            "re-synchronising"
        )
    return SnmpProtocolError(f"{label}: SNMPv3 user {user!r}: agent reported {kind}")


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


class _Builder(Protocol):
    """Builds a request message for a request id (``ber.RequestTemplate``, a v3 request)."""

    def build(self, request_id: int) -> bytes:
        """The message bytes."""
        ...


#: What the dispatcher hands back: a decoded v2c response, or a raw v3 message (the
#: session authenticates and decrypts it).
_Answer = ber.Response | bytes


class _Socket:
    """The dispatcher's UDP socket, read and written directly (no asyncio datagram transport).

    asyncio's transport reads one datagram per loop iteration; answers to a burst of requests
    arrive together, and one wake-up reading all of them (up to ``_READS_PER_WAKEUP``)
    saves a loop iteration and an epoll call per answer. A send that fails (full buffer,
    unreachable network) counts as lost: the request's timer sends it again or times out,
    as for a datagram lost on the way.
    """

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_datagram: Callable[[bytes, Any], None],
    ) -> None:
        self._sock = sock
        self._loop = loop
        self._on_datagram = on_datagram
        self.send_errors = 0
        loop.add_reader(sock.fileno(), self._readable)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._sock.sendto(data, addr)
        except OSError:  # BlockingIOError, gaierror, ENETUNREACH...: lost like a dropped datagram
            self.send_errors += 1

    def _readable(self) -> None:
        recvfrom = self._sock.recvfrom
        on_datagram = self._on_datagram
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error reported on the socket: the request times out
                continue
            on_datagram(data, addr)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


#: Datagrams read per loop wake-up at most (then other callbacks get their turn).
_READS_PER_WAKEUP = 256


class UdpDispatcher:
    """One UDP socket for many devices; answers are matched to requests by request id.

    SNMPv3 answers are matched by msgID (in the clear), which the v3 session sets to the
    PDU's request id, so one id space and one socket serve both versions.

    Late answers (after a timeout) and answers from the wrong address are dropped:
    a request id is only honoured from the address it was sent to.
    """

    def __init__(self) -> None:
        """Create an unopened dispatcher; call :meth:`open`."""
        self.transport: _Socket | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_id = random.randrange(_RID_LOW, _RID_HIGH)
        self.dropped = 0
        # Timeouts: one deadline queue per timeout value (deadlines in it only grow) and
        # one loop timer for all of them, instead of a timer per request: a request's
        # timer would cost more than its codec.
        self._deadlines: dict[float, collections.deque[tuple[float, _Pending]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

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
        self.transport = _Socket(sock, loop, self.datagram_received)

    def close(self) -> None:
        """Close the socket; pending requests fail with a timeout."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        self._deadlines.clear()
        for pending in self._pending.values():
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(SnmpTimeoutError("dispatcher closed"))
        self._pending.clear()

    def new_request_id(self) -> int:
        """The next request id (kept 4 bytes long in BER, see ``ber.RequestTemplate``)."""
        rid = self._next_id
        self._next_id = rid + 1 if rid < _RID_HIGH else _RID_LOW
        return rid

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Resolve the request this answer belongs to."""
        answer: _Answer
        try:
            msg_id = usm.message_id(data)
            if msg_id is None:
                _, answer = ber.decode_response(data)
                msg_id = answer.request_id
            else:
                answer = data
        except ber.BerError:
            self.dropped += 1
            return
        pending = self._pending.get(msg_id)
        if pending is None or pending.addr != (addr[0], addr[1]):
            self.dropped += 1
            return
        del self._pending[msg_id]
        pending.resolve(answer)

    def request(
        self,
        message: bytes | None,
        template: _Builder | None,
        addr: tuple[str, int],
        timeout_s: float,
        retries: int,
    ) -> asyncio.Future[_Answer]:
        """Send one request; the future gets its answer.

        A plain function returning a future, not a coroutine: one frame less on every
        poll's path. The timer sends again (same request id, so a late answer to an
        earlier try still counts) until ``retries + 1`` sends went unanswered; then the
        future fails with :class:`SnmpTimeoutError`.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Answer] = loop.create_future()
        transport = self.transport
        if transport is None:
            future.set_exception(SnmpTimeoutError("dispatcher is not open"))
            return future
        rid = self.new_request_id()
        data = template.build(rid) if template is not None else message
        assert data is not None
        pending = _Pending(future, None, addr, data, rid, retries, timeout_s)
        self._pending[rid] = pending
        transport.sendto(data, addr)
        self._expire_at(loop, loop.time() + timeout_s, pending)
        return future

    def request_then(
        self,
        template: _Builder,
        addr: tuple[str, int],
        timeout_s: float,
        retries: int,
        then: Callable[[_Answer | SnmpError], None],
    ) -> None:
        """:meth:`request` for callers without a coroutine: ``then`` gets the answer or the error.

        ``then`` runs in the loop's callback that read the answer (or in the timer, for
        :class:`SnmpTimeoutError`); it must not raise. If the dispatcher closes first it
        is never called.
        """
        loop = asyncio.get_running_loop()
        transport = self.transport
        if transport is None:
            loop.call_soon(then, SnmpTimeoutError("dispatcher is not open"))
            return
        rid = self._next_id  # new_request_id(), inlined: this runs for every lane poll
        self._next_id = rid + 1 if rid < _RID_HIGH else _RID_LOW
        data = template.build(rid)
        pending = _Pending(None, then, addr, data, rid, retries, timeout_s)
        self._pending[rid] = pending
        transport.sendto(data, addr)
        self._expire_at(loop, loop.time() + timeout_s, pending)

    def _expire_at(
        self, loop: asyncio.AbstractEventLoop, deadline: float, pending: _Pending
    ) -> None:
        """Send again or fail ``pending`` at ``deadline`` unless answered by then."""
        queue = self._deadlines.get(pending.timeout_s)
        if queue is None:
            queue = self._deadlines[pending.timeout_s] = collections.deque()
        queue.append((deadline, pending))
        at = deadline + _slack(pending.timeout_s)
        if at < self._timer_at:
            self._arm(loop, at)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._expire_due, loop)

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer: every request past its deadline is sent again or fails."""
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        retry: list[_Pending] = []
        for timeout_s, queue in list(self._deadlines.items()):
            while queue and queue[0][0] <= now:
                pending = queue.popleft()[1]
                if pending.done():
                    # Answered (already gone from _pending) or given up by its caller.
                    if self._pending.get(pending.rid) is pending:
                        del self._pending[pending.rid]
                elif pending.retries_left > 0 and self.transport is not None:
                    pending.retries_left -= 1
                    retry.append(pending)
                else:
                    del self._pending[pending.rid]
                    pending.resolve(
                        SnmpTimeoutError(
                            f"no answer after {pending.tries} tries of {timeout_s:g} s"
                        )
                    )
            if not queue:
                del self._deadlines[timeout_s]
        for pending in retry:
            assert self.transport is not None
            self.transport.sendto(pending.data, pending.addr)
            self._expire_at(loop, now + pending.timeout_s, pending)
        earliest = min((q[0][0] + _slack(t) for t, q in self._deadlines.items()), default=math.inf)
        if earliest < self._timer_at:
            self._arm(loop, earliest)


class _Pending:
    """A request in flight: what to send again, and where its answer goes."""

    __slots__ = (
        "addr",
        "data",
        "future",
        "resolved",
        "retries_left",
        "rid",
        "then",
        "timeout_s",
        "tries",
    )

    def __init__(
        self,
        future: asyncio.Future[_Answer] | None,
        then: Callable[[_Answer | SnmpError], None] | None,
        addr: tuple[str, int],
        data: bytes,
        rid: int,
        retries: int,
        timeout_s: float,
    ) -> None:
        self.future = future
        self.then = then
        self.resolved = False
        self.addr = addr
        self.data = data
        self.rid = rid
        self.retries_left = retries
        self.tries = retries + 1
        self.timeout_s = timeout_s

    def done(self) -> bool:
        """Answered, failed, or (a future) cancelled by its caller."""
        return self.resolved or (self.future is not None and self.future.done())

    def resolve(self, outcome: _Answer | SnmpError) -> None:
        """Hand the answer (or the timeout) over, once."""
        if self.done():
            return
        self.resolved = True
        if self.future is not None:
            if isinstance(outcome, SnmpError):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)
            return
        assert self.then is not None
        try:
            self.then(outcome)
        except Exception as exc:  # noqa: BLE001 - one caller's bug must not stop the socket
            asyncio.get_running_loop().call_exception_handler(
                {"message": "SNMP answer handler failed", "exception": exc}
            )


def _slack(timeout_s: float) -> float:
    """How late a timeout may fire: one timer wake-up then expires many requests' deadlines."""
    return min(0.02, timeout_s / 10)


def _varbinds(label: str, response: ber.Response) -> VarBinds:
    """The varbinds of a response, or :class:`SnmpAgentError` for a non-zero error-status."""
    if response.error_status:
        name = _ERROR_STATUS.get(response.error_status, str(response.error_status))
        raise SnmpAgentError(
            f"{label}: agent answered {name} (index {response.error_index})",
            response.error_status,
            response.error_index,
        )
    return response.varbinds


def _matching(label: str, oids: list[bytes], varbinds: VarBinds) -> VarBinds:
    """A GET answer must name the requested OIDs, in order."""
    if len(varbinds) != len(oids):
        raise SnmpProtocolError(f"{label}: GET answer does not match the request")
    # A plain loop: a generator in any() costs more than the comparisons on every poll.
    for i, oid in enumerate(oids):
        if varbinds[i][0] != oid:
            raise SnmpProtocolError(f"{label}: GET answer does not match the request")
    return varbinds


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
        self.addr = self._addr = (self.host, self.port)
        #: A host name is resolved before the first request and again after a timeout
        #: (the name may have moved); an address never is.
        self._resolved = _is_ipv4(self.host)
        self._community = self.community.get_secret_value().encode()
        self._templates: dict[tuple[int, tuple[bytes, ...], int], ber.RequestTemplate] = {}
        if not self.label:
            self.label = f"{self.host}:{self.port}"

    def _send(
        self, pdu_type: int, oids: list[bytes], max_repetitions: int = 0
    ) -> asyncio.Future[_Answer]:
        template = self.template(pdu_type, oids, max_repetitions)
        return self.dispatcher.request(None, template, self._addr, self.timeout_s, self.retries)

    def template(
        self, pdu_type: int, oids: list[bytes], max_repetitions: int = 0
    ) -> ber.RequestTemplate:
        """The request for ``oids`` (GETs are kept: every poll sends the same ones)."""
        key = (pdu_type, tuple(oids), max_repetitions)
        template = self._templates.get(key)
        if template is None:
            template = ber.RequestTemplate(
                pdu_type, self._community, oids, max_repetitions=max_repetitions
            )
            # Walk requests change with every step; keep only the fixed ones (GETs).
            if pdu_type == ber.GET and len(self._templates) < 64:
                self._templates[key] = template
        return template

    def get_answer(self, oids: list[bytes], outcome: _Answer | SnmpError) -> VarBinds:
        """What :meth:`get` returns for the outcome of :meth:`UdpDispatcher.request_then`.

        Raises:
            SnmpError: as :meth:`get` does.
        """
        if isinstance(outcome, SnmpTimeoutError):
            raise SnmpTimeoutError(f"{self.label}: {outcome}")
        if isinstance(outcome, SnmpError):
            raise outcome
        return _matching(self.label, oids, self._varbinds(outcome))

    def _varbinds(self, response: _Answer) -> VarBinds:
        if not isinstance(response, ber.Response):
            raise SnmpProtocolError(f"{self.label}: SNMPv3 answer to a v2c request")
        return _varbinds(self.label, response)

    @property
    def resolved(self) -> bool:
        """Whether :attr:`addr` is the address to send to (a name is resolved on use)."""
        return self._resolved

    async def _resolve(self) -> None:
        self.addr = self._addr = await resolve_address(self.host, self.port)
        self._resolved = True

    def _timed_out(self, exc: SnmpTimeoutError) -> SnmpTimeoutError:
        self._resolved = _is_ipv4(self.host)
        return SnmpTimeoutError(f"{self.label}: {exc}")

    async def _call(self, pdu_type: int, oids: list[bytes], max_repetitions: int = 0) -> VarBinds:
        if not self._resolved:
            await self._resolve()
        try:
            response = await self._send(pdu_type, oids, max_repetitions)
        except SnmpTimeoutError as exc:
            raise self._timed_out(exc) from None
        return self._varbinds(response)

    async def get(self, oids: list[bytes]) -> VarBinds:
        """GET ``oids`` in one PDU."""
        # _call inlined: every poll passes here, and a coroutine frame less is measurable.
        if not self._resolved:
            await self._resolve()
        try:
            response = await self._send(ber.GET, oids)
        except SnmpTimeoutError as exc:
            raise self._timed_out(exc) from None
        return _matching(self.label, oids, self._varbinds(response))

    async def get_next(self, oids: list[bytes]) -> VarBinds:
        """GETNEXT ``oids`` in one PDU."""
        return await self._call(ber.GETNEXT, oids)

    async def get_bulk(self, oids: list[bytes], max_repetitions: int) -> VarBinds:
        """GETBULK ``oids`` (all repeaters)."""
        return await self._call(ber.GETBULK, oids, max_repetitions)

    def close(self) -> None:
        """Nothing to release: the socket belongs to the dispatcher."""


# -- SNMPv3 ------------------------------------------------------------------------------------


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


_SYS_UPTIME = ber.encode_oid((1, 3, 6, 1, 2, 1, 1, 3, 0))


class _V3Request:
    """A v3 request for the dispatcher: the PDU template wrapped by the user's security."""

    __slots__ = ("flags", "security", "template")

    def __init__(
        self, security: usm.UserSecurity, template: ber.RequestTemplate, flags: int
    ) -> None:
        self.security = security
        self.template = template
        self.flags = flags

    def build(self, request_id: int) -> bytes:
        # msgID = request id: the dispatcher matches v3 answers by msgID (in the clear).
        return self.security.encode(request_id, self.template.build(request_id), flags=self.flags)


class _Discovery:
    __slots__ = ("security",)

    def __init__(self, security: usm.UserSecurity) -> None:
        self.security = security

    def build(self, request_id: int) -> bytes:
        return self.security.discovery(request_id)


@dataclass
class V3Session:
    """SNMPv3 (USM) to one device over a shared :class:`UdpDispatcher`, without pysnmp.

    The engine id is discovered on first use (RFC 3414 4) unless configured; keys are
    localized for it (cached per engine); the agent's boots/time are followed from every
    authenticated answer. A ``notInTimeWindow`` report (agent rebooted, or the first
    request after a configured engine id) re-synchronises the clock and the request is
    sent again; an ``unknownEngineID`` report for a discovered engine re-discovers it.
    """

    dispatcher: UdpDispatcher
    host: str
    port: int
    v3: V3Credentials
    timeout_s: float = 2.0
    retries: int = 1
    label: str = ""

    def __post_init__(self) -> None:
        c = self.v3
        level = c.level
        self._addr = (self.host, self.port)
        self._resolved = _is_ipv4(self.host)  # as for v2c: names before use, again on timeout
        self._security = usm.UserSecurity(
            c.user,
            auth_protocol=c.auth_protocol if level != "noAuthNoPriv" else "none",
            auth_password=c.auth_key.get_secret_value().encode()
            if c.auth_key is not None and level != "noAuthNoPriv"
            else b"",
            priv_protocol=c.priv_protocol if level == "authPriv" else "none",
            priv_password=c.priv_key.get_secret_value().encode()
            if c.priv_key is not None and level == "authPriv"
            else b"",
            context=c.context,
        )
        self._configured = bytes.fromhex(c.engine_id) if c.engine_id else None
        if self._configured is not None:
            # Boots/time 0: the first request draws a notInTimeWindow report with the clock.
            self._security.set_engine(self._configured)
        self._templates: dict[tuple[int, tuple[bytes, ...], int], ber.RequestTemplate] = {}
        if not self.label:
            self.label = f"{self.host}:{self.port}"

    @property
    def engine_id(self) -> bytes:
        """The agent's engine id (empty before discovery)."""
        return self._security.engine_id

    def _error(self, kind: str) -> SnmpError:
        return _auth_error(kind, self.label, self.v3.user, self.v3.level)

    async def _send(self, builder: _Builder, retries: int | None = None) -> usm.Incoming:
        if not self._resolved:
            self._addr = await resolve_address(self.host, self.port)
            self._resolved = True
        try:
            answer = await self.dispatcher.request(
                None,
                builder,
                self._addr,
                self.timeout_s,
                self.retries if retries is None else retries,
            )
        except SnmpTimeoutError as exc:
            self._resolved = _is_ipv4(self.host)
            raise SnmpTimeoutError(f"{self.label}: {exc}") from None
        if not isinstance(answer, bytes):
            raise SnmpProtocolError(f"{self.label}: SNMPv2c answer to an SNMPv3 request")
        try:
            return usm.parse_message(answer)
        except ber.BerError as exc:
            raise SnmpProtocolError(f"{self.label}: {exc}") from None

    async def _discover(self) -> None:
        msg = await self._send(_Discovery(self._security))
        if not msg.engine_id:
            raise SnmpProtocolError(f"{self.label}: engine-id discovery answered no engine id")
        self._security.set_engine(msg.engine_id, msg.boots, msg.time)

    def _open(self, msg: usm.Incoming) -> tuple[int, ber.Response]:
        try:
            return self._security.open(msg)
        except usm.UsmError:
            raise SnmpProtocolError(
                f"{self.label}: SNMPv3 user {self.v3.user!r}: the answer could not be decrypted"
            ) from None
        except ber.BerError as exc:
            raise SnmpProtocolError(f"{self.label}: {exc}") from None

    @staticmethod
    def _report_kind(response: ber.Response) -> str:
        if not response.varbinds:
            return "empty report"
        oid = response.varbinds[0][0]
        return usm.REPORT_NAMES.get(oid) or f"report {ber.oid_str(ber.decode_oid(oid))}"

    async def _exchange(self, template: ber.RequestTemplate, flags: int) -> ber.Response:
        sec = self._security
        kind = "notInTimeWindow"
        # At most one re-discovery and one clock re-sync before giving up.
        for _attempt in range(3):
            if not sec.engine_id:
                await self._discover()
            try:
                msg = await self._send(_V3Request(sec, template, flags))
            except SnmpTimeoutError:
                # net-snmp drops what it cannot decrypt: tell a wrong privacy key from a
                # dead agent by the same user's authNoPriv request.
                if flags & usm.FLAG_PRIV and await self._auth_only_ok():
                    raise self._error("privProbe") from None
                raise
            authentic = sec.authentic(msg)
            if authentic:
                sec.observe(msg)
            pdu_type, response = self._open(msg)
            if pdu_type == ber.REPORT:
                kind = self._report_kind(response)
                if kind == "notInTimeWindow" and authentic:
                    sec.set_clock(msg.boots, msg.time)
                    continue
                if kind == "unknownEngineID" and self._configured is None:
                    sec.engine_id = b""
                    continue
                raise self._error(kind)
            if pdu_type != ber.RESPONSE:
                raise SnmpProtocolError(f"{self.label}: unexpected PDU type 0x{pdu_type:02x}")
            if flags & usm.FLAG_AUTH and not authentic:
                raise SnmpProtocolError(
                    f"{self.label}: SNMPv3 user {self.v3.user!r}: the answer failed authentication"
                )
            return response
        raise self._error(kind)

    async def _auth_only_ok(self) -> bool:
        """Is the same user's authNoPriv GET answered (authenticated, or a level report)?

        Then the agent is up, the authentication key is right and the privacy key is
        what differs.
        """
        template = ber.RequestTemplate(ber.GET, None, [_SYS_UPTIME])
        try:
            msg = await self._send(_V3Request(self._security, template, usm.FLAG_AUTH), 0)
            _, response = self._open(msg)
        except SnmpError:
            return False
        if self._security.authentic(msg):
            return True
        return self._report_kind(response) == "unsupportedSecLevel"

    async def _call(self, pdu_type: int, oids: list[bytes], max_repetitions: int = 0) -> VarBinds:
        key = (pdu_type, tuple(oids), max_repetitions)
        template = self._templates.get(key)
        if template is None:
            template = ber.RequestTemplate(pdu_type, None, oids, max_repetitions=max_repetitions)
            # Walk requests change with every step; keep only the fixed ones (GETs).
            if pdu_type == ber.GET and len(self._templates) < 64:
                self._templates[key] = template
        response = await self._exchange(template, self._security.flags)
        return _varbinds(self.label, response)

    async def get(self, oids: list[bytes]) -> VarBinds:
        """GET ``oids`` in one PDU."""
        return _matching(self.label, oids, await self._call(ber.GET, oids))

    async def get_next(self, oids: list[bytes]) -> VarBinds:
        """GETNEXT ``oids`` in one PDU."""
        return await self._call(ber.GETNEXT, oids)

    async def get_bulk(self, oids: list[bytes], max_repetitions: int) -> VarBinds:
        """GETBULK ``oids`` (all repeaters)."""
        return await self._call(ber.GETBULK, oids, max_repetitions)

    def close(self) -> None:
        """Nothing to release: the socket belongs to the dispatcher."""


# -- the pysnmp path (reference for v2c and v3) -------------------------------------------------


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
        # net-snmp's AES-192/256 key extension is Blumenthal's; pysnmp's plain names are Reeder's.
        "AES192": h.usmAesBlumenthalCfb192Protocol,
        "AES256": h.usmAesBlumenthalCfb256Protocol,
        "AES192C": h.usmAesCfb192Protocol,
        "AES256C": h.usmAesCfb256Protocol,
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
        level = self.v3.level if self.v3 else "?"
        if kind == "RequestTimedOut":
            if self.v3 is not None and self.v3.level == "authPriv" and await self._auth_only_ok():
                return _auth_error("privProbe", self.label, user, level)
            return SnmpTimeoutError(
                f"{self.label}: no answer after {self.retries + 1} tries of {self.timeout_s:g} s"
            )
        ours = {
            "UnknownUserName": "unknownUserName",
            "WrongDigest": "wrongDigest",
            "AuthenticationFailure": "wrongDigest",
            "AuthenticationError": "wrongDigest",
            "DecryptionError": "decryptionError",
            "UnsupportedSecLevel": "unsupportedSecLevel",
            "UnknownEngineID": "unknownEngineID",
            "NotInTimeWindow": "notInTimeWindow",
        }.get(kind)
        if ours is not None:
            return _auth_error(ours, self.label, user, level)
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

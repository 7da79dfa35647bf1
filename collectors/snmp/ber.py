"""A minimal BER codec for SNMPv2c messages: just what a poller sends and receives.

pysnmp's general codec (pyasn1) costs a few hundred microseconds per message,
more than all the rest of a poll. A v2c request is a handful of fixed bytes
around pre-encoded OIDs, and a response is a flat list of varbinds, so this
module encodes and decodes them directly. It is checked byte for byte against
pysnmp's codec in ``tests/snmp/test_ber.py`` and end to end against the same
walks as the pysnmp path. SNMPv3 wraps the same PDUs in USM headers
(:mod:`collectors.snmp.usm`), which uses the PDU half of this codec.

OIDs are handled as their BER *content bytes* on the hot path: BER encodes each
sub-identifier on its own, so "OID A lies under column C" is ``A.startswith(C)``
on the encoded forms and no tuple is built for GET responses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "END_OF_MIB_VIEW",
    "GET",
    "GETBULK",
    "GETNEXT",
    "NO_SUCH_INSTANCE",
    "NO_SUCH_OBJECT",
    "REPORT",
    "RESPONSE",
    "BerError",
    "Exception_",
    "Response",
    "decode_oid",
    "decode_pdu",
    "decode_response",
    "encode_int",
    "encode_oid",
    "encode_pdu",
    "encode_request",
    "oid_str",
    "parse_oid",
    "read_int",
    "read_len",
    "tlv",
]

GET: Final = 0xA0
GETNEXT: Final = 0xA1
RESPONSE: Final = 0xA2
GETBULK: Final = 0xA5
REPORT: Final = 0xA8

_INTEGER = 0x02
_OCTETS = 0x04
_NULL = 0x05
_OID = 0x06
_SEQUENCE = 0x30
_IPADDR = 0x40
_OPAQUE = 0x44
_BYTES = frozenset({_OCTETS, _IPADDR, _OPAQUE})
# Application types decoded as unsigned integers: Counter32, Gauge32, TimeTicks, Counter64.
_UNSIGNED = frozenset({0x41, 0x42, 0x43, 0x46})


class BerError(ValueError):
    """A message is not a well-formed SNMP response."""


@dataclass(frozen=True, slots=True)
class Exception_:  # noqa: N801 - SNMP's own name for these values
    """One of SNMPv2's varbind exceptions (noSuchObject, noSuchInstance, endOfMibView)."""

    name: str

    def __repr__(self) -> str:
        return self.name


NO_SUCH_OBJECT: Final = Exception_("noSuchObject")
NO_SUCH_INSTANCE: Final = Exception_("noSuchInstance")
END_OF_MIB_VIEW: Final = Exception_("endOfMibView")
_EXCEPTIONS = {0x80: NO_SUCH_OBJECT, 0x81: NO_SUCH_INSTANCE, 0x82: END_OF_MIB_VIEW}

#: A decoded varbind value.
Value = int | bytes | tuple[int, ...] | Exception_ | None


@dataclass(slots=True)
class Response:
    """A decoded response PDU; varbind OIDs are BER content bytes (see :func:`decode_oid`)."""

    request_id: int
    error_status: int
    error_index: int
    varbinds: list[tuple[bytes, Value]]


# -- OIDs ---------------------------------------------------------------------------------------


def parse_oid(text: str) -> tuple[int, ...]:
    """``"1.3.6.1.2.1.1.3.0"`` (a leading dot is allowed) -> tuple of ints.

    Raises:
        ValueError: if the text is not a dotted OID of at least two arcs.
    """
    parts = text.strip().lstrip(".").split(".")
    try:
        oid = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"not an OID: {text!r}") from None
    if len(oid) < 2 or oid[0] > 2 or any(a < 0 for a in oid):
        raise ValueError(f"not an OID: {text!r}")
    return oid


def oid_str(oid: tuple[int, ...]) -> str:
    """Tuple of ints -> dotted text."""
    return ".".join(map(str, oid))


def _subid(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def encode_oid(oid: tuple[int, ...]) -> bytes:
    """The BER content bytes of an OID (no tag or length)."""
    return _subid(oid[0] * 40 + oid[1]) + b"".join(_subid(a) for a in oid[2:])


def decode_oid(content: bytes) -> tuple[int, ...]:
    """BER content bytes -> tuple of ints."""
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        return ()
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return head + tuple(arcs[1:])


def decode_subids(content: bytes) -> tuple[int, ...]:
    """Sub-identifiers of a BER OID fragment that does not contain the first two arcs."""
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return tuple(arcs)


# -- encoding -----------------------------------------------------------------------------------


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One BER element: tag, definite length, content."""
    return bytes((tag,)) + _len(len(content)) + content


def encode_int(value: int) -> bytes:
    """A BER INTEGER element (minimal two's complement)."""
    length = max(1, (value.bit_length() + 8) // 8)
    return tlv(_INTEGER, value.to_bytes(length, "big", signed=True))


def encode_pdu(
    pdu_type: int,
    request_id: int,
    oids: list[bytes],
    *,
    non_repeaters: int = 0,
    max_repetitions: int = 0,
) -> bytes:
    """Encode a GET/GETNEXT/GETBULK PDU (the part v2c and v3 messages share).

    Args:
        pdu_type: :data:`GET`, :data:`GETNEXT` or :data:`GETBULK`.
        request_id: The request id (any 32-bit signed value).
        oids: OIDs as BER content bytes (:func:`encode_oid`).
        non_repeaters: GETBULK only.
        max_repetitions: GETBULK only.

    Returns:
        The PDU element with tag and length.
    """
    varbinds = b"".join(tlv(_SEQUENCE, tlv(_OID, oid) + b"\x05\x00") for oid in oids)
    return tlv(
        pdu_type,
        encode_int(request_id)
        + encode_int(non_repeaters)
        + encode_int(max_repetitions)
        + tlv(_SEQUENCE, varbinds),
    )


def encode_request(
    pdu_type: int,
    request_id: int,
    community: bytes,
    oids: list[bytes],
    *,
    non_repeaters: int = 0,
    max_repetitions: int = 0,
) -> bytes:
    """Encode a v2c GET/GETNEXT/GETBULK message.

    Args:
        pdu_type: :data:`GET`, :data:`GETNEXT` or :data:`GETBULK`.
        request_id: The request id (any 32-bit signed value).
        community: The community string.
        oids: OIDs as BER content bytes (:func:`encode_oid`).
        non_repeaters: GETBULK only.
        max_repetitions: GETBULK only.

    Returns:
        The whole message, ready for ``sendto``.
    """
    pdu = encode_pdu(
        pdu_type, request_id, oids, non_repeaters=non_repeaters, max_repetitions=max_repetitions
    )
    return tlv(_SEQUENCE, b"\x02\x01\x01" + tlv(_OCTETS, community) + pdu)


class RequestTemplate:
    """A request whose bytes are built once; only the request id changes per send.

    Request ids are drawn from ``0x01000000..0x7FFFFFFF`` so their minimal BER
    encoding is always four bytes and every other byte of the message is fixed.
    """

    __slots__ = ("_head", "_tail")

    def __init__(
        self,
        pdu_type: int,
        community: bytes | None,
        oids: list[bytes],
        *,
        non_repeaters: int = 0,
        max_repetitions: int = 0,
    ) -> None:
        """Pre-encode the message around a placeholder request id.

        With ``community=None`` the template is the bare PDU (an SNMPv3 scoped PDU's).
        """
        marker = 0x7E5A5A5A
        kw = {"non_repeaters": non_repeaters, "max_repetitions": max_repetitions}
        message = (
            encode_pdu(pdu_type, marker, oids, **kw)
            if community is None
            else encode_request(pdu_type, marker, community, oids, **kw)
        )
        needle = b"\x02\x04" + marker.to_bytes(4, "big")
        at = message.index(needle) + 2
        self._head = message[:at]
        self._tail = message[at + 4 :]

    def build(self, request_id: int) -> bytes:
        """The message with ``request_id`` (must be within ``0x01000000..0x7FFFFFFF``)."""
        return self._head + struct.pack(">I", request_id) + self._tail


# -- decoding -----------------------------------------------------------------------------------


def read_len(data: bytes, pos: int) -> tuple[int, int]:
    """Read a BER length at ``pos``; returns ``(length, position after it)``."""
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 4:
        raise BerError("unsupported length encoding")
    return int.from_bytes(data[pos : pos + count], "big"), pos + count


def read_int(data: bytes, pos: int) -> tuple[int, int]:
    """Read a BER INTEGER element at ``pos``; returns ``(value, position after it)``."""
    if data[pos] != _INTEGER:
        raise BerError(f"expected INTEGER at byte {pos}")
    length, pos = read_len(data, pos + 1)
    end = pos + length
    return int.from_bytes(data[pos:end], "big", signed=True), end


def decode_response(data: bytes) -> tuple[int, Response]:
    """Decode a v2c message carrying a Response (or Report) PDU.

    Returns:
        ``(pdu_type, response)``.

    Raises:
        BerError: if the message is malformed, truncated or not SNMPv2c.
    """
    try:
        return _decode(data)
    except (IndexError, struct.error) as exc:
        raise BerError("truncated message") from exc


def _decode(data: bytes) -> tuple[int, Response]:
    if data[0] != _SEQUENCE:
        raise BerError("not a SEQUENCE")
    length, pos = read_len(data, 1)
    if pos + length > len(data):
        raise BerError("truncated message")
    version, pos = read_int(data, pos)
    if version != 1:
        raise BerError(f"not SNMPv2c (version field {version})")
    if data[pos] != _OCTETS:
        raise BerError("expected community")
    length, pos = read_len(data, pos + 1)
    pos += length
    return _decode_pdu(data, pos)


def decode_pdu(data: bytes, pos: int = 0) -> tuple[int, Response]:
    """Decode the Response/Report PDU that starts at ``pos`` (v2c body or v3 scoped PDU).

    Returns:
        ``(pdu_type, response)``.

    Raises:
        BerError: if the PDU is malformed or truncated.
    """
    try:
        return _decode_pdu(data, pos)
    except (IndexError, struct.error) as exc:
        raise BerError("truncated PDU") from exc


def _decode_pdu(data: bytes, pos: int) -> tuple[int, Response]:
    pdu_type = data[pos]
    _, pos = read_len(data, pos + 1)
    request_id, pos = read_int(data, pos)
    if data[pos : pos + 6] == b"\x02\x01\x00\x02\x01\x00":
        # noError, index 0: what nearly every answer carries.
        error_status = error_index = 0
        pos += 6
    else:
        error_status, pos = read_int(data, pos)
        error_index, pos = read_int(data, pos)
    if data[pos] != _SEQUENCE:
        raise BerError("expected varbind list")
    length, pos = read_len(data, pos + 1)
    end = pos + length
    if end > len(data):
        raise BerError("truncated varbind list")
    varbinds: list[tuple[bytes, Value]] = []
    append = varbinds.append
    from_bytes = int.from_bytes
    # The hot loop of every poll: short-form lengths (< 128, nearly all of them) are read
    # inline; long forms go through read_len.
    while pos < end:
        if data[pos] != _SEQUENCE:
            raise BerError("expected varbind")
        if data[pos + 1] & 0x80:
            _, pos = read_len(data, pos + 1)
        else:
            pos += 2
        if data[pos] != _OID:
            raise BerError("expected varbind name")
        length = data[pos + 1]
        if length & 0x80:
            length, pos = read_len(data, pos + 1)
        else:
            pos += 2
        stop = pos + length
        oid = data[pos:stop]
        tag = data[stop]
        length = data[stop + 1]
        if length & 0x80:
            length, pos = read_len(data, stop + 1)
        else:
            pos = stop + 2
        stop = pos + length
        if stop > end:
            raise BerError("truncated varbind value")
        value: Value
        if tag == _INTEGER:
            value = from_bytes(data[pos:stop], "big", signed=True)
        elif tag in _UNSIGNED:
            value = from_bytes(data[pos:stop], "big")
        elif tag in _BYTES:
            value = data[pos:stop]
        elif tag == _OID:
            value = decode_oid(data[pos:stop])
        elif tag == _NULL:
            value = None
        elif tag in _EXCEPTIONS:
            value = _EXCEPTIONS[tag]
        else:
            raise BerError(f"unknown value type 0x{tag:02x}")
        append((oid, value))
        pos = stop
    return pdu_type, Response(request_id, error_status, error_index, varbinds)

"""The lean BER codec against pysnmp's (pyasn1) codec, on generated messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.proto import api, rfc1902

from collectors.snmp import ber
from collectors.snmp.poller import PollResult, _Compiled, _convert

P = api.v2c

oids = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12).map(lambda tail: (1, 3, *tail))
values = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(lambda v: ("int", v, rfc1902.Integer32(v))),
    st.integers(0, 2**32 - 1).map(lambda v: ("u32", v, rfc1902.Gauge32(v))),
    st.integers(0, 2**32 - 1).map(lambda v: ("c32", v, rfc1902.Counter32(v))),
    st.integers(0, 2**32 - 1).map(lambda v: ("tt", v, rfc1902.TimeTicks(v))),
    st.integers(0, 2**64 - 1).map(lambda v: ("c64", v, rfc1902.Counter64(v))),
    st.binary(max_size=300).map(lambda v: ("str", v, rfc1902.OctetString(v))),
    oids.map(lambda v: ("oid", v, rfc1902.ObjectIdentifier(v))),
)


def pysnmp_response(request_id: int, varbinds: list[tuple[tuple[int, ...], object]]) -> bytes:
    pdu = P.GetResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, request_id)
    P.apiPDU.set_varbinds(pdu, varbinds)
    msg = P.Message()
    P.apiMessage.set_defaults(msg)
    P.apiMessage.set_community(msg, "public")
    P.apiMessage.set_pdu(msg, pdu)
    return bytes(encoder.encode(msg))


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**31), 2**31 - 1), st.lists(st.tuples(oids, values), max_size=40))
def test_decode_what_pysnmp_encodes(request_id, items) -> None:
    data = pysnmp_response(request_id, [(o, v[2]) for o, v in items])
    pdu_type, response = ber.decode_response(data)
    assert pdu_type == ber.RESPONSE
    assert response.request_id == request_id
    assert response.error_status == 0
    assert [ber.decode_oid(o) for o, _ in response.varbinds] == [o for o, _ in items]
    assert [v for _, v in response.varbinds] == [v[1] for _, v in items]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0x01000000, 0x7FFFFFFF),
    st.lists(oids, min_size=1, max_size=40),
    st.sampled_from([ber.GET, ber.GETNEXT, ber.GETBULK]),
    st.integers(0, 200),
)
def test_pysnmp_decodes_what_we_encode(request_id, names, pdu_type, reps) -> None:
    encoded = [ber.encode_oid(o) for o in names]
    template = ber.RequestTemplate(pdu_type, b"c0mmunity", encoded, max_repetitions=reps)
    message, _ = decoder.decode(template.build(request_id), asn1Spec=P.Message())
    pdu = P.apiMessage.get_pdu(message)
    assert int(P.apiPDU.get_request_id(pdu)) == request_id
    assert [tuple(o) for o, _ in P.apiPDU.get_varbinds(pdu)] == names
    assert str(P.apiMessage.get_community(message)) == "c0mmunity"
    if pdu_type == ber.GETBULK:
        assert int(P.apiBulkPDU.get_max_repetitions(pdu)) == reps
    assert template.build(request_id) == ber.encode_request(
        pdu_type, request_id, b"c0mmunity", encoded, max_repetitions=reps
    )


def test_exceptions_and_null() -> None:
    varbinds = [
        ((1, 3, 6, 1), rfc1902.Null("")),
        ((1, 3, 6, 2), P.NoSuchObject("")),
        ((1, 3, 6, 3), P.NoSuchInstance("")),
        ((1, 3, 6, 4), P.EndOfMibView("")),
    ]
    _, response = ber.decode_response(pysnmp_response(7, varbinds))
    assert [v for _, v in response.varbinds] == [
        None,
        ber.NO_SUCH_OBJECT,
        ber.NO_SUCH_INSTANCE,
        ber.END_OF_MIB_VIEW,
    ]


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x31\x00", b"\x30\x03\x02\x01\x00", b"\x30\x10\x02\x01\x01\x04\x01"],
)
def test_malformed_input_is_a_clear_error(data) -> None:
    with pytest.raises(ber.BerError):
        ber.decode_response(data)


def test_truncated_real_message() -> None:
    data = pysnmp_response(1, [((1, 3, 6, 1, 2, 1, 1, 3, 0), rfc1902.TimeTicks(5))])
    for cut in range(1, len(data)):
        with pytest.raises(ber.BerError):
            ber.decode_response(data[:cut])


def test_oid_text() -> None:
    assert ber.parse_oid(".1.3.6.1.2.1.1.3.0") == (1, 3, 6, 1, 2, 1, 1, 3, 0)
    for bad in ["", "1", "x.y", "3.1", "1.-3"]:
        with pytest.raises(ValueError, match="not an OID"):
            ber.parse_oid(bad)


@pytest.mark.parametrize(
    ("raw", "scale"),
    [
        (10**400, 1.0),  # a 167-byte BER INTEGER: int * float raised OverflowError
        (-(10**400), 0.1),
        (2**64 - 1, 1e300),  # finite, but the profile's scale overflows it
        (b"9" * 400, 1.0),  # text numbers (Liebert tables): float() gives inf
        (b"1e308", 10.0),
        (b"nan", 1.0),
    ],
)
def test_huge_or_non_finite_values_are_bad_values_never_exceptions(
    raw: int | bytes, scale: float
) -> None:
    # The value travels through a real BER encoding (pyasn1's unconstrained INTEGER).
    value = univ.Integer(raw) if isinstance(raw, int) else rfc1902.OctetString(raw)
    _, response = ber.decode_response(pysnmp_response(7, [((1, 3, 6, 1, 2, 1, 1), value)]))
    decoded = response.varbinds[0][1]
    metric = _Compiled(
        name="m",
        get_oid=None,
        column=None,
        point="p",
        quantity="power_w",
        mul=scale,
        div=1.0,
        offset=0.0,
        sentinels=frozenset(),
        negative_is_sentinel=False,
        limit=None,
        index=(),
        where=(),
        labels=(),
        digits=None,
    )
    result = PollResult()
    assert _convert(decoded, metric, result) is None
    assert result.bad_values == 1

"""The lean SNMPv3 path (collectors/snmp/usm.py) against pysnmp's USM: keys, and whole messages
both ways on generated input - authenticated, encrypted, every protocol."""

from __future__ import annotations

import pysnmp.proto.secmod.rfc3414.service  # noqa: F401 - first: eso.priv imports it circularly
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import univ
from pysnmp.proto import api
from pysnmp.proto.mpmod.rfc3412 import ScopedPDU, SNMPv3Message
from pysnmp.proto.secmod.eso.priv import aes192, aes256
from pysnmp.proto.secmod.rfc3414.auth import hmacmd5, hmacsha
from pysnmp.proto.secmod.rfc3414.priv import des
from pysnmp.proto.secmod.rfc3414.service import UsmSecurityParameters
from pysnmp.proto.secmod.rfc3826.priv import aes
from pysnmp.proto.secmod.rfc7860.auth import hmacsha2

from collectors.snmp import ber, usm
from tests.snmp.test_ber import oids, values

P = api.v2c
S2 = hmacsha2.HmacSha2
PYSNMP_AUTH = {
    "MD5": hmacmd5.HmacMd5(),
    "SHA": hmacsha.HmacSha(),
    "SHA224": S2(S2.SHA224_SERVICE_ID),
    "SHA256": S2(S2.SHA256_SERVICE_ID),
    "SHA384": S2(S2.SAH384_SERVICE_ID),
    "SHA512": S2(S2.SHA512_SERVICE_ID),
}
PYSNMP_AUTH_ID = {
    "MD5": hmacmd5.HmacMd5.SERVICE_ID,
    "SHA": hmacsha.HmacSha.SERVICE_ID,
    "SHA224": S2.SHA224_SERVICE_ID,
    "SHA256": S2.SHA256_SERVICE_ID,
    "SHA384": S2.SAH384_SERVICE_ID,
    "SHA512": S2.SHA512_SERVICE_ID,
}
#: Digest bytes on the wire: RFC 3414 6.2/7.2 (96 bits), RFC 7860 4.2.2 (128/192/256/384 bits).
MAC_LEN = {"MD5": 12, "SHA": 12, "SHA224": 16, "SHA256": 24, "SHA384": 32, "SHA512": 48}
PYSNMP_PRIV = {
    "DES": des.Des(),
    "AES": aes.Aes(),
    "AES192": aes192.AesBlumenthal192(),
    "AES256": aes256.AesBlumenthal256(),
    "AES192C": aes192.Aes192(),
    "AES256C": aes256.Aes256(),
}


def pysnmp_keys(auth: str, auth_pw: bytes, priv: str | None, priv_pw: bytes, engine: bytes):
    a = PYSNMP_AUTH[auth]
    engine = univ.OctetString(engine)
    auth_key = a.localize_key(a.hash_passphrase(auth_pw), engine)
    if priv is None:
        return auth_key, None
    p = PYSNMP_PRIV[priv]
    aid = PYSNMP_AUTH_ID[auth]
    return auth_key, p.localize_key(aid, p.hash_passphrase(aid, priv_pw), engine)


def test_rfc3414_key_vectors() -> None:
    """RFC 3414 A.3.1/A.3.2: "maplesyrup" localized to engine 00..02."""
    engine = bytes.fromhex("000000000000000000000002")
    ku = usm.password_to_key(b"maplesyrup", "md5")
    assert ku.hex() == "9faf3283884e92834ebc9847d8edd963"
    assert usm.localize_key(ku, engine, "md5").hex() == "526f5eed9fcce26f8964c2930787d82b"
    ku = usm.password_to_key(b"maplesyrup", "sha1")
    assert ku.hex() == "9fb5cc0381497b3793528939ff788d5d79145211"
    assert usm.localize_key(ku, engine, "sha1").hex() == "6695febc9288e36282235fc7151f128497b38f3f"


@pytest.mark.parametrize("priv", list(PYSNMP_PRIV))
@pytest.mark.parametrize("auth", list(PYSNMP_AUTH))
def test_keys_match_pysnmp(auth: str, priv: str) -> None:
    """Localized and extended keys for every combination, against pysnmp's localization."""
    engine = bytes.fromhex("80001f8880a1b2c3d4e5f60708")
    want_auth, want_priv = pysnmp_keys(auth, b"auth-pass-1234", priv, b"priv-pass-5678", engine)
    spec = usm.AUTH[auth]
    assert usm.localize_key(
        usm.password_to_key(b"auth-pass-1234", spec.hash_name), engine, spec.hash_name
    ) == bytes(want_auth)
    got = usm.privacy_key(b"priv-pass-5678", spec.hash_name, engine, usm.PRIV[priv])
    # pysnmp's DES key is the whole localized key; DES uses its first 16 bytes.
    assert got == bytes(want_priv)[: usm.PRIV[priv].key_len]


levels = st.sampled_from(
    [(None, None)]
    + [(a, None) for a in PYSNMP_AUTH]
    + [(a, p) for a in PYSNMP_AUTH for p in PYSNMP_PRIV]
)
common = {
    "level": levels,
    "engine": st.binary(min_size=5, max_size=32),
    "boots": st.integers(0, 2**31 - 1),
    "clock": st.integers(0, 2**31 - 2),
    "user": st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=32),
    "context": st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=16),
}


def security(level, user: str, context: str, engine: bytes, boots: int, clock: int):
    auth, priv = level
    sec = usm.UserSecurity(
        user,
        auth_protocol=auth or "none",
        auth_password=b"auth-pass-1234" if auth else b"",
        priv_protocol=priv or "none",
        priv_password=b"priv-pass-5678" if priv else b"",
        context=context,
    )
    sec.set_engine(engine, boots, clock)
    return sec


@settings(max_examples=100, deadline=None)
@given(
    request_id=st.integers(0x01000000, 0x7FFFFFFF),
    names=st.lists(oids, min_size=1, max_size=30),
    pdu_type=st.sampled_from([ber.GET, ber.GETNEXT, ber.GETBULK]),
    reps=st.integers(0, 100),
    **common,
)
def test_pysnmp_decodes_what_we_encode(
    request_id, names, pdu_type, reps, level, engine, boots, clock, user, context
) -> None:
    sec = security(level, user, context, engine, boots, clock)
    pdu = ber.encode_pdu(
        pdu_type, request_id, [ber.encode_oid(o) for o in names], max_repetitions=reps
    )
    whole = sec.encode(request_id, pdu)
    msg, rest = decoder.decode(whole, asn1Spec=SNMPv3Message())
    assert not rest
    head = msg["msgGlobalData"]
    assert int(head["msgID"]) == request_id and int(head["msgSecurityModel"]) == 3
    params, _ = decoder.decode(
        bytes(msg["msgSecurityParameters"]), asn1Spec=UsmSecurityParameters()
    )
    assert bytes(params["msgAuthoritativeEngineId"]) == engine
    assert int(params["msgAuthoritativeEngineBoots"]) == boots
    assert clock <= int(params["msgAuthoritativeEngineTime"]) <= clock + 1
    assert str(params["msgUserName"]) == user
    auth, priv = level
    flags = bytes(head["msgFlags"])[0]
    assert flags == 4 | (1 if auth else 0) | (2 if priv else 0)
    if auth:
        auth_key, priv_key = pysnmp_keys(auth, b"auth-pass-1234", priv, b"priv-pass-5678", engine)
        PYSNMP_AUTH[auth].authenticate_incoming_message(
            auth_key, params["msgAuthenticationParameters"], whole
        )  # raises on a wrong digest
    if priv:
        plain = PYSNMP_PRIV[priv].decrypt_data(
            priv_key,
            (
                params["msgAuthoritativeEngineBoots"],
                params["msgAuthoritativeEngineTime"],
                params["msgPrivacyParameters"],
            ),
            msg["msgData"]["encryptedPDU"],
        )
        scoped, _ = decoder.decode(plain, asn1Spec=ScopedPDU())
    else:
        scoped = msg["msgData"]["plaintext"]
    assert bytes(scoped["contextEngineId"]) == engine
    assert str(scoped["contextName"]) == context
    got = scoped["data"].getComponent()
    assert int(P.apiPDU.get_request_id(got)) == request_id
    assert [tuple(o) for o, _ in P.apiPDU.get_varbinds(got)] == names


def pysnmp_message(sec_level, user, context, engine, boots, clock, msg_id, pdu, *, report=False):
    """An agent's answer built entirely by pysnmp (pyasn1 encoding, pysnmp auth and priv)."""
    auth, priv = sec_level
    scoped = ScopedPDU()
    scoped.setComponentByPosition(0, engine)
    scoped.setComponentByPosition(1, context)
    scoped.setComponentByPosition(2)
    scoped.getComponentByPosition(2).setComponentByType(
        pdu.tagSet, pdu, verifyConstraints=False, matchTags=False, matchConstraints=False
    )
    plain = encoder.encode(scoped)
    salt = b""
    if priv:
        auth_key, priv_key = pysnmp_keys(auth, b"auth-pass-1234", priv, b"priv-pass-5678", engine)
        encrypted, salt_os = PYSNMP_PRIV[priv].encrypt_data(priv_key, (boots, clock, None), plain)
        salt = bytes(salt_os)
    params = UsmSecurityParameters()
    params["msgAuthoritativeEngineId"] = engine
    params["msgAuthoritativeEngineBoots"] = boots
    params["msgAuthoritativeEngineTime"] = clock
    params["msgUserName"] = user
    params["msgAuthenticationParameters"] = bytes(MAC_LEN[auth] if auth else 0)
    params["msgPrivacyParameters"] = salt
    msg = SNMPv3Message()
    msg["msgVersion"] = 3
    head = msg["msgGlobalData"]
    head["msgID"] = msg_id
    head["msgMaxSize"] = 65507
    head["msgFlags"] = bytes(((1 if auth else 0) | (2 if priv else 0),))
    head["msgSecurityModel"] = 3
    msg["msgSecurityParameters"] = encoder.encode(params)
    if priv:
        msg["msgData"]["encryptedPDU"] = encrypted
    else:
        msg["msgData"]["plaintext"] = scoped
    whole = encoder.encode(msg)
    if auth:
        auth_key, _ = pysnmp_keys(auth, b"auth-pass-1234", None, b"", engine)
        whole = PYSNMP_AUTH[auth].authenticate_outgoing_message(auth_key, whole)
    return bytes(whole)


@settings(max_examples=100, deadline=None)
@given(
    msg_id=st.integers(0, 2**31 - 1),
    items=st.lists(st.tuples(oids, values), max_size=30),
    **common,
)
def test_decode_what_pysnmp_encodes(
    msg_id, items, level, engine, boots, clock, user, context
) -> None:
    pdu = P.GetResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_request_id(pdu, msg_id)
    P.apiPDU.set_varbinds(pdu, [(o, v[2]) for o, v in items])
    data = pysnmp_message(level, user, context, engine, boots, clock, msg_id, pdu)
    assert usm.message_id(data) == msg_id
    sec = security(level, user, context, engine, 0, 0)
    incoming = usm.parse_message(data)
    assert (incoming.engine_id, incoming.boots, incoming.time) == (engine, boots, clock)
    assert incoming.user == user.encode()
    assert sec.authentic(incoming) == (level[0] is not None)
    pdu_type, response = sec.open(incoming)
    assert pdu_type == ber.RESPONSE and response.request_id == msg_id
    assert [ber.decode_oid(o) for o, _ in response.varbinds] == [o for o, _ in items]
    assert [v for _, v in response.varbinds] == [v[1] for _, v in items]
    if level[0] is not None:
        # One flipped bit anywhere in the digest fails authentication.
        at = incoming.auth_at
        tampered = data[:at] + bytes((data[at] ^ 1,)) + data[at + 1 :]
        assert not sec.authentic(usm.parse_message(tampered))


def test_wrong_privacy_key_is_a_decryption_error() -> None:
    pdu = P.GetResponsePDU()
    P.apiPDU.set_defaults(pdu)
    P.apiPDU.set_varbinds(pdu, [((1, 3, 6, 1, 2, 1, 1, 3, 0), P.TimeTicks(42))])
    engine = b"\x80\x00\x1f\x88\x80engine"
    data = pysnmp_message(("SHA256", "AES"), "u", "", engine, 1, 2, 7, pdu)
    sec = usm.UserSecurity(
        "u",
        auth_protocol="SHA256",
        auth_password=b"auth-pass-1234",
        priv_protocol="AES",
        priv_password=b"not-the-priv-key",
    )
    sec.set_engine(engine)
    incoming = usm.parse_message(data)
    assert sec.authentic(incoming)
    with pytest.raises(usm.UsmError) as info:
        sec.open(incoming)
    assert info.value.kind == "decryption"
    assert b"not-the-priv-key" not in str(info.value).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x03\x02\x01\x03",
        b"\x30\x05\x02\x01\x03\x30\x00",
        bytes.fromhex("3011020103300a020101020300ffe3040104"),
    ],
)
def test_malformed_messages_are_ber_errors(data: bytes) -> None:
    with pytest.raises(ber.BerError):
        usm.parse_message(data)


def test_empty_password_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        usm.password_to_key(b"", "sha256")


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown SNMPv3 protocol"):
        usm.UserSecurity("u", auth_protocol="SHA1024", auth_password=b"k" * 8)

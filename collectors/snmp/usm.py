"""Lean SNMPv3: the user-based security model (USM) around the v2c codec's PDUs.

What a poller needs of RFC 3412/3414 and their extensions, without pyasn1:

* keys: password -> key (RFC 3414 A.2: one MiB of the repeated password hashed),
  localized to the agent's engine id; both steps cached, since the first costs
  milliseconds and thousands of devices often share one password;
* authentication: HMAC-MD5-96 / HMAC-SHA-96 (RFC 3414) and HMAC-SHA-2 with the
  RFC 7860 truncations (SHA-224: 16, SHA-256: 24, SHA-384: 32, SHA-512: 48 bytes);
* privacy: DES-CBC (RFC 3414 8.1, legacy), AES-128-CFB (RFC 3826) and AES-192/256-CFB.
  When the authentication hash is shorter than the AES key (MD5, SHA-1), the localized
  key is extended: ``AES192``/``AES256`` as net-snmp 5.9's snmpd does it
  (draft-blumenthal-aes-usm-04: append ``H(K)``), ``AES192C``/``AES256C`` as Cisco and
  net-snmp's ``AES-192-C``/``AES-256-C`` do (draft-reeder-snmpv3-usm-3desede: append
  the password-to-key step run on the key). With SHA-256 and longer both are the same;
* the message header and security parameters, encoded around a pre-encoded scoped
  PDU and decoded with the authentication field located by offset, so the digest
  is checked over the received bytes without re-encoding anything.

The device conversation (discovery, time windows, reports, errors) is in
:class:`collectors.snmp.client.V3Session`; this module holds no sockets. It is checked
against pysnmp (messages both ways, keys) in ``tests/snmp/test_usm.py`` and against
net-snmp's snmpd and snmpsim in ``tests/snmp/test_v3.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from collectors.snmp import ber

__all__ = [
    "AUTH",
    "FLAG_AUTH",
    "FLAG_PRIV",
    "FLAG_REPORTABLE",
    "PRIV",
    "REPORT_NAMES",
    "AuthSpec",
    "Incoming",
    "PrivSpec",
    "UserSecurity",
    "UsmError",
    "local_key",
    "localize_key",
    "message_id",
    "parse_message",
    "password_to_key",
    "privacy_key",
]

FLAG_AUTH: Final = 0x01
FLAG_PRIV: Final = 0x02
FLAG_REPORTABLE: Final = 0x04
_USM: Final = 3
#: msgMaxSize we announce (the largest UDP payload over IPv4, 65507) as a BER INTEGER.
_MAX_SIZE: Final = b"\x02\x03\x00\xff\xe3"
_MODEL_USM: Final = b"\x02\x01\x03"
_OCTETS = 0x04
_SEQUENCE = 0x30


@dataclass(frozen=True, slots=True)
class AuthSpec:
    """An authentication protocol: its hash and how many bytes of the HMAC travel."""

    hash_name: str
    mac_len: int


@dataclass(frozen=True, slots=True)
class PrivSpec:
    """A privacy protocol: cipher, key bytes needed and how short localized keys are extended."""

    cipher: str  # "des" or "aes"
    key_len: int  # DES: 8 key + 8 pre-IV bytes
    extension: str  # "reeder", "blumenthal" or "" (never needed)


#: Authentication protocols by the names the configuration uses.
AUTH: Final = {
    "MD5": AuthSpec("md5", 12),
    "SHA": AuthSpec("sha1", 12),
    "SHA224": AuthSpec("sha224", 16),
    "SHA256": AuthSpec("sha256", 24),
    "SHA384": AuthSpec("sha384", 32),
    "SHA512": AuthSpec("sha512", 48),
}

#: Privacy protocols by the names the configuration uses.
PRIV: Final = {
    "DES": PrivSpec("des", 16, ""),
    "AES": PrivSpec("aes", 16, ""),
    "AES128": PrivSpec("aes", 16, ""),
    "AES192": PrivSpec("aes", 24, "blumenthal"),
    "AES256": PrivSpec("aes", 32, "blumenthal"),
    "AES192C": PrivSpec("aes", 24, "reeder"),
    "AES256C": PrivSpec("aes", 32, "reeder"),
}

#: usmStats (RFC 3414) and other report counters -> short names the client maps to errors.
REPORT_NAMES: Final = {
    ber.encode_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 1, 0)): "unsupportedSecLevel",
    ber.encode_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 2, 0)): "notInTimeWindow",
    ber.encode_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 3, 0)): "unknownUserName",
    ber.encode_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 4, 0)): "unknownEngineID",
    ber.encode_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 5, 0)): "wrongDigest",
    ber.encode_oid((1, 3, 6, 1, 6, 3, 15, 1, 1, 6, 0)): "decryptionError",
    ber.encode_oid((1, 3, 6, 1, 6, 3, 12, 1, 4, 0)): "unavailableContext",
    ber.encode_oid((1, 3, 6, 1, 6, 3, 12, 1, 5, 0)): "unknownContext",
}


class UsmError(ValueError):
    """An incoming message failed a USM check; ``kind`` says which (never carries key bytes)."""

    def __init__(self, kind: str, message: str) -> None:
        """Keep a machine-readable kind next to the message."""
        super().__init__(message)
        self.kind = kind


# -- keys ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def password_to_key(password: bytes, hash_name: str) -> bytes:
    """RFC 3414 A.2 (and RFC 7860 4.1): hash 1 MiB of the repeated password.

    Cached: at ~2 ms a key it is the most expensive step of a v3 session, and one
    password commonly serves a whole hall of PDUs.

    Raises:
        ValueError: for an empty password.
    """
    if not password:
        raise ValueError("an SNMPv3 key must not be empty")
    count = 1_048_576
    repeated = password * (count // len(password) + 1)
    return hashlib.new(hash_name, repeated[:count]).digest()


def localize_key(key: bytes, engine_id: bytes, hash_name: str) -> bytes:
    """RFC 3414 2.6: ``H(Ku || engineID || Ku)``."""
    return hashlib.new(hash_name, key + engine_id + key).digest()


@lru_cache(maxsize=65536)
def local_key(password: bytes, hash_name: str, engine_id: bytes) -> bytes:
    """A password's key localized to one engine; cached per (password, hash, engine)."""
    return localize_key(password_to_key(password, hash_name), engine_id, hash_name)


def privacy_key(password: bytes, hash_name: str, engine_id: bytes, spec: PrivSpec) -> bytes:
    """The localized privacy key, extended to ``spec.key_len`` bytes where the hash is shorter.

    Reeder (net-snmp, Cisco): append ``localize(P2K(K))`` - the password-to-key step run
    on the key so far. Blumenthal: append ``H(K)``.
    """
    key = local_key(password, hash_name, engine_id)
    while len(key) < spec.key_len:
        if spec.extension == "reeder":
            key += localize_key(password_to_key(key, hash_name), engine_id, hash_name)
        elif spec.extension == "blumenthal":
            key += hashlib.new(hash_name, key).digest()
        else:  # DES/AES-128 with MD5 (16 bytes) and longer hashes never get here
            raise ValueError("privacy key too short for the protocol")
    return key[: spec.key_len]


# -- incoming messages --------------------------------------------------------------------------


@dataclass(slots=True)
class Incoming:
    """A parsed SNMPv3 message: header fields and where its parts lie in ``data``."""

    data: bytes
    msg_id: int
    flags: int
    engine_id: bytes
    boots: int
    time: int
    user: bytes
    auth_at: int
    auth_params: bytes
    priv_params: bytes
    body_at: int


def _octets(data: bytes, pos: int) -> tuple[bytes, int]:
    if data[pos] != _OCTETS:
        raise ber.BerError(f"expected OCTET STRING at byte {pos}")
    length, pos = ber.read_len(data, pos + 1)
    end = pos + length
    if end > len(data):
        raise ber.BerError("truncated OCTET STRING")
    return data[pos:end], end


def _sequence(data: bytes, pos: int) -> int:
    if data[pos] != _SEQUENCE:
        raise ber.BerError(f"expected SEQUENCE at byte {pos}")
    length, pos = ber.read_len(data, pos + 1)
    if pos + length > len(data):
        raise ber.BerError("truncated SEQUENCE")
    return pos


def message_id(data: bytes) -> int | None:
    """The msgID of an SNMPv3 message, or ``None`` if it is not one (v1/v2c).

    Raises:
        BerError: if the message is malformed.
    """
    try:
        # Every v2c answer passes here first: look at the version byte before parsing.
        pos = 2 if data[1] < 0x80 else 2 + (data[1] & 0x7F)
        if data[pos : pos + 3] != b"\x02\x01\x03":
            return None
        pos = _sequence(data, 0)
        _, pos = ber.read_int(data, pos)
        pos = _sequence(data, pos)
        msg_id, _ = ber.read_int(data, pos)
    except (IndexError, struct.error) as exc:
        raise ber.BerError("truncated message") from exc
    return msg_id


def parse_message(data: bytes) -> Incoming:
    """Parse an SNMPv3 message's header and USM security parameters (RFC 3412 6, RFC 3414 2.4).

    Raises:
        BerError: if the message is malformed, truncated, not v3 or not USM.
    """
    try:
        pos = _sequence(data, 0)
        version, pos = ber.read_int(data, pos)
        if version != 3:
            raise ber.BerError(f"not SNMPv3 (version field {version})")
        pos = _sequence(data, pos)
        msg_id, pos = ber.read_int(data, pos)
        _, pos = ber.read_int(data, pos)  # msgMaxSize
        flags_raw, pos = _octets(data, pos)
        model, pos = ber.read_int(data, pos)
        if model != _USM or len(flags_raw) != 1:
            raise ber.BerError("not a USM message")
        params, body_at = _octets(data, pos)
        base = body_at - len(params)
        p = _sequence(params, 0)
        engine_id, p = _octets(params, p)
        boots, p = ber.read_int(params, p)
        time_s, p = ber.read_int(params, p)
        user, p = _octets(params, p)
        auth_params, after_auth = _octets(params, p)
        priv_params, _ = _octets(params, after_auth)
    except (IndexError, struct.error) as exc:
        raise ber.BerError("truncated message") from exc
    return Incoming(
        data=data,
        msg_id=msg_id,
        flags=flags_raw[0],
        engine_id=engine_id,
        boots=boots,
        time=time_s,
        user=user,
        auth_at=base + after_auth - len(auth_params),
        auth_params=auth_params,
        priv_params=priv_params,
        body_at=body_at,
    )


# -- one user's security state ------------------------------------------------------------------


class UserSecurity:
    """One USM user towards one agent: keys for its engine, boots/time, encode and decode.

    Keys are bytes held only here; nothing in this class formats them into text.
    """

    def __init__(
        self,
        user: str,
        *,
        auth_protocol: str = "none",
        auth_password: bytes = b"",
        priv_protocol: str = "none",
        priv_password: bytes = b"",
        context: str = "",
    ) -> None:
        """Describe the user; keys are localized once the engine id is known (:meth:`set_engine`).

        Raises:
            ValueError: for an unknown protocol name.
        """
        if auth_protocol not in (*AUTH, "none") or priv_protocol not in (*PRIV, "none"):
            raise ValueError(f"unknown SNMPv3 protocol {auth_protocol!r}/{priv_protocol!r}")
        self.user = user.encode()
        self.context = context.encode()
        self.auth = AUTH[auth_protocol] if auth_protocol != "none" and auth_password else None
        self.priv = (
            PRIV[priv_protocol]
            if self.auth is not None and priv_protocol != "none" and priv_password
            else None
        )
        self._auth_password = auth_password
        self._priv_password = priv_password
        self.flags = (FLAG_AUTH if self.auth else 0) | (FLAG_PRIV if self.priv else 0)
        # Fixed parts of every request's security parameters, encoded once.
        self._user_tlv = ber.tlv(_OCTETS, self.user)
        self._engine_tlv = b"\x04\x00"
        self._auth_tlv = ber.tlv(_OCTETS, bytes(self.auth.mac_len if self.auth else 0))
        self.engine_id = b""
        self.boots = 0
        self.time = 0
        self._time_at = time.monotonic()
        self._auth_key = b""
        self._priv_key = b""
        self._aes: algorithms.AES | None = None
        self._salt = random.getrandbits(64)
        self._scope = b""

    @property
    def level(self) -> str:
        """``noAuthNoPriv``, ``authNoPriv`` or ``authPriv``."""
        if self.auth is None:
            return "noAuthNoPriv"
        return "authPriv" if self.priv is not None else "authNoPriv"

    def set_engine(self, engine_id: bytes, boots: int = 0, time_s: int = 0) -> None:
        """Adopt the agent's engine id (keys localized, cached per engine) and clock."""
        if engine_id != self.engine_id:
            self.engine_id = engine_id
            if self.auth is not None:
                self._auth_key = local_key(self._auth_password, self.auth.hash_name, engine_id)
            if self.auth is not None and self.priv is not None:
                self._priv_key = privacy_key(
                    self._priv_password, self.auth.hash_name, engine_id, self.priv
                )
                if self.priv.cipher == "aes":
                    self._aes = algorithms.AES(self._priv_key)
            self._engine_tlv = ber.tlv(_OCTETS, engine_id)
            self._scope = self._engine_tlv + ber.tlv(_OCTETS, self.context)
        self.set_clock(boots, time_s)

    def set_clock(self, boots: int, time_s: int) -> None:
        """Take the agent's snmpEngineBoots/Time as of now."""
        self.boots = boots
        self.time = time_s
        self._time_at = time.monotonic()

    def observe(self, msg: Incoming) -> None:
        """RFC 3414 3.2.7 (b): follow the agent's clock from an authenticated message."""
        if msg.boots > self.boots or (msg.boots == self.boots and msg.time > self.now_time()):
            self.set_clock(msg.boots, msg.time)

    def now_time(self) -> int:
        """Our estimate of the agent's snmpEngineTime."""
        return self.time + int(time.monotonic() - self._time_at)

    # -- outgoing ------------------------------------------------------------------------------

    def discovery(self, msg_id: int) -> bytes:
        """RFC 3414 4: an unauthenticated, reportable GET with empty engine id and user."""
        pdu = ber.encode_pdu(ber.GET, msg_id, [])
        scoped = ber.tlv(_SEQUENCE, b"\x04\x00\x04\x00" + pdu)
        empty = b"\x04\x00"
        return self._wrap(msg_id, FLAG_REPORTABLE, empty, 0, 0, empty, empty, b"", scoped)

    def encode(self, msg_id: int, pdu: bytes, *, flags: int | None = None) -> bytes:
        """A whole request message around ``pdu``, encrypted and authenticated as the user's level.

        Args:
            msg_id: msgID (the client uses the PDU's request id).
            pdu: The encoded PDU (:func:`ber.encode_pdu`).
            flags: Override the security level (FLAG_AUTH only: the wrong-privacy-key probe).
        """
        level = self.flags if flags is None else flags
        scoped = ber.tlv(_SEQUENCE, self._scope + pdu)
        boots = self.boots
        time_s = self.now_time()
        salt = b""
        if level & FLAG_PRIV:
            assert self.priv is not None
            scoped, salt = self._encrypt(scoped, boots, time_s)
            scoped = ber.tlv(_OCTETS, scoped)
        return self._wrap(
            msg_id,
            level | FLAG_REPORTABLE,
            self._engine_tlv,
            boots,
            time_s,
            self._user_tlv,
            self._auth_tlv if level & FLAG_AUTH else b"\x04\x00",
            salt,
            scoped,
        )

    def _wrap(
        self,
        msg_id: int,
        flags: int,
        engine_tlv: bytes,
        boots: int,
        time_s: int,
        user_tlv: bytes,
        auth_tlv: bytes,
        salt: bytes,
        data: bytes,
    ) -> bytes:
        # Element by element: the *_tlv arguments are already encoded with tag and length.
        head = engine_tlv + ber.encode_int(boots) + ber.encode_int(time_s) + user_tlv
        inner = head + auth_tlv + bytes((_OCTETS, len(salt))) + salt
        params = ber.tlv(_SEQUENCE, inner)
        glob = ber.tlv(
            _SEQUENCE,
            ber.encode_int(msg_id) + _MAX_SIZE + bytes((_OCTETS, 1, flags)) + _MODEL_USM,
        )
        params_os = ber.tlv(_OCTETS, params)
        body = b"\x02\x01\x03" + glob + params_os + data
        message = ber.tlv(_SEQUENCE, body)
        if len(auth_tlv) == 2:  # no authentication
            return message
        assert self.auth is not None
        # Offset of the zeroed authentication parameters: outer header, version, global
        # data, the two headers around the parameters, the fields before it, its own header.
        at = (
            len(message)
            - len(body)
            + 3
            + len(glob)
            + (len(params_os) - len(params))
            + (len(params) - len(inner))
            + len(head)
            + 2
        )
        mac = hmac.digest(self._auth_key, message, self.auth.hash_name)[: self.auth.mac_len]
        return message[:at] + mac + message[at + len(mac) :]

    def _encrypt(self, plain: bytes, boots: int, time_s: int) -> tuple[bytes, bytes]:
        assert self.priv is not None
        self._salt = (self._salt + 1) & 0xFFFFFFFFFFFFFFFF
        if self.priv.cipher == "aes":
            # RFC 3826 3.1.2.1: IV = boots || time || 64-bit salt.
            salt = self._salt.to_bytes(8, "big")
            iv = struct.pack(">II", boots & 0xFFFFFFFF, time_s & 0xFFFFFFFF) + salt
            assert self._aes is not None
            enc = Cipher(self._aes, CFB(iv)).encryptor()
            return enc.update(plain) + enc.finalize(), salt
        # RFC 3414 8.1.1.1: salt = boots || counter; IV = pre-IV XOR salt; pad to 8 bytes.
        salt = struct.pack(">II", boots & 0xFFFFFFFF, self._salt & 0xFFFFFFFF)
        iv = bytes(a ^ b for a, b in zip(self._priv_key[8:16], salt, strict=True))
        plain += bytes(-len(plain) % 8)
        enc = Cipher(TripleDES(self._priv_key[:8] * 3), modes.CBC(iv)).encryptor()
        return enc.update(plain) + enc.finalize(), salt

    # -- incoming ------------------------------------------------------------------------------

    def authentic(self, msg: Incoming) -> bool:
        """Does the message carry a valid digest under our localized key for its engine?"""
        if self.auth is None or not msg.flags & FLAG_AUTH or msg.engine_id != self.engine_id:
            return False
        n = self.auth.mac_len
        if len(msg.auth_params) != n:
            return False
        data = msg.data
        zeroed = data[: msg.auth_at] + bytes(n) + data[msg.auth_at + n :]
        mac = hmac.digest(self._auth_key, zeroed, self.auth.hash_name)[:n]
        return hmac.compare_digest(mac, msg.auth_params)

    def open(self, msg: Incoming) -> tuple[int, ber.Response]:
        """Decrypt (if needed) and decode the scoped PDU of a message.

        Raises:
            UsmError: ``decryption`` if an encrypted PDU cannot be decrypted and parsed.
            BerError: if the plaintext PDU is malformed.
        """
        data = msg.data
        if not msg.flags & FLAG_PRIV:
            pos = _sequence(data, msg.body_at)
            return self._scoped_pdu(data, pos)
        if self.priv is None:
            raise UsmError("decryption", "encrypted answer to a user without privacy")
        try:
            cipher, _ = _octets(data, msg.body_at)
            plain = self._decrypt(cipher, msg)
            return self._scoped_pdu(plain, _sequence(plain, 0))
        except (ber.BerError, IndexError, ValueError) as exc:
            raise UsmError("decryption", "the answer could not be decrypted") from exc

    def _scoped_pdu(self, data: bytes, pos: int) -> tuple[int, ber.Response]:
        _, pos = _octets(data, pos)  # contextEngineID
        _, pos = _octets(data, pos)  # contextName
        return ber.decode_pdu(data, pos)

    def _decrypt(self, cipher: bytes, msg: Incoming) -> bytes:
        assert self.priv is not None
        salt = msg.priv_params
        if len(salt) != 8:
            raise ValueError("privacy parameters are not 8 bytes")
        if self.priv.cipher == "aes":
            iv = struct.pack(">II", msg.boots & 0xFFFFFFFF, msg.time & 0xFFFFFFFF) + salt
            assert self._aes is not None
            dec = Cipher(self._aes, CFB(iv)).decryptor()
            return dec.update(cipher) + dec.finalize()
        if len(cipher) % 8:
            raise ValueError("DES ciphertext is not a multiple of 8 bytes")
        iv = bytes(a ^ b for a, b in zip(self._priv_key[8:16], salt, strict=True))
        dec = Cipher(TripleDES(self._priv_key[:8] * 3), modes.CBC(iv)).decryptor()
        return dec.update(cipher) + dec.finalize()

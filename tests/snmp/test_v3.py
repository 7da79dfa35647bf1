"""SNMPv3 on the lean path against net-snmp's snmpd and snmpsim: every security level and every
auth x priv combination each agent offers, pysnmp as the reference for the same requests, the
distinct failures (wrong auth key, wrong privacy key, unknown user, unknown engine,
unsupported security level) that name the user and never contain a key, an agent reboot
(engine boots + 1) and a key change on the agent while polling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import polars as pl
import pytest
import structlog
from pydantic import SecretStr

from agent.plugins import CollectorContext
from agent.settings import ConfigError
from collectors.snmp import ber, build, usm
from collectors.snmp.ber import decode_oid, encode_oid, parse_oid
from collectors.snmp.client import (
    PysnmpSession,
    SnmpProtocolError,
    SnmpTimeoutError,
    UdpDispatcher,
    UnknownEngineError,
    UnknownUserError,
    UnsupportedSecLevelError,
    V3Credentials,
    V3Session,
    WrongAuthKeyError,
    WrongPrivKeyError,
    close_engine,
    new_engine,
)
from collectors.snmp.poller import DevicePlan, Poller
from collectors.snmp.profiles import load_profiles
from tests.paths import FIXTURES
from tests.servers import free_udp_port
from tests.servers.snmp import SnmpdServer, SnmpsimServer, V3User, snmpd, snmpsim
from tests.snmp.conftest import SIM_USER, Capture, run_collector, settings, value_of
from tests.snmp.helpers import ONE_GAUGE_PROFILE, until

SYS_UPTIME = encode_oid(parse_oid("1.3.6.1.2.1.1.3.0"))
ENTERPRISE = encode_oid(parse_oid("1.3.6.1.4.1.99.7.1.0"))
ENTERPRISE_VALUE = ("1.3.6.1.4.1.99.7.1.0", "integer", "4242")
SYSTEM = encode_oid(parse_oid("1.3.6.1.2.1.1"))

AUTHS = ["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
#: net-snmp 5.9's privacy protocols (AES192/256: Blumenthal key extension; ...C: Reeder's).
PRIVS = ["NONE", "DES", "AES", "AES192", "AES256", "AES192C", "AES256C"]
MATRIX = [
    V3User(f"u-{a}-{p}".lower(), f"auth-{a}-{p}-k3y".lower(), f"priv-{p}-{a}-k3y".lower(), a, p)
    for a in AUTHS
    for p in PRIVS
] + [V3User("u-noauth", "", "", "NONE", "NONE")]
BY_NAME = {u.name: u for u in MATRIX}
#: snmpsim (pysnmp's agent) spelling -> ours: its AES192/256 are Reeder's, ...BLMT Blumenthal's.
SIM_PRIVS = {
    "NONE": "NONE",
    "DES": "DES",
    "AES": "AES",
    "AES192": "AES192C",
    "AES256": "AES256C",
    "AES192BLMT": "AES192",
    "AES256BLMT": "AES256",
}
SIM_MATRIX = [
    V3User(f"s-{a}-{p}".lower(), f"sim-auth-{a}-{p}".lower(), f"sim-priv-{p}-{a}".lower(), a, p)
    for a in AUTHS
    for p in SIM_PRIVS
] + [V3User("s-noauth", "", "", "NONE", "NONE")]
ALL_KEYS = [k for u in [*MATRIX, SIM_USER] for k in (u.auth_key, u.priv_key) if k]


@pytest.fixture(scope="module")
def agent() -> Iterator[SnmpdServer]:
    """One snmpd with a user for every combination."""
    with snmpd([ENTERPRISE_VALUE], users=MATRIX) as server:
        yield server


@pytest.fixture(scope="module")
def sim_matrix() -> Iterator[SnmpsimServer]:
    """One snmpsim engine with a user for every combination it offers."""
    with snmpsim(FIXTURES / "snmp", users=SIM_MATRIX, probe_community="apc-8641") as server:
        yield server


@pytest.fixture
async def dispatcher() -> AsyncIterator[UdpDispatcher]:
    d = UdpDispatcher()
    await d.open()
    yield d
    d.close()


def creds(
    user: V3User,
    *,
    auth: str | None = None,
    priv: str | None = None,
    priv_proto: str | None = None,
    name: str | None = None,
    context: str = "",
    engine_id: str | None = None,
) -> V3Credentials:
    auth_proto = "none" if user.auth_proto == "NONE" else user.auth_proto
    priv_p = priv_proto or ("none" if user.priv_proto == "NONE" else user.priv_proto)
    return V3Credentials(
        user=name or user.name,
        auth_protocol=auth_proto,  # type: ignore[arg-type]
        auth_key=SecretStr(auth or user.auth_key) if auth_proto != "none" else None,
        priv_protocol=priv_p,  # type: ignore[arg-type]
        priv_key=SecretStr(priv or user.priv_key or "x-priv-key-1") if priv_p != "none" else None,
        context=context,
        engine_id=engine_id,
    )


def session(d: UdpDispatcher, port: int, c: V3Credentials, timeout_s: float = 0.3) -> V3Session:
    return V3Session(d, "127.0.0.1", port, c, timeout_s=timeout_s, retries=1)


def assert_no_key(text: str) -> None:
    for key in ALL_KEYS:
        assert key not in text


@pytest.mark.parametrize("user", MATRIX, ids=[u.name for u in MATRIX])
async def test_snmpd_every_combination(agent, dispatcher, user) -> None:
    c = creds(user)
    assert c.level == (
        "noAuthNoPriv"
        if user.auth_proto == "NONE"
        else "authNoPriv"
        if user.priv_proto == "NONE"
        else "authPriv"
    )
    s = session(dispatcher, agent.port, c)
    [(o1, uptime), (o2, value)] = await s.get([SYS_UPTIME, ENTERPRISE])
    assert (o1, o2) == (SYS_UPTIME, ENTERPRISE)
    assert isinstance(uptime, int) and uptime >= 0
    assert value == 4242  # the override line
    assert s.engine_id  # discovered
    assert s._security.boots >= 1  # snmpEngineBoots: 1 after a fresh start


@pytest.mark.parametrize("user", SIM_MATRIX, ids=[u.name for u in SIM_MATRIX])
async def test_snmpsim_every_combination(sim_matrix, dispatcher, user) -> None:
    """pysnmp's own agent: the context name selects the APC rPDU2 walk."""
    ours = V3User(
        user.name, user.auth_key, user.priv_key, user.auth_proto, SIM_PRIVS[user.priv_proto]
    )
    s = session(dispatcher, sim_matrix.port, creds(ours, context="apc-8641"), 1.0)
    [(oid, value)] = await s.get_next([SYSTEM])
    assert decode_oid(oid) == (1, 3, 6, 1, 2, 1, 1, 1, 0)  # sysDescr.0 follows the group
    assert isinstance(value, bytes) and value  # the walk's sysDescr text
    assert s.engine_id == bytes.fromhex(sim_matrix.engine_id)


@pytest.mark.parametrize("name", ["u-sha-aes256", "u-md5-aes192c", "u-sha256-aes", "u-sha-des"])
async def test_walks_match_pysnmp(agent, dispatcher, name) -> None:
    """GETBULK and GETNEXT over v3 give what pysnmp (the reference) gets for the same user."""
    c = creds(BY_NAME[name])
    lean = session(dispatcher, agent.port, c)
    bulk = await lean.get_bulk([SYSTEM], 12)
    nexts = await lean.get_next([SYSTEM, ENTERPRISE])
    engine = new_engine()
    try:
        ref = PysnmpSession(engine, "127.0.0.1", agent.port, v3=c, timeout_s=1.0, retries=1)
        want_bulk = await ref.get_bulk([SYSTEM], 12)
        want_next = await ref.get_next([SYSTEM, ENTERPRISE])
    finally:
        close_engine(engine)
    assert len(bulk) == 12
    # sysUpTime ticks between the two requests: compare everything else exactly.
    assert [o for o, _ in bulk] == [o for o, _ in want_bulk]
    assert [v for o, v in bulk if o != SYS_UPTIME] == [v for o, v in want_bulk if o != SYS_UPTIME]
    assert [o for o, _ in nexts] == [o for o, _ in want_next]
    assert decode_oid(nexts[0][0]) == (1, 3, 6, 1, 2, 1, 1, 1, 0)  # sysDescr follows system


def _pdu_tag(data: bytes) -> int:
    """The PDU tag of a plaintext (noPriv) v3 request: after the scoped PDU's two strings."""
    msg = usm.parse_message(data)
    _, pos = ber.read_len(data, msg.body_at + 1)  # scopedPDU SEQUENCE
    for _ in range(2):  # contextEngineID, contextName
        length, pos = ber.read_len(data, pos + 1)
        pos += length
    return data[pos]


@contextlib.contextmanager
def bulk_dropping_v3_relay(target_port: int) -> Iterator[int]:
    """A UDP relay to snmpd that drops SNMPv3 GETBULK requests (old firmware that never
    answers them). Only authNoPriv requests can be told apart: their PDU is in the clear."""
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    for sock in (front, back):
        sock.settimeout(0.005)
    stop = threading.Event()
    client: list[tuple[str, int]] = []

    def pump() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                data, addr = front.recvfrom(65535)
                client[:] = [addr]
                if usm.parse_message(data).flags & usm.FLAG_PRIV or _pdu_tag(data) != ber.GETBULK:
                    back.sendto(data, ("127.0.0.1", target_port))
            with contextlib.suppress(TimeoutError, OSError):
                answer, _ = back.recvfrom(65535)
                if client:
                    front.sendto(answer, client[0])

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield int(front.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        front.close()
        back.close()


async def test_getbulk_falls_back_to_getnext(agent, dispatcher) -> None:
    """As for v2c: an agent that never answers GETBULK is walked with GETNEXT, the poller
    remembers it, and the rows equal a GETBULK walk of the same agent."""
    c = creds(BY_NAME["u-sha256-none"])
    plan = DevicePlan(next(iter(load_profiles().values())))
    direct = Poller("d", session(dispatcher, agent.port, c), plan, max_repetitions=5)
    want = await direct._walk(SYSTEM)
    assert not direct.bulk_fallback and len(want) >= 7  # sysDescr .. sysServices, sysOR*
    with bulk_dropping_v3_relay(agent.port) as relay:
        relayed = Poller("r", session(dispatcher, relay, c, 0.2), plan, max_repetitions=5)
        rows = await relayed._walk(SYSTEM)
    assert relayed.bulk_fallback and not relayed.bulk
    assert [o for o, _ in rows] == [o for o, _ in want]


@pytest.mark.parametrize("server", ["snmpd", "snmpsim", "snmpd-pysnmp"])
async def test_wrong_auth_key(agent, sim, dispatcher, server, caplog) -> None:
    user, port, ctx = _target(agent, sim, server)
    with pytest.raises(WrongAuthKeyError) as info:
        await _get(dispatcher, server, port, creds(user, auth="wrong-auth-key-0000", context=ctx))
    message = str(info.value)
    assert repr(user.name) in message and "authentication key" in message
    assert info.value.reason == "auth_wrong_key"
    assert "wrong-auth-key-0000" not in message
    assert_no_key(message + caplog.text)


@pytest.mark.parametrize("server", ["snmpd", "snmpsim"])
async def test_wrong_priv_key(agent, sim, dispatcher, server, caplog) -> None:
    """snmpsim reports a decryption error; snmpd drops the request silently, and the client
    tells it from a dead agent by an authNoPriv request from the same user that is answered."""
    user, port, ctx = _target(agent, sim, server)
    with pytest.raises(WrongPrivKeyError) as info:
        await _get(dispatcher, server, port, creds(user, priv="wrong-priv-key-1111", context=ctx))
    message = str(info.value)
    assert repr(user.name) in message and "privacy key" in message
    assert "wrong-priv-key-1111" not in message
    assert_no_key(message + caplog.text)


@pytest.mark.parametrize("server", ["snmpd", "snmpsim", "snmpd-pysnmp"])
async def test_unknown_user(agent, sim, dispatcher, server, caplog) -> None:
    user, port, ctx = _target(agent, sim, server)
    with pytest.raises(UnknownUserError) as info:
        await _get(dispatcher, server, port, creds(user, name="nobody-here", context=ctx))
    assert "'nobody-here'" in str(info.value) and "unknown" in str(info.value)
    assert_no_key(str(info.value) + caplog.text)


async def test_unsupported_security_level(agent, dispatcher, caplog) -> None:
    """An authNoPriv user asked at authPriv: snmpd reports usmStatsUnsupportedSecLevels."""
    user = BY_NAME["u-sha256-none"]
    c = creds(user, priv_proto="AES", priv="some-priv-key-2222")
    with pytest.raises(UnsupportedSecLevelError) as info:
        await session(dispatcher, agent.port, c).get([SYS_UPTIME])
    assert "'u-sha256-none'" in str(info.value) and "authPriv" in str(info.value)
    assert info.value.reason == "auth_unsupported_level"
    assert_no_key(str(info.value) + caplog.text)


async def test_configured_engine_id(agent, dispatcher) -> None:
    """A configured engine id skips discovery (the clock comes from a notInTimeWindow report);
    a wrong one is an unknown-engine error, not a timeout or a key error."""
    user = BY_NAME["u-sha512-aes256"]
    first = session(dispatcher, agent.port, creds(user))
    await first.get([SYS_UPTIME])
    engine_id = first.engine_id.hex()
    known = session(dispatcher, agent.port, creds(user, engine_id=engine_id))
    [(_, value)] = await known.get([ENTERPRISE])
    assert value == 4242 and known.engine_id.hex() == engine_id
    wrong = session(dispatcher, agent.port, creds(user, engine_id="80001f8880deadbeef00"))
    with pytest.raises(UnknownEngineError) as info:
        await wrong.get([SYS_UPTIME])
    assert info.value.reason == "auth_unknown_engine" and "'u-sha512-aes256'" in str(info.value)


async def test_reboot_and_key_change_while_polling(dispatcher) -> None:
    """The agent restarts (same engine id, snmpEngineBoots 1 -> 2): polling goes on after one
    notInTimeWindow re-sync. Then its key changes: a wrong-key error, and the new key works
    (keys are cached by password, never reused for another one)."""
    old = V3User("u-rotate", "auth-before-9a1", "priv-before-9a1", "SHA256", "AES")
    new = V3User("u-rotate", "auth-after-77b2", "priv-after-77b2", "SHA256", "AES")
    state = Path(tempfile.mkdtemp(prefix="snmpd-reboot-"))
    with snmpd([ENTERPRISE_VALUE], users=[old], state_dir=state) as server:
        port = server.port
        polling = session(dispatcher, port, creds(old))
        await polling.get([ENTERPRISE])
        engine_id, boots = polling.engine_id, polling._security.boots
    with snmpd([ENTERPRISE_VALUE], users=[old], state_dir=state, port=port):
        [(_, value)] = await polling.get([ENTERPRISE])
        assert value == 4242
        assert polling.engine_id == engine_id and polling._security.boots == boots + 1
    with snmpd([ENTERPRISE_VALUE], users=[new], state_dir=state, port=port):
        with pytest.raises(WrongAuthKeyError) as info:
            await polling.get([ENTERPRISE])
        assert_no_key(str(info.value))
        assert new.auth_key not in str(info.value) and old.auth_key not in str(info.value)
        rotated = session(dispatcher, port, creds(new))
        [(_, value)] = await rotated.get([ENTERPRISE])
        assert value == 4242 and rotated._security.boots == boots + 2


async def test_dead_agent_is_a_timeout_not_a_key_error(dispatcher) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        s = session(dispatcher, hole.getsockname()[1], creds(BY_NAME["u-sha-aes"]), 0.05)
        with pytest.raises(SnmpTimeoutError):
            await s.get([SYS_UPTIME])


async def test_garbage_answers(dispatcher) -> None:
    """An 'agent' answering every request with the right msgID but a broken security block:
    a protocol error, nothing raised from inside the codec."""
    # msgID 0x01020304 is patched per request; the security parameters are not a SEQUENCE.
    template = bytes.fromhex("3020020103301102040102030402030100000401040201030408deadbeefdeadbeef")
    stop = threading.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            msg_id = usm.message_id(data)
            assert msg_id is not None
            sock.sendto(template.replace(b"\x01\x02\x03\x04", msg_id.to_bytes(4, "big")), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        s = session(dispatcher, sock.getsockname()[1], creds(BY_NAME["u-sha-aes"]), 0.2)
        with pytest.raises(SnmpProtocolError):
            await s.get([SYS_UPTIME])
    finally:
        stop.set()
        thread.join(2)
        sock.close()


async def test_password_keys_are_cached(agent, dispatcher) -> None:
    """Password -> key runs once per password and hash, however many devices share it."""
    user = BY_NAME["u-sha384-aes"]
    usm.password_to_key.cache_clear()
    usm.local_key.cache_clear()
    sessions = [session(dispatcher, agent.port, creds(user)) for _ in range(5)]
    await asyncio.gather(*(s.get([SYS_UPTIME]) for s in sessions))
    # The auth and the priv password, once each; the other four sessions hit the cache.
    assert usm.password_to_key.cache_info().misses == 2
    assert (usm.local_key.cache_info().misses, usm.local_key.cache_info().hits) == (2, 8)


def _target(agent: SnmpdServer, sim, server: str) -> tuple[V3User, int, str]:
    if server.startswith("snmpd"):
        return BY_NAME["u-sha512-aes256"], agent.port, ""
    return SIM_USER, sim.port, "apc-8641"


async def _get(d: UdpDispatcher, server: str, port: int, c: V3Credentials) -> int:
    if server.endswith("pysnmp"):
        engine = new_engine()
        try:
            s = PysnmpSession(engine, "127.0.0.1", port, v3=c, timeout_s=0.5, retries=1)
            [(_, value)] = await s.get([SYS_UPTIME])
        finally:
            close_engine(engine)
    else:
        [(_, value)] = await session(d, port, c).get([SYS_UPTIME])
    assert isinstance(value, int)
    return value


async def test_collector_v3_authpriv_snmpsim_with_secrets(sim, tmp_path: Path) -> None:
    """Through the collector: keys from the secrets directory, context name selects the walk."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "sim-auth").write_text(SIM_USER.auth_key + "\n")
    (secrets / "sim-priv").write_text(SIM_USER.priv_key + "\n")
    device = {
        "name": "rpdu-v3",
        "host": "127.0.0.1",
        "port": sim.port,
        "v3": {
            "user": SIM_USER.name,
            "auth_protocol": "SHA256",
            "auth_key_secret": "sim-auth",
            "priv_protocol": "AES256",
            "priv_key_secret": "sim-priv",
            "context": "apc-8641",
        },
    }
    collector = build(
        "v3",
        {"devices": [device], "defaults": {"jitter_s": 0}, "flush_s": 0.05},
        settings(secrets_dir=secrets),
    )
    collector.first_poll_now = True
    frame = (await run_collector(collector)).frame()
    state = collector.states["rpdu-v3"]
    assert isinstance(state.session, V3Session)  # the lean path, not pysnmp
    assert state.poller.plan.profile.name == "apc-rpdu2"
    assert value_of(frame, "pdu.1.power") == 121 * 10.0  # rPDU2DeviceStatusPower, 0.01 kW
    assert value_of(frame, "outlet.1.energy") == 3046 / 10  # rPDU2OutletMeteredStatusEnergy.1


async def test_collector_logs_auth_failure_once_without_key(sim, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "a").write_text("not-the-auth-key-5150")
    (secrets / "p").write_text(SIM_USER.priv_key)
    device = {
        "name": "bad-v3",
        "host": "127.0.0.1",
        "port": sim.port,
        "v3": {
            "user": SIM_USER.name,
            "auth_key_secret": "a",
            "priv_key_secret": "p",
            "priv_protocol": "AES256",
            "context": "apc-8641",
        },
        "interval_s": 0.2,
        "timeout_s": 0.3,
        "retries": 0,
        "backoff_max_s": 0.2,
    }
    collector = build(
        "v3bad", {"devices": [device], "defaults": {"jitter_s": 0}}, settings(secrets_dir=secrets)
    )
    collector.first_poll_now = True
    with structlog.testing.capture_logs() as events:
        await run_collector(collector, polls=3)
    assert collector.states["bad-v3"].finished >= 3
    err = repr(events)
    assert [e["event"] for e in events].count("device failing") == 1
    assert "auth_wrong_key" in err and SIM_USER.name in err
    assert "not-the-auth-key-5150" not in err and SIM_USER.priv_key not in err


async def test_collector_key_rotation_and_reboot_without_restart(tmp_path: Path) -> None:
    """One collector run throughout, against snmpd with an authPriv SHA-256/AES-128 user:
    the agent reboots (boots + 1) and polling goes on without a failure; the agent's keys
    change: a wrong-key failure, logged once and without key material; the secret files
    are updated: the collector reads them again, builds a new session and recovers (logged
    once) with no restart, and readings go on."""
    from agent import metrics  # noqa: PLC0415

    old = V3User("u-rotor", "auth-before-c41e", "priv-before-c41e", "SHA256", "AES")
    new = V3User("u-rotor", "auth-after-9d07", "priv-after-9d07", "SHA256", "AES")
    keys = [old.auth_key, old.priv_key, new.auth_key, new.priv_key]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "rot-auth").write_text(old.auth_key + "\n")
    (secrets / "rot-priv").write_text(old.priv_key + "\n")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "rot-meter.toml").write_text(ONE_GAUGE_PROFILE)
    state_dir = tmp_path / "snmpd"
    state_dir.mkdir()
    device = {
        "name": "ups-rot",
        "host": "127.0.0.1",
        "profile": "rot-meter",
        "v3": {
            "user": old.name,
            "auth_protocol": "SHA256",
            "auth_key_secret": "rot-auth",
            "priv_protocol": "AES",
            "priv_key_secret": "rot-priv",
        },
        # Two tries of 0.5 s ride over the agent's restart; the backoff stays short.
        "interval_s": 0.2,
        "jitter_s": 0,
        "timeout_s": 0.5,
        "retries": 1,
        "backoff_max_s": 0.4,
    }
    failures = {"collector": "rot", "device": "ups-rot", "reason": "auth_wrong_key"}

    def wrong_key_failures() -> float:
        value = metrics.REGISTRY.get_sample_value("pue_agent_poll_failures_total", failures)
        return value or 0.0

    failures_before = wrong_key_failures()
    device["port"] = port = free_udp_port()
    collector = build(
        "rot",
        {"devices": [device], "profiles_dir": str(profiles), "flush_s": 0.05},
        settings(secrets_dir=secrets),
    )
    collector.first_poll_now = True
    capture = Capture()
    ctx = CollectorContext(name="rot", settings=collector.settings, emit=capture)
    logs = contextlib.ExitStack()
    events = logs.enter_context(structlog.testing.capture_logs())
    task: asyncio.Task[None] | None = None
    try:
        with snmpd([ENTERPRISE_VALUE], users=[old], state_dir=state_dir, port=port):
            task = asyncio.create_task(collector.run(ctx))
            await until(lambda: "ups-rot" in collector.states, "the collector to start")
            state = collector.states["ups-rot"]
            await until(lambda: state.finished >= 2 and not state.failing, "first polls")
            first_session = state.session
            assert isinstance(first_session, V3Session)
            boots = first_session._security.boots
        # Reboot: same engine id, same user; boots + 1, a notInTimeWindow re-sync inside
        # the session, no failure and no new session.
        with snmpd([ENTERPRISE_VALUE], users=[old], state_dir=state_dir, port=port):
            done = state.finished
            await until(lambda: state.finished >= done + 3, "polls after the reboot")
            assert state.session is first_session and not state.failing
            assert first_session._security.boots == boots + 1
        assert not [e for e in events if e["event"] == "device failing"], events
        # Key change on the agent: wrong-key failures until the secret files follow.
        with snmpd([ENTERPRISE_VALUE], users=[new], state_dir=state_dir, port=port):
            await until(lambda: state.failing, "the wrong-key failure")
            polls_failed = state.failed_polls
            await until(lambda: state.failed_polls >= polls_failed + 2, "more failed polls")
            assert wrong_key_failures() >= failures_before + 3  # one per failed poll
            (secrets / "rot-auth").write_text(new.auth_key + "\n")
            (secrets / "rot-priv").write_text(new.priv_key + "\n")
            await until(lambda: not state.failing, "recovery with the new keys")
            rows = sum(b.height for b in capture.batches)
            done = state.finished
            await until(lambda: state.finished >= done + 3, "polls with the new keys")
            assert not state.failing and state.session is not first_session
            await until(lambda: sum(b.height for b in capture.batches) > rows, "new readings")
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        logs.close()
    names = [e["event"] for e in events]
    assert names.count("device failing") == 1 and names.count("device recovered") == 1
    assert names.count("device credentials changed, new session") == 1
    failing = next(e for e in events if e["event"] == "device failing")
    assert failing["reason"] == "auth_wrong_key" and "'u-rotor'" in failing["error"]
    changed = next(e for e in events if e["event"] == "device credentials changed, new session")
    assert changed["secrets"] == ["rot-auth", "rot-priv"]  # names, never values
    text = repr(events)
    for key in keys:
        assert key not in text
    # Readings went on after the recovery, with the agent's value.
    after = capture.frame().slice(rows)
    assert after.height >= 1 and set(after.filter(pl.col("point") == "p")["value"]) == {4242.0}


def test_des_needs_explicit_permission() -> None:
    device = {"name": "d", "host": "h", "v3": {"user": "u", "priv_protocol": "DES"}}
    with pytest.raises(ConfigError, match="allow_des"):
        build("x", {"devices": [device]}, settings())
    build("x", {"devices": [device], "allow_des": True}, settings())


logging.getLogger("pysnmp").setLevel(logging.WARNING)

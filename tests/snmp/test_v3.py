"""SNMPv3 against snmpsim and net-snmp's snmpd: every security level, SHA-1/SHA-2, AES-128/192/256,
and the three failures (wrong auth key, wrong privacy key, unknown user) as distinct errors
that name the user and never contain a key."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from agent.settings import ConfigError
from collectors.snmp import build
from collectors.snmp.ber import encode_oid, parse_oid
from collectors.snmp.client import (
    PysnmpSession,
    UnknownUserError,
    V3Credentials,
    WrongAuthKeyError,
    WrongPrivKeyError,
    close_engine,
    new_engine,
)
from tests.servers.snmp import SnmpdServer, V3User, snmpd
from tests.snmp.conftest import SIM_USER, run_collector, settings, value_of

SYS_UPTIME = encode_oid(parse_oid("1.3.6.1.2.1.1.3.0"))
ENTERPRISE_VALUE = ("1.3.6.1.4.1.99.7.1.0", "integer", "4242")

SNMPD_USERS = [
    V3User("u-sha1-aes128", "auth-sha1-1c7f33", "priv-aes-8e2b19", "SHA", "AES"),
    V3User("u-sha224-aes128", "auth-sha224-2d81", "priv-aes-71aa02", "SHA224", "AES128"),
    V3User("u-sha256-aes192", "auth-sha256-9f0e", "priv-aes192-3cc4", "SHA256", "AES192"),
    V3User("u-sha512-aes256", "auth-sha512-55d2", "priv-aes256-e019", "SHA512", "AES256"),
    V3User("u-authnopriv", "auth-only-key-6b3a", "", "SHA256", "NONE"),
    V3User("u-noauth", "", "", "NONE", "NONE"),
]
ALL_KEYS = [u.auth_key for u in [*SNMPD_USERS, SIM_USER] if u.auth_key] + [
    u.priv_key for u in [*SNMPD_USERS, SIM_USER] if u.priv_key
]


@pytest.fixture(scope="module")
def agent() -> Iterator[SnmpdServer]:
    with snmpd([ENTERPRISE_VALUE], users=SNMPD_USERS) as server:
        yield server


def creds(
    user: V3User,
    *,
    auth: str | None = None,
    priv: str | None = None,
    name: str | None = None,
    context: str = "",
) -> V3Credentials:
    auth_proto = "none" if user.auth_proto == "NONE" else user.auth_proto
    priv_proto = "none" if user.priv_proto == "NONE" else user.priv_proto
    return V3Credentials(
        user=name or user.name,
        auth_protocol=auth_proto,  # type: ignore[arg-type]
        auth_key=SecretStr(auth or user.auth_key) if auth_proto != "none" else None,
        priv_protocol=priv_proto,  # type: ignore[arg-type]
        priv_key=SecretStr(priv or user.priv_key) if priv_proto != "none" else None,
        context=context,
    )


async def get_uptime(port: int, c: V3Credentials) -> int:
    engine = new_engine()
    try:
        session = PysnmpSession(engine, "127.0.0.1", port, v3=c, timeout_s=0.5, retries=1)
        [(oid, value)] = await session.get([SYS_UPTIME])
        assert oid == SYS_UPTIME
        assert isinstance(value, int)
        return value
    finally:
        close_engine(engine)


@pytest.mark.parametrize("user", SNMPD_USERS, ids=[u.name for u in SNMPD_USERS])
async def test_snmpd_every_level_and_protocol(agent, user) -> None:
    c = creds(user)
    assert c.level == {"NONE": "noAuthNoPriv"}.get(
        user.auth_proto, "authNoPriv" if user.priv_proto == "NONE" else "authPriv"
    )
    assert await get_uptime(agent.port, c) >= 0


def assert_no_key(text: str) -> None:
    for key in ALL_KEYS:
        assert key not in text


@pytest.mark.parametrize("server", ["snmpd", "snmpsim"])
async def test_wrong_auth_key(agent, sim, server, caplog) -> None:
    user, port, ctx = _target(agent, sim, server)
    with pytest.raises(WrongAuthKeyError) as info:
        await get_uptime(port, creds(user, auth="wrong-auth-key-0000", context=ctx))
    message = str(info.value)
    assert repr(user.name) in message and "authentication key" in message
    assert "wrong-auth-key-0000" not in message
    assert_no_key(message + caplog.text)


@pytest.mark.parametrize("server", ["snmpd", "snmpsim"])
async def test_wrong_priv_key(agent, sim, server, caplog) -> None:
    """snmpsim reports a decryption error; snmpd drops the request silently, and the client
    tells it from a dead agent by an authNoPriv request from the same user that is answered."""
    user, port, ctx = _target(agent, sim, server)
    with pytest.raises(WrongPrivKeyError) as info:
        await get_uptime(port, creds(user, priv="wrong-priv-key-1111", context=ctx))
    message = str(info.value)
    assert repr(user.name) in message and "privacy key" in message
    assert "wrong-priv-key-1111" not in message
    assert_no_key(message + caplog.text)


@pytest.mark.parametrize("server", ["snmpd", "snmpsim"])
async def test_unknown_user(agent, sim, server, caplog) -> None:
    user, port, ctx = _target(agent, sim, server)
    with pytest.raises(UnknownUserError) as info:
        await get_uptime(port, creds(user, name="nobody-here", context=ctx))
    assert "'nobody-here'" in str(info.value) and "unknown" in str(info.value)
    assert_no_key(str(info.value) + caplog.text)


def _target(agent: SnmpdServer, sim, server: str) -> tuple[V3User, int, str]:
    if server == "snmpd":
        return SNMPD_USERS[3], agent.port, ""
    return SIM_USER, sim.port, "apc-8641"


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
    assert collector.states["rpdu-v3"].poller.plan.profile.name == "apc-rpdu2"
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


def test_des_needs_explicit_permission() -> None:
    device = {"name": "d", "host": "h", "v3": {"user": "u", "priv_protocol": "DES"}}
    with pytest.raises(ConfigError, match="allow_des"):
        build("x", {"devices": [device]}, settings())
    build("x", {"devices": [device], "allow_des": True}, settings())


async def test_des_when_enabled(tmp_path: Path) -> None:
    user = V3User("u-des", "auth-for-des-88aa", "priv-des-key-90", "SHA", "DES")
    with snmpd([ENTERPRISE_VALUE], users=[user]) as server:
        assert await get_uptime(server.port, creds(user)) >= 0


logging.getLogger("pysnmp").setLevel(logging.WARNING)

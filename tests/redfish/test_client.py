"""Auth, TLS and error translation against the test server (real captures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from collectors.redfish.client import RedfishClient
from collectors.redfish.errors import RedfishAuthError, RedfishTLSError
from tests.redfish.conftest import config_for, poll_once, values
from tests.servers.redfish import make_tls, redfish_server, tree

ROOT = "/redfish/v1"
SUPERMICRO_POWER = "/redfish/v1/Chassis/1/Power"


async def test_session_login_relogin_on_401_and_logout() -> None:
    with redfish_server(tree("real/supermicro"), auth="session") as server:
        client = RedfishClient(config_for(server))
        doc = await client.get_json(SUPERMICRO_POWER)
        # real/supermicro Chassis/1/Power: PowerControl[0].PowerConsumedWatts 2161.
        assert doc["PowerControl"][0]["PowerConsumedWatts"] == 2161
        assert (server.logins, client.logins) == (1, 1)
        server.expire_sessions()  # the BMC forgot the session (reboot, idle timeout)
        doc = await client.get_json(SUPERMICRO_POWER)
        assert doc["PowerControl"][0]["PowerConsumedWatts"] == 2161
        assert server.logins == 2
        statuses = [s for m, p, s in server.requests if p == SUPERMICRO_POWER]
        assert statuses == [200, 401, 200]
        await client.aclose()
        assert server.logouts == 1
        assert server.tokens == {}


async def test_basic_auth() -> None:
    with redfish_server(tree("real/supermicro"), auth="basic") as server:
        _, result = await poll_once(server)
        assert server.logins == 0
    assert values(result.frame)["input.power"] == 2161.0


async def test_wrong_password_is_a_clear_error_without_the_secret() -> None:
    wrong = "not-the-pw-9f3a"
    with redfish_server(tree("real/supermicro"), auth="session") as server:
        client = RedfishClient(config_for(server, password=wrong))
        with pytest.raises(RedfishAuthError) as info:
            await client.get_json(ROOT)
        await client.aclose()
    message = str(info.value)
    assert "'bmc-1'" in message and "login refused (HTTP 401)" in message
    assert wrong not in message and server.password not in message


async def test_tls_with_ca_file(tmp_path: Path) -> None:
    tls = make_tls(tmp_path, "bmc")
    with redfish_server(tree("real/supermicro"), auth="session", tls=tls) as server:
        assert server.url.startswith("https://")
        _, result = await poll_once(server, ca_file=tls.ca)
    assert result.errors == []
    assert values(result.frame)["input.power"] == 2161.0


async def test_wrong_ca_is_a_tls_error_naming_the_device(tmp_path: Path) -> None:
    tls = make_tls(tmp_path, "bmc")
    other = make_tls(tmp_path / "other", "other")
    with redfish_server(tree("real/supermicro"), auth="session", tls=tls) as server:
        poller, result = await poll_once(server, device="gpu-node-17", ca_file=other.ca)
    assert len(result.errors) == 1
    error = result.errors[0]
    assert isinstance(error, RedfishTLSError)
    assert "'gpu-node-17'" in str(error) and "certificate" in str(error).lower()
    assert poller.failing
    assert result.frame.height == 0


async def test_verify_off_warns_and_works(tmp_path: Path) -> None:
    tls = make_tls(tmp_path, "bmc")
    with redfish_server(tree("real/supermicro"), tls=tls) as server, capture_logs() as logs:
        _, result = await poll_once(server, device="legacy-bmc", verify_tls=False)
    assert values(result.frame)["input.power"] == 2161.0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings[0]["event"] == "TLS certificate verification is off for this device"
    assert warnings[0]["device"] == "legacy-bmc"

"""Device health: 404 re-discovery, 500 and timeouts failing then recovering, logged once."""

from __future__ import annotations

from structlog.testing import capture_logs

from collectors.redfish.client import ClientConfig, RedfishClient
from collectors.redfish.errors import RedfishHTTPError, RedfishTimeoutError
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import load_profile
from tests.redfish.conftest import config_for, values
from tests.servers.redfish import redfish_server, tree

ROOT = "/redfish/v1"
POWER = "/redfish/v1/Chassis/1/Power"  # real/supermicro: PowerConsumedWatts 2161


async def test_404_triggers_rediscovery() -> None:
    with redfish_server(tree("real/supermicro"), auth="session") as server:
        client = RedfishClient(config_for(server))
        poller = DevicePoller(client, load_profile())
        assert values((await poller.poll()).frame)["input.power"] == 2161.0
        assert (await poller.poll()).errors == []
        assert server.count(ROOT) == 1  # the plan is cached between polls
        server.fail[POWER] = 404  # firmware update moved the resource
        gone = await poller.poll()
        assert gone.frame.height == 0 and not poller.failing
        del server.fail[POWER]
        back = await poller.poll()
        await client.aclose()
    assert server.count(ROOT) == 2
    assert poller.discoveries == 2
    assert values(back.frame)["input.power"] == 2161.0


async def test_rediscovery_after_configured_time() -> None:
    with redfish_server(tree("real/supermicro")) as server:
        client = RedfishClient(config_for(server))
        poller = DevicePoller(client, load_profile(), rediscover_s=0.0)
        await poller.poll()
        await poller.poll()
        await client.aclose()
    assert server.count(ROOT) == 2


async def test_500_marks_failing_then_recovering_logged_once() -> None:
    with redfish_server(tree("real/supermicro")) as server, capture_logs() as logs:
        client = RedfishClient(config_for(server, device="hgx-3"))
        poller = DevicePoller(client, load_profile())
        await poller.poll()
        server.fail[POWER] = 500
        for _ in range(3):
            result = await poller.poll()
            assert isinstance(result.errors[0], RedfishHTTPError)
            assert result.errors[0].status == 500
            assert poller.failing
        del server.fail[POWER]
        result = await poller.poll()
        await client.aclose()
    assert not poller.failing
    assert values(result.frame)["input.power"] == 2161.0
    events = [(e["event"], e.get("device")) for e in logs if e["event"].startswith("device")]
    assert events == [("device failing", "hgx-3"), ("device recovered", "hgx-3")]


async def test_timeout_marks_failing_then_recovering() -> None:
    with redfish_server(tree("real/supermicro")) as server:
        client = RedfishClient(config_for(server, timeout_s=0.3))
        poller = DevicePoller(client, load_profile())
        await poller.poll()
        server.delay_s = 1.0
        result = await poller.poll()
        assert [type(e) for e in result.errors] == [RedfishTimeoutError]
        assert "bmc-1" in str(result.errors[0]) and POWER in str(result.errors[0])
        assert poller.failing
        server.delay_s = 0.0
        result = await poller.poll()
        await client.aclose()
    assert not poller.failing
    assert values(result.frame)["input.power"] == 2161.0


async def test_unreachable_device_fails_at_discovery() -> None:
    with redfish_server(tree("real/supermicro")) as server:
        url = server.url
    # The server is gone: connection refused, named by device and path.
    client = RedfishClient(ClientConfig(device="dead-bmc", url=url, auth="none", timeout_s=2))
    poller = DevicePoller(client, load_profile())
    result = await poller.poll()
    await client.aclose()
    assert poller.failing and poller.plan is None
    assert "'dead-bmc'" in str(result.errors[0]) and ROOT in str(result.errors[0])

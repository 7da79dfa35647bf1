"""Reading a real bacpypes3 device: values, unit conversion, quality flags, bad data, RP fallback.

Expected values, from the test chiller's objects (tests/servers/bacnet.py) and the unit
table (collectors/bacnet/units.toml):

- power: 350.0 kilowatts x 1000 = 350,000 W
- energy: 123.4567 megawatt-hours x 1000 = 123,456.7 kWh
- chw.return: 54.5 degrees-fahrenheit: (54.5 - 32) x 5/9 = 12.5 degC
- cooling (DERIVED): flow 30.0 l/s = 0.030 m3/s; dT = 12.5 - 6.7 = 5.8 K;
  0.030 x 5.8 x 4190.7 kJ/(m3 K) = 729.1818 kW
- tons: 100 tons-refrigeration x 3516.8528 W = 351,685.28 W = 351.68528 heat_kw
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from agent.readings import Quality
from collectors.bacnet.client import BacnetClient, device_address
from collectors.bacnet.errors import BacnetTimeoutError, BacnetUnknownObjectError
from collectors.bacnet.poller import quality_of
from tests.bacnet.conftest import FULL, PLAIN, make_poller
from tests.servers.bacnet import BacnetServer, silent_port

EXPECTED = {
    "power": ("power_w", 350_000.0, Quality.GOOD),
    "energy": ("energy_kwh", 123_456.7, Quality.GOOD),
    "chw.supply": ("temperature_c", 6.7, Quality.GOOD),
    "chw.return": ("temperature_c", 12.5, Quality.GOOD),
    "load": ("load_pct", 71.5, Quality.GOOD),
    "oos": ("power_w", 10_000.0, Quality.DEVICE_SUSPECT),
    "fault": ("power_w", 11_000.0, Quality.DEVICE_SUSPECT),
    "unreliable": ("power_w", 12_000.0, Quality.DEVICE_SUSPECT),
    "tons": ("heat_kw", 351.68528, Quality.GOOD),
    "cooling": ("heat_kw", 0.030 * (12.5 - 6.7) * 4190.7, Quality.DERIVED),
}


@pytest.mark.parametrize("name", [FULL, PLAIN])
async def test_poll_reads_converts_and_flags(server: BacnetServer, name: str) -> None:
    client = BacnetClient(local_address="127.0.0.1:0", timeout_s=1.0, retries=0)
    try:
        poller = make_poller(client, server, name)
        result = await poller.poll()
    finally:
        client.close()
    rows = {r["point"]: r for r in result.frame.iter_rows(named=True)}
    assert set(rows) == set(EXPECTED)  # nan, wrong_units and missing give no reading
    for point, (quantity, value, quality) in EXPECTED.items():
        assert rows[point]["quantity"] == quantity, point
        assert rows[point]["value"] == pytest.approx(value, rel=1e-6), point
        assert rows[point]["quality"] == int(quality), point
    assert rows["chw.supply"]["device"] == name
    # The flow is read for the derivation only: the agent has no flow quantity.
    assert "chw.flow" not in rows
    assert result.bad_values == 1  # the NaN, counted and dropped
    reasons = sorted(type(e).__name__ for e in result.errors)
    assert reasons == ["BacnetPropertyError", "BacnetUnknownObjectError"]
    unknown = next(e for e in result.errors if isinstance(e, BacnetUnknownObjectError))
    assert "analog-input,99" in str(unknown)
    units_error = next(e for e in result.errors if not isinstance(e, BacnetUnknownObjectError))
    assert "'percent' is a percent unit" in str(units_error)
    # Point problems are not a failing device: the device answered.
    assert not poller.failing
    assert set(poller.point_problems) == {"wrong_units", "missing"}
    assert poller.rpm is (name == FULL)  # the plain device fell back to ReadProperty


async def test_object_problems_logged_once_and_recovery(server: BacnetServer) -> None:
    client = BacnetClient(local_address="127.0.0.1:0", timeout_s=1.0, retries=0)
    try:
        poller = make_poller(client, server, FULL)
        poller.full_every = 1  # units are read on full reads only: make every poll one
        with capture_logs() as logs:
            await poller.poll()
            await poller.poll()
            server.set(FULL, "analog-input,15", units="kilowatts")
            try:
                result = await poller.poll()
            finally:
                server.set(FULL, "analog-input,15", units="percent")
    finally:
        client.close()
    failing = [e for e in logs if e["event"] == "object failing"]
    assert sorted(e["point"] for e in failing) == ["missing", "wrong_units"]
    recovered = [e for e in logs if e["event"] == "object recovered"]
    assert [e["point"] for e in recovered] == ["wrong_units"]
    assert result.frame.filter(result.frame["point"] == "wrong_units")["value"].to_list() == [
        13_000.0
    ]


async def test_device_that_does_not_answer_fails_once_then_recovers(server: BacnetServer) -> None:
    client = BacnetClient(local_address="127.0.0.1:0", timeout_s=0.2, retries=0)
    try:
        with silent_port() as port, capture_logs() as logs:
            poller = make_poller(client, server, FULL)
            good = poller.address
            poller.address = device_address(f"127.0.0.1:{port}")
            first = await poller.poll()
            second = await poller.poll()
            poller.address = good
            third = await poller.poll()
    finally:
        client.close()
    assert first.frame.height == second.frame.height == 0
    assert isinstance(first.errors[0], BacnetTimeoutError)
    assert third.frame.height == len(EXPECTED)
    events = [e["event"] for e in logs if e["event"].startswith("device ")]
    assert events == ["device failing", "device recovered"]
    assert all("s3cret" not in str(e) for e in logs)


async def test_who_is_unicast_finds_the_device(server: BacnetServer) -> None:
    client = BacnetClient(local_address="127.0.0.1:0", timeout_s=1.0, retries=0)
    try:
        found = await client.who_is(device_address(server.address(FULL)), wait_s=1.0)
        other = await client.who_is(device_address(server.address(FULL)), low=5, high=5, wait_s=0.3)
    finally:
        client.close()
    assert [(d.device_id, d.address) for d in found] == [(1001, server.address(FULL))]
    assert other == []  # a range that excludes the device: no I-Am


def test_quality_from_status_flags_and_reliability() -> None:
    # status-flags bits: in-alarm, fault, overridden, out-of-service (ASHRAE 135 clause 12).
    assert quality_of([0, 0, 0, 0], "no-fault-detected") == Quality.GOOD
    assert quality_of([1, 0, 0, 0], None) == Quality.GOOD  # an alarm is a real value
    assert quality_of([0, 1, 0, 0], None) == Quality.DEVICE_SUSPECT
    assert quality_of([0, 0, 1, 0], None) == Quality.DEVICE_SUSPECT
    assert quality_of([0, 0, 0, 1], None) == Quality.DEVICE_SUSPECT
    assert quality_of(None, "over-range") == Quality.DEVICE_SUSPECT


def test_a_local_port_in_use_is_an_error_not_a_silent_retry(server: BacnetServer) -> None:
    port = server.devices[FULL].port
    with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}"):
        BacnetClient(local_address=f"127.0.0.1:{port}")


async def test_units_and_reliability_only_on_full_reads(server: BacnetServer) -> None:
    client = BacnetClient(local_address="127.0.0.1:0", timeout_s=1.0, retries=0)
    try:
        poller = make_poller(client, server, FULL)
        poller.full_every = 3
        results = [await poller.poll() for _ in range(4)]
    finally:
        client.close()
    # Polls 1 and 4 read units (and reliability): the same readings every time, and the
    # quick polls keep the quality the full read found.
    frames = [r.frame.drop("ts").sort("point") for r in results]
    assert all(f.equals(frames[0]) for f in frames[1:])
    assert frames[0].height == len(EXPECTED)

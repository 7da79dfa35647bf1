"""One BACnet server for the module: a full test chiller and one without RPM and COV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bacpypes3.basetypes import Reliability

from collectors.bacnet.client import BacnetClient, device_address
from collectors.bacnet.maps import load_maps
from collectors.bacnet.poller import DevicePoller
from collectors.bacnet.units import load_units
from tests.servers.bacnet import BacnetServer, bacnet_server, test_chiller

MAPS = Path(__file__).with_name("maps")
FULL = "test-chiller-1001"  # RPM and COV
PLAIN = "test-chiller-1002"  # ReadProperty only, no COV


@pytest.fixture(scope="module")
def server() -> Iterator[BacnetServer]:
    with bacnet_server([test_chiller(1001), test_chiller(1002, rpm=False, cov=False)]) as s:
        for name in (FULL, PLAIN):
            s.set(name, "analog-input,11", outOfService=True)
            # bacpypes3 computes status-flags: fault from reliability, out-of-service from
            # out-of-service; setting the flags themselves has no effect.
            s.set(name, "analog-input,12", reliability=Reliability.communicationFailure)
            s.set(name, "analog-input,13", reliability=Reliability.overRange)
        yield s


def make_poller(
    client: BacnetClient, server: BacnetServer, name: str, map_name: str = "chiller-test"
) -> DevicePoller:
    """A poller of one served device through a test map."""
    return DevicePoller(
        client,
        device=name,
        address=device_address(server.address(name)),
        object_map=load_maps([MAPS])[map_name],
        units=load_units(),
        max_objects=5,
        collector="test",
    )

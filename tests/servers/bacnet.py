"""BACnet/IP test devices: real bacpypes3 device applications on loopback UDP ports.

The devices (:class:`collectors.sim.devices.bacnet_chiller.BacnetDevice`) run in a thread
with their own event loop, so one module-scoped server serves tests that each run in
their own loop. ``python -m tests.servers.bacnet --devices N`` serves N test chillers in a
process of their own (the benchmark), printing their ports as one JSON line.
:func:`silent_port` holds a UDP port that never answers (a device that is down: the
client's requests time out).

Traps found on the way (bacpypes3 0.0.110):

- Bind to ``127.0.0.1:PORT`` with an IPv4Address: on loopback the broadcast tuple equals the
  address, so no broadcast socket is opened and no Who-Is broadcast is needed; a directed
  (unicast) Who-Is to ``127.0.0.1:PORT`` is answered with a unicast I-Am.
- Port 0 binds, but the application keeps ``:0`` as its address: pick a free port first.
- Error/Reject/Abort PDUs are raised as exceptions that derive from ``BaseException``.
- ``read_property_multiple`` takes a flat list ``[objid, [props], objid, [props]]`` of
  ``ObjectIdentifier`` objects (strings are refused), despite its type hints.
- A device that does not answer costs apduTimeout x (retries + 1): 12 s by default.
- It binds with SO_REUSEPORT and retries a failed bind forever, silently: two stacks on
  one port share it and steal each other's answers (the collector's client binds once
  plainly first, so a port in use is an error).
- Local objects compute status-flags (fault from reliability, out-of-service from
  out-of-service): setting statusFlags has no effect; set reliability/outOfService.
- REAL is float32: 123.4567 comes back as 123.45670318603516.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from collectors.sim.devices.bacnet_chiller import BacnetDevice, BacnetObject, chiller_objects

__all__ = [
    "CHILLER",
    "TEST_OBJECTS",
    "BacnetServer",
    "bacnet_server",
    "silent_port",
    "test_chiller",
]

T = TypeVar("T")

#: The test chiller's values in the units its controller reports (see tests/bacnet).
CHILLER = {
    "power_kw": 350.0,
    "supply_c": 6.7,
    "return_c": 12.5,
    "flow_l_s": 30.0,
    "energy_mwh": 123.4567,
    "load_pct": 71.5,
}

#: Bad-data objects beside the chiller's (the test map ``tests/bacnet/maps/chiller-test``).
TEST_OBJECTS = [
    # The return temperature once more, reported in degrees Fahrenheit: 54.5 F = 12.5 C.
    BacnetObject("analog-input,10", "CHWRT (F)", "degrees-fahrenheit", 54.5),
    BacnetObject("analog-input,11", "out of service", "kilowatts", 10.0),
    BacnetObject("analog-input,12", "fault", "kilowatts", 11.0),
    BacnetObject("analog-input,13", "unreliable", "kilowatts", 12.0),
    BacnetObject("analog-input,14", "not a number", "kilowatts", float("nan")),
    BacnetObject("analog-input,15", "wrong units", "percent", 13.0),
    BacnetObject("analog-input,16", "condenser power", "tons-refrigeration", 100.0),
]


def test_chiller(device_id: int = 1001, *, rpm: bool = True, cov: bool = True) -> BacnetDevice:
    """The test chiller: fixed values (:data:`CHILLER`) plus the bad-data objects."""
    return BacnetDevice(
        device_id=device_id,
        name=f"test-chiller-{device_id}",
        objects=chiller_objects(**CHILLER) + list(TEST_OBJECTS),
        rpm=rpm,
        cov=cov,
    )


test_chiller.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


class BacnetServer:
    """Devices served from a thread with its own event loop."""

    def __init__(self, devices: list[BacnetDevice]) -> None:
        """Serve ``devices`` once :meth:`start` is called."""
        self.devices = {d.name: d for d in devices}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        """Start the thread and every device; raises if one cannot bind."""
        self._thread.start()
        for device in self.devices.values():
            self.call(device.start)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a coroutine function or a plain function) on the devices' loop."""

        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def set(self, device: str, objid: str, **properties: Any) -> None:
        """Set properties of one object of one device (on the devices' loop)."""
        self.call(lambda: self.devices[device].set(objid, **properties))

    def address(self, device: str) -> str:
        """``127.0.0.1:PORT`` of a device."""
        return f"127.0.0.1:{self.devices[device].port}"

    def stop(self) -> None:
        """Stop every device and the thread."""
        for device in self.devices.values():
            self.call(device.stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


@contextmanager
def bacnet_server(devices: list[BacnetDevice]) -> Iterator[BacnetServer]:
    """Serve ``devices`` for the duration of the block."""
    server = BacnetServer(devices)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def silent_port() -> Iterator[int]:
    """A bound UDP port on loopback that reads nothing and answers nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _serve(count: int) -> None:
    """Serve ``count`` test chillers (device ids 1001...) until stdin closes; print ports."""
    server = BacnetServer([test_chiller(1001 + i) for i in range(count)])
    server.start()
    print(json.dumps({name: d.port for name, d in server.devices.items()}), flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve test chillers on loopback (BACnet/IP).")
    parser.add_argument("--devices", type=int, default=1)
    _serve(parser.parse_args().devices)

"""The demo site behind real protocols: one simulator; SNMP, MQTT, Modbus, Redfish, BACnet.

:class:`DemoDevices` starts, on loopback ports it picks, an SNMP responder serving APC rack
PDUs and Smart-UPSes (tables the project builds from its own profiles' OIDs), an MQTT broker
with Shelly Pro 3EM meters (PV, cooling, lighting), a Modbus TCP gateway (pymodbus) with the
grid incomers as CHINT DTSU666 meters, a Redfish service for a GPU
server (a minimal tree the project writes) and bacpypes3 BACnet/IP devices for the chillers
(power, energy and the chilled-water loop), all with live values from one
:class:`SiteSimulator`; it returns the collector tables and the site model that poll them.
Nothing is read from disk: no device capture is needed. The busiest PDU's energy register
starts one count below its 31-bit wrap, so the demo shows a wrap being corrected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from collectors.modbus.maps import load_maps
from collectors.sim.devices.apc import WRAP_COUNTS, rack_pdu, smart_ups
from collectors.sim.devices.bacnet_chiller import BacnetDevice, live_chiller
from collectors.sim.devices.modbus_meter import LiveMeter, ModbusMeterServer
from collectors.sim.devices.mqtt_meters import ShellyMeter, ShellyPublisher, start_broker
from collectors.sim.devices.redfish_service import (
    GPU_SERVER_POWER,
    LiveProperty,
    RedfishService,
    gpu_server_tree,
)
from collectors.sim.devices.snmp_responder import SnmpResponder
from collectors.sim.simulator import SimDevice, SiteSimulator, site_table

__all__ = ["DemoDevices"]

#: The GPU servers behind Redfish: name, and its share of its rack's power (it sits in the
#: busiest rack).
REDFISH_SERVERS: tuple[tuple[str, float], ...] = (("gpu-server-1", 0.4),)
#: How a server's input power splits over its two PSUs (a breakdown, like real PSUs).
PSU_SHARES = (0.51, 0.49)
#: The device map the grid incomers' Modbus meters are laid out by.
INCOMER_MAP = "chint-dtsu666"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DemoDevices:
    """Simulated devices on real protocols, driven by one simulator clock."""

    pdus: int = 8
    interval_s: float = 5.0
    sim: SiteSimulator = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _broker: Any = None
    _snmp: SnmpResponder | None = None
    _redfish: list[RedfishService] = field(default_factory=list)
    _bacnet: list[BacnetDevice] = field(default_factory=list)
    _wrap_offset_counts: int = 0
    _modbus: ModbusMeterServer | None = None
    mqtt_port: int = 0
    wrap_device: str = ""

    @property
    def snmp_port(self) -> int:
        """The UDP port of the SNMP responder (all SNMP devices, one community each)."""
        return self._snmp.port if self._snmp is not None else 0

    @property
    def bacnet_ports(self) -> list[int]:
        """UDP ports of the BACnet chillers (one bacpypes3 device each)."""
        return [device.port for device in self._bacnet]

    @property
    def modbus_port(self) -> int:
        """The TCP port of the Modbus gateway (the grid incomers, one unit id each)."""
        return self._modbus.port if self._modbus is not None else 0

    @property
    def redfish_ports(self) -> list[int]:
        """TCP ports of the Redfish services."""
        return [service.port for service in self._redfish]

    def __post_init__(self) -> None:
        self.sim = SiteSimulator(pdus=self.pdus)
        self.sim.tick(datetime.now(UTC))

    # -- live values ------------------------------------------------------------------------

    def _index(self, device: str, prefix: str) -> int:
        for i, d in enumerate(self.sim.devices):
            if d.device == device and d.prefix == prefix:
                return i
        raise KeyError((device, prefix))

    def _share_w(self, i: int, share: float) -> float:
        return self._power_w(i) * share

    def _power_w(self, i: int) -> float:
        assert self.sim._last_power_w is not None
        return float(self.sim._last_power_w[i])

    def _energy_kwh(self, i: int) -> float:
        return float(self.sim.energy_kwh[i])

    def _energy_wh(self, i: int) -> float:
        return float(self.sim.energy_kwh[i]) * 1000.0

    def _power_of(self, i: int) -> Callable[[], float]:
        return functools.partial(self._power_w, i)

    def _energy_of(self, i: int) -> Callable[[], float]:
        return functools.partial(self._energy_kwh, i)

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.sim.tick(datetime.now(UTC))

    # -- start/stop -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every simulated device on loopback."""
        self._tasks.append(asyncio.create_task(self._clock(), name="demo-clock"))
        await self._start_snmp()
        await self._start_mqtt()
        await self._start_modbus()
        await self._start_redfish()
        await self._start_bacnet()

    async def stop(self) -> None:
        """Stop every simulated device."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._snmp is not None:
            self._snmp.close()
        for service in self._redfish:
            await service.stop()
        if self._modbus is not None:
            await self._modbus.stop()
        for device in self._bacnet:
            await device.stop()
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.shutdown()

    async def _start_snmp(self) -> None:
        responder = SnmpResponder()
        racks = [d for d in self.sim.devices if d.role == "it"]
        # The busiest rack's register sits one count below its wrap: at 0.1 kWh per count it
        # wraps within a minute (0.1 kWh / 6 kW = 60 s), so even `demo --minutes 1` shows it.
        self.wrap_device = max(
            racks, key=lambda d: self._power_w(self._index(d.device, d.prefix))
        ).device
        for d in self.sim.devices:
            if d.role == "it":
                i = self._index(d.device, d.prefix)
                wrap = d.device == self.wrap_device
                if wrap:
                    self._wrap_offset_counts = WRAP_COUNTS - 1 - int(self._energy_kwh(i) * 10)
                offset = self._wrap_offset_counts if wrap else 0
                responder.add_device(
                    d.device,
                    rack_pdu(
                        d.device,
                        power_w=self._power_of(i),
                        energy_kwh=self._energy_of(i),
                        location=f"demo hall, rack-{d.device[4:]}",
                        energy_offset_counts=offset,
                    ),
                )
            elif d.device.startswith("ups-") and d.prefix == "output":
                out = self._index(d.device, "output")
                inp = self._index(d.device, "input")
                responder.add_device(
                    d.device,
                    smart_ups(
                        d.device,
                        output_w=self._power_of(out),
                        output_kwh=self._energy_of(out),
                        input_kwh=self._energy_of(inp),
                        rating_w=d.rating_kw * 1000.0,
                        location="demo hall, UPS room",
                    ),
                )
        await responder.start()
        self._snmp = responder

    def _shelly_devices(self) -> list[SimDevice]:
        return [
            d
            for d in self.sim.devices
            if d.role in ("onsite_renewable", "cooling", "other")
            and d not in self._bacnet_chillers()
        ]

    def _bacnet_chillers(self) -> list[SimDevice]:
        """The chillers: on BACnet/IP, as a chiller plant's controllers are."""
        return [d for d in self.sim.devices if d.device.startswith("chiller-")]

    async def _start_bacnet(self) -> None:
        for n, d in enumerate(self._bacnet_chillers(), start=1):
            i = self._index(d.device, d.prefix)
            device = BacnetDevice(
                device_id=n,
                name=d.device,
                objects=live_chiller(
                    power_w=self._power_of(i), energy_kwh=self._energy_of(i), rated_kw=d.rating_kw
                ),
            )
            await device.start()
            self._bacnet.append(device)

    def _modbus_meters(self) -> list[SimDevice]:
        """The grid incomers: Modbus meters on RS-485 behind a gateway, as on most sites."""
        return [d for d in self.sim.devices if d.role == "grid_import"]

    async def _start_modbus(self) -> None:
        device_map = load_maps()[INCOMER_MAP]
        meters = []
        for unit, d in enumerate(self._modbus_meters(), start=1):
            i = self._index(d.device, d.prefix)
            live = {"total.power": self._power_of(i), "import.energy": self._energy_of(i)}
            meters.append(LiveMeter(unit=unit, device_map=device_map, values=live))
        self._modbus = ModbusMeterServer(meters, port=_free_port())
        await self._modbus.start()

    async def _start_mqtt(self) -> None:
        self.mqtt_port = _free_port()
        self._broker = await start_broker(self.mqtt_port)
        meters = []
        for d in self._shelly_devices():
            i = self._index(d.device, d.prefix)
            meters.append(
                ShellyMeter(
                    prefix=d.device,
                    power_w=functools.partial(self._power_w, i),
                    energy_wh=functools.partial(self._energy_wh, i),
                )
            )
        publisher = ShellyPublisher(self.mqtt_port, meters, interval_s=self.interval_s)
        self._tasks.append(asyncio.create_task(publisher.run(), name="demo-shelly"))

    async def _start_redfish(self) -> None:
        racks = [self._index(d.device, d.prefix) for d in self.sim.devices if d.role == "it"]
        for name, share in REDFISH_SERVERS:
            # The GPU server sits in the busiest rack: its input is a share of that rack's power.
            rack = max(racks, key=self._power_w)
            live = [
                LiveProperty(
                    GPU_SERVER_POWER,
                    ("PowerControl", 0, "PowerConsumedWatts"),
                    functools.partial(self._share_w, rack, share),
                )
            ]
            live += [
                LiveProperty(
                    GPU_SERVER_POWER,
                    ("PowerSupplies", n, "PowerInputWatts"),
                    functools.partial(self._share_w, rack, share * psu),
                )
                for n, psu in enumerate(PSU_SHARES)
            ]
            service = RedfishService(tree=gpu_server_tree(name, psus=len(PSU_SHARES)), live=live)
            await service.start()
            self._redfish.append(service)

    # -- what the agent is told -------------------------------------------------------------

    def collectors(self) -> list[dict[str, Any]]:
        """Collector tables polling the simulated devices."""
        assert self._snmp is not None
        snmp_devices = [
            {
                "name": d.device,
                "host": "127.0.0.1",
                "port": self._snmp.port,
                "community": d.device,
                "profile": "apc-rpdu2" if d.role == "it" else "apc-smart-ups",
            }
            for d in self.sim.devices
            if d.role == "it" or (d.device.startswith("ups-") and d.prefix == "output")
        ]
        return [
            {
                "kind": "snmp",
                "name": "snmp",
                "devices": snmp_devices,
                "defaults": {"interval_s": self.interval_s, "jitter_s": 0.5, "timeout_s": 2.0},
            },
            {
                "kind": "mqtt",
                "name": "mqtt",
                "host": "127.0.0.1",
                "port": self.mqtt_port,
                "protocol": "3.1.1",
                "tls": False,
                "qos": 1,
                "mappings": ["shelly_gen2"],
                "client_id": "pue-agent-demo",
                "persistent_session": False,
            },
            {
                "kind": "bacnet",
                "name": "bacnet",
                "local_address": "127.0.0.1:0",
                "interval_s": self.interval_s,
                "timeout_s": 1.0,
                "devices": [
                    {
                        "name": device.name,
                        "address": f"127.0.0.1:{device.port}",
                        "device_id": device.device_id,
                        "map": "chiller",
                    }
                    for device in self._bacnet
                ],
            },
            {
                "kind": "modbus",
                "name": "modbus",
                "buses": [{"name": "gateway-1", "host": "127.0.0.1", "port": self.modbus_port}],
                "defaults": {"interval_s": self.interval_s, "jitter_s": 0.5, "timeout_s": 1.0},
                "devices": [
                    {"name": d.device, "unit": unit, "map": INCOMER_MAP}
                    for unit, d in enumerate(self._modbus_meters(), start=1)
                ],
            },
            {
                "kind": "redfish",
                "name": "redfish",
                "interval_s": self.interval_s,
                "devices": [
                    {"name": name, "url": f"http://127.0.0.1:{svc.port}", "auth": "none"}
                    for (name, *_), svc in zip(REDFISH_SERVERS, self._redfish, strict=True)
                ],
            },
        ]

    def site(self) -> dict[str, Any]:
        """The site model matching what the collectors will produce."""
        table = site_table(self.sim, site_id="demo", category=2)
        points = {
            "it": ("pdu.1.energy", "pdu.1.power"),
            "monitor": ("output.energy", "output.power"),
        }
        meters = []
        for meter in table["meters"]:
            role = meter["role"]
            if meter["device"].startswith("chiller-"):
                meter["energy_point"], meter["power_point"] = "energy", "power"  # bacnet map
            elif role == "grid_import":  # the DTSU666 map's points
                meter["energy_point"], meter["power_point"] = "import.energy", "total.power"
            elif role in ("grid_import", "onsite_renewable", "cooling", "other"):
                meter["energy_point"], meter["power_point"] = "em0.total.energy", "em0.total.power"
            elif role == "it":
                meter["energy_point"], meter["power_point"] = points["it"]
                if meter["device"] == self.wrap_device:
                    meter["register_bits"], meter["register_unit_kwh"] = 31, 0.1
            elif meter["device"].startswith("ups-") and meter["id"].endswith(".output"):
                meter["energy_point"], meter["power_point"] = points["monitor"]
            else:
                continue  # UPS inputs: an APC Smart-UPS reports input energy, not power
            meters.append(meter)
        for name, *_ in REDFISH_SERVERS:
            meters.append(
                {
                    "id": f"{name}.input",
                    "device": name,
                    "power_point": "input.power",
                    "role": "monitor",
                    "metering_point": "it_input",
                }
            )
        table["meters"] = meters
        return table

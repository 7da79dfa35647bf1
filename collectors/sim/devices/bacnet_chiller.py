"""A BACnet/IP device on loopback (bacpypes3) serving a chiller's objects with live values.

:class:`BacnetDevice` is a real bacpypes3 device application: it answers Who-Is (unicast),
ReadProperty, ReadPropertyMultiple and SubscribeCOV, and can be made to lack the last two
(``rpm=False``, ``cov=False``) as many field controllers do. :func:`chiller_objects` lays
out a chiller as the collector's built-in ``chiller`` map expects it, with the units a
plant's controller typically reports (kW, degrees Celsius, litres per second, MWh).
Values are callables polled every ``tick_s``; a change beyond an object's COV increment is
notified to subscribers by bacpypes3 itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bacpypes3.basetypes import EngineeringUnits, Reliability, StatusFlags
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import IPv4Address

__all__ = [
    "CHILLER_COP",
    "BacnetDevice",
    "BacnetObject",
    "chiller_objects",
    "free_udp_port",
    "live_chiller",
]


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago (bacpypes3 cannot report the one it bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class BacnetObject:
    """One analog object: identifier, name, BACnet units and its value (fixed or live)."""

    objid: str
    name: str
    units: str
    value: float | Callable[[], float]
    cov_increment: float = 0.1

    def current(self) -> float:
        """The value now."""
        return float(self.value() if callable(self.value) else self.value)


class _NoRpm(NormalApplication):  # type: ignore[misc]
    # bacpypes3 answers a service without a do_ handler with Reject unrecognized-service.
    do_ReadPropertyMultipleRequest = None  # noqa: N815 - the name bacpypes3 looks up


class _NoCov(NormalApplication):  # type: ignore[misc]
    do_SubscribeCOVRequest = None  # noqa: N815 - the name bacpypes3 looks up


class _Plain(_NoRpm, _NoCov):
    pass


def _app_class(rpm: bool, cov: bool) -> type[NormalApplication]:
    if rpm and cov:
        return NormalApplication  # type: ignore[no-any-return]
    if rpm:
        return _NoCov
    return _NoRpm if cov else _Plain


@dataclass
class BacnetDevice:
    """A bacpypes3 device on ``host:port`` (port 0: one is picked); start inside a loop."""

    device_id: int
    name: str
    objects: list[BacnetObject]
    host: str = "127.0.0.1"
    port: int = 0
    rpm: bool = True
    cov: bool = True
    tick_s: float = 1.0
    app: Any = field(default=None, init=False)
    local: dict[str, Any] = field(default_factory=dict, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    async def start(self) -> None:
        """Bind the socket, add the objects and start refreshing live values."""
        if not self.port:
            self.port = free_udp_port(self.host)
        device = DeviceObject(
            objectIdentifier=("device", self.device_id),
            objectName=self.name,
            vendorIdentifier=999,
        )
        self.app = _app_class(self.rpm, self.cov)(device, IPv4Address(f"{self.host}:{self.port}"))
        for spec in self.objects:
            kind = AnalogValueObject if spec.objid.startswith("analog-value") else AnalogInputObject
            obj = kind(
                objectIdentifier=spec.objid,
                objectName=spec.name,
                presentValue=spec.current(),
                units=EngineeringUnits(spec.units),
                statusFlags=StatusFlags([0, 0, 0, 0]),
                outOfService=False,
                reliability=Reliability.noFaultDetected,
                covIncrement=spec.cov_increment,
            )
            self.app.add_object(obj)
            self.local[spec.objid] = obj
        if any(callable(spec.value) for spec in self.objects):
            self._task = asyncio.create_task(self._refresh(), name=f"bacnet-device:{self.name}")

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.refresh()

    def refresh(self) -> None:
        """Copy every live value into its object now."""
        for spec in self.objects:
            if callable(spec.value):
                self.local[spec.objid].presentValue = spec.current()

    def set(self, objid: str, **properties: Any) -> None:
        """Set properties of one object (``presentValue``, ``outOfService``, ``reliability``...)."""
        obj = self.local[objid]
        for name, value in properties.items():
            setattr(obj, name, value)

    async def stop(self) -> None:
        """Stop refreshing and close the socket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.app is not None:
            self.app.close()


def chiller_objects(
    *,
    power_kw: float | Callable[[], float],
    supply_c: float | Callable[[], float],
    return_c: float | Callable[[], float],
    flow_l_s: float | Callable[[], float],
    energy_mwh: float | Callable[[], float],
    load_pct: float | Callable[[], float],
) -> list[BacnetObject]:
    """A chiller's objects at the built-in ``chiller`` map's instances, in a plant's units."""
    return [
        BacnetObject("analog-input,1", "CH-1 kW", "kilowatts", power_kw, 0.5),
        BacnetObject("analog-input,2", "CH-1 CHWST", "degrees-celsius", supply_c, 0.05),
        BacnetObject("analog-input,3", "CH-1 CHWRT", "degrees-celsius", return_c, 0.05),
        BacnetObject("analog-input,4", "CH-1 CHW flow", "liters-per-second", flow_l_s, 0.2),
        BacnetObject("analog-value,1", "CH-1 load", "percent", load_pct, 0.5),
        BacnetObject("analog-value,2", "CH-1 kWh", "megawatt-hours", energy_mwh, 0.0001),
    ]


#: The demo chiller's thermal side: coefficient of performance, chilled-water supply set
#: point and design temperature difference, and water's volumetric heat capacity at 10 degC
#: (999.7 kg/m3 x 4.192 kJ/(kg K)), the same figure as the built-in chiller map's.
CHILLER_COP = 5.0
CHW_SUPPLY_C = 7.0
CHW_DELTA_T_K = 5.5
WATER_KJ_PER_M3_K = 4190.7


def live_chiller(
    *, power_w: Callable[[], float], energy_kwh: Callable[[], float], rated_kw: float
) -> list[BacnetObject]:
    """A chiller whose water side follows its electrical input (the demo's chillers).

    Heat removed = COP x input power; the flow is what carries it at the design dT:
    flow [m3/s] = heat [kW] / (dT [K] x 4190.7 kJ/(m3 K)), so the collector's derived
    cooling reading gives back COP x power.
    """

    def heat_kw() -> float:
        return power_w() / 1000.0 * CHILLER_COP

    return chiller_objects(
        power_kw=lambda: power_w() / 1000.0,
        supply_c=CHW_SUPPLY_C,
        return_c=CHW_SUPPLY_C + CHW_DELTA_T_K,
        flow_l_s=lambda: heat_kw() / (CHW_DELTA_T_K * WATER_KJ_PER_M3_K) * 1000.0,
        energy_mwh=lambda: energy_kwh() / 1000.0,
        load_pct=lambda: min(100.0, power_w() / 10.0 / rated_kw),
    )

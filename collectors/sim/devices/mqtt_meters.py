"""An in-process MQTT broker (amqtt) with simulated Shelly Pro 3EM meters publishing to it.

The payloads are built here (:func:`em_payload`, :func:`emdata_payload`) in the shape of the
Shelly Gen2 ``em:0`` / ``emdata:0`` status objects a Pro 3EM publishes: per-phase and total
active power in W, energy totals in Wh.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

__all__ = ["ShellyMeter", "ShellyPublisher", "start_broker"]


@dataclass(frozen=True)
class ShellyMeter:
    """One simulated Pro 3EM: its topic prefix and where its live values come from."""

    prefix: str
    power_w: Callable[[], float]
    energy_wh: Callable[[], float]


async def start_broker(port: int) -> Any:
    """Start an amqtt broker on 127.0.0.1:port (MQTT 3.1.1, anonymous, loopback only)."""
    from amqtt.broker import Broker  # noqa: PLC0415 - only the demo needs a broker

    # amqtt logs every connection at INFO; the demo's terminal view is the interface.
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "auth": {"allow-anonymous": True},
            "topic-check": {"enabled": False},
            "sys_interval": 0,
        }
    )
    await broker.start()
    return broker


def em_payload(power_w: float) -> dict[str, Any]:
    """An ``em:0`` object: the total split over three phases like a real balanced load."""
    shares = (0.34, 0.33, 0.33)
    power_factor, volts = 0.95, 230.0
    payload: dict[str, Any] = {
        "id": 0,
        "total_act_power": round(power_w, 3),
        "total_aprt_power": round(power_w / power_factor, 3),
        "total_current": round(power_w / power_factor / volts, 3),
        "n_current": None,
    }
    for phase, share in zip("abc", shares, strict=True):
        phase_w = power_w * share
        payload[f"{phase}_act_power"] = round(phase_w, 3)
        payload[f"{phase}_aprt_power"] = round(phase_w / power_factor, 3)
        payload[f"{phase}_current"] = round(phase_w / power_factor / volts, 3)
        payload[f"{phase}_voltage"] = volts
        payload[f"{phase}_freq"] = 50.0
        payload[f"{phase}_pf"] = power_factor
    return payload


def emdata_payload(energy_wh: float) -> dict[str, Any]:
    """An ``emdata:0`` object with the cumulative totals in Wh (phases split like em:0)."""
    payload: dict[str, Any] = {"id": 0, "total_act": round(energy_wh, 2), "total_act_ret": 0.0}
    for phase, share in zip("abc", (0.34, 0.33, 0.33), strict=True):
        payload[f"{phase}_total_act_energy"] = round(energy_wh * share, 2)
        payload[f"{phase}_total_act_ret_energy"] = 0.0
    return payload


@dataclass
class ShellyPublisher:
    """Publishes every meter's ``em:0`` and ``emdata:0`` every ``interval_s`` (QoS 1)."""

    port: int
    meters: list[ShellyMeter]
    interval_s: float = 5.0
    published: int = field(default=0, init=False)

    async def run(self) -> None:
        """Publish until cancelled; reconnects if the broker restarts."""
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="demo-meters") as c:
                    while True:
                        for meter in self.meters:
                            await c.publish(
                                f"{meter.prefix}/status/em:0",
                                json.dumps(em_payload(meter.power_w())),
                                qos=1,
                            )
                            await c.publish(
                                f"{meter.prefix}/status/emdata:0",
                                json.dumps(emdata_payload(meter.energy_wh())),
                                qos=1,
                            )
                            self.published += 2
                        await asyncio.sleep(self.interval_s)
            except aiomqtt.MqttError:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(1.0)

"""``pue-agent probe PROTOCOL …``: poll one device once and print what it yields.

Each protocol's sub-command is written beside its collector
(``collectors/<protocol>/probe.py``, a ``register(probe_app)`` function) and prints
through :func:`agent.probe.print_readings`.
"""

from __future__ import annotations

import typer

from collectors.bacnet import probe as bacnet_probe
from collectors.modbus import probe as modbus_probe
from collectors.mqtt import probe as mqtt_probe
from collectors.redfish import probe as redfish_probe
from collectors.snmp import probe as snmp_probe

__all__ = ["probe_app"]

probe_app = typer.Typer(help="Poll one device once and print its readings.", no_args_is_help=True)
for _protocol in (bacnet_probe, modbus_probe, mqtt_probe, redfish_probe, snmp_probe):
    _protocol.register(probe_app)

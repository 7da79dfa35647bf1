"""The demo's APC devices as SNMP tables the project builds itself: Rack PDU 2G and Smart-UPS.

Each table holds the OIDs pue-agent's own profiles read (``collectors/snmp/profiles/
apc-rpdu2.toml`` and ``apc-smart-ups.toml``) plus the MIB-II system group, so
``profile = "auto"`` picks the same profile a real device of that kind gets. No device
walk is loaded: every value is computed on request from the simulator's power and energy,
in the units and scales the PowerNet-MIB states (noted beside each OID).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pysnmp.proto.api import v2c

__all__ = [
    "PDU_OBJECT_ID",
    "RPDU2_ENERGY",
    "RPDU2_POWER",
    "UPS_OBJECT_ID",
    "WRAP_COUNTS",
    "SnmpTable",
    "rack_pdu",
    "smart_ups",
    "system_group",
]

#: OID (dotted text) -> the value served now.
SnmpTable = dict[str, Callable[[], Any]]
Source = Callable[[], float]

#: sysObjectID of an APC Rack PDU 2G (under apc-rpdu2's ``1.3.6.1.4.1.318.1.3.4``).
PDU_OBJECT_ID = "1.3.6.1.4.1.318.1.3.4.6"
#: sysObjectID of an APC Smart-UPS behind a Network Management Card (under ``…318``).
UPS_OBJECT_ID = "1.3.6.1.4.1.318.1.3.27"

_RPDU2 = "1.3.6.1.4.1.318.1.1.26"
_DEVICE = f"{_RPDU2}.4.3.1"  # rPDU2DeviceStatusEntry
_PHASE = f"{_RPDU2}.6.3.1"  # rPDU2PhaseStatusEntry
_OUTLET = f"{_RPDU2}.9.4.3.1"  # rPDU2OutletMeteredStatusEntry
RPDU2_POWER = f"{_DEVICE}.5.1"  # rPDU2DeviceStatusPower, 0.01 kW
RPDU2_ENERGY = f"{_DEVICE}.9.1"  # rPDU2DeviceStatusEnergy, 0.1 kWh, INTEGER 0..2^31-1
RPDU_POWER_WATTS = "1.3.6.1.4.1.318.1.1.12.1.16.0"  # rPDUIdentDevicePowerWatts (legacy), W
WRAP_COUNTS = 2**31  # rPDU2DeviceStatusEnergy is an INTEGER 0..2147483647

_UPS = "1.3.6.1.4.1.318.1.1.1"

#: The simulated electrical conditions (single phase, a typical IT load).
VOLTS = 230.0
POWER_FACTOR = 0.97
HERTZ = 50.0
#: How the PDU's load splits over its metered outlets (weights, normalised).
OUTLET_WEIGHTS = (1.2, 1.0, 0.9, 1.1, 0.8, 1.0, 0.6, 0.4)


def const(value: Any) -> Callable[[], Any]:
    """A source that always serves ``value``."""
    return lambda: value


def system_group(name: str, descr: str, object_id: str, location: str) -> SnmpTable:
    """MIB-II ``system``: sysDescr, sysObjectID, sysUpTime (live), contact, name, location."""
    started = time.monotonic()
    return {
        "1.3.6.1.2.1.1.1.0": const(v2c.OctetString(descr)),
        "1.3.6.1.2.1.1.2.0": const(v2c.ObjectIdentifier(object_id)),
        "1.3.6.1.2.1.1.3.0": lambda: v2c.TimeTicks(int((time.monotonic() - started) * 100)),
        "1.3.6.1.2.1.1.4.0": const(v2c.OctetString("pue-agent demo")),
        "1.3.6.1.2.1.1.5.0": const(v2c.OctetString(name)),
        "1.3.6.1.2.1.1.6.0": const(v2c.OctetString(location)),
        "1.3.6.1.2.1.1.7.0": const(v2c.Integer(72)),  # sysServices: application layer
    }


def _integer(source: Source, per_unit: float) -> Callable[[], Any]:
    """An INTEGER in the MIB's unit: ``round(source() * per_unit)``."""
    return lambda: v2c.Integer(round(source() * per_unit))


def _gauge(source: Source, per_unit: float) -> Callable[[], Any]:
    """A Gauge32/Unsigned32 in the MIB's unit (never below zero)."""
    return lambda: v2c.Gauge32(max(round(source() * per_unit), 0))


def _register(source: Source, per_unit: float, offset: int, modulus: int) -> Callable[[], Any]:
    """An energy register: whole counts reached so far, plus ``offset``, modulo ``modulus``."""
    return lambda: v2c.Integer((int(source() * per_unit) + offset) % modulus)


def rack_pdu(
    name: str,
    *,
    power_w: Source,
    energy_kwh: Source,
    location: str,
    energy_offset_counts: int = 0,
) -> SnmpTable:
    """A single-phase APC Rack PDU 2G with metered outlets (PowerNet-MIB rPDU2 group).

    ``energy_offset_counts`` shifts the device energy register (0.1 kWh counts, modulo
    2^31) so that a demo can start it just below its wrap.
    """
    weights = [w / sum(OUTLET_WEIGHTS) for w in OUTLET_WEIGHTS]

    def amps(source: Source) -> Source:
        return lambda: source() / (VOLTS * POWER_FACTOR)

    table = system_group(
        name,
        "pue-agent demo: simulated APC Rack PDU 2G (PowerNet-MIB rPDU2, metered outlets)",
        PDU_OBJECT_ID,
        location,
    )
    table |= {
        # rPDU2DeviceStatusTable, one row (index 1): index, module, name, ...
        f"{_DEVICE}.1.1": const(v2c.Integer(1)),
        f"{_DEVICE}.2.1": const(v2c.Integer(1)),
        f"{_DEVICE}.3.1": const(v2c.OctetString(name)),
        RPDU2_POWER: _integer(power_w, 1 / 10),  # 0.01 kW
        RPDU2_ENERGY: _register(energy_kwh, 10.0, energy_offset_counts, WRAP_COUNTS),
        f"{_DEVICE}.16.1": _integer(lambda: power_w() / POWER_FACTOR, 1 / 10),  # 0.01 kVA
        f"{_DEVICE}.17.1": const(v2c.Integer(round(POWER_FACTOR * 100))),  # hundredths
        # rPDU2PhaseStatusTable, one phase: index, module, number, current, voltage, power
        f"{_PHASE}.1.1": const(v2c.Integer(1)),
        f"{_PHASE}.2.1": const(v2c.Integer(1)),
        f"{_PHASE}.3.1": const(v2c.Integer(1)),
        f"{_PHASE}.5.1": _integer(amps(power_w), 10.0),  # 0.1 A
        f"{_PHASE}.6.1": const(v2c.Integer(round(VOLTS))),  # V
        f"{_PHASE}.7.1": _integer(power_w, 1 / 10),  # 0.01 kW
        # The legacy rPDU scalar the profile names as the alternative for pdu.1.power.
        RPDU_POWER_WATTS: _integer(power_w, 1.0),
    }
    for row, share in enumerate(weights, start=1):

        def part(source: Source, share: float = share) -> Source:
            return lambda: source() * share

        table |= {
            # rPDU2OutletMeteredStatusTable: index, module, name, number, current, power, energy
            f"{_OUTLET}.1.{row}": const(v2c.Integer(row)),
            f"{_OUTLET}.2.{row}": const(v2c.Integer(1)),
            f"{_OUTLET}.3.{row}": const(v2c.OctetString(f"Outlet {row}")),
            f"{_OUTLET}.4.{row}": const(v2c.Integer(row)),
            f"{_OUTLET}.6.{row}": _integer(amps(part(power_w)), 10.0),  # 0.1 A
            f"{_OUTLET}.7.{row}": _integer(part(power_w), 1.0),  # W
            f"{_OUTLET}.11.{row}": _register(part(energy_kwh), 10.0, 0, WRAP_COUNTS),  # 0.1 kWh
        }
    return table


def smart_ups(
    name: str,
    *,
    output_w: Source,
    output_kwh: Source,
    input_kwh: Source,
    rating_w: float,
    location: str,
) -> SnmpTable:
    """An APC Smart-UPS behind a Network Management Card (PowerNet-MIB upsAdv*/upsHighPrec*)."""

    def load_share() -> float:
        return output_w() / rating_w

    def runtime_s() -> float:
        # A battery sized for 15 minutes at full load; longer at part load.
        return 900.0 / max(load_share(), 0.05)

    table = system_group(
        name,
        "pue-agent demo: simulated APC Smart-UPS (PowerNet-MIB upsAdv/upsHighPrec)",
        UPS_OBJECT_ID,
        location,
    )
    table |= {
        f"{_UPS}.1.1.1.0": const(v2c.OctetString("Smart-UPS (simulated)")),  # upsBasicIdentModel
        f"{_UPS}.1.1.2.0": const(v2c.OctetString(name)),  # upsBasicIdentName
        f"{_UPS}.2.2.3.0": lambda: v2c.TimeTicks(round(runtime_s() * 100)),  # RunTimeRemaining
        f"{_UPS}.2.3.1.0": const(v2c.Gauge32(1000)),  # upsHighPrecBatteryCapacity, 0.1 %
        f"{_UPS}.3.3.1.0": const(v2c.Gauge32(round(VOLTS * 10))),  # InputLineVoltage, 0.1 V
        f"{_UPS}.3.3.4.0": const(v2c.Gauge32(round(HERTZ * 10))),  # InputFrequency, 0.1 Hz
        f"{_UPS}.3.3.5.0": lambda: v2c.Gauge32(int(input_kwh() * 100) % 2**32),  # 0.01 kWh
        f"{_UPS}.4.2.8.0": _integer(output_w, 1.0),  # upsAdvOutputActivePower, W
        f"{_UPS}.4.2.12.0": lambda: v2c.Gauge32(int(output_kwh()) % 2**32),  # EnergyUsage, kWh
        f"{_UPS}.4.3.1.0": const(v2c.Gauge32(round(VOLTS * 10))),  # OutputVoltage, 0.1 V
        f"{_UPS}.4.3.2.0": const(v2c.Gauge32(round(HERTZ * 10))),  # OutputFrequency, 0.1 Hz
        f"{_UPS}.4.3.3.0": _gauge(load_share, 1000.0),  # upsHighPrecOutputLoad, 0.1 %
        f"{_UPS}.4.3.4.0": _gauge(lambda: output_w() / (VOLTS * POWER_FACTOR), 10.0),  # 0.1 A
    }
    return table

"""What a device has: Who-Is, its object list, and each analog object's name, units and value.

Used by ``pue-agent probe bacnet --discover`` and by a probe without ``--map``, which
reads every analog object whose units the unit table knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier

from collectors.bacnet.client import BacnetClient
from collectors.bacnet.errors import BacnetError, BacnetTransportError
from collectors.bacnet.maps import MapPoint, ObjectMap
from collectors.bacnet.units import UnitTable

__all__ = ["ANALOG_TYPES", "DeviceObjects", "FoundObject", "auto_map", "list_objects"]

#: Object types that carry a measured or computed number.
ANALOG_TYPES = ("analog-input", "analog-value", "analog-output")


@dataclass
class FoundObject:
    """One object of a device as discovery saw it."""

    object: str
    name: str | None = None
    units: str | None = None
    present_value: Any = None


@dataclass
class DeviceObjects:
    """A device and its objects."""

    device_id: int
    address: str
    name: str | None = None
    vendor_id: int | None = None
    objects: list[FoundObject] = field(default_factory=list)


async def _object_list(
    client: BacnetClient, device: str, address: Address, device_id: int
) -> list[ObjectIdentifier]:
    me = ObjectIdentifier(("device", device_id))
    try:
        return list(await client.read(device, address, me, "object-list"))
    except BacnetTransportError:
        raise
    except BacnetError:
        # Too long for one APDU on a device without segmentation: read it element by element.
        count = int(await client.read(device, address, me, "object-list", 0))
        return [
            await client.read(device, address, me, "object-list", i) for i in range(1, count + 1)
        ]


async def list_objects(
    client: BacnetClient, address: Address, device_id: int, *, max_objects: int = 16
) -> DeviceObjects:
    """The device's name and its analog objects with name, units and present value.

    Raises:
        BacnetError: the device did not answer or refused the object list.
    """
    device = f"device,{device_id}"
    me = ObjectIdentifier(("device", device_id))
    found = DeviceObjects(device_id=device_id, address=str(address))
    found.name = str(await client.read(device, address, me, "object-name"))
    objids = [
        o
        for o in await _object_list(client, device, address, device_id)
        if str(o[0]) in ANALOG_TYPES
    ]
    for i in range(0, len(objids), max_objects):
        chunk = objids[i : i + max_objects]
        try:
            values = await client.read_multiple(
                device, address, chunk, ("object-name", "units", "present-value")
            )
        except BacnetTransportError:
            raise
        except BacnetError:
            values = {}
            for objid in chunk:
                for prop in ("object-name", "units", "present-value"):
                    try:
                        values[(objid, prop)] = await client.read(device, address, objid, prop)
                    except BacnetTransportError:
                        raise
                    except BacnetError as exc:
                        values[(objid, prop)] = exc

        def ok(value: Any) -> Any:
            return None if isinstance(value, BacnetError) else value

        for objid in chunk:
            name = ok(values.get((objid, "object-name")))
            units = ok(values.get((objid, "units")))
            found.objects.append(
                FoundObject(
                    object=f"{objid[0]},{objid[1]}",
                    name=None if name is None else str(name),
                    units=None if units is None else str(units),
                    present_value=ok(values.get((objid, "present-value"))),
                )
            )
    return found


def auto_map(found: DeviceObjects, units: UnitTable) -> ObjectMap:
    """A map of every analog object whose units have a default quantity in the unit table."""
    points = []
    for obj in found.objects:
        quantity = units.default_quantity(obj.units) if obj.units else None
        if quantity is not None:
            points.append(
                MapPoint(point=obj.object.replace(",", "."), object=obj.object, quantity=quantity)
            )
    if not points:
        raise ValueError(f"device {found.device_id}: no analog object with known units")
    return ObjectMap(
        name="auto",
        title=f"objects found on device {found.device_id}",
        written_from="the device's object list",
        points=points,
    )

"""Polling one BACnet device: read its map's objects, convert units, flag quality, derive.

One ReadPropertyMultiple per ``max_objects`` objects reads ``present-value``, ``units``,
``status-flags`` and ``reliability``; a device that rejects the service is read with
ReadProperty from then on. COV notifications update the same state (:meth:`DevicePoller.
notify`), so polled and notified readings are built, flagged and derived alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier

from agent import metrics
from agent.logs import get_logger
from agent.readings import READING_SCHEMA, Quality, empty_batch
from collectors.bacnet.client import BacnetClient, ReadValue
from collectors.bacnet.errors import (
    BacnetError,
    BacnetPropertyError,
    BacnetTransportError,
    BacnetUnknownObjectError,
    BacnetUnsupportedError,
)
from collectors.bacnet.maps import DerivedPoint, MapPoint, ObjectMap, parse_object_id
from collectors.bacnet.units import Conversion, UnitError, UnitTable
from collectors.health import DeviceHealth

__all__ = ["PROPERTIES", "QUICK_PROPERTIES", "DevicePoller", "PollResult", "quality_of"]

_log = get_logger("bacnet")

#: What a full read takes of every object (the first poll, then every ``full_every``-th).
PROPERTIES: tuple[str, ...] = ("present-value", "units", "status-flags", "reliability")
#: What the polls in between take. Units do not change while a device runs, and the
#: status-flags' fault bit is set whenever reliability is not no-fault-detected (ASHRAE 135
#: clause 12.1.x, Status_Flags), so the quality is the same: half the values to decode,
#: which is where bacpypes3 spends its time.
QUICK_PROPERTIES: tuple[str, ...] = ("present-value", "status-flags")
#: status-flags bits (ASHRAE 135 clause 12): in-alarm, fault, overridden, out-of-service.
_FAULT, _OVERRIDDEN, _OUT_OF_SERVICE = 1, 2, 3


def quality_of(status_flags: Any, reliability: Any) -> Quality:
    """``DEVICE_SUSPECT`` when the device says the value is not a plain measurement.

    Fault, overridden and out-of-service (status-flags), or a reliability other than
    ``no-fault-detected``; in-alarm alone is a real (if worrying) value and stays good.
    """
    flags = list(status_flags) if status_flags is not None else []
    bad = any(len(flags) > bit and flags[bit] for bit in (_FAULT, _OVERRIDDEN, _OUT_OF_SERVICE))
    if reliability is not None and str(reliability) != "no-fault-detected":
        bad = True
    return Quality.DEVICE_SUSPECT if bad else Quality.GOOD


@dataclass
class _Object:
    spec: MapPoint
    objid: ObjectIdentifier
    conversion: Conversion | None = None
    unit: str | None = None
    #: The latest converted value and its quality (``None`` until read).
    value: float | None = None
    status_flags: Any = None
    reliability: Any = None
    #: An optional object the device does not have.
    absent: bool = False


@dataclass
class PollResult:
    """One poll's readings and what went wrong."""

    frame: pl.DataFrame
    errors: list[BacnetError] = field(default_factory=list)
    #: Values the device sent that are not numbers (NaN, infinity): dropped and counted.
    bad_values: int = 0


class DevicePoller(DeviceHealth):
    """One device's objects, state and health; :meth:`poll` never raises for device errors."""

    def __init__(
        self,
        client: BacnetClient,
        *,
        device: str,
        address: Address,
        object_map: ObjectMap,
        units: UnitTable,
        objects: dict[str, str] | None = None,
        max_objects: int = 16,
        full_every: int = 10,
        collector: str = "bacnet",
    ) -> None:
        """Poll ``device`` at ``address`` with ``object_map`` (``objects`` overrides instances)."""
        self.client = client
        self.device = device
        self.address = address
        self.map = object_map
        self.units = units
        self.max_objects = max_objects
        self.collector = collector
        overrides = objects or {}
        self.objects: dict[str, _Object] = {
            p.point: _Object(p, parse_object_id(overrides.get(p.point, p.object)))
            for p in object_map.points
        }
        self.full_every = full_every
        self.polls = 0
        self.rpm = True
        DeviceHealth.__init__(self)
        #: Points whose object failed (logged once when it starts and once when it clears).
        self.point_problems: dict[str, str] = {}

    # -- reading -----------------------------------------------------------------------------

    async def _read_rp(
        self, objs: Sequence[_Object], properties: Sequence[str]
    ) -> dict[tuple[ObjectIdentifier, str], ReadValue | BacnetError]:
        values: dict[tuple[ObjectIdentifier, str], ReadValue | BacnetError] = {}
        for obj in objs:
            for prop in properties:
                try:
                    values[(obj.objid, prop)] = await self.client.read(
                        self.device, self.address, obj.objid, prop
                    )
                except BacnetTransportError:
                    raise
                except BacnetError as exc:
                    values[(obj.objid, prop)] = exc
                    if isinstance(exc, BacnetUnknownObjectError):
                        break  # the other properties of a missing object fail alike
        return values

    async def _read(
        self, objs: Sequence[_Object], properties: Sequence[str]
    ) -> dict[tuple[ObjectIdentifier, str], ReadValue | BacnetError]:
        if self.rpm:
            try:
                return await self.client.read_multiple(
                    self.device, self.address, [o.objid for o in objs], properties
                )
            except BacnetUnsupportedError:
                self.rpm = False
                _log.info(
                    "ReadPropertyMultiple not supported, reading with ReadProperty from now on",
                    collector=self.collector,
                    device=self.device,
                )
        return await self._read_rp(objs, properties)

    async def poll(self) -> PollResult:
        """Read every object once; errors are returned (and logged when the state changes)."""
        started = time.monotonic()
        metrics.POLLS.labels(self.collector, self.device).inc()
        result = PollResult(empty_batch())
        objs = list(self.objects.values())
        # Objects never read yet (the device was down) need their units now; those whose last
        # full read failed (missing, wrong units: a standing problem) wait for the next one.
        full = self.polls % self.full_every == 0 or any(
            o.conversion is None and not o.absent and o.spec.point not in self.point_problems
            for o in objs
        )
        properties = PROPERTIES if full else QUICK_PROPERTIES
        self.polls += 1
        try:
            values: dict[tuple[ObjectIdentifier, str], ReadValue | BacnetError] = {}
            for i in range(0, len(objs), self.max_objects):
                values.update(await self._read(objs[i : i + self.max_objects], properties))
        except BacnetError as exc:
            result.errors.append(exc)
        else:
            ts = datetime.now(UTC)
            for obj in objs:
                self._take(obj, values, result)
            result.frame = self._frame(ts, [o.spec.point for o in objs], result)
        metrics.POLL_SECONDS.labels(self.collector).observe(time.monotonic() - started)
        if result.bad_values:
            metrics.READINGS_REJECTED.labels(self.collector, "bacnet_bad_value").inc(
                result.bad_values
            )
        self._health(result.errors)
        return result

    def _take(
        self,
        obj: _Object,
        values: dict[tuple[ObjectIdentifier, str], ReadValue | BacnetError],
        result: PollResult,
    ) -> None:
        point = obj.spec.point
        present = values.get((obj.objid, "present-value"))
        if isinstance(present, BacnetError) or present is None:
            obj.value = None
            if isinstance(present, BacnetUnknownObjectError) and obj.spec.optional:
                obj.absent = True  # an optional object the device does not have
                self._point_problem(point, None)
                return
            problem = present or BacnetPropertyError(self.device, point, "property", "missing")
            result.errors.append(problem)
            self._point_problem(point, str(problem))
            return
        if (obj.objid, "units") in values:
            unit = values[(obj.objid, "units")]
            unit_name = obj.spec.unit if isinstance(unit, BacnetError) else str(unit)
        elif obj.conversion is None:
            return  # a quick poll of an object whose last full read failed: its problem stands
        else:
            unit_name = obj.unit  # a quick poll: units as last read
        flags = values.get((obj.objid, "status-flags"))
        obj.status_flags = None if isinstance(flags, BacnetError) else flags
        if (obj.objid, "reliability") in values:
            # reliability is optional in BACnet: an Error for it means "not kept", not a fault.
            reliability = values[(obj.objid, "reliability")]
            obj.reliability = None if isinstance(reliability, BacnetError) else reliability
        elif obj.status_flags is not None and not list(obj.status_flags)[_FAULT]:
            obj.reliability = None  # fault clear means no-fault-detected: no stale fault kept
        try:
            if unit_name is None:
                raise UnitError("the object has no units property and the map gives no unit")
            if unit_name != obj.unit or obj.conversion is None:
                obj.conversion = self.units.conversion(
                    unit_name, quantity=obj.spec.quantity, dimension=obj.spec.dimension
                )
                obj.unit = unit_name
        except UnitError as exc:
            obj.value = None
            error = BacnetPropertyError(self.device, f"{point} units", "units", str(exc))
            result.errors.append(error)
            self._point_problem(point, str(error))
            return
        obj.value = self._convert(obj, present, result)
        self._point_problem(point, None)

    def _convert(self, obj: _Object, raw: Any, result: PollResult) -> float | None:
        try:
            number = float(raw)
        except (TypeError, ValueError):
            result.bad_values += 1
            return None
        assert obj.conversion is not None
        value = obj.conversion.apply(number)
        if not math.isfinite(value):
            result.bad_values += 1
            return None
        return value

    # -- COV -------------------------------------------------------------------------------------

    def notify(self, point: str, prop: str, value: Any) -> pl.DataFrame:
        """A COV notification for ``point``: the readings it changes (itself, derived ones)."""
        obj = self.objects[point]
        result = PollResult(empty_batch())
        if prop == "present-value":
            if obj.conversion is None:
                return result.frame  # units not known yet: the next poll reads them
            obj.value = self._convert(obj, value, result)
        elif prop == "status-flags":
            obj.status_flags = value
        elif prop == "reliability":
            obj.reliability = value
        else:
            return result.frame
        if result.bad_values:
            metrics.READINGS_REJECTED.labels(self.collector, "bacnet_bad_value").inc(
                result.bad_values
            )
        return self._frame(datetime.now(UTC), [point], result)

    # -- readings --------------------------------------------------------------------------------

    def _frame(self, ts: datetime, changed: Iterable[str], result: PollResult) -> pl.DataFrame:
        changed = set(changed)
        rows: list[tuple[datetime, str, str, str, float, int]] = []
        for name, obj in self.objects.items():  # map order, so batches read alike
            if name not in changed or obj.spec.quantity is None or obj.value is None:
                continue
            quality = int(quality_of(obj.status_flags, obj.reliability))
            rows.append((ts, self.device, name, obj.spec.quantity, obj.value, quality))
        for derived in self.map.derived:
            if changed & {derived.flow, derived.hot, derived.cold}:
                one = self._derive(derived, result)
                if one is not None:
                    rows.append((ts, self.device, derived.point, derived.quantity, *one))
        if not rows:
            return empty_batch()
        # Rows straight into the reading schema: five times cheaper than columns through
        # make_batch's casts, which cost more than the BACnet request itself (the pipeline
        # validates every batch anyway).
        return pl.DataFrame(rows, schema=READING_SCHEMA, orient="row")

    def _derive(self, derived: DerivedPoint, result: PollResult) -> tuple[float, int] | None:
        inputs = [self.objects[p] for p in (derived.flow, derived.hot, derived.cold)]
        if any(o.value is None for o in inputs):
            return None
        flow_m3_s, hot_c, cold_c = (o.value for o in inputs)
        assert flow_m3_s is not None and hot_c is not None and cold_c is not None
        # kW = m3/s * K * kJ/(m3 K); the quantity's unit is kW (heat_kw).
        heat_kw = flow_m3_s * (hot_c - cold_c) * derived.volumetric_heat_capacity_kj_per_m3_k
        per_base = self.units.quantities[derived.quantity].per_base
        value = heat_kw * 1000.0 * per_base  # kW -> W (the power base unit) -> quantity
        if not math.isfinite(value):
            result.bad_values += 1
            return None
        quality = Quality.DERIVED
        for o in inputs:
            quality |= quality_of(o.status_flags, o.reliability)
        return value, int(quality)

    # -- health ----------------------------------------------------------------------------------

    def _point_problem(self, point: str, problem: str | None) -> None:
        before = self.point_problems.get(point)
        if problem is None:
            if before is not None:
                del self.point_problems[point]
                _log.info(
                    "object recovered", collector=self.collector, device=self.device, point=point
                )
            return
        if before is None:
            self.point_problems[point] = problem
            _log.warning(
                "object failing",
                collector=self.collector,
                device=self.device,
                point=point,
                error=problem,
            )

    def _health(self, errors: list[BacnetError]) -> None:
        request_failed = [e for e in errors if not isinstance(e, BacnetPropertyError)]
        for exc in errors:
            metrics.POLL_FAILURES.labels(self.collector, self.device, exc.reason).inc()
        if request_failed:
            self.mark_failed(
                _log,
                collector=self.collector,
                device=self.device,
                reason=request_failed[0].reason,
                error=str(request_failed[0]),
            )
        else:
            self.mark_recovered(_log, collector=self.collector, device=self.device)

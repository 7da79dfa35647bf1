"""Discovery: walk a BMC's tree once and decide what each poll reads (a :class:`PollPlan`).

From the service root through the Chassis collection, each chassis' power and energy are
looked for in the profile's tier order (EnvironmentMetrics, PSU metrics, the deprecated
Power resource, Sensors); the first tier that yields a value wins. Chassis that take input
power from outside (by ChassisType, not contained in another chassis) form the server's
``input.power``; every other chassis is a breakdown. Redfish power equipment (rack PDUs,
power shelves) is read from ``PowerEquipment``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from collectors.redfish.client import SERVICE_ROOT
from collectors.redfish.errors import RedfishAuthError, RedfishError, RedfishTransportError
from collectors.redfish.plan import Derived, Extract, Fetch, PollPlan, is_number, read_path
from collectors.redfish.profile import Profile, PropertyRule, Tier

__all__ = ["Getter", "discover"]

#: Fetch one JSON resource (``RedfishClient.get_json``).
Getter = Callable[[str], Awaitable[dict[str, Any]]]


def _link(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if isinstance(value, dict):
        uri = value.get("@odata.id")
        if isinstance(uri, str):
            return uri
    return None


def _members(doc: dict[str, Any]) -> list[str]:
    members = doc.get("Members")
    if not isinstance(members, list):
        return []
    return [m["@odata.id"] for m in members if isinstance(m, dict) and "@odata.id" in m]


def _last(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _links(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get("Links", {}).get(key) if isinstance(doc.get("Links"), dict) else None
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [_last(i["@odata.id"]) for i in items if isinstance(i, dict) and "@odata.id" in i]


def _snake(text: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", text)
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


@dataclass
class _Found:
    """What one chassis yielded."""

    power: str | None = None
    power_method: str | None = None
    energy: str | None = None
    energy_method: str | None = None


@dataclass
class _Builder:
    get: Getter
    profile: Profile
    tiers: list[Tier]
    plan: PollPlan = field(default_factory=PollPlan)

    async def optional(self, uri: str | None) -> dict[str, Any] | None:
        """GET a sub-resource; one that fails is noted and skipped (not the whole device)."""
        if uri is None:
            return None
        try:
            return await self.get(uri)
        except (RedfishTransportError, RedfishAuthError):
            raise
        except RedfishError as exc:
            self.plan.summary.append(f"skipped {uri}: {exc.detail}")
            self.plan.problems.append(exc)
            return None

    def add(self, path: str, extracts: list[Extract]) -> None:
        if extracts:
            self.plan.fetches.append(Fetch(path, tuple(extracts)))

    # -- property tables ----------------------------------------------------------------------

    def extracts(self, doc: dict[str, Any], rules: list[PropertyRule], base: str) -> list[Extract]:
        """Extracts for the rules whose property holds a number now.

        Later rules of the same point are fallbacks (EnergyJoules when EnergykWh is absent).
        """
        by_point: dict[str, list[PropertyRule]] = {}
        for rule in rules:
            by_point.setdefault(rule.point, []).append(rule)
        out = []
        for point, group in by_point.items():
            present = [r for r in group if is_number(read_path(doc, r.path()))]
            if not present:
                continue
            first, rest = present[0], present[1:]
            out.append(
                Extract(
                    first.path(),
                    f"{base}.{point}",
                    first.quantity,
                    first.unit_scale,
                    tuple((r.path(), r.unit_scale) for r in rest),
                )
            )
        return out

    # -- chassis ------------------------------------------------------------------------------

    async def chassis(self, root: dict[str, Any]) -> None:
        collection = await self.optional(_link(root, "Chassis"))
        if collection is None:
            return
        docs: dict[str, tuple[str, dict[str, Any]]] = {}
        for uri in _members(collection):
            doc = await self.optional(uri)
            if doc is not None:
                docs[str(doc.get("Id") or _last(uri))] = (uri, doc)
        contained: set[str] = set()
        for cid, (_uri, doc) in docs.items():
            if _links(doc, "ContainedBy"):
                contained.add(cid)
            contained.update(_links(doc, "Contains"))
        counted_types = set(self.profile.chassis.counted_types)
        found: dict[str, _Found] = {}
        for cid, (uri, doc) in docs.items():
            found[cid] = await self.one_chassis(cid, uri, doc)
            role = (
                "counted"
                if cid not in contained and doc.get("ChassisType") in (counted_types)
                else "breakdown"
            )
            f = found[cid]
            if f.power or f.energy or role == "counted":
                self.plan.summary.append(
                    f"chassis {cid} ({doc.get('ChassisType')}, {role}"
                    + (", contained" if cid in contained else "")
                    + f"): power from {f.power_method or '-'}, energy from {f.energy_method or '-'}"
                )
        counted = [
            cid
            for cid, (_uri, doc) in docs.items()
            if cid not in contained and doc.get("ChassisType") in counted_types
        ]
        self.server_total(
            [(found[c].power, found[c].power_method) for c in counted if found[c].power],
            "input.power",
            "power_w",
        )
        self.server_total(
            [(found[c].energy, found[c].energy_method) for c in counted if found[c].energy],
            "input.energy",
            "energy_kwh",
        )

    def server_total(
        self, parts: list[tuple[str | None, str | None]], point: str, quantity: str
    ) -> None:
        names = tuple(p for p, _ in parts if p)
        if not names:
            return
        if len(names) == 1:
            method = parts[0][1]
            # One chassis: the total is its value, named by how that value was formed.
            suffix = (
                "" if method in (None, "environment_metrics", "power", "sensor") else (f".{method}")
            )
            self.plan.derived.append(Derived(point + suffix, quantity, names, derived=False))
        else:
            self.plan.derived.append(Derived(f"{point}.sum_chassis", quantity, names))

    async def one_chassis(self, cid: str, uri: str, doc: dict[str, Any]) -> _Found:
        base = f"{self.profile.chassis.prefix_of(cid)}.{cid}"
        found = _Found()
        sensors_read = False
        for tier in self.tiers:
            if found.power and found.energy:
                break
            if tier == "environment_metrics":
                await self.environment_metrics(doc, base, found)
            elif tier == "psu_metrics":
                await self.psu_metrics(doc, base, found)
            elif tier == "power":
                await self.power(doc, base, found)
            else:
                await self.sensors(cid, doc, base, found, totals=True)
                sensors_read = True
        if not sensors_read:
            # Heat sensors are read whatever tier gave the power (cooling units).
            await self.sensors(cid, doc, base, found, totals=False)
        return found

    async def environment_metrics(self, chassis: dict[str, Any], base: str, f: _Found) -> None:
        uri = _link(chassis, "EnvironmentMetrics")
        doc = await self.optional(uri)
        if doc is None or uri is None:
            return
        extracts = [
            e
            for e in self.extracts(doc, self.profile.environment_metrics, base)
            if not (e.quantity == "power_w" and f.power)
            and not (e.quantity == "energy_kwh" and f.energy)
        ]
        self.add(uri, extracts)
        for e in extracts:
            if e.point == f"{base}.power" and not f.power:
                f.power, f.power_method = e.point, "environment_metrics"
            if e.point == f"{base}.energy" and not f.energy:
                f.energy, f.energy_method = e.point, "environment_metrics"

    async def psu_metrics(self, chassis: dict[str, Any], base: str, f: _Found) -> None:
        subsystem = await self.optional(_link(chassis, "PowerSubsystem"))
        if subsystem is None:
            return
        supplies = await self.optional(_link(subsystem, "PowerSupplies"))
        if supplies is None:
            return
        totals: dict[str, list[str]] = {"power": [], "energy": []}
        for psu_uri in _members(supplies):
            psu = await self.optional(psu_uri)
            if psu is None:
                continue
            metrics_uri = _link(psu, "Metrics")
            metrics = await self.optional(metrics_uri)
            if metrics is None or metrics_uri is None:
                continue
            psu_base = f"{base}.psu.{psu.get('Id') or _last(psu_uri)}"
            extracts = self.extracts(metrics, self.profile.psu_metrics, psu_base)
            self.add(metrics_uri, extracts)
            for rule in self.profile.psu_metrics:
                point = f"{psu_base}.{rule.point}"
                if rule.total and any(e.point == point for e in extracts):
                    totals[rule.total].append(point)
        if totals["power"] and not f.power:
            f.power = f"{base}.power.sum_psu_metrics"
            f.power_method = "sum_psu_metrics"
            self.plan.derived.append(Derived(f.power, "power_w", tuple(totals["power"])))
        if totals["energy"] and not f.energy:
            f.energy = f"{base}.energy.sum_psu_metrics"
            f.energy_method = "sum_psu_metrics"
            self.plan.derived.append(Derived(f.energy, "energy_kwh", tuple(totals["energy"])))

    async def power(self, chassis: dict[str, Any], base: str, f: _Found) -> None:
        uri = _link(chassis, "Power")
        doc = await self.optional(uri)
        if doc is None or uri is None or f.power:
            return
        rules = self.profile.power
        extracts: list[Extract] = []
        controls = doc.get("PowerControl")
        total_taken = False
        for i, control in enumerate(controls if isinstance(controls, list) else []):
            if not isinstance(control, dict):
                continue
            context = str(control.get("PhysicalContext") or "")
            name = str(control.get("Name") or "")
            sub = context in rules.breakdown_contexts or any(
                re.fullmatch(p.replace("*", ".*"), name, re.IGNORECASE)
                for p in rules.breakdown_name_patterns
            )
            if not is_number(control.get("PowerConsumedWatts")):
                continue
            path: tuple[str | int, ...] = ("PowerControl", i, "PowerConsumedWatts")
            if sub:
                label = _snake(context or name or str(control.get("MemberId", i)))
                extracts.append(Extract(path, f"{base}.{label}.power", "power_w"))
            elif not total_taken:
                # PowerControl[0] (the first that is not a sub-system) is the chassis total.
                extracts.append(Extract(path, f"{base}.power", "power_w"))
                total_taken = True
        supplies = doc.get("PowerSupplies")
        for i, psu in enumerate(supplies if isinstance(supplies, list) else []):
            if isinstance(psu, dict) and is_number(psu.get(rules.psu_input_property)):
                label = str(psu.get("MemberId") or psu.get("Name") or i)
                extracts.append(
                    Extract(
                        ("PowerSupplies", i, rules.psu_input_property),
                        f"{base}.psu.{label}.input.power",
                        "power_w",
                    )
                )
        self.add(uri, extracts)
        if total_taken:
            f.power, f.power_method = f"{base}.power", "power"

    async def sensors(
        self, cid: str, chassis: dict[str, Any], base: str, f: _Found, *, totals: bool
    ) -> None:
        collection = await self.optional(_link(chassis, "Sensors"))
        if collection is None:
            return
        rules = self.profile.sensors
        psu_parts: list[str] = []
        for uri in _members(collection):
            sid = _last(uri)
            role = rules.role(sid, cid)
            if role is None or (not totals and role != "heat"):
                continue
            if role in ("psu_input", "total_power") and f.power:
                continue
            if role == "total_energy" and f.energy:
                continue
            doc = await self.optional(uri)
            if doc is None or not is_number(doc.get("Reading")):
                continue
            kind = rules.reading_types.get(str(doc.get("ReadingType")))
            if kind is None:
                continue
            if role == "psu_input" and kind.quantity == "power_w":
                point = f"{base}.psu.{sid}.input.power"
                psu_parts.append(point)
            elif role == "total_power" and kind.quantity == "power_w" and not f.power:
                point = f"{base}.power"
                f.power, f.power_method = point, "sensor"
            elif role == "total_energy" and kind.quantity == "energy_kwh" and not f.energy:
                point = f"{base}.energy"
                f.energy, f.energy_method = point, "sensor"
            elif role == "heat" and kind.quantity == "heat_kw":
                point = f"{base}.heat.{sid}"
            else:
                continue
            self.add(uri, [Extract(("Reading",), point, kind.quantity, kind.unit_scale)])
        if psu_parts and not f.power:
            # Input power only as per-PSU sensors: the total is their sum, and says so.
            f.power = f"{base}.power.sum_psu_input_sensors"
            f.power_method = "sum_psu_input_sensors"
            self.plan.derived.append(Derived(f.power, "power_w", tuple(psu_parts)))

    # -- power equipment ----------------------------------------------------------------------

    async def power_equipment(self, root: dict[str, Any]) -> None:
        equipment = await self.optional(_link(root, "PowerEquipment"))
        if equipment is None:
            return
        rules = self.profile.power_equipment
        for collection_name, prefix in rules.collections.items():
            collection = await self.optional(_link(equipment, collection_name))
            if collection is None:
                continue
            for unit_uri in _members(collection):
                unit = await self.optional(unit_uri)
                if unit is None:
                    continue
                base = f"{prefix}.{unit.get('Id') or _last(unit_uri)}"
                n_before = len(self.plan.fetches)
                metrics_uri = _link(unit, "Metrics")
                metrics = await self.optional(metrics_uri)
                if metrics is not None and metrics_uri is not None:
                    self.add(metrics_uri, self.extracts(metrics, rules.properties, base))
                for sub_name, sub_prefix in rules.circuits.items():
                    circuits = await self.optional(_link(unit, sub_name))
                    for circuit_uri in _members(circuits or {}):
                        circuit = await self.optional(circuit_uri)
                        if circuit is None:
                            continue
                        cbase = f"{base}.{sub_prefix}.{circuit.get('Id') or _last(circuit_uri)}"
                        extracts = self.extracts(circuit, rules.properties, cbase)
                        extracts += self.polyphase(circuit, cbase)
                        self.add(circuit_uri, extracts)
                self.plan.summary.append(
                    f"{collection_name} {unit.get('Id')}: "
                    f"{len(self.plan.fetches) - n_before} resources per poll"
                )

    def polyphase(self, doc: dict[str, Any], base: str) -> list[Extract]:
        out = []
        for rule in self.profile.power_equipment.polyphase:
            lines = doc.get(rule.property)
            if not isinstance(lines, dict):
                continue
            for line, excerpt in lines.items():
                if isinstance(excerpt, dict) and is_number(excerpt.get("Reading")):
                    out.append(
                        Extract(
                            (rule.property, line, "Reading"),
                            f"{base}.{_snake(line)}.{rule.point}",
                            rule.quantity,
                            rule.unit_scale,
                        )
                    )
        return out


async def discover(get: Getter, profile: Profile, tiers: list[Tier] | None = None) -> PollPlan:
    """Walk the BMC's tree and return what to read each poll.

    Args:
        get: Fetches one resource (raises :class:`RedfishError`).
        profile: Device knowledge.
        tiers: Order of preference for chassis power (default: the profile's).

    Raises:
        RedfishError: when the service root cannot be read or the BMC is unreachable;
            a failing sub-resource is skipped and noted in the plan's summary.
    """
    builder = _Builder(get, profile, list(tiers or profile.tiers))
    root = await get(SERVICE_ROOT)
    await builder.chassis(root)
    await builder.power_equipment(root)
    if not builder.plan.fetches:
        builder.plan.summary.append("no power, energy or heat readings found")
    return builder.plan

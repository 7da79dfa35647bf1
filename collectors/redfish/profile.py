"""The Redfish profile: device knowledge loaded from ``profile.toml`` (data, not code)."""

from __future__ import annotations

import fnmatch
import tomllib
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.readings import Quantity

__all__ = [
    "DEFAULT_PROFILE_PATH",
    "TIERS",
    "Breakdown",
    "Profile",
    "PropertyRule",
    "ReadingTypeRule",
    "Tier",
    "load_profile",
    "matches",
]

DEFAULT_PROFILE_PATH = Path(__file__).with_name("profile.toml")

Tier = Literal["environment_metrics", "psu_metrics", "power", "sensors"]
TIERS: tuple[Tier, ...] = ("environment_metrics", "psu_metrics", "power", "sensors")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PropertyRule(_Model):
    """A property of a resource (dotted: ``PowerWatts.ApparentVA``) carrying a quantity."""

    property: str
    point: str
    quantity: Quantity
    #: Multiply the raw value by this to get the quantity's unit (J -> kWh, ...).
    unit_scale: float = 1.0
    #: For per-PSU rules: the chassis total this property is summed into (``power``/``energy``).
    total: Literal["power", "energy"] | None = None

    def path(self) -> tuple[str, ...]:
        """The property path; a plain excerpt object is read through its ``Reading``."""
        return tuple(self.property.split("."))


class Breakdown(_Model):
    """Chassis whose Id matches ``match`` are reported with point prefix ``prefix``."""

    match: str
    prefix: str


class ChassisRules(_Model):
    """Which chassis count towards the server's input power, and breakdown prefixes."""

    counted_types: list[str]
    breakdown: list[Breakdown] = Field(default_factory=list)

    def prefix_of(self, chassis_id: str) -> str:
        """Point prefix for a chassis: its breakdown category, else ``chassis``."""
        for rule in self.breakdown:
            if fnmatch.fnmatchcase(chassis_id, rule.match):
                return rule.prefix
        return "chassis"


class PowerRules(_Model):
    """How the deprecated ``Power`` resource is read."""

    breakdown_contexts: list[str]
    breakdown_name_patterns: list[str] = Field(default_factory=list)
    psu_input_property: str = "PowerInputWatts"


class ReadingTypeRule(_Model):
    """A sensor ``ReadingType`` and the quantity it maps to."""

    quantity: Quantity
    unit_scale: float = 1.0


class SensorRules(_Model):
    """Sensor Id patterns (fnmatch; ``{chassis}`` = chassis Id) by role."""

    psu_input: list[str]
    total_power: list[str]
    total_energy: list[str]
    heat: list[str]
    reading_types: dict[str, ReadingTypeRule]

    def role(self, sensor_id: str, chassis_id: str) -> str | None:
        """The role of a sensor by its Id, or ``None`` if it is not one we read."""
        for role in ("psu_input", "total_power", "total_energy", "heat"):
            patterns: list[str] = getattr(self, role)
            if matches(sensor_id, patterns, chassis_id):
                return role
        return None


class PowerEquipmentRules(_Model):
    """Rack PDUs, floor PDUs, power shelves and transfer switches."""

    collections: dict[str, str]
    circuits: dict[str, str]
    properties: list[PropertyRule]
    polyphase: list[PropertyRule]


class Profile(_Model):
    """Everything the collector knows about Redfish devices."""

    tiers: list[Tier]
    chassis: ChassisRules
    environment_metrics: list[PropertyRule]
    psu_metrics: list[PropertyRule]
    power: PowerRules
    sensors: SensorRules
    power_equipment: PowerEquipmentRules


def matches(name: str, patterns: list[str], chassis_id: str = "") -> bool:
    """Whether ``name`` matches any fnmatch pattern (``{chassis}`` replaced by the chassis Id)."""
    return any(fnmatch.fnmatchcase(name, p.replace("{chassis}", chassis_id)) for p in patterns)


@cache
def load_profile(path: Path = DEFAULT_PROFILE_PATH) -> Profile:
    """Load and validate a profile file (cached per path).

    Raises:
        ValueError: naming the file and the field that is wrong.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Profile.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc

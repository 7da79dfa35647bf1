"""BACnet object maps: which objects of a device carry which readings (``maps/*.toml``).

A map lists points (an object, the agent quantity it carries, or only a dimension for
objects read as inputs of a derivation) and derived points (cooling kW from a water
loop's flow and temperature difference), so device knowledge stays data.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from bacpypes3.primitivedata import ObjectIdentifier
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.readings import Quantity
from agent.settings import validation_problems

__all__ = [
    "MAPS_DIR",
    "DerivedPoint",
    "MapError",
    "MapPoint",
    "ObjectMap",
    "load_maps",
    "parse_object_id",
]

MAPS_DIR = Path(__file__).with_name("maps")


class MapError(ValueError):
    """A map file is unreadable or invalid, or a map name is unknown."""


def parse_object_id(text: str) -> ObjectIdentifier:
    """``"analog-input,1"`` (or ``analog-input:1``) as a BACnet object identifier.

    Raises:
        ValueError: not an object type and instance bacpypes3 knows.
    """
    try:
        return ObjectIdentifier(text.replace(":", ","))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not an object identifier (type,instance): {text!r} ({exc})") from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MapPoint(_Model):
    """One object of the device and the reading it carries."""

    point: str = Field(min_length=1)
    object: str
    #: The agent quantity journalled; ``None`` for an object read only for a derivation.
    quantity: Quantity | None = None
    #: For an object read only for a derivation: its dimension in ``units.toml`` (``flow``).
    dimension: str | None = None
    #: Units assumed when the object has no ``units`` property (BACnet makes it optional).
    unit: str | None = None
    #: A device without this object is not an error (logged once, not counted as failing).
    optional: bool = False

    @field_validator("object")
    @classmethod
    def _object(cls, value: str) -> str:
        parse_object_id(value)
        return value

    @model_validator(mode="after")
    def _one_target(self) -> MapPoint:
        if (self.quantity is None) == (self.dimension is None):
            raise ValueError("give exactly one of quantity (journalled) or dimension (input only)")
        return self


class DerivedPoint(_Model):
    """A reading computed from other points of the map, flagged ``DERIVED``."""

    point: str = Field(min_length=1)
    quantity: Quantity
    #: ``flow_delta_t``: heat = flow [m3/s] * (hot - cold) [K] * heat capacity [kJ/(m3 K)].
    kind: Literal["flow_delta_t"]
    flow: str
    hot: str
    cold: str
    volumetric_heat_capacity_kj_per_m3_k: float = Field(gt=0)


class ObjectMap(_Model):
    """A device family's objects (a chiller, a cooling tower, a CRAH...)."""

    name: str = Field(min_length=1)
    title: str
    #: The documents the map was written from (standard, guideline, vendor point list).
    written_from: str
    points: list[MapPoint] = Field(min_length=1)
    derived: list[DerivedPoint] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ObjectMap:
        names = [p.point for p in self.points] + [d.point for d in self.derived]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"point names must be unique: {', '.join(dupes)}")
        by_point = {p.point: p for p in self.points}
        for d in self.derived:
            for role, ref, dimension in (
                ("flow", d.flow, "flow"),
                ("hot", d.hot, "temperature"),
                ("cold", d.cold, "temperature"),
            ):
                source = by_point.get(ref)
                if source is None:
                    raise ValueError(f"derived {d.point!r}: {role} {ref!r} is not a point")
                have = source.dimension or (
                    "temperature" if source.quantity == "temperature_c" else source.quantity
                )
                if have != dimension:
                    raise ValueError(f"derived {d.point!r}: {role} {ref!r} must be a {dimension}")
        return self


def _load_file(path: Path) -> ObjectMap:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        obj_map = ObjectMap.model_validate(raw)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MapError(f"{path}: {exc}") from None
    except ValidationError as exc:
        raise MapError(f"{path}: {validation_problems(exc, '')}") from None
    if obj_map.name != path.stem:
        raise MapError(f"{path}: name {obj_map.name!r} must match the file name")
    return obj_map


def load_maps(extra_dirs: list[Path] | None = None) -> dict[str, ObjectMap]:
    """The built-in maps, then those in ``extra_dirs`` (a same-named map replaces one).

    Raises:
        MapError: naming the file and the field.
    """
    maps: dict[str, ObjectMap] = {}
    for folder in [MAPS_DIR, *(extra_dirs or [])]:
        if not folder.is_dir():
            raise MapError(f"{folder}: not a directory")
        for path in sorted(folder.glob("*.toml")):
            obj_map = _load_file(path)
            maps[obj_map.name] = obj_map
    return maps

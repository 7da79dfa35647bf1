"""Device maps: TOML files that say which registers of a meter family carry which quantity.

A map is pure data (``collectors/modbus/maps/*.toml``, plus any operator folder given
as ``maps_dir``): the vendor document it was written from, register defaults, and one
entry per register (address, function 3 or 4, type, word and byte order, scale,
quantity, energy wrap width, sentinels, physical range). The format is described in
``collectors/modbus/README.md``. This module loads and validates maps; errors name the
file and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.readings import Quantity
from agent.settings import validation_problems

__all__ = [
    "BUILTIN_DIR",
    "REGISTER_WORDS",
    "CrossCheck",
    "DeviceMap",
    "Document",
    "MapError",
    "Register",
    "RegisterType",
    "load_maps",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "maps"

#: ``vendor-model`` in lower case (the file name without ``.toml``).
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)+$")

RegisterType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]
#: 16-bit registers per value type.
REGISTER_WORDS: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "int64": 4,
    "uint64": 4,
    "float32": 2,
    "float64": 4,
}
Order = Literal["big", "little"]


class MapError(ValueError):
    """A map file is invalid; the message names the file and the field."""


class Document(BaseModel):
    """The vendor document a map was written from (an auditor can look the registers up)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    version: str = Field(min_length=1)


class CrossCheck(BaseModel):
    """An independent public source that confirms some of a map's registers."""

    model_config = ConfigDict(extra="forbid")

    #: Where it can be read, e.g. ``volkszaehler/mbmd meters/rs485/sdm.go@13a3019``.
    source: str = Field(min_length=1)
    #: The points (``registers[].point``) whose address, function, type, order and scale
    #: the source confirms.
    points: list[str] = Field(min_length=1)


class _RegisterDefaults(BaseModel):
    """What the registers of a map share unless an entry says otherwise."""

    model_config = ConfigDict(extra="forbid")

    function: Literal[3, 4] = 3
    type: RegisterType = "float32"
    #: ``big``: the first register holds the most significant word (Modbus's usual order).
    word_order: Order = "big"
    #: ``big``: the high byte of each register comes first on the wire (the standard).
    byte_order: Order = "big"


class Register(BaseModel):
    """One value of a meter: where it is and what it means."""

    model_config = ConfigDict(extra="forbid")

    #: Point name in readings, e.g. ``total.power`` or ``l1.voltage``.
    point: str = Field(min_length=1)
    quantity: Quantity
    #: Protocol (0-based) address of the first register, as sent in the request.
    address: int = Field(ge=0, le=65535)
    function: Literal[3, 4] | None = None
    type: RegisterType | None = None
    word_order: Order | None = None
    byte_order: Order | None = None
    #: Reading = raw x scale (raw in the document's unit; scale to the quantity's unit).
    scale: float = 1.0
    #: Width of a cumulative energy register: the site model's ``register_bits`` (the
    #: aggregator corrects wraps with modulus 2^bits x scale); raw values at or above
    #: 2^bits are not a register reading and are dropped.
    wrap_bits: Literal[16, 32, 48, 64] | None = None
    #: Raw values meaning "not available" (integers as read, before scaling): no reading.
    sentinels: list[int] = Field(default_factory=list)
    #: Physical range [min, max] in the quantity's unit; outside it the reading is
    #: journalled flagged ``DEVICE_SUSPECT``. Default: the map's ``ranges`` for the quantity.
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> Register:
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range {list(self.range)}: min is above max")
        if self.scale == 0 or self.scale != self.scale:
            raise ValueError("scale must be a non-zero number")
        return self


class DeviceMap(BaseModel):
    """A meter family's registers (one TOML file)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    vendor: str = Field(min_length=1)
    model: str = Field(min_length=1)
    document: Document
    description: str = ""
    #: Independent public sources read to confirm the registers (which source, which points).
    cross_checked: list[CrossCheck] = Field(default_factory=list)
    defaults: _RegisterDefaults = Field(default_factory=_RegisterDefaults)
    #: Physical range per quantity for every register without its own ``range``.
    ranges: dict[Quantity, tuple[float, float]] = Field(default_factory=dict)
    #: A value whose registers are all 0xFFFF means "not available" (many meters and
    #: gateways fill unreadable registers so); false where all ones is a real value.
    all_ones_is_sentinel: bool = True
    registers: list[Register] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> DeviceMap:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: write vendor-model in lower case")
        for r in self.registers:
            r.function = r.function or self.defaults.function
            r.type = r.type or self.defaults.type
            r.word_order = r.word_order or self.defaults.word_order
            r.byte_order = r.byte_order or self.defaults.byte_order
            if r.range is None:
                r.range = self.ranges.get(r.quantity)
            if r.address + REGISTER_WORDS[r.type] > 65536:
                raise ValueError(f"{r.point}: {r.type} at {r.address} runs past register 65535")
            if r.wrap_bits is not None and r.type.startswith(("int", "float")):
                raise ValueError(f"{r.point}: wrap_bits is for unsigned counter registers")
            if r.wrap_bits is not None and r.wrap_bits > 16 * REGISTER_WORDS[r.type]:
                raise ValueError(f"{r.point}: wrap_bits {r.wrap_bits} is wider than {r.type}")
        points = [r.point for r in self.registers]
        dupes = sorted({p for p in points if points.count(p) > 1})
        if dupes:
            raise ValueError(f"point names must be unique: {dupes}")
        unknown = sorted({p for c in self.cross_checked for p in c.points} - set(points))
        if unknown:
            raise ValueError(f"cross_checked names points the map does not have: {unknown}")
        taken: dict[tuple[int, int], str] = {}
        for r in self.registers:
            assert r.type is not None and r.function is not None
            for a in range(r.address, r.address + REGISTER_WORDS[r.type]):
                other = taken.setdefault((r.function, a), r.point)
                if other != r.point:
                    raise ValueError(f"{r.point} overlaps {other} at register {a}")
        return self


def _load_file(path: Path) -> DeviceMap:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MapError(f"{path}: {exc}") from None
    try:
        device_map = DeviceMap.model_validate(data)
    except ValidationError as exc:
        raise MapError(f"{path}: {validation_problems(exc)}") from None
    if device_map.name != path.stem:
        raise MapError(f"{path}: name {device_map.name!r} differs from the file name")
    return device_map


def load_maps(extra_dirs: Iterable[Path] = ()) -> dict[str, DeviceMap]:
    """The built-in maps, then each extra folder's (a map of the same name replaces).

    Raises:
        MapError: naming the file and field of the first invalid map, or a missing folder.
    """
    maps: dict[str, DeviceMap] = {}
    for folder in (BUILTIN_DIR, *extra_dirs):
        if not folder.is_dir():
            raise MapError(f"{folder}: not a folder")
        for path in sorted(folder.glob("*.toml")):
            device_map = _load_file(path)
            maps[device_map.name] = device_map
    return maps

"""BACnet engineering units converted to the agent's units, from the table in ``units.toml``."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.settings import validation_problems

__all__ = ["UNITS_PATH", "Conversion", "UnitError", "UnitTable", "load_units"]

UNITS_PATH = Path(__file__).with_name("units.toml")


class UnitError(ValueError):
    """A unit the table does not know, or one of another dimension than the quantity's."""


@dataclass(frozen=True)
class Conversion:
    """``value = raw * scale + offset`` (the offset only matters for temperatures)."""

    scale: float = 1.0
    offset: float = 0.0

    def apply(self, raw: float) -> float:
        """Convert one raw device value."""
        return raw * self.scale + self.offset


class _Unit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dimension: str
    scale: float = Field(1.0, gt=0)
    offset: float = 0.0


class _Quantity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dimension: str
    per_base: float = Field(1.0, gt=0)


class UnitTable(BaseModel):
    """The parsed table: dimensions with their base unit, BACnet units, agent quantities."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dimensions: dict[str, str]
    units: dict[str, _Unit]
    quantities: dict[str, _Quantity]
    #: Dimension -> the quantity a probe without a map reports it as.
    defaults: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_dimensions(self) -> UnitTable:
        for kind, table in (("units", self.units), ("quantities", self.quantities)):
            for name, entry in table.items():
                if entry.dimension not in self.dimensions:
                    raise ValueError(f"{kind}.{name}: unknown dimension {entry.dimension!r}")
        for dimension, quantity in self.defaults.items():
            target = self.quantities.get(quantity)
            if target is None or target.dimension != dimension:
                raise ValueError(
                    f"defaults.{dimension}: {quantity!r} is not a {dimension} quantity"
                )
        return self

    def default_quantity(self, unit: str) -> str | None:
        """The quantity an object in BACnet ``unit`` is reported as without a map."""
        source = self.units.get(unit)
        return None if source is None else self.defaults.get(source.dimension)

    def conversion(
        self, unit: str, *, quantity: str | None = None, dimension: str | None = None
    ) -> Conversion:
        """How a value in BACnet ``unit`` becomes ``quantity``'s unit (or ``dimension``'s base).

        Raises:
            UnitError: the unit is unknown or of another dimension.
        """
        source = self.units.get(unit)
        if source is None:
            raise UnitError(f"unknown BACnet unit {unit!r} (add it to {UNITS_PATH.name})")
        per_base = 1.0
        if quantity is not None:
            target = self.quantities.get(quantity)
            if target is None:
                raise UnitError(f"quantity {quantity!r} has no entry in {UNITS_PATH.name}")
            dimension, per_base = target.dimension, target.per_base
        if source.dimension != dimension:
            wanted = quantity or dimension
            raise UnitError(
                f"unit {unit!r} is a {source.dimension} unit, {wanted!r} needs {dimension}"
            )
        return Conversion(source.scale * per_base, source.offset * per_base)


@cache
def load_units(path: Path = UNITS_PATH) -> UnitTable:
    """Load and check a unit table (cached per path).

    Raises:
        UnitError: the file is unreadable or invalid; the message names the entry.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return UnitTable.model_validate(raw)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UnitError(f"{path}: {exc}") from None
    except ValidationError as exc:
        raise UnitError(f"{path}: {validation_problems(exc, '')}") from None

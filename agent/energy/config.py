"""Energy-accounting choices (docs/pue.md leaves them open) and the per-meter attribute table.

Every choice here is recorded with the results (:meth:`EnergyConfig.describe`), so an
auditor can see which interpolation, coverage and plausibility rules produced a number.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

import polars as pl

from agent.site import Site

__all__ = [
    "METER_TABLE_SCHEMA",
    "EnergyConfig",
    "EnergyConfigError",
    "meter_table",
]

_US_PER_S = 1_000_000


class EnergyConfigError(ValueError):
    """An energy-accounting option is invalid (e.g. an interval that splits local days)."""


@dataclass(frozen=True, slots=True)
class EnergyConfig:
    """How readings become interval energy.

    Attributes:
        interval_s: Base interval length; must divide an hour, and every UTC offset of
            the site's zone must be a multiple of it, so local days and months are whole.
        max_gap_s: A gap between two valid register reads longer than this still has its
            energy spread (nothing is lost) but counts as uncovered (docs/pue.md default 6 h).
        max_power_gap_s: No trapezoid integration across a gap between power samples
            longer than this.
        rating_tolerance: Headroom over the declared rating before a power reading or a
            register jump is implausible (0.1 = 10 %: meters' class accuracy and ratings
            rounded down on nameplates).
        wrap_max_fraction: When a meter has no rating, a decrease is a wrap only if the
            corrected delta is below this share of the modulus.
        reset_fill: ``"power"``: the energy of a segment that ends in a reset is estimated
            from the power readings inside it (mean power x duration, flagged estimated);
            ``"none"``: it is zero. Either way it counts as uncovered.
    """

    interval_s: int = 60
    max_gap_s: float = 6 * 3600.0
    max_power_gap_s: float = 300.0
    rating_tolerance: float = 0.1
    wrap_max_fraction: float = 0.1
    reset_fill: Literal["power", "none"] = "power"

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or 3600 % self.interval_s:
            raise EnergyConfigError(
                f"energy.interval_s: {self.interval_s} s does not divide an hour evenly"
            )
        for name in ("max_gap_s", "max_power_gap_s"):
            if getattr(self, name) <= 0:
                raise EnergyConfigError(f"energy.{name}: must be positive")
        if self.rating_tolerance < 0:
            raise EnergyConfigError("energy.rating_tolerance: must not be negative")
        if not 0 < self.wrap_max_fraction < 1:
            raise EnergyConfigError("energy.wrap_max_fraction: must be between 0 and 1")
        if self.reset_fill not in ("power", "none"):
            raise EnergyConfigError("energy.reset_fill: must be 'power' or 'none'")

    @property
    def interval_us(self) -> int:
        """The base interval in microseconds (the unit of the internal time axis)."""
        return self.interval_s * _US_PER_S

    def check_site(self, site: Site) -> None:
        """Raise if the base interval would split local days of ``site``'s zone.

        Raises:
            EnergyConfigError: naming the offset that is not a multiple of the interval.
        """
        zone = site.zone
        # Sample a few instants per year to catch both standard and daylight offsets.
        for year in (2020, 2026):
            for month in (1, 4, 7, 10):
                offset = datetime(year, month, 15, tzinfo=UTC).astimezone(zone).utcoffset()
                seconds = int(offset.total_seconds()) if offset is not None else 0
                if seconds % self.interval_s:
                    raise EnergyConfigError(
                        f"energy.interval_s: {self.interval_s} s does not align with the "
                        f"UTC offset {seconds} s of {site.timezone}"
                    )

    def describe(self) -> dict[str, object]:
        """The choices as a plain dict (stored with every result)."""
        return {
            "interpolation": "linear register interpolation at interval boundaries",
            "power_integration": "trapezoids on linearly interpolated power",
            **asdict(self),
        }

    def to_json(self) -> str:
        """Canonical JSON of :meth:`describe` (sorted keys)."""
        return json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))


#: One row per (meter, device point) the aggregator reads.
METER_TABLE_SCHEMA = pl.Schema(
    {
        "meter": pl.String(),
        "device": pl.String(),
        "point": pl.String(),
        "track": pl.String(),  # "energy" (register) | "power"
        "method": pl.String(),  # "register" | "power_integration" (how the meter's energy is made)
        "rating_kw": pl.Float64(),
        "modulus_kwh": pl.Float64(),
        "resolution_kwh": pl.Float64(),
    }
)


def meter_table(site: Site) -> pl.DataFrame:
    """The device points of every site meter with what the aggregator needs to judge them.

    A meter with an ``energy_point`` gets its energy from the register (its power
    readings are still checked and used to bound resets); a meter with only a
    ``power_point`` is integrated.
    """
    rows: list[dict[str, object]] = []
    for m in site.meters:
        method = "register" if m.energy_point is not None else "power_integration"
        modulus = (
            (2.0**m.register_bits) * m.register_unit_kwh
            if m.register_bits is not None and m.register_unit_kwh is not None
            else None
        )
        common = {
            "meter": m.id,
            "device": m.device,
            "method": method,
            "rating_kw": m.rating_kw,
            "modulus_kwh": modulus,
            "resolution_kwh": m.register_unit_kwh or 0.0,
        }
        if m.energy_point is not None:
            rows.append({**common, "point": m.energy_point, "track": "energy"})
        if m.power_point is not None:
            rows.append({**common, "point": m.power_point, "track": "power"})
    return pl.DataFrame(rows, schema=METER_TABLE_SCHEMA)

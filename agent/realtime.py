"""Real-time view of the site: latest power per meter and the instantaneous (labelled) PUE.

A real-time PUE is a ratio of *powers* at one moment. It is useful on a
dashboard and is always labelled ``realtime``; it is never a period PUE
(docs/pue.md: a period PUE is a ratio of energies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from agent.site import MeterRole, Site

__all__ = ["LatestPower", "RealtimeSnapshot"]


@dataclass(frozen=True)
class RealtimeSnapshot:
    """Instantaneous site figures from the latest power readings."""

    pue_realtime: float | None
    e_dc_power_w: float | None
    e_it_power_w: float | None
    power_by_role_w: dict[str, float]
    meters_reporting: int
    meters_total: int
    as_of: datetime | None
    #: Meters whose last power reading is older than ``stale_after_s`` before ``as_of``.
    stale_meters: list[str] = field(default_factory=list)
    label: str = "realtime"


@dataclass
class LatestPower:
    """Keeps the latest power reading of every site meter (vectorised per batch)."""

    site: Site
    _latest: pl.DataFrame = field(init=False)
    _meters: pl.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        self._meters = pl.DataFrame(
            {
                "meter": [m.id for m in self.site.meters if m.power_point],
                "device": [m.device for m in self.site.meters if m.power_point],
                "point": [m.power_point for m in self.site.meters if m.power_point],
                "role": [m.role.value for m in self.site.meters if m.power_point],
            },
            schema={"meter": pl.String, "device": pl.String, "point": pl.String, "role": pl.String},
        )
        self._latest = pl.DataFrame(
            schema={"meter": pl.String, "ts": pl.Datetime("us", "UTC"), "value": pl.Float64}
        )

    def update(self, batch: pl.DataFrame) -> None:
        """Take the newest valid power reading per meter from ``batch``."""
        fresh = (
            batch.lazy()
            .filter((pl.col("quantity") == "power_w") & pl.col("value").is_finite())
            .join(self._meters.lazy(), on=["device", "point"], how="inner")
            .sort("ts")
            .group_by("meter")
            .agg(pl.col("ts").last(), pl.col("value").last())
            .collect()
        )
        if fresh.height:
            self._latest = (
                pl.concat([self._latest, fresh.select(self._latest.columns)])
                .sort("ts")
                .group_by("meter")
                .agg(pl.col("ts").last(), pl.col("value").last())
            )

    def snapshot(self, stale_after_s: float = 60.0) -> RealtimeSnapshot:
        """Compute the real-time PUE and power by role from what is known now."""
        values = dict(
            zip(self._latest["meter"].to_list(), self._latest["value"].to_list(), strict=True)
        )

        def total(formula: str) -> float | None:
            terms = self.site.expand(formula)  # type: ignore[arg-type]
            if not terms or any(meter not in values for _, meter in terms):
                return None
            return float(sum(sign * values[meter] for sign, meter in terms))

        e_dc, e_it = total("e_dc"), total("e_it")
        by_role: dict[str, float] = {}
        for meter in self.site.meters:
            if meter.id in values and meter.role is not MeterRole.MONITOR:
                by_role[meter.role.value] = by_role.get(meter.role.value, 0.0) + values[meter.id]
        as_of = self._latest["ts"].max() if self._latest.height else None
        stale: list[str] = []
        if isinstance(as_of, datetime):
            cutoff = as_of - timedelta(seconds=stale_after_s)
            stale = sorted(self._latest.filter(pl.col("ts") < cutoff)["meter"].to_list())
        return RealtimeSnapshot(
            pue_realtime=(e_dc / e_it) if e_dc is not None and e_it else None,
            e_dc_power_w=e_dc,
            e_it_power_w=e_it,
            power_by_role_w=by_role,
            meters_reporting=len(values),
            meters_total=self._meters.height,
            as_of=as_of if isinstance(as_of, datetime) else None,
            stale_meters=stale,
        )

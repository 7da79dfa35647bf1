"""A plausible simulated data centre: the embedded default and the benchmark load.

Power flows are consistent: PDUs draw the IT load, UPS outputs carry it plus PDU
losses, UPS inputs add conversion losses, cooling follows the hour of day, PV
follows the sun, and the grid incomers supply the rest. Every energy register
integrates its own power exactly (trapezoids between ticks), so the aggregator's
energy and PUE can be checked against :meth:`SiteSimulator.true_pue`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from agent.readings import READING_SCHEMA, Quality

__all__ = ["SimDevice", "SiteSimulator", "site_table"]

UPS_EFFICIENCY = 0.955
PDU_EFFICIENCY = 0.99
LIGHTING_SHARE = 0.015
UTC_OFFSET_H = 8  # the demo site is in Asia/Shanghai


@dataclass(frozen=True)
class SimDevice:
    """One simulated meter: device id, point prefix, role and metering point."""

    device: str
    prefix: str
    role: str
    metering_point: str
    rating_kw: float


def _sun(hour_local: np.ndarray | float) -> np.ndarray | float:
    return np.clip(np.sin(math.pi * (np.asarray(hour_local) - 6.0) / 12.0), 0.0, None)


class SiteSimulator:
    """Generates reading batches for a demo site of ``pdus`` racks."""

    def __init__(self, *, pdus: int = 24, seed: int = 1, idle_share: float = 0.1) -> None:
        """Lay out the site.

        Args:
            pdus: Number of rack PDUs (one rack each).
            seed: Random seed for rack loads and initial register values.
            idle_share: Share of racks that are powered but idle (for rack occupancy).
        """
        rng = np.random.default_rng(seed)
        self.pdus = pdus
        self.rack_kw = rng.uniform(2.5, 7.5, pdus)
        idle = rng.random(pdus) < idle_share
        self.rack_kw[idle] = 0.08
        self.rack_phase = rng.uniform(0, 2 * math.pi, pdus)
        it_kw = float(self.rack_kw.sum())
        self.devices: list[SimDevice] = [
            SimDevice("grid-1", "input", "grid_import", "incomer", it_kw * 1.2),
            SimDevice("grid-2", "input", "grid_import", "incomer", it_kw * 1.2),
            SimDevice("pv-1", "output", "onsite_renewable", "generation", it_kw * 0.3),
        ]
        self.devices += [
            SimDevice(
                f"ups-{i}",
                side,
                "monitor",
                "ups_output" if side == "output" else "subsystem",
                it_kw * 0.5,
            )
            for i in range(1, 5)
            for side in ("input", "output")
        ]
        self.devices += [
            SimDevice(f"pdu-{i:03d}", "output", "it", "pdu_output", 12.0)
            for i in range(1, pdus + 1)
        ]
        self.devices += [
            SimDevice(f"chiller-{i}", "input", "cooling", "subsystem", it_kw * 0.4) for i in (1, 2)
        ]
        self.devices += [
            SimDevice(f"crac-{i}", "input", "cooling", "subsystem", it_kw * 0.2)
            for i in range(1, 5)
        ]
        self.devices.append(SimDevice("lighting-1", "input", "other", "subsystem", it_kw * 0.1))
        n = len(self.devices)
        self.energy_kwh = rng.uniform(10_000, 500_000, n)
        self._last_power_w: np.ndarray | None = None
        self._last_t: datetime | None = None
        names = [d.device for d in self.devices]
        self._device_col = pl.Series("device", names + names, dtype=pl.String)
        self._point_col = pl.Series(
            "point",
            [f"{d.prefix}.power" for d in self.devices]
            + [f"{d.prefix}.energy" for d in self.devices],
            dtype=pl.String,
        )
        self._quantity_col = pl.Series(
            "quantity", ["power_w"] * n + ["energy_kwh"] * n, dtype=pl.String
        )
        self._quality_col = pl.Series(
            "quality", np.full(2 * n, int(Quality.SIMULATED), dtype=np.uint8)
        )

    @property
    def readings_per_tick(self) -> int:
        """Readings in each generated batch (a power and an energy reading per meter)."""
        return 2 * len(self.devices)

    def power_w(self, t: datetime) -> np.ndarray:
        """Power of every device at time ``t`` (W), in device order."""
        seconds = t.timestamp()
        hour_local = ((seconds / 3600.0) + UTC_OFFSET_H) % 24.0
        wobble = 1.0 + 0.05 * np.sin(2 * math.pi * seconds / 3600.0 + self.rack_phase)
        racks_kw = self.rack_kw * wobble
        it_kw = float(racks_kw.sum())
        ups_out_kw = it_kw / PDU_EFFICIENCY
        ups_in_kw = ups_out_kw / UPS_EFFICIENCY
        sun = float(_sun(hour_local))
        cooling_kw = it_kw * (0.16 + 0.10 * sun)
        lighting_kw = it_kw * LIGHTING_SHARE
        total_kw = ups_in_kw + cooling_kw + lighting_kw
        pv_kw = min(it_kw * 0.25 * sun, 0.5 * total_kw)
        grid_kw = total_kw - pv_kw
        values: list[float] = [grid_kw / 2, grid_kw / 2, pv_kw]
        for _ in range(4):
            values += [ups_in_kw / 4, ups_out_kw / 4]
        values += list(racks_kw)
        values += [cooling_kw * 0.35, cooling_kw * 0.35]
        values += [cooling_kw * 0.075] * 4
        values.append(lighting_kw)
        return np.asarray(values) * 1000.0

    def true_pue(self, t: datetime) -> float:
        """The instantaneous PUE the simulator is built around, for checks."""
        power = self.power_w(t)
        e_dc = power[0] + power[1] + power[2]
        it = power[[i for i, d in enumerate(self.devices) if d.role == "it"]].sum()
        return float(e_dc / it)

    def tick(self, t: datetime) -> pl.DataFrame:
        """Advance the registers to ``t`` and return the batch of readings at ``t``."""
        power = self.power_w(t)
        if self._last_power_w is not None and self._last_t is not None:
            dt_s = (t - self._last_t).total_seconds()
            self.energy_kwh = self.energy_kwh + (self._last_power_w + power) / 2 * dt_s / 3.6e6
        self._last_power_w, self._last_t = power, t
        n = self.readings_per_tick
        ts = pl.Series("ts", [t], dtype=READING_SCHEMA["ts"]).extend_constant(t, n - 1)
        return pl.DataFrame(
            [
                ts,
                self._device_col,
                self._point_col,
                self._quantity_col,
                pl.Series("value", np.concatenate([power, self.energy_kwh])),
                self._quality_col,
            ]
        )


def site_table(sim: SiteSimulator, *, site_id: str = "demo", category: int = 2) -> dict[str, Any]:
    """The site model (as a ``[site]`` table) that matches the simulator's meters."""
    meters = []
    for d in sim.devices:
        meters.append(
            {
                "id": f"{d.device}.{d.prefix}",
                "device": d.device,
                "energy_point": f"{d.prefix}.energy",
                "power_point": f"{d.prefix}.power",
                "role": d.role,
                "metering_point": d.metering_point,
                "rating_kw": round(d.rating_kw * 1.5, 1),
                **({"rack": f"rack-{d.device[4:]}"} if d.role == "it" else {}),
            }
        )
    return {
        "id": site_id,
        "name": "Demo Data Centre",
        "name_zh": "演示数据中心",
        "timezone": "Asia/Shanghai",
        "pue_category": category,
        "meters": meters,
        "e_dc": {"terms": ["grid-*", "pv-1.output"]},
        "e_it": {"terms": ["pdu-*"]},
        "facts": {
            "racks": sim.pdus,
            "compute_share_pct": 80,
            "province": "Shanxi",
            "project_type": "new",
            "emission_factor": {
                "kg_co2_per_kwh": 0.7096,
                "source": "MEE provincial grid emission factor (secondary source, unconfirmed)",
                "year": 2022,
            },
        },
    }


def ticks(start: datetime, interval_s: float) -> Any:
    """Yield tick times from ``start`` every ``interval_s`` seconds (UTC)."""
    t = start.astimezone(UTC)
    step = timedelta(seconds=interval_s)
    while True:
        yield t
        t += step

"""Interval energy per meter from raw readings (issue 6; rules in docs/pue.md).

Public API (stable; the report's ``verify`` and the rules engine call these)::

    interval_energy(readings: pl.LazyFrame, site: Site,
                    config: EnergyConfig | None = None, *,
                    with_rejected_counts: bool = False) -> pl.LazyFrame   # INTERVAL_SCHEMA
    IntervalEngine(site, config, state).feed(batch: pl.DataFrame) -> pl.DataFrame
    EnergyConfig(interval_s=60, max_gap_s=21600, max_power_gap_s=300,
                 rating_tolerance=0.1, wrap_max_fraction=0.1, reset_fill="power")

See ``docs/kpi.md`` for the choices (interpolation, coverage, plausibility).
"""

from agent.energy.config import EnergyConfig, EnergyConfigError, meter_table
from agent.energy.engine import EngineState, IntervalEngine, interval_energy
from agent.schemas import INTERVAL_STORE_SCHEMA

__all__ = [
    "INTERVAL_STORE_SCHEMA",
    "EnergyConfig",
    "EnergyConfigError",
    "EngineState",
    "IntervalEngine",
    "interval_energy",
    "meter_table",
]

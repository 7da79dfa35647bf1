"""Site KPIs from interval energy (issue 6; definitions in docs/pue.md).

Public API::

    compute_kpis(intervals: pl.LazyFrame, site: Site, green: pl.DataFrame | None, *,
                 month: str, coverage_threshold: float = 0.95,
                 kinds: Sequence[PeriodKind] = DEFAULT_KINDS) -> pl.DataFrame  # KPI_SCHEMA
    kpi_choices(site, *, coverage_threshold, energy=None) -> dict   # recorded with results
"""

from agent.kpi.compute import (
    DEFAULT_KINDS,
    GREEN_SCHEMA,
    KPI_ENGINE,
    choices_json,
    compute_kpis,
    kpi_choices,
    meter_signs,
)
from agent.periods import PeriodError, month_bounds, shift_month, ttm_bounds

__all__ = [
    "DEFAULT_KINDS",
    "GREEN_SCHEMA",
    "KPI_ENGINE",
    "PeriodError",
    "choices_json",
    "compute_kpis",
    "kpi_choices",
    "meter_signs",
    "month_bounds",
    "shift_month",
    "ttm_bounds",
]

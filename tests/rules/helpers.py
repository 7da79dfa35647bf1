"""Builders for KPI frames and facts used by the rules tests and the benchmark."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from agent.periods import month_index, month_label
from agent.schemas import KPI_SCHEMA

SITE = "dc-1"

#: A small valid site model (category 2, declared in Shanxi, 1,200 racks).
SITE_TOML = """
[site]
id = "dc-1"
name = "Test DC"
pue_category = 2

[[site.meters]]
id = "grid-1"
device = "meter-1"
energy_point = "energy"
role = "grid_import"

[[site.meters]]
id = "pdu-1"
device = "pdu-1"
energy_point = "energy"
role = "it"
metering_point = "pdu_output"

[site.facts]
racks = 1200
project_type = "new"
province = "Shanxi"
"""

_T0 = datetime(2020, 1, 1, tzinfo=UTC)


def kpi(
    metric: str,
    value: float | None,
    *,
    period: str = "2026-10",
    kind: str = "ttm",
    status: str = "ok",
    coverage: float = 0.99,
    category: int | None = None,
    unit: str = "",
    site: str = SITE,
) -> dict[str, Any]:
    """One KPI_SCHEMA row (timestamps are irrelevant to the engine).

    A dict, so columns added to KPI_SCHEMA later are simply null here.
    """
    if category is None and metric == "pue":
        category = 2
    return {
        "site": site,
        "period_kind": kind,
        "period": period,
        "period_start": _T0,
        "period_end": _T0,
        "metric": metric,
        "value": value,
        "unit": unit,
        "status": status,
        "coverage": coverage,
        "category": category,
    }


def frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A KPI frame from :func:`kpi` rows."""
    return pl.DataFrame(rows, schema=KPI_SCHEMA)


def history(
    metric: str, start: str, values: list[float], *, kind: str = "ttm"
) -> list[dict[str, Any]]:
    """Consecutive monthly rows of ``metric`` starting at ``start``."""
    first = month_index(start)
    return [
        kpi(metric, value, period=month_label(first + i), kind=kind)
        for i, value in enumerate(values)
    ]


def months(start: str, count: int) -> list[str]:
    """``count`` consecutive month labels from ``start``."""
    first = month_index(start)
    return [month_label(first + i) for i in range(count)]

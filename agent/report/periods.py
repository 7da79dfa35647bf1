"""Calendar months for reports: the KPI engine's period arithmetic, plus the TTM month list.

One implementation of "a Chinese site's month starts at 00:00 +08:00" serves the agent, the
report and ``verify``, so they cannot disagree about a boundary.
"""

from __future__ import annotations

from agent.kpi.periods import PeriodError as MonthError
from agent.kpi.periods import month_bounds, parse_month, shift_month

__all__ = ["MonthError", "month_bounds", "parse_month", "shift_month", "ttm_months"]


def ttm_months(label: str) -> list[str]:
    """The twelve months of the trailing window ending with ``label``, oldest first."""
    return [shift_month(label, -k) for k in range(11, -1, -1)]

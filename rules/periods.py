"""Month labels (``YYYY-MM``, site-local) as integers, for windows and projections."""

from __future__ import annotations

import calendar
import re
from datetime import date

__all__ = ["month_bounds", "month_index", "month_label", "month_of"]

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_index(label: str) -> int:
    """``"2026-10"`` -> months since year 0, so that consecutive months differ by one.

    Raises:
        ValueError: for a label that is not ``YYYY-MM``.
    """
    match = _MONTH.match(label)
    if match is None:
        raise ValueError(f"period {label!r} is not a month label YYYY-MM")
    return int(match.group(1)) * 12 + int(match.group(2)) - 1


def month_label(index: int) -> str:
    """Inverse of :func:`month_index`."""
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_of(day: date) -> int:
    """The month index of a date."""
    return day.year * 12 + day.month - 1


def month_bounds(label: str) -> tuple[date, date]:
    """First and last day (inclusive) of a month label."""
    index = month_index(label)
    year, month = index // 12, index % 12 + 1
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])

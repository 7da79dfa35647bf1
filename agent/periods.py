"""Calendar periods, the one implementation every part uses.

A site's month is local: a Chinese site's October starts at 2026-10-01 00:00 +08:00.
Month labels are ``YYYY-MM``; their UTC bounds, the trailing-twelve-month (TTM) window,
local days and integer month indexes all come from here, so the aggregator, ``kpi``,
the rules, the report, ``verify`` and the API cannot disagree about a boundary.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

__all__ = [
    "MONTH_RE",
    "PERIOD_RE",
    "PeriodError",
    "month_bounds",
    "month_days",
    "month_index",
    "month_label",
    "month_of",
    "parse_month",
    "shift_month",
    "ttm_bounds",
    "ttm_months",
    "utc_months",
    "whole_hour_offsets",
]

#: A month label, ``YYYY-MM`` (years 1000-2999: year 0 is no calendar year).
MONTH_RE = re.compile(r"^[12][0-9]{3}-(0[1-9]|1[0-2])$")
#: Labels the KPI frame uses: month ``YYYY-MM``, day ``YYYY-MM-DD``, hour ``YYYY-MM-DDTHH``.
PERIOD_RE = re.compile(
    r"^[12][0-9]{3}-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3]))?)?$"
)


_LABEL = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class PeriodError(ValueError):
    """A period label is not ``YYYY-MM``."""


def parse_month(label: str) -> tuple[int, int]:
    """Split ``"2026-10"`` into ``(2026, 10)``.

    Raises:
        PeriodError: for anything but ``YYYY-MM``.
    """
    if not isinstance(label, str) or _LABEL.match(label) is None:
        raise PeriodError(f"period {label!r}: expected a month YYYY-MM, e.g. 2026-10")
    return int(label[:4]), int(label[5:7])


def month_index(label: str) -> int:
    """``"2026-10"`` -> months since year 0, so that consecutive months differ by one.

    Raises:
        PeriodError: for a label that is not ``YYYY-MM``.
    """
    year, month = parse_month(label)
    return year * 12 + month - 1


def month_label(index: int) -> str:
    """Inverse of :func:`month_index`."""
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_of(day: date) -> int:
    """The month index of a date."""
    return day.year * 12 + day.month - 1


def shift_month(label: str, months: int) -> str:
    """The month ``months`` after (negative: before) ``label``."""
    return month_label(month_index(label) + months)


def month_days(label: str) -> tuple[date, date]:
    """First and last day (both inclusive) of a month label."""
    year, month = parse_month(label)
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def month_bounds(label: str, timezone: str) -> tuple[datetime, datetime]:
    """UTC start (inclusive) and end (exclusive) of a local calendar month."""
    year, month = parse_month(label)
    zone = ZoneInfo(timezone)
    next_year, next_month = parse_month(shift_month(label, 1))
    start = datetime(year, month, 1, tzinfo=zone).astimezone(UTC)
    end = datetime(next_year, next_month, 1, tzinfo=zone).astimezone(UTC)
    return start, end


def ttm_months(label: str) -> list[str]:
    """The twelve months of the trailing window ending with ``label``, oldest first."""
    return [shift_month(label, -k) for k in range(11, -1, -1)]


def ttm_bounds(label: str, timezone: str) -> tuple[datetime, datetime]:
    """UTC bounds of the twelve local months ending with ``label`` (the annual window)."""
    start, _ = month_bounds(shift_month(label, -11), timezone)
    _, end = month_bounds(label, timezone)
    return start, end


def utc_months(start: datetime, end: datetime) -> list[str]:
    """Labels of the UTC months that ``[start, end]`` touches (both ends inclusive)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    return [month_label(i) for i in range(month_of(start.date()), month_of(end.date()) + 1)]


def whole_hour_offsets(timezone: str) -> bool:
    """Whether the zone's UTC offsets are whole hours (then hourly roll-ups give the same sums)."""
    zone = ZoneInfo(timezone)
    for month in (1, 4, 7, 10):
        offset = datetime(2026, month, 15, tzinfo=UTC).astimezone(zone).utcoffset()
        if offset is not None and offset.total_seconds() % 3600:
            return False
    return True

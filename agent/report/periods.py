"""Calendar months in the site's time zone (a Chinese site's month starts at 00:00 +08:00)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

__all__ = ["MonthError", "month_bounds", "parse_month", "shift_month", "ttm_months"]

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class MonthError(ValueError):
    """A month label is not ``YYYY-MM``."""


def parse_month(label: str) -> tuple[int, int]:
    """Split ``"2026-10"`` into ``(2026, 10)``.

    Raises:
        MonthError: for anything but ``YYYY-MM``.
    """
    match = _MONTH.match(label)
    if match is None:
        raise MonthError(f"month {label!r}: expected YYYY-MM, e.g. 2026-10")
    return int(match.group(1)), int(match.group(2))


def shift_month(label: str, months: int) -> str:
    """The month ``months`` after (negative: before) ``label``."""
    year, month = parse_month(label)
    index = year * 12 + (month - 1) + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_bounds(label: str, timezone: str) -> tuple[datetime, datetime]:
    """UTC start (inclusive) and end (exclusive) of a local calendar month."""
    year, month = parse_month(label)
    zone = ZoneInfo(timezone)
    start = datetime(year, month, 1, tzinfo=zone)
    next_year, next_month = parse_month(shift_month(label, 1))
    end = datetime(next_year, next_month, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def ttm_months(label: str) -> list[str]:
    """The twelve months of the trailing window ending with ``label``, oldest first."""
    return [shift_month(label, -k) for k in range(11, -1, -1)]

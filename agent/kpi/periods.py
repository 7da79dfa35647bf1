"""Local calendar periods (a Chinese site's month starts at 00:00 +08:00) as UTC bounds."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

__all__ = [
    "PeriodError",
    "month_bounds",
    "parse_month",
    "shift_month",
    "ttm_bounds",
    "whole_hour_offsets",
]

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class PeriodError(ValueError):
    """A period label is not ``YYYY-MM``."""


def parse_month(label: str) -> tuple[int, int]:
    """Split ``"2026-10"`` into ``(2026, 10)``.

    Raises:
        PeriodError: for anything but ``YYYY-MM``.
    """
    match = _MONTH.match(label)
    if match is None:
        raise PeriodError(f"period {label!r}: expected a month YYYY-MM, e.g. 2026-10")
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
    next_year, next_month = parse_month(shift_month(label, 1))
    start = datetime(year, month, 1, tzinfo=zone).astimezone(UTC)
    end = datetime(next_year, next_month, 1, tzinfo=zone).astimezone(UTC)
    return start, end


def ttm_bounds(label: str, timezone: str) -> tuple[datetime, datetime]:
    """UTC bounds of the twelve local months ending with ``label`` (the annual window)."""
    start, _ = month_bounds(shift_month(label, -11), timezone)
    _, end = month_bounds(label, timezone)
    return start, end


def whole_hour_offsets(timezone: str) -> bool:
    """Whether the zone's UTC offsets are whole hours (then hourly roll-ups give the same sums)."""
    zone = ZoneInfo(timezone)
    for month in (1, 4, 7, 10):
        offset = datetime(2026, month, 15, tzinfo=UTC).astimezone(zone).utcoffset()
        if offset is not None and offset.total_seconds() % 3600:
            return False
    return True

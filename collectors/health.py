"""A device's health as every collector tracks it.

A device is logged once when it starts failing and once when it recovers, never once per
failed poll (a dead PDU polled every 10 s for a weekend would otherwise bury the log).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["DeviceHealth", "next_poll_slot"]


@dataclass(kw_only=True, eq=False, repr=False)
class DeviceHealth:
    """Failing/recovered state of one polled device; collectors' device states inherit it.

    Keyword-only fields, so a dataclass that inherits it keeps its own positional ones; no
    ``__eq__``, so a plain class that inherits it stays hashable (pollers are dict keys).
    """

    #: The last poll (or request) failed.
    failing: bool = False
    #: Failed polls since the device last answered.
    failed_polls: int = 0
    #: Monotonic time of the first failure of the current run of failures.
    failing_since: float = 0.0

    def mark_failed(
        self,
        log: structlog.typing.FilteringBoundLogger,
        *,
        collector: str,
        device: str,
        reason: str,
        error: str,
        **context: Any,
    ) -> bool:
        """Count a failed poll; log "device failing" if the device was healthy until now.

        Returns:
            Whether the device has just started failing.
        """
        self.failed_polls += 1
        if self.failing:
            return False
        self.failing = True
        self.failing_since = time.monotonic()
        log.warning(
            "device failing",
            collector=collector,
            device=device,
            reason=reason,
            error=error,
            **context,
        )
        return True

    def mark_recovered(
        self, log: structlog.typing.FilteringBoundLogger, *, collector: str, device: str
    ) -> bool:
        """A poll succeeded: log "device recovered" if the device was failing.

        Returns:
            Whether the device has just recovered.
        """
        if not self.failing:
            return False
        log.info(
            "device recovered",
            collector=collector,
            device=device,
            failed_polls=self.failed_polls,
            failing_for_s=round(time.monotonic() - self.failing_since, 1),
        )
        self.failing = False
        self.failed_polls = 0
        return True


def next_poll_slot(
    slot: float,
    now: float,
    interval_s: float,
    *,
    ok: bool,
    backoff_s: float,
    backoff_max_s: float,
) -> tuple[float, float]:
    """When a device polls next, and its backoff, after a poll that ended at ``now``.

    A good poll keeps the device's phase: the next slot is one interval on, and whole
    intervals missed (a slow line, an overloaded host) are skipped rather than run in a
    burst. A failed poll backs off exponentially from one interval up to ``backoff_max_s``.

    Returns:
        ``(next slot, backoff_s)``; the backoff is unchanged after a good poll (recovery
        resets it where the collector logs it).
    """
    if ok:
        slot += interval_s
        if slot < now - interval_s:
            slot += ((now - slot) // interval_s) * interval_s
        return slot, backoff_s
    backoff_s = min(
        max(interval_s, backoff_s * 2) if backoff_s else interval_s,
        max(interval_s, backoff_max_s),
    )
    return now + backoff_s, backoff_s

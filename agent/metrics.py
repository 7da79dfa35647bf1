"""The agent's own health metrics (served on ``/metrics`` by the HTTP API).

One process-wide registry; collectors and sinks get their metric families from
here so names stay consistent. Every family is labelled with the component.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent import __version__
from agent.logs import get_logger

__all__ = [
    "ALARMS",
    "JOURNAL_APPEND_SECONDS",
    "JOURNAL_BYTES",
    "JOURNAL_GAPS",
    "JOURNAL_LAG",
    "JOURNAL_READINGS",
    "POLLS",
    "POLL_FAILURES",
    "POLL_SECONDS",
    "READINGS_REJECTED",
    "REGISTRY",
    "STORAGE_ERRNOS",
    "clear_alarm",
    "raise_alarm",
    "raised_alarms",
    "record_good_poll",
    "storage_error",
]

REGISTRY = CollectorRegistry(auto_describe=True)

POLLS = Counter(
    "pue_agent_polls", "Device polls attempted.", ["collector", "device"], registry=REGISTRY
)
POLL_FAILURES = Counter(
    "pue_agent_poll_failures",
    "Device polls that failed, by reason.",
    ["collector", "device", "reason"],
    registry=REGISTRY,
)
POLL_SECONDS = Histogram(
    "pue_agent_poll_seconds",
    "Device poll latency.",
    ["collector"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
READINGS_REJECTED = Counter(
    "pue_agent_readings_rejected",
    "Readings or messages rejected before the journal, by reason.",
    ["collector", "reason"],
    registry=REGISTRY,
)
JOURNAL_READINGS = Counter(
    "pue_agent_journal_readings", "Readings committed to the journal.", registry=REGISTRY
)
JOURNAL_GAPS = Counter(
    "pue_agent_journal_gap_readings",
    "Readings refused (budget reached) and recorded as a gap.",
    registry=REGISTRY,
)
JOURNAL_BYTES = Gauge(
    "pue_agent_journal_payload_bytes", "Journal payload bytes kept on disk.", registry=REGISTRY
)
JOURNAL_LAG = Gauge(
    "pue_agent_journal_lag_batches",
    "Batches each consumer is behind the journal head.",
    ["consumer"],
    registry=REGISTRY,
)
JOURNAL_APPEND_SECONDS = Histogram(
    "pue_agent_journal_commit_seconds",
    "Group commit latency (write + fsync).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
ALARMS = Gauge(
    "pue_agent_alarm",
    "Active alarms (1 = raised), e.g. journal_budget, sink_quarantine, sink_auth.",
    ["alarm", "component"],
    registry=REGISTRY,
)


# -- storage alarms (issue 22) -------------------------------------------------------------------

#: errno values that mean "the disk cannot take this write now" (full, failing, or out of
#: descriptors): the agent raises an alarm and retries, it never exits on them.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE}
)
#: The same conditions in words, for errors that carry no errno (SQLite, Polars' writers).
_STORAGE_WORDS = (
    "disk is full",
    "disk i/o error",
    "unable to open database file",
    "no space left on device",
    "too many open files",
    "input/output error",
)

#: Raised storage alarms: (alarm, component) -> reason; ``/readyz`` is 503 while any is.
_RAISED: dict[tuple[str, str], str] = {}
_RAISED_LOCK = threading.Lock()
_log = get_logger("alarms")


def storage_error(exc: BaseException) -> str | None:
    """A short reason if ``exc`` (or what caused it) is a storage fault, else ``None``.

    Args:
        exc: Any exception; its ``__cause__``/``__context__`` chain is searched.

    Returns:
        e.g. ``"ENOSPC: No space left on device"``, or ``None`` for any other error.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return f"{errno.errorcode[current.errno]}: {current.strerror or current}"
        text = str(current).lower()
        for words in _STORAGE_WORDS:
            if words in text:
                return words
        current = current.__cause__ or current.__context__
    return None


def raise_alarm(alarm: str, component: str, reason: str) -> None:
    """Raise ``pue_agent_alarm{alarm, component}``; logs one line when it was not raised.

    Args:
        alarm: The alarm's name (e.g. ``storage``).
        component: What hit it (``journal``, ``aggregator``, a sink's name).
        reason: Why, for the log line and ``/readyz`` (never data or secrets).
    """
    with _RAISED_LOCK:
        new = (alarm, component) not in _RAISED
        _RAISED[(alarm, component)] = reason
    ALARMS.labels(alarm, component).set(1)
    if new:
        _log.error("alarm raised", alarm=alarm, component=component, reason=reason)


def clear_alarm(alarm: str, component: str) -> None:
    """Clear an alarm raised by :func:`raise_alarm`; logs one line if it was raised."""
    with _RAISED_LOCK:
        reason = _RAISED.pop((alarm, component), None)
    if reason is not None:
        ALARMS.labels(alarm, component).set(0)
        _log.warning("alarm cleared", alarm=alarm, component=component, was=reason)


def raised_alarms() -> dict[tuple[str, str], str]:
    """The alarms raised now: (alarm, component) -> reason."""
    with _RAISED_LOCK:
        return dict(_RAISED)


# -- build, process and device freshness (issue 15) ----------------------------------------------

BUILD_INFO = Gauge(
    "pue_agent_build_info", "The running build (always 1).", ["version"], registry=REGISTRY
)
BUILD_INFO.labels(__version__).set(1)
# The standard process_* (CPU, memory, descriptors, start time) and python_info metrics.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)


class _LastGoodPoll(Collector):
    """``pue_agent_seconds_since_last_good_poll{collector,device}``, computed at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}

    def record(self, collector: str, devices: Iterable[str], at: float | None = None) -> None:
        now = time.time() if at is None else at
        with self._lock:
            for device in devices:
                self._last[(collector, device)] = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pue_agent_seconds_since_last_good_poll",
            "Seconds since readings of the device were last committed to the journal.",
            labels=["collector", "device"],
        )
        now = time.time()
        with self._lock:
            items = list(self._last.items())
        for (collector, device), at in items:
            family.add_metric([collector, device], max(0.0, now - at))
        yield family


_LAST_GOOD_POLL = _LastGoodPoll()
REGISTRY.register(_LAST_GOOD_POLL)


def record_good_poll(collector: str, devices: Iterable[str], at: float | None = None) -> None:
    """Note that readings of ``devices`` from ``collector`` reached the journal (now)."""
    _LAST_GOOD_POLL.record(collector, devices, at)

"""The agent's own health metrics (served on ``/metrics`` by the HTTP API).

One process-wide registry; collectors and sinks get their metric families from
here so names stay consistent. Every family is labelled with the component.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

"""Sink health: metric families shared by the sinks, and alarms that name the sink.

An alarm is a short operator-facing sentence (never a secret) kept on the sink
(``sink.health.alarm``), logged once when it is raised or changes, exported as
``pue_agent_sink_alarm{sink,alarm}`` and cleared by the next success.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from agent.logs import get_logger
from agent.metrics import REGISTRY

__all__ = [
    "SINK_ALARM",
    "SINK_BYTES",
    "SINK_FAILURES",
    "SINK_POINTS",
    "SINK_QUARANTINED",
    "SinkHealth",
    "redact",
]

SINK_POINTS = Counter(
    "pue_agent_sink_points",
    "Points (or messages) a sink wrote.",
    ["sink", "kind"],
    registry=REGISTRY,
)
SINK_BYTES = Counter(
    "pue_agent_sink_bytes",
    "Request bytes a sink sent (before compression).",
    ["sink"],
    registry=REGISTRY,
)
SINK_FAILURES = Counter(
    "pue_agent_sink_write_failures",
    "Failed write attempts, by reason.",
    ["sink", "reason"],
    registry=REGISTRY,
)
SINK_QUARANTINED = Counter(
    "pue_agent_sink_quarantined",
    "Points the server refused, kept in the quarantine file.",
    ["sink"],
    registry=REGISTRY,
)
SINK_ALARM = Gauge(
    "pue_agent_sink_alarm",
    "1 while a sink has an alarm of this kind.",
    ["sink", "alarm"],
    registry=REGISTRY,
)

_log = get_logger("sinks")


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of a secret value in ``text`` (defence in depth)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass
class SinkHealth:
    """Alarm state of one sink."""

    sink: str
    secrets: list[str] = field(default_factory=list, repr=False)
    alarm: str | None = None
    alarm_kind: str | None = None
    history: list[str] = field(default_factory=list)

    def raise_alarm(self, kind: str, message: str) -> None:
        """Raise (or update) the alarm; logged when it changes, secrets redacted."""
        message = redact(message, self.secrets)
        if message == self.alarm:
            return
        if self.alarm_kind is not None and self.alarm_kind != kind:
            SINK_ALARM.labels(self.sink, self.alarm_kind).set(0)
        self.alarm, self.alarm_kind = message, kind
        self.history.append(message)
        SINK_ALARM.labels(self.sink, kind).set(1)
        _log.error("sink alarm", sink=self.sink, alarm=kind, message=message)

    def clear(self) -> None:
        """Clear the alarm after a success."""
        if self.alarm_kind is None:
            return
        SINK_ALARM.labels(self.sink, self.alarm_kind).set(0)
        _log.info("sink alarm cleared", sink=self.sink, alarm=self.alarm_kind)
        self.alarm = self.alarm_kind = None

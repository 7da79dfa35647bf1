"""structlog set-up: JSON lines when not on a terminal (journald), readable on a terminal.

Under systemd each line starts with its syslog priority in the sd-daemon(3) form (``<3>``
for an error): journald strips the prefix and files the line at that priority, so
``journalctl -p err -u pue-agent`` shows the agent's errors. Without it every line would be
filed at the unit's default priority (info) whatever its level.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["SYSLOG_PRIORITY", "configure_logging", "get_logger", "under_journald"]

#: structlog level name → syslog priority (sd-daemon.h: SD_ERR is 3, SD_INFO 6 …).
SYSLOG_PRIORITY: dict[str, int] = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
    "notset": 7,
}


def under_journald() -> bool:
    """Whether stderr is connected to journald, as systemd says in ``$JOURNAL_STREAM``.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` of the stream it connects; it is only
    believed when stderr is that very stream, so a child of the service whose stderr is
    redirected to a file or a pipe (a test, ``pue-agent check | less``) writes no prefixes.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class _PriorityPrefix:
    """Render with ``renderer`` and put the line's ``<N>`` syslog priority in front."""

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        level = str(event_dict.get("level", method_name)).lower()
        line = self._renderer(logger, method_name, event_dict)
        text = line.decode() if isinstance(line, bytes) else str(line)
        return f"<{SYSLOG_PRIORITY.get(level, 6)}>{text}"


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console", "journald"] = "auto"
) -> None:
    """Configure structlog and the standard library logging it feeds.

    Args:
        level: Minimum level name.
        fmt: ``json``, ``console``, ``journald`` (JSON lines with the ``<N>`` priority
            prefix) or ``auto``: JSON lines unless stderr is a terminal. Whatever the
            format, lines get the prefix when ``$JOURNAL_STREAM`` names stderr: the prefix
            belongs to the stream, and journald strips it.
    """
    journald = fmt == "journald" or under_journald()
    use_json = fmt in ("json", "journald") or (
        fmt == "auto" and (journald or not sys.stderr.isatty())
    )
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    if journald:
        renderer = _PriorityPrefix(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """Return a logger bound to a component name."""
    return structlog.get_logger(component=name)  # type: ignore[no-any-return]

"""Durable quarantine of data a sink's server refused (or that no line can carry).

One JSON Lines file per sink under ``state_dir/quarantine/``. Each record names
the sink, when, why (the server's own message, or the reason it could not be
serialised) and holds the line or row itself, so an operator can fix the schema
conflict and replay it. A record is fsynced before the sink moves its cursor
past the data, so quarantined data is never lost with the journal pruned.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from agent import metrics

__all__ = ["Quarantine"]

#: Retry delays of a quarantine write that hit a full disk: first, then doubling to the cap.
_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 2.0


class Quarantine:
    """Appends quarantine records for one sink (thread-safe; every write is fsynced)."""

    def __init__(self, state_dir: Path, sink: str) -> None:
        """Place the sink's file at ``state_dir/quarantine/<sink>.jsonl``."""
        self.sink = sink
        self.path = state_dir / "quarantine" / f"{sink}.jsonl"
        self._lock = threading.Lock()
        self.count = 0

    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        delay_s = _RETRY_FIRST_S
        with self._lock:
            while True:
                try:
                    self._write(text)
                    break
                except OSError as exc:
                    reason = metrics.storage_error(exc)
                    if reason is None:
                        raise
                    # Disk full: the sink's cursor must not pass data that is not kept, so
                    # wait here (a worker thread) with the alarm raised until space returns.
                    metrics.raise_alarm("storage", f"quarantine:{self.sink}", reason)
                    time.sleep(delay_s)
                    delay_s = min(delay_s * 2, _RETRY_MAX_S)
            metrics.clear_alarm("storage", f"quarantine:{self.sink}")
            self.count += len(records)

    def _write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # Drop a partial record so that a retry appends whole lines only.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)

    def lines(self, lines: list[str], *, kind: str, status: int, message: str) -> None:
        """Quarantine line-protocol lines the server refused, with its status and message."""
        now = datetime.now(UTC).isoformat()
        self._append(
            [
                {
                    "quarantined_at": now,
                    "sink": self.sink,
                    "kind": kind,
                    "status": status,
                    "message": message,
                    "line": line,
                }
                for line in lines
            ]
        )

    def rows(self, frame: pl.DataFrame, *, kind: str) -> None:
        """Quarantine rows that cannot be serialised (the frame has a ``reason`` column)."""
        if frame.height == 0:
            return
        now = datetime.now(UTC).isoformat()
        # JSON by Polars (vectorised), then wrapped: NaN/inf become null there, so keep
        # the original value as text too.
        text = frame.with_columns(
            pl.col(c).cast(pl.String).alias(f"{c}_text")
            for c, dtype in frame.schema.items()
            if dtype.is_float()
        ).write_ndjson()
        records = [
            {"quarantined_at": now, "sink": self.sink, "kind": kind, "row": json.loads(line)}
            for line in text.splitlines()
            if line
        ]
        self._append(records)

    def read(self) -> list[dict[str, Any]]:
        """Every record so far (for tests and ``pue-agent`` tooling)."""
        if not self.path.is_file():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

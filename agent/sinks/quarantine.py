"""Durable quarantine of data a sink's server refused (or that no line can carry).

One JSON Lines file per sink under ``state_dir/quarantine/``. Each record names
the sink, when, why (the server's own message, or the reason it could not be
serialised) and holds the line or row itself, so an operator can fix the schema
conflict and replay it. A record is fsynced before the sink moves its cursor
past the data, so quarantined data is never lost with the journal pruned.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["Quarantine"]


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
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            self.count += len(records)

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

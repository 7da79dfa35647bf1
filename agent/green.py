"""The green-energy ledger: certificates retired and green contracts, entered by the operator.

These figures are documentary (docs/pue.md: not metered), so every entry keeps who entered
it and when, and removing one only marks it removed (who/when) — the history stays
for the auditor. The ledger is a small JSON file under ``state_dir/green/``, rewritten
atomically under an exclusive lock.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import polars as pl

from agent.kpi.compute import GREEN_SCHEMA
from agent.periods import PeriodError, parse_month
from agent.store import atomic_write_bytes

__all__ = ["GREEN_KINDS", "KWH_PER_CERTIFICATE", "GreenEntry", "GreenLedger", "GreenLedgerError"]

GreenKind = Literal["certificate", "contract"]
GREEN_KINDS: tuple[GreenKind, ...] = ("certificate", "contract")
#: China's green electricity certificate (绿证, GEC): one certificate = 1 MWh.
KWH_PER_CERTIFICATE = 1000.0


class GreenLedgerError(ValueError):
    """An entry is invalid or the ledger file cannot be used; the message says which."""


@dataclass(frozen=True, slots=True)
class GreenEntry:
    """One documentary renewable-energy entry."""

    id: str
    period: str
    kind: GreenKind
    mwh: float
    ref: str
    added_by: str
    added_at: str
    note: str | None = None
    removed_by: str | None = None
    removed_at: str | None = None

    @property
    def active(self) -> bool:
        """Whether the entry counts (not removed)."""
        return self.removed_at is None


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


class GreenLedger:
    """Durable ledger of certificates and contracts per local month."""

    def __init__(self, path: Path) -> None:
        """Use the ledger file at ``path`` (``state_dir/green/ledger.json``)."""
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / ".ledger.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> list[GreenEntry]:
        if not self.path.is_file():
            return []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [GreenEntry(**item) for item in raw["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise GreenLedgerError(f"{self.path}: unreadable ledger ({exc})") from exc

    def _save(self, entries: list[GreenEntry]) -> None:
        data = {"version": 1, "entries": [asdict(e) for e in entries]}
        atomic_write_bytes(self.path, json.dumps(data, indent=1, ensure_ascii=False).encode())

    def entries(self, *, include_removed: bool = False) -> list[GreenEntry]:
        """All entries, oldest first (removed ones only if asked)."""
        return [e for e in self._load() if include_removed or e.active]

    def add(
        self,
        period: str,
        kind: str,
        mwh: float,
        ref: str,
        *,
        who: str | None = None,
        note: str | None = None,
        now: datetime | None = None,
    ) -> GreenEntry:
        """Record certificates retired / contracted green supply for a local month.

        Raises:
            GreenLedgerError: for a bad period, kind, amount or reference, or a reference
                already active for the same kind (no energy is counted twice).
        """
        try:
            parse_month(period)
        except PeriodError as exc:
            raise GreenLedgerError(f"--{exc}") from None
        if kind not in GREEN_KINDS:
            raise GreenLedgerError(f"--kind {kind!r}: expected one of {', '.join(GREEN_KINDS)}")
        if not (mwh > 0 and math.isfinite(mwh)):
            raise GreenLedgerError(f"--mwh {mwh}: must be a positive number")
        if kind == "certificate" and mwh != int(mwh):
            raise GreenLedgerError(f"--mwh {mwh}: certificates are whole MWh (1 GEC = 1 MWh)")
        ref = ref.strip()
        if not ref:
            raise GreenLedgerError("--ref: a certificate or contract reference is required")
        with self._locked():
            entries = self._load()
            for e in entries:
                if e.active and e.kind == kind and e.ref == ref:
                    raise GreenLedgerError(
                        f"--ref {ref!r}: already recorded as {e.id} for {e.period} "
                        "(remove it first; a certificate is claimed once)"
                    )
            entry = GreenEntry(
                id=uuid.uuid4().hex[:12],
                period=period,
                kind=kind,
                mwh=float(mwh),
                ref=ref,
                added_by=who or _who(),
                added_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
                note=note,
            )
            self._save([*entries, entry])
        return entry

    def remove(
        self, entry_id: str, *, who: str | None = None, now: datetime | None = None
    ) -> GreenEntry:
        """Mark an entry removed (it stays in the file with who/when).

        Raises:
            GreenLedgerError: if no active entry has that id.
        """
        with self._locked():
            entries = self._load()
            for i, e in enumerate(entries):
                if e.id == entry_id and e.active:
                    removed = GreenEntry(
                        **{
                            **asdict(e),
                            "removed_by": who or _who(),
                            "removed_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
                        }
                    )
                    entries[i] = removed
                    self._save(entries)
                    return removed
        raise GreenLedgerError(f"no active green entry with id {entry_id!r}")

    def frame(self) -> pl.DataFrame:
        """Active entries as the KPI engine reads them (:data:`agent.kpi.GREEN_SCHEMA`)."""
        active = self.entries()
        return pl.DataFrame(
            {
                "month": [e.period for e in active],
                "kind": [e.kind for e in active],
                "energy_kwh": [e.mwh * KWH_PER_CERTIFICATE for e in active],
                "reference": [e.ref for e in active],
            },
            schema=GREEN_SCHEMA,
        )

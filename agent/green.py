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

__all__ = [
    "GREEN_KINDS",
    "KWH_PER_CERTIFICATE",
    "GreenEntry",
    "GreenLedger",
    "GreenLedgerError",
    "load_green_file",
]

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
        return _entries_frame(self.entries())


def _entries_frame(active: list[GreenEntry]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "month": [e.period for e in active],
            "kind": [e.kind for e in active],
            "energy_kwh": [e.mwh * KWH_PER_CERTIFICATE for e in active],
            "reference": [e.ref for e in active],
        },
        schema=GREEN_SCHEMA,
    )


#: Columns of each green file format ``load_green_file`` reads.
_ENTRY_KEYS = ("period", "kind", "mwh", "ref")
_FRAME_KEYS = tuple(GREEN_SCHEMA.names())
_FORMATS = (
    'expected the ledger that `pue-agent green` keeps ({"version": 1, "entries": [...]}), '
    f"the output of `pue-agent green list --json` (a list of {{{', '.join(_ENTRY_KEYS)}, ...}}) "
    f"or a list of {{{', '.join(_FRAME_KEYS)}}}"
)


def load_green_file(path: Path) -> pl.DataFrame:
    """A green file as the KPI engine reads it (:data:`agent.kpi.GREEN_SCHEMA`).

    Accepts the ledger file (``state_dir/green/ledger.json``), the output of
    ``pue-agent green list --json`` (removed entries, from ``--all``, do not count) and a
    list of KPI-engine rows (``month, kind, energy_kwh, reference``).

    Raises:
        GreenLedgerError: the file cannot be read or is none of those formats (the
            message names the expected columns).
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GreenLedgerError(f"{path}: cannot read green file ({exc}); {_FORMATS}") from None
    items = raw.get("entries") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise GreenLedgerError(f"{path}: unknown green file format; {_FORMATS}")
    if not items:
        return pl.DataFrame(schema=GREEN_SCHEMA)
    if all(set(_ENTRY_KEYS) <= item.keys() for item in items):
        try:
            # A hand-written list needs only the four columns.
            filled = (
                {"id": f"#{i + 1}", "added_by": "", "added_at": "", **item}
                for i, item in enumerate(items)
            )
            entries = [GreenEntry(**item) for item in filled]
        except TypeError as exc:
            raise GreenLedgerError(
                f"{path}: unknown green file format ({exc}); {_FORMATS}"
            ) from None
        bad = _bad_entry(entries)
        if bad:
            raise GreenLedgerError(f"{path}: {bad}")
        return _entries_frame([e for e in entries if e.active])
    if all(set(_FRAME_KEYS) <= item.keys() for item in items):
        try:
            frame = pl.DataFrame(
                [{k: item[k] for k in _FRAME_KEYS} for item in items], schema=GREEN_SCHEMA
            )
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise GreenLedgerError(f"{path}: bad green rows ({exc}); {_FORMATS}") from None
        bad_months = [m for m in frame["month"].to_list() if not _is_month(m)]
        if bad_months or frame["energy_kwh"].null_count():
            raise GreenLedgerError(f"{path}: bad month or energy_kwh in green rows; {_FORMATS}")
        return frame
    missing = sorted(set(_ENTRY_KEYS) - set().union(*(item.keys() for item in items)))
    raise GreenLedgerError(
        f"{path}: unknown green file format (missing {', '.join(missing)}); {_FORMATS}"
    )


def _is_month(value: object) -> bool:
    try:
        parse_month(str(value))
    except PeriodError:
        return False
    return True


def _bad_entry(entries: list[GreenEntry]) -> str | None:
    for e in entries:
        if not _is_month(e.period):
            return f"entry {e.id}: period {e.period!r} is not YYYY-MM"
        if e.kind not in GREEN_KINDS:
            return f"entry {e.id}: kind {e.kind!r} is not one of {', '.join(GREEN_KINDS)}"
        if not isinstance(e.mwh, (int, float)) or not (e.mwh > 0 and math.isfinite(e.mwh)):
            return f"entry {e.id}: mwh {e.mwh!r} is not a positive number"
    return None

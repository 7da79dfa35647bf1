"""The green-energy ledger: certificates retired and green contracts, entered by the operator.

These figures are documentary (docs/pue.md: not metered), so every entry keeps who entered
it and when, and removing one only marks it removed (who/when) — the history stays
for the auditor. The ledger is a small JSON file under ``state_dir/green/``, rewritten
atomically under an exclusive lock.

For hourly matching (issue 19, docs/green-hourly.md) an entry may say when its energy was
produced or delivered: a certificate its production period (a local month, day or hour,
whatever the certificate states; a certificate without one counts as produced in its
month), a contract its hourly delivery (settlement data imported from CSV, or a declared
kW profile per hour of the day). :func:`green_supply` gives them as frames.
"""

from __future__ import annotations

import csv
import fcntl
import getpass
import json
import math
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl

from agent.kpi.compute import GREEN_SCHEMA
from agent.kpi.hourly import CERTIFICATE_SCHEMA, CONTRACT_HOURS_SCHEMA, GreenSupply
from agent.periods import PeriodError, month_bounds, parse_month
from agent.store import atomic_write_bytes

__all__ = [
    "CERTIFICATE_SCHEMA",
    "CONTRACT_HOURS_SCHEMA",
    "GREEN_KINDS",
    "KWH_PER_CERTIFICATE",
    "GreenEntry",
    "GreenLedger",
    "GreenLedgerError",
    "GreenSupply",
    "declared_profile",
    "green_supply",
    "load_green_file",
    "production_granularity",
    "read_profile_csv",
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
    #: Certificates: local production period, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH``.
    production: str | None = None
    #: Contracts: delivery per local hour (``YYYY-MM-DDTHH`` -> kWh) and where it came from.
    profile_kwh: dict[str, float] | None = None
    profile_source: str | None = None

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
        production: str | None = None,
        profile_kwh: dict[str, float] | None = None,
        profile_source: str | None = None,
    ) -> GreenEntry:
        """Record certificates retired / contracted green supply for a local month.

        Args:
            period: Local month the energy is claimed for, ``YYYY-MM``.
            kind: ``certificate`` or ``contract``.
            mwh: Energy in MWh (certificates: whole MWh).
            ref: Certificate / contract reference (claimed once per kind).
            who: Who entered it (default: the login name).
            note: Free text.
            now: When (default: now).
            production: Certificates only: the production period the certificate states.
            profile_kwh: Contracts only: delivery per local hour of ``period``; must sum
                to ``mwh``.
            profile_source: Where the profile came from (``csv:<file>`` or ``declared``).

        Raises:
            GreenLedgerError: for a bad period, kind, amount, reference, production period
                or profile, or a reference already active for the same kind (no energy is
                counted twice).
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
        if production is not None:
            if kind != "certificate":
                raise GreenLedgerError("--production: only certificates state a production period")
            production_granularity(production)
        if profile_kwh is not None:
            if kind != "contract":
                raise GreenLedgerError("a delivery profile belongs to a contract")
            _check_profile(profile_kwh, period, mwh)
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
                production=production,
                profile_kwh=profile_kwh,
                profile_source=profile_source if profile_kwh is not None else None,
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

    def supply(self) -> GreenSupply:
        """Active entries placed in time, for hourly matching (:func:`green_supply`)."""
        return green_supply(self.entries())


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


# -- green supply in time (hourly matching) --------------------------------------------------

_PRODUCTION_FORMATS = (
    (re.compile(r"^\d{4}-\d{2}$"), "month", "%Y-%m"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "day", "%Y-%m-%d"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$"), "hour", "%Y-%m-%dT%H"),
)
_HOUR_LABEL = "%Y-%m-%dT%H"


def production_granularity(label: str) -> str:
    """``month``, ``day`` or ``hour``: how precise a certificate's production period is.

    Raises:
        GreenLedgerError: the label is none of ``YYYY-MM``, ``YYYY-MM-DD``, ``YYYY-MM-DDTHH``.
    """
    for pattern, granularity, fmt in _PRODUCTION_FORMATS:
        if pattern.match(label):
            try:
                datetime.strptime(label, fmt)
            except ValueError:
                break
            return granularity
    raise GreenLedgerError(
        f"--production {label!r}: expected a local month YYYY-MM, day YYYY-MM-DD "
        "or hour YYYY-MM-DDTHH"
    )


def _check_profile(profile_kwh: dict[str, float], period: str, mwh: float) -> None:
    """A contract profile covers hours of ``period`` only, with finite non-negative kWh."""
    if not profile_kwh:
        raise GreenLedgerError("delivery profile: no hours")
    for hour, kwh in profile_kwh.items():
        if not (isinstance(hour, str) and hour.startswith(period) and len(hour) == 13):
            raise GreenLedgerError(
                f"delivery profile: hour {hour!r} is not a local hour YYYY-MM-DDTHH of {period}"
            )
        try:
            datetime.strptime(hour, _HOUR_LABEL)
        except ValueError:
            raise GreenLedgerError(f"delivery profile: hour {hour!r} is not a date") from None
        if not (isinstance(kwh, (int, float)) and math.isfinite(kwh) and kwh >= 0):
            raise GreenLedgerError(f"delivery profile: {hour}: {kwh!r} is not kWh >= 0")
    total_mwh = sum(profile_kwh.values()) / KWH_PER_CERTIFICATE
    if abs(total_mwh - mwh) > 1e-6 * max(1.0, mwh):
        raise GreenLedgerError(
            f"delivery profile sums to {total_mwh:g} MWh but the contract states {mwh:g} MWh"
        )


def read_profile_csv(path: Path, period: str) -> dict[str, float]:
    """Hourly contract delivery from settlement data: CSV ``hour,energy_kwh`` (header row).

    ``hour`` is the local start of the hour, ``YYYY-MM-DDTHH`` or ``YYYY-MM-DD HH:MM``
    (minutes 00); rows of one hour are summed. Only hours of ``period`` are accepted.

    Raises:
        GreenLedgerError: naming the file and line of the first bad row.
    """
    profile: dict[str, float] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"hour", "energy_kwh"} <= set(reader.fieldnames):
                raise GreenLedgerError(f"{path}: expected a header row with hour,energy_kwh")
            for line, row in enumerate(reader, start=2):
                hour = _hour_label(row["hour"] or "")
                try:
                    kwh = float(row["energy_kwh"] or "")
                except ValueError:
                    kwh = math.nan
                if hour is None or not hour.startswith(period):
                    raise GreenLedgerError(
                        f"{path}:{line}: hour {row['hour']!r} is not a local hour of {period}"
                    )
                if not (math.isfinite(kwh) and kwh >= 0):
                    raise GreenLedgerError(
                        f"{path}:{line}: energy_kwh {row['energy_kwh']!r} is not kWh >= 0"
                    )
                profile[hour] = profile.get(hour, 0.0) + kwh
    except OSError as exc:
        raise GreenLedgerError(f"{path}: cannot read profile ({exc.strerror})") from None
    if not profile:
        raise GreenLedgerError(f"{path}: no delivery rows")
    return profile


def _hour_label(text: str) -> str | None:
    text = text.strip()
    for fmt in (_HOUR_LABEL, "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"):
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return None if moment.minute else moment.strftime(_HOUR_LABEL)
    return None


def declared_profile(period: str, kw_by_hour: list[float]) -> dict[str, float]:
    """A declared delivery profile: 24 kW values (local hours 0-23) repeated every day.

    One hour at ``kw`` delivers ``kw`` kWh. The days are those of local month ``period``.

    Raises:
        GreenLedgerError: not 24 finite non-negative values, or a bad month.
    """
    if len(kw_by_hour) != 24 or any(not (math.isfinite(v) and v >= 0) for v in kw_by_hour):
        raise GreenLedgerError("--profile-kw: expected 24 values >= 0 (kW, local hours 0-23)")
    try:
        start, end = month_bounds(period, "UTC")  # calendar days only; no zone involved
    except PeriodError as exc:
        raise GreenLedgerError(f"--{exc}") from None
    profile: dict[str, float] = {}
    day = start
    while day < end:
        for hour, kw in enumerate(kw_by_hour):
            if kw > 0:
                profile[(day + timedelta(hours=hour)).strftime(_HOUR_LABEL)] = float(kw)
        day += timedelta(days=1)
    return profile


def green_supply(entries: list[GreenEntry]) -> GreenSupply:
    """Active entries as :class:`GreenSupply`.

    A certificate without a production period counts as produced over its ledger month.
    """
    active = [e for e in entries if e.active]
    hours = [
        (hour, float(kwh), e.ref)
        for e in active
        if e.kind == "contract" and e.profile_kwh
        for hour, kwh in e.profile_kwh.items()
    ]
    contracts = pl.DataFrame(hours, schema=CONTRACT_HOURS_SCHEMA, orient="row")
    certs = [e for e in active if e.kind == "certificate"]
    labels = [e.production or e.period for e in certs]
    certificates = pl.DataFrame(
        {
            "production": labels,
            "granularity": [production_granularity(label) for label in labels],
            "energy_kwh": [e.mwh * KWH_PER_CERTIFICATE for e in certs],
            "reference": [e.ref for e in certs],
        },
        schema=CERTIFICATE_SCHEMA,
    )
    return GreenSupply(contracts, certificates)

"""A poll plan: which resources to GET each poll, which values to take, which sums to form.

Discovery (:mod:`collectors.redfish.discovery`) builds the plan once; each poll only GETs the
resources in it and evaluates it into a reading frame, so the per-poll cost is a handful of
requests and no tree walking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from agent.readings import READING_SCHEMA, Quality

__all__ = [
    "PROBE_SCHEMA",
    "Derived",
    "Extract",
    "Fetch",
    "PlanEvaluator",
    "PollPlan",
    "PollResult",
    "is_number",
    "read_path",
]

#: A reading frame plus ``source``: the resource path(s) each value was read from.
PROBE_SCHEMA: pl.Schema = pl.Schema({**dict(READING_SCHEMA), "source": pl.String()})

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Extract:
    """Take the number at ``path`` in a resource as ``point`` in ``quantity`` units."""

    path: tuple[str | int, ...]
    point: str
    quantity: str
    unit_scale: float = 1.0
    #: Alternative paths tried in order when ``path`` holds no value (EnergyJoules for kWh).
    fallbacks: tuple[tuple[tuple[str | int, ...], float], ...] = ()


@dataclass(frozen=True, slots=True)
class Fetch:
    """One resource GET per poll and the values taken from it."""

    path: str
    extracts: tuple[Extract, ...]


@dataclass(frozen=True, slots=True)
class Derived:
    """A reading formed from others: their sum (only when every part was read this poll)."""

    point: str
    quantity: str
    parts: tuple[str, ...]
    #: Flag the result ``Quality.DERIVED`` (a sum of several readings, not a device value).
    derived: bool = True


@dataclass
class PollPlan:
    """What to read from one device each poll."""

    fetches: list[Fetch] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)
    #: Human-readable lines: what discovery found and chose (printed by the probe).
    summary: list[str] = field(default_factory=list)
    #: Sub-resources that failed during discovery (skipped; reported with the first poll).
    problems: list[Exception] = field(default_factory=list)

    def points(self) -> list[str]:
        """Every point the plan yields, in order."""
        direct = [e.point for f in self.fetches for e in f.extracts]
        return direct + [d.point for d in self.derived]


@dataclass
class PollResult:
    """The readings of one poll and the per-resource problems met on the way."""

    frame: pl.DataFrame
    errors: list[Exception]


def read_path(doc: Any, path: tuple[str | int, ...]) -> Any:
    """Follow ``path`` into a JSON document; an excerpt object yields its ``Reading``.

    Returns:
        The value, ``None`` when the device reports null, or a sentinel when absent.
    """
    node = doc
    for key in path:
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                return _MISSING
            node = node[key]
        else:
            if not isinstance(node, dict) or key not in node:
                return _MISSING
            node = node[key]
    if isinstance(node, dict):
        return node.get("Reading", _MISSING)
    return node


def is_number(value: Any) -> bool:
    """A JSON number (not a bool) that is finite as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range: a hostile or broken BMC body
        return False


def _excerpt(value: Any, limit: int = 60) -> str:
    """A short repr for an error message: a hostile body may hold a megabyte string."""
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"  # str() of 5,000 digits raises
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class PlanEvaluator:
    """Accumulates values from fetched documents and turns them into a frame."""

    def __init__(self, device: str) -> None:
        """Start an empty evaluation for ``device``."""
        self.device = device
        self.points: list[str] = []
        self.quantities: list[str] = []
        self.values: list[float] = []
        self.qualities: list[int] = []
        self.sources: list[str] = []
        self._index: dict[str, int] = {}
        self.problems: list[str] = []

    def take(self, fetch: Fetch, doc: dict[str, Any]) -> None:
        """Take the plan's values from one fetched document."""
        for extract in fetch.extracts:
            value = read_path(doc, extract.path)
            scale = extract.unit_scale
            for alt_path, alt_scale in extract.fallbacks:
                if value is not _MISSING and value is not None:
                    break
                value, scale = read_path(doc, alt_path), alt_scale
            if value is _MISSING or value is None:
                continue  # the device has no value this poll: nothing to report
            scaled = float(value) * scale if is_number(value) else math.nan
            if not math.isfinite(scaled):
                where = ".".join(str(k) for k in extract.path)
                self.problems.append(
                    f"{fetch.path}: {where} is {_excerpt(value)}, expected a finite number"
                )
                continue
            self._add(extract.point, extract.quantity, scaled, 0, fetch.path)

    def finish(self, plan: PollPlan, ts: datetime) -> pl.DataFrame:
        """Form the derived readings and return the frame (:data:`PROBE_SCHEMA`)."""
        for d in plan.derived:
            idx = [self._index.get(p) for p in d.parts]
            if not idx or any(i is None for i in idx):
                continue  # a partial sum would understate the total: leave it out
            rows = [i for i in idx if i is not None]
            quality = 0
            for i in rows:
                quality |= self.qualities[i]
            if d.derived:
                quality |= Quality.DERIVED
            source = " + ".join(self.sources[i] for i in rows)
            total = sum(self.values[i] for i in rows)
            if not math.isfinite(total):  # finite parts can still overflow when added
                self.problems.append(f"{source}: the sum for {d.point} overflows")
                continue
            self._add(d.point, d.quantity, total, quality, source)
        n = len(self.points)
        # Redfish resources carry no reading time we can trust: the receive time is used.
        return pl.DataFrame(
            {
                "ts": [ts] * n,
                "device": [self.device] * n,
                "point": self.points,
                "quantity": self.quantities,
                "value": self.values,
                "quality": [q | Quality.RECEIVE_TIME for q in self.qualities],
                "source": self.sources,
            },
            schema=PROBE_SCHEMA,
        )

    def _add(self, point: str, quantity: str, value: float, quality: int, source: str) -> None:
        if point in self._index:
            return  # first value wins (an alternative source of the same point)
        self._index[point] = len(self.points)
        self.points.append(point)
        self.quantities.append(quantity)
        self.values.append(value)
        self.qualities.append(quality)
        self.sources.append(source)

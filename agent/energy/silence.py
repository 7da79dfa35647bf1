"""Silent periods: when a meter sent nothing, and how its energy was filled meanwhile.

Interval flags cannot show a silent meter in imported history: 15-minute readings make
every interval ``INTERPOLATED|IMPORTED``, whether the meter was silent for 15 minutes or
for three hours. So silences are found from the readings' own timestamps, where the
aggregator has them (:func:`find_silences`, per journal page; kept in the store), and
described from the stored interval rows when shown (:func:`describe_silences`):

* a **silence** is the span between two consecutive readings of a meter (any of its
  points) that is at least ``min_s`` long (default 15 minutes) *and* longer than 1.5 x
  the meter's usual spacing (the median of its spacings shorter than ``min_s``; so a
  meter read every 15 minutes is not silent between two readings 15 minutes apart);
* how its energy was **filled**: ``estimated`` (from power readings: a flag
  ``ESTIMATED`` on an interval of the span), ``interpolated`` (the register difference
  spread over the span, which counts as covered), or ``missing`` (part of the span is
  uncovered: no energy, or energy not counted as measured).

A live meter's last reading and usual spacing are carried from page to page
(:class:`SilenceTracker`), so a silence across two journal pages is found once.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from agent.energy.config import meter_table
from agent.energy.core import ENGINE, resolve_readings
from agent.schemas import SILENCE_SCHEMA, IntervalFlag
from agent.site import Site

__all__ = [
    "DEFAULT_SILENCE_S",
    "SILENCE_VIEW_SCHEMA",
    "SilenceFinder",
    "SilenceTracker",
    "describe_silences",
    "find_silences",
]

#: Shortest silence listed (seconds), unless the aggregator's ``silence_s`` says otherwise.
DEFAULT_SILENCE_S = 900.0
#: A spacing up to this multiple of the usual one is jitter, not a silence.
_JITTER = 1.5
#: Covered fraction from which a silence counts as filled (float noise below 1).
_FULL = 0.999

#: A silence as shown (``kpi --json``, the report): the stored row, its length, and how
#: its energy was filled within the period shown.
SILENCE_VIEW_SCHEMA = pl.Schema(
    {
        **SILENCE_SCHEMA,
        "minutes": pl.Float64(),
        "fill": pl.String(),  # interpolated | estimated | missing
        "covered": pl.Float64(),  # covered fraction of the span within the period, 0..1
        "energy_kwh": pl.Float64(),  # energy counted for the span within the period
    }
)


class SilenceTracker:
    """Live meters' last reading time and usual spacing (µs), carried between pages.

    Arrays indexed like the aggregator's meter indexes (meter names in sorted order):
    ``last`` is -1 and ``usual`` 0 where nothing is known.
    """

    def __init__(
        self,
        meters: list[str] | None = None,
        last: np.ndarray | None = None,
        usual: np.ndarray | None = None,
    ) -> None:
        """An empty tracker, or one with these arrays (``to_json``'s fields)."""
        self.meters = list(meters or [])
        n = len(self.meters)
        self.last = last if last is not None else np.full(n, -1, dtype=np.int64)
        self.usual = usual if usual is not None else np.zeros(n, dtype=np.int64)

    def __eq__(self, other: object) -> bool:
        """Same meters, reading times and spacings."""
        return (
            isinstance(other, SilenceTracker)
            and self.meters == other.meters
            and np.array_equal(self.last, other.last)
            and np.array_equal(self.usual, other.usual)
        )

    __hash__ = None  # type: ignore[assignment]

    def aligned(self, meters: list[str]) -> SilenceTracker:
        """The same knowledge for another meter list (a changed site model)."""
        if meters == self.meters:
            return self
        index = {name: i for i, name in enumerate(self.meters)}
        out = SilenceTracker(meters)
        for j, name in enumerate(meters):
            i = index.get(name)
            if i is not None:
                out.last[j], out.usual[j] = self.last[i], self.usual[i]
        return out

    def to_json(self) -> dict[str, list[str] | list[int]]:
        """For the aggregator's state file."""
        return {
            "meters": self.meters,
            "last": self.last.tolist(),
            "usual": self.usual.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, list[str] | list[int]] | None) -> SilenceTracker:
        """From :meth:`to_json` output (``None``: nothing carried)."""
        if not data:
            return cls()
        meters = [str(m) for m in data["meters"]]
        last = np.asarray(data["last"], dtype=np.int64)
        usual = np.asarray(data["usual"], dtype=np.int64)
        return cls(meters, last, usual)


class SilenceFinder:
    """Finds silences in reading batches of one site (the meter lookup is built once).

    Readings are mapped to meter indexes the way the aggregator maps them
    (:func:`agent.energy.core.resolve_readings`); the search is a few vectorised passes
    over the page's reading times, small beside the aggregation itself.
    """

    def __init__(
        self,
        site: Site,
        *,
        min_s: float = DEFAULT_SILENCE_S,
        tracker: SilenceTracker | None = None,
    ) -> None:
        """Find silences of at least ``min_s``; ``tracker`` carries live meters between pages."""
        self.site = site
        self.min_us = int(min_s * 1e6)
        self._meters = meter_table(site)
        #: ``mi`` -> meter name (``mi`` is the meter's rank in name order).
        self._names = sorted(set(self._meters["meter"].to_list()))
        if tracker is not None and tracker.meters != self._names:
            # Re-index what is carried to this site's meters, in place (the caller keeps it).
            aligned = tracker.aligned(self._names)
            tracker.meters, tracker.last, tracker.usual = (
                aligned.meters,
                aligned.last,
                aligned.usual,
            )
        self.tracker = tracker

    def find(self, readings: pl.DataFrame, *, imported: bool = False) -> pl.DataFrame:
        """The silences in ``readings`` (:data:`agent.schemas.SILENCE_SCHEMA`)."""
        reads = (
            resolve_readings(readings.lazy(), self._meters)
            .filter(pl.col("value").is_finite())
            .select("mi", "ts")
            .collect(engine=ENGINE)
        )
        return self.find_resolved(reads["mi"].to_numpy(), reads["ts"].to_numpy(), imported=imported)

    def find_resolved(
        self, mi: np.ndarray, ts: np.ndarray, *, imported: bool = False
    ) -> pl.DataFrame:
        """:meth:`find` over resolved reads: meter indexes and times (µs), any order."""
        order = np.argsort(mi, kind="stable")  # batches come in time order: ts mostly sorted
        m, t = mi[order].astype(np.int64), ts[order]
        same = m[1:] == m[:-1]
        if np.any(same & (t[1:] < t[:-1])):  # late readings: sort by time too
            order = np.lexsort((ts, mi))
            m, t = mi[order].astype(np.int64), ts[order]
            same = m[1:] == m[:-1]
        tracker = self.tracker
        if tracker is not None and len(m):
            keep = t >= tracker.last[m]  # a late reading (before the carried one) is ignored
            if not keep.all():
                m, t = m[keep], t[keep]
                same = m[1:] == m[:-1]
        if len(m) == 0:
            return pl.DataFrame(schema=SILENCE_SCHEMA)
        first = np.flatnonzero(np.r_[True, ~same])  # the first read of each meter
        final = np.r_[first[1:], len(m)] - 1
        run = m[first]
        dt = t[1:] - t[:-1]
        # Candidate spans (t0, t1): inside the batch, and from the carried last read.
        inner = np.flatnonzero(same & (dt >= self.min_us))
        c_mi, c_t0, c_t1 = m[inner + 1], t[inner], t[inner + 1]
        if tracker is not None:
            before = tracker.last[run]
            edge = (before >= 0) & (t[first] - before >= self.min_us)
            c_mi = np.r_[c_mi, run[edge]]
            c_t0 = np.r_[c_t0, before[edge]]
            c_t1 = np.r_[c_t1, t[first][edge]]
        spans: list[tuple[int, int, int]] = []
        if len(c_mi):
            spans = self._confirm(m, t, same, dt, c_mi, c_t0, c_t1)
        if tracker is not None:
            tracker.last[run] = t[final]
            # The usual spacing: the last spacing of the meter shorter than the shortest
            # silence (a cheap, current estimate of its cadence), else the one carried.
            has_two = final > first
            recent = np.where(has_two, t[final] - t[np.maximum(final - 1, 0)], 0)
            known = has_two & (recent > 0) & (recent < self.min_us)
            tracker.usual[run[known]] = recent[known]
        return self._frame(spans, imported)

    def _confirm(
        self,
        m: np.ndarray,
        t: np.ndarray,
        same: np.ndarray,
        dt: np.ndarray,
        c_mi: np.ndarray,
        c_t0: np.ndarray,
        c_t1: np.ndarray,
    ) -> list[tuple[int, int, int]]:
        """The candidates longer than 1.5 x their meter's usual spacing."""
        spans = []
        spacing_of: dict[int, int] = {}
        for meter, t0, t1 in zip(c_mi.tolist(), c_t0.tolist(), c_t1.tolist(), strict=True):
            if meter not in spacing_of:
                mine = same & (m[1:] == meter)
                gaps = dt[mine]
                short = gaps[gaps < self.min_us]
                carried = int(self.tracker.usual[meter]) if self.tracker is not None else 0
                if len(short):
                    spacing_of[meter] = int(np.median(short))
                elif carried > 0:
                    spacing_of[meter] = carried
                else:
                    spacing_of[meter] = int(gaps.min()) if len(gaps) else t1 - t0
            if t1 - t0 > _JITTER * spacing_of[meter]:
                spans.append((meter, t0, t1))
        return spans

    def _frame(self, spans: list[tuple[int, int, int]], imported: bool) -> pl.DataFrame:
        if not spans:
            return pl.DataFrame(schema=SILENCE_SCHEMA)
        return (
            pl.DataFrame(
                {
                    "meter": [self._names[mi] for mi, _, _ in spans],
                    "start": [t0 for _, t0, _ in spans],
                    "end": [t1 for _, _, t1 in spans],
                },
                schema={"meter": pl.String(), "start": pl.Int64(), "end": pl.Int64()},
            )
            .with_columns(
                pl.from_epoch(c, "us").dt.replace_time_zone("UTC").alias(c)
                for c in ("start", "end")
            )
            .with_columns(
                pl.col("start")
                .dt.convert_time_zone(self.site.timezone)
                .dt.strftime("%Y-%m")
                .alias("period"),
                pl.lit(imported).alias("imported"),
            )
            .select(SILENCE_SCHEMA.names())
            .cast(SILENCE_SCHEMA)
            .sort("start", "meter")
        )


def find_silences(
    readings: pl.DataFrame,
    site: Site,
    *,
    min_s: float = DEFAULT_SILENCE_S,
    tracker: SilenceTracker | None = None,
    imported: bool = False,
) -> pl.DataFrame:
    """The silences in a batch of readings (:data:`agent.schemas.SILENCE_SCHEMA`).

    Args:
        readings: Readings (``READING_SCHEMA``).
        site: The site model (which device points are meters; its time zone).
        min_s: Shortest silence listed.
        tracker: Live pages: each meter's last reading and spacing before this batch,
            updated in place. ``None``: the batch stands alone (an import).
        imported: Mark the silences as found in imported history.
    """
    return SilenceFinder(site, min_s=min_s, tracker=tracker).find(readings, imported=imported)


def describe_silences(
    silences: pl.DataFrame, intervals: pl.LazyFrame, start: datetime, end: datetime
) -> pl.DataFrame:
    """The silences overlapping ``[start, end)``, with how their energy was filled there.

    Args:
        silences: :data:`SILENCE_SCHEMA` rows (any period).
        intervals: Interval rows (``INTERVAL_SCHEMA``) covering at least the overlap.
        start: Period start (UTC).
        end: Period end (exclusive).

    Returns:
        :data:`SILENCE_VIEW_SCHEMA` rows sorted by start and meter: the span and its
        length as recorded; fill, covered fraction and energy for its part in the period.
    """
    shown = silences.filter((pl.col("end") > start) & (pl.col("start") < end)).with_columns(
        pl.max_horizontal(pl.col("start"), pl.lit(start).dt.cast_time_unit("us")).alias("_a"),
        pl.min_horizontal(pl.col("end"), pl.lit(end).dt.cast_time_unit("us")).alias("_b"),
    )
    if shown.height == 0:
        return pl.DataFrame(schema=SILENCE_VIEW_SCHEMA)
    lo = shown["_a"].min()
    hi = shown["_b"].max()
    assert isinstance(lo, datetime) and isinstance(hi, datetime)
    rows = (
        intervals.filter(
            pl.col("meter").is_in(shown["meter"].unique().implode())
            & (pl.col("interval_end") > lo)
            & (pl.col("interval_start") < hi)
        )
        .select("meter", "interval_start", "interval_end", "energy_kwh", "coverage", "flags")
        .collect()
    )
    span_us = (pl.col("_b") - pl.col("_a")).dt.total_microseconds()
    overlap_us = (
        pl.min_horizontal("interval_end", "_b") - pl.max_horizontal("interval_start", "_a")
    ).dt.total_microseconds()
    length_us = (pl.col("interval_end") - pl.col("interval_start")).dt.total_microseconds()
    keyed = shown.with_row_index("_i")
    inside = (
        keyed.select("_i", "meter", "_a", "_b")
        .join(rows, on="meter", how="inner")
        .filter((pl.col("interval_end") > pl.col("_a")) & (pl.col("interval_start") < pl.col("_b")))
        # Summed in time order: the same figure from the store and from a report's rows.
        .sort("_i", "interval_start")
        .group_by("_i", maintain_order=True)
        .agg(
            (pl.col("coverage") * overlap_us).sort_by("interval_start").sum().alias("_covered_us"),
            (pl.col("energy_kwh") * overlap_us / length_us)
            .sort_by("interval_start")
            .sum()
            .alias("energy_kwh"),
            ((pl.col("flags").cast(pl.Int32) & int(IntervalFlag.ESTIMATED)) != 0)
            .any()
            .alias("_estimated"),
        )
    )
    described = keyed.join(inside, on="_i", how="left").with_columns(
        ((pl.col("end") - pl.col("start")).dt.total_microseconds() / 6e7).alias("minutes"),
        (pl.col("_covered_us").fill_null(0.0) / span_us).clip(0.0, 1.0).alias("covered"),
        pl.col("energy_kwh").fill_null(0.0),
    )
    return (
        described.with_columns(
            pl.when(pl.col("_estimated").fill_null(False))
            .then(pl.lit("estimated"))
            .when(pl.col("covered") >= _FULL)
            .then(pl.lit("interpolated"))
            .otherwise(pl.lit("missing"))
            .alias("fill")
        )
        .select(SILENCE_VIEW_SCHEMA.names())
        .cast(SILENCE_VIEW_SCHEMA)
        .sort("start", "meter")
    )

"""Batch and incremental interval energy built on the pipelines of :mod:`agent.energy.core`.

:func:`interval_energy` is the pure function (all readings in, all intervals out) the
report's ``verify`` re-runs. :class:`IntervalEngine` produces the same intervals
incrementally: it emits an interval only once no later reading can change it, and
carries the few readings the open intervals still depend on (with the statuses
already decided for them) in a small state that is saved next to the journal
cursor. Feeding the same readings in any batches yields the same intervals as one
uninterrupted run (tested), provided each meter's readings arrive in time order;
a reading older than what a meter has already settled is *late*: it is dropped and
counted (history belongs in ``pue-agent import``, which is aggregated separately).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from agent.energy.config import EnergyConfig, meter_table
from agent.energy.core import (
    ENGINE,
    INTERVAL_STORE_SCHEMA,
    READS_SCHEMA,
    STATUS_INVALID,
    STATUS_KEPT,
    intervals_from_parts,
    meter_attributes,
    power_segments,
    power_status,
    register_segments,
    register_status,
    resolve_readings,
    to_interval_schema,
)
from agent.schemas import INTERVAL_SCHEMA
from agent.site import Site

__all__ = ["CARRY_SCHEMA", "MARKS_SCHEMA", "EngineState", "IntervalEngine", "interval_energy"]

#: Carried readings as persisted (meter names, not indexes, so a state survives a
#: reordered site file).
CARRY_SCHEMA = pl.Schema(
    {
        "meter": pl.String(),
        "track": pl.String(),
        "ts": pl.Int64(),
        "value": pl.Float64(),
        "imported": pl.Boolean(),
        "fixed": pl.UInt8(),
    }
)

#: Per meter: intervals before ``cut_us`` are emitted; readings at or before the
#: horizons are settled (a later reading at or before them is late).
MARKS_SCHEMA = pl.Schema(
    {
        "meter": pl.String(),
        "cut_us": pl.Int64(),
        "horizon_energy_us": pl.Int64(),
        "horizon_power_us": pl.Int64(),
    }
)


_METHOD = pl.Enum(["register", "power_integration"])


def _with_attributes(reads: pl.LazyFrame, attributes: pl.DataFrame) -> pl.LazyFrame:
    """Add the meter attributes the checks need (``mi`` indexes the mi-sorted table)."""
    return reads.with_columns(
        pl.lit(attributes["method"].cast(_METHOD)).gather(pl.col("mi")).alias("method"),
        *(
            pl.lit(attributes[name]).gather(pl.col("mi")).alias(name)
            for name in ("rating_kw", "modulus_kwh", "resolution_kwh")
        ),
    )


def _ordered_track(reads: pl.LazyFrame, track: str) -> pl.LazyFrame:
    """One track's reads sorted by meter and time, repeated timestamps dropped.

    Earlier rows win on a repeated ``(meter, ts)``: carried reads come first, so a
    re-sent reading never replaces one whose status is already settled. After a stable
    sort a repeat is the row right after its twin: cheaper than a hash ``unique``. The
    sort moves numeric columns only (the track is put back as a constant).
    """
    return (
        reads.filter(pl.col("track") == track)
        .drop("track")
        .sort("mi", "ts", maintain_order=True)
        .filter(
            ~(
                (pl.col("mi") == pl.col("mi").shift(1)) & (pl.col("ts") == pl.col("ts").shift(1))
            ).fill_null(False)
        )
        .with_columns(pl.lit(track).alias("track"))
    )


def _track_status(
    reads: pl.LazyFrame,
    track: str,
    attributes: pl.DataFrame,
    config: EnergyConfig,
    *,
    assume_ordered: bool,
) -> pl.LazyFrame:
    """One track of an in-memory batch, prepared and with statuses, in one plan.

    Readings usually arrive in time order per meter (carried reads first, then the
    batch). Then a stable sort by ``mi`` alone already gives the ``(mi, ts)`` order (and
    keeps repeated timestamps in arrival order, as the full sort does). With
    ``assume_ordered`` the plan sorts by ``mi`` only and reports in a constant
    ``_ordered`` column whether that held (the caller re-runs with the full sort when it
    did not); otherwise it sorts by ``mi, ts`` (``_ordered`` is then true).
    """
    rows = reads.filter(pl.col("track") == track).drop("track")
    same = pl.col("mi") == pl.col("mi").shift(1)
    if assume_ordered:
        by_meter = rows.sort("mi", maintain_order=True).with_columns(
            (~same | (pl.col("ts") >= pl.col("ts").shift(1)))
            .fill_null(True)
            .all()
            .alias("_ordered")
        )
    else:
        by_meter = rows.sort("mi", "ts", maintain_order=True).with_columns(
            pl.lit(True).alias("_ordered")
        )
    prepared = (
        by_meter.filter(~(same & (pl.col("ts") == pl.col("ts").shift(1))).fill_null(False))
        .with_columns(pl.lit(track).alias("track"))
        .pipe(_with_attributes, attributes)
    )
    if track == "energy":
        return register_status(prepared, config)
    return power_status(prepared, config)


def _prepare(reads: pl.LazyFrame, attributes: pl.DataFrame) -> pl.LazyFrame:
    """Join meter attributes, order by track/meter/time, drop repeated timestamps.

    Args:
        reads: Reads in ``READS_SCHEMA`` (carried ones first).
        attributes: :func:`meter_attributes`, collected and sorted by ``mi``.

    Returns:
        Register reads sorted by ``mi, ts``, then power reads sorted by ``mi, ts``
        (two integer-key sorts of half the rows are cheaper than one sort on
        ``mi, track, ts``; every step after this works on one track at a time).
    """
    return pl.concat(
        [
            _ordered_track(reads, "energy").pipe(_with_attributes, attributes),
            _ordered_track(reads, "power").pipe(_with_attributes, attributes),
        ]
    )


def _statuses(prepared: pl.LazyFrame, config: EnergyConfig) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Register and power reads with their statuses (each sorted by ``mi, ts``)."""
    energy = register_status(prepared.filter(pl.col("track") == "energy"), config)
    power = power_status(prepared.filter(pl.col("track") == "power"), config)
    return energy, power


def _parts(energy: pl.LazyFrame, power: pl.LazyFrame, config: EnergyConfig) -> pl.LazyFrame:
    """Interval parts (``mi, k, …``, sorted) from reads with statuses."""
    segments, jumps = register_segments(energy, power, config)
    integrated = power_segments(power.filter(pl.col("method") == "power_integration"), config)
    rejected = pl.concat(
        [
            energy.filter(pl.col("status") != STATUS_KEPT).select("mi", "ts"),
            power.filter(pl.col("status") != STATUS_KEPT).select("mi", "ts"),
            jumps,
        ]
    )
    columns = ["mi", "t0", "t1", "e_kwh", "p0", "p1", "covered", "flags"]
    # Both are sorted by (mi, t0) and no meter has both kinds: a merge keeps that order.
    return intervals_from_parts(
        segments.select(columns).merge_sorted(integrated.select(columns), key="mi"),
        rejected,
        config.interval_us,
    )


def interval_energy(
    readings: pl.LazyFrame,
    site: Site,
    config: EnergyConfig | None = None,
    *,
    with_rejected_counts: bool = False,
) -> pl.LazyFrame:
    """Interval energy per meter from raw readings (the pure, whole-history function).

    Signature (stable; the report's ``verify`` and the benchmarks call it)::

        interval_energy(readings: pl.LazyFrame, site: Site,
                        config: EnergyConfig | None = None, *,
                        with_rejected_counts: bool = False) -> pl.LazyFrame

    Args:
        readings: Readings in ``READING_SCHEMA`` (any order; readings of points that
            are not site meters are ignored).
        site: The site model (meters, ratings, register widths, time zone).
        config: Energy-accounting choices (default :class:`EnergyConfig`).
        with_rejected_counts: Add the ``rejected_readings`` column
            (:data:`agent.energy.core.INTERVAL_STORE_SCHEMA`).

    Returns:
        Rows in :data:`agent.schemas.INTERVAL_SCHEMA`, sorted by meter and interval:
        every interval touched by a segment or a rejected reading, including the
        partly covered last one of each meter.
    """
    config = config or EnergyConfig()
    config.check_site(site)
    meters = meter_table(site)
    attributes = meter_attributes(meters).collect()
    prepared = _prepare(resolve_readings(readings, meters), attributes)
    out = to_interval_schema(
        _parts(*_statuses(prepared, config), config), attributes.lazy(), config.interval_us
    )
    if not with_rejected_counts:
        out = out.select(INTERVAL_SCHEMA.names())
    return out


@dataclass
class EngineState:
    """What an incremental run carries between batches (persisted by the sink)."""

    carry: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CARRY_SCHEMA))
    marks: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MARKS_SCHEMA))


@dataclass
class IntervalEngine:
    """Incremental interval energy: feed reading batches, get the intervals they settle.

    Example::

        engine = IntervalEngine(site, EnergyConfig())
        for batch in batches:
            rows = engine.feed(batch)        # INTERVAL_STORE_SCHEMA rows now final
        state = engine.state                 # persist with the cursor; restore with
        IntervalEngine(site, config, state)  # ... and continue exactly where it stood
    """

    site: Site
    config: EnergyConfig = field(default_factory=EnergyConfig)
    state: EngineState = field(default_factory=EngineState)
    #: Readings dropped because their meter had already settled a later time.
    late_readings: int = 0

    def __post_init__(self) -> None:
        self.config.check_site(self.site)
        self._meters = meter_table(self.site)
        self._attributes = meter_attributes(self._meters).collect().sort("mi")
        self._names = self._attributes.select("mi", "meter")

    def _to_mi(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(self._names, on="meter", how="inner").drop("meter")

    def _to_names(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(self._names, on="mi", how="inner").drop("mi")

    def _per_meter(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (some ``mi`` rows) widened to one row per meter index, in ``mi`` order."""
        return self._attributes.select("mi", "method").join(
            frame, on="mi", how="left", maintain_order="left"
        )

    def feed(self, readings: pl.DataFrame) -> pl.DataFrame:
        """Take a batch of readings; return the intervals that are now final.

        Returns:
            Rows in :data:`agent.energy.core.INTERVAL_STORE_SCHEMA`, sorted by meter
            and interval.
        """
        interval_us = self.config.interval_us
        marks = self._per_meter(self._to_mi(self.state.marks))
        fresh = (
            resolve_readings(readings.lazy(), self._meters)
            .pipe(_lookup, marks, ("horizon_energy_us", "horizon_power_us"))
            .pipe(_drop_late)
            .collect(engine=ENGINE)
        )
        self.late_readings += int(fresh["_late"].sum())
        reads = pl.concat(
            [
                self._to_mi(self.state.carry).select(READS_SCHEMA.names()).cast(READS_SCHEMA),
                fresh.filter(~pl.col("_late")).select(READS_SCHEMA.names()),
            ]
        ).lazy()
        # Ordering, repeated timestamps, attributes and statuses of both tracks: one plan.
        energy, power = pl.collect_all(
            [
                _track_status(reads, track, self._attributes, self.config, assume_ordered=True)
                for track in ("energy", "power")
            ],
            engine=ENGINE,
        )
        if not (_all_true(energy["_ordered"]) and _all_true(power["_ordered"])):
            energy, power = pl.collect_all(
                [
                    _track_status(reads, track, self._attributes, self.config, assume_ordered=False)
                    for track in ("energy", "power")
                ],
                engine=ENGINE,
            )
        energy, power = energy.drop("_ordered"), power.drop("_ordered")
        parts, horizons = pl.collect_all(
            [
                _parts(energy.lazy(), power.lazy(), self.config),
                _horizons(energy.lazy(), power.lazy()),
            ],
            engine=ENGINE,
        )
        meters = self._per_meter(
            marks.drop("method").join(horizons, on="mi", how="left", maintain_order="left")
        ).pipe(_advance_marks, interval_us)
        emitted = (
            parts.lazy()
            .pipe(_lookup, meters, ("cut_us", "new_cut"))
            .filter(
                pl.col("new_cut").is_not_null()
                & (pl.col("k") * interval_us < pl.col("new_cut"))
                & (pl.col("cut_us").is_null() | (pl.col("k") * interval_us >= pl.col("cut_us")))
            )
            .drop("cut_us", "new_cut")
        )
        out, anchors = pl.collect_all(
            [
                to_interval_schema(emitted, self._attributes.lazy(), interval_us),
                _anchors(energy.lazy(), power.lazy(), meters),
            ],
            engine=ENGINE,
        )
        meters = meters.join(anchors, on="mi", how="left", maintain_order="left")
        carry = pl.concat(
            [
                energy.lazy().pipe(_carry_energy, meters).select(READS_SCHEMA.names()),
                power.lazy().pipe(_carry_power, meters).select(READS_SCHEMA.names()),
            ]
        ).collect(engine=ENGINE)
        self.state = EngineState(
            carry=self._to_names(carry).select(CARRY_SCHEMA.names()),
            marks=self._to_names(
                meters.select(
                    "mi",
                    pl.col("new_cut").alias("cut_us"),
                    "horizon_energy_us",
                    "horizon_power_us",
                )
            )
            .filter(
                pl.any_horizontal(
                    pl.col("cut_us", "horizon_energy_us", "horizon_power_us").is_not_null()
                )
            )
            .select(MARKS_SCHEMA.names()),
        )
        return out.select(INTERVAL_STORE_SCHEMA.names())


def _all_true(flags: pl.Series) -> bool:
    """Whether a constant ``_ordered`` column is true (an empty frame is ordered)."""
    return flags.is_empty() or bool(flags[0])


def _lookup(frame: pl.LazyFrame, meters: pl.DataFrame, names: tuple[str, ...]) -> pl.LazyFrame:
    """Add per-meter columns of ``meters`` (one row per ``mi``, in ``mi`` order) by gather."""
    return frame.with_columns(pl.lit(meters[name]).gather(pl.col("mi")) for name in names)


def _drop_late(fresh: pl.LazyFrame) -> pl.LazyFrame:
    """Flag readings at or before their meter's settled horizon (``_late``)."""
    horizon = (
        pl.when(pl.col("track") == "energy")
        .then(pl.col("horizon_energy_us"))
        .otherwise(pl.col("horizon_power_us"))
    )
    return fresh.with_columns(
        (horizon.is_not_null() & (pl.col("ts") <= horizon)).alias("_late")
    ).drop("horizon_energy_us", "horizon_power_us")


def _horizons(energy: pl.LazyFrame, power: pl.LazyFrame) -> pl.LazyFrame:
    """Per meter: the last finite, last settled register read, the last power read.

    ``_last``: last finite register read; ``_he``: the last kept register read with a
    finite successor; ``_hp``: the last valid power read.
    """
    last = pl.col("ts").filter(pl.col("status") != STATUS_INVALID).max()
    settled = pl.col("ts").filter((pl.col("status") == STATUS_KEPT) & (pl.col("ts") < last)).max()
    by_energy = energy.group_by("mi").agg(last.alias("_last"), settled.alias("_he"))
    by_power = power.group_by("mi").agg(
        pl.col("ts").filter(pl.col("status") == STATUS_KEPT).max().alias("_hp")
    )
    return by_energy.join(by_power, on="mi", how="full", coalesce=True)


def _advance_marks(meters: pl.DataFrame, interval_us: int) -> pl.DataFrame:
    """New horizons and the new cut (intervals before it are final) per meter."""
    return meters.with_columns(
        pl.max_horizontal("horizon_energy_us", "_he").alias("horizon_energy_us"),
        pl.max_horizontal("horizon_power_us", "_hp").alias("horizon_power_us"),
    ).with_columns(
        pl.max_horizontal(
            "cut_us",
            (
                pl.when(pl.col("method") == "register")
                .then(pl.col("horizon_energy_us"))
                .otherwise(pl.col("horizon_power_us"))
                // interval_us
            )
            * interval_us,
        ).alias("new_cut")
    )


def _anchors(energy: pl.LazyFrame, power: pl.LazyFrame, meters: pl.DataFrame) -> pl.LazyFrame:
    """Per meter: where the carry starts.

    ``_k0`` / ``_p0``: the last kept register / power read at or before the new cut.
    """
    anchor = (
        pl.col("ts")
        .filter(
            (pl.col("status") == STATUS_KEPT)
            & pl.col("new_cut").is_not_null()
            & (pl.col("ts") <= pl.col("new_cut"))
        )
        .max()
    )
    by_energy = energy.pipe(_lookup, meters, ("new_cut",)).group_by("mi").agg(anchor.alias("_k0"))
    by_power = power.pipe(_lookup, meters, ("new_cut",)).group_by("mi").agg(anchor.alias("_p0"))
    return by_energy.join(by_power, on="mi", how="full", coalesce=True)


def _carry_energy(energy: pl.LazyFrame, meters: pl.DataFrame) -> pl.LazyFrame:
    """Register reads from the anchor on, statuses fixed where a finite successor exists."""
    return (
        energy.pipe(_lookup, meters, ("_k0", "_last"))
        .filter(pl.col("_k0").is_null() | (pl.col("ts") >= pl.col("_k0")))
        .with_columns(
            pl.when(pl.col("ts") < pl.col("_last"))
            .then(pl.col("status"))
            .otherwise(pl.lit(None, pl.UInt8))
            .alias("fixed")
        )
    )


def _carry_power(power: pl.LazyFrame, meters: pl.DataFrame) -> pl.LazyFrame:
    """Power reads after the register anchor (register meters) or from the power anchor."""
    return (
        power.pipe(_lookup, meters, ("_k0", "_p0"))
        .filter(
            pl.when(pl.col("method") == "register")
            .then(pl.col("_k0").is_null() | (pl.col("ts") > pl.col("_k0")))
            .otherwise(pl.col("_p0").is_null() | (pl.col("ts") >= pl.col("_p0")))
        )
        .with_columns(pl.lit(None, pl.UInt8).alias("fixed"))
    )

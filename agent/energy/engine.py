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


def _prepare(reads: pl.LazyFrame, attributes: pl.LazyFrame) -> pl.LazyFrame:
    """Join meter attributes, order by meter/track/time, drop repeated timestamps.

    Earlier rows win on a repeated ``(meter, track, ts)``: carried reads come first,
    so a re-sent reading never replaces one whose status is already settled.
    """
    return (
        reads.join(
            attributes.select("mi", "method", "rating_kw", "modulus_kwh", "resolution_kwh"),
            on="mi",
            how="inner",
        )
        .sort("mi", "track", "ts", maintain_order=True)
        # After a stable sort a repeat is the row right after its twin: cheaper than a hash
        # ``unique`` and keeps the first (carried) one.
        .filter(
            ~(
                (pl.col("mi") == pl.col("mi").shift(1))
                & (pl.col("track") == pl.col("track").shift(1))
                & (pl.col("ts") == pl.col("ts").shift(1))
            ).fill_null(False)
        )
    )


@dataclass(frozen=True)
class _Computed:
    energy_status: pl.LazyFrame
    power_status: pl.LazyFrame
    parts: pl.LazyFrame


def _compute(prepared: pl.LazyFrame, config: EnergyConfig) -> _Computed:
    energy = register_status(prepared.filter(pl.col("track") == "energy"), config)
    power = power_status(prepared.filter(pl.col("track") == "power"), config)
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
    parts = intervals_from_parts(
        pl.concat([segments.select(columns), integrated.select(columns)]),
        rejected,
        config.interval_us,
    )
    return _Computed(energy, power, parts)


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
    attributes = meter_attributes(meters)
    prepared = _prepare(resolve_readings(readings, meters), attributes)
    out = to_interval_schema(_compute(prepared, config).parts, attributes, config.interval_us)
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
        self._attributes = meter_attributes(self._meters).collect()
        self._names = self._attributes.select("mi", "meter")

    def _to_mi(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(self._names, on="meter", how="inner").drop("meter")

    def _to_names(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(self._names, on="mi", how="inner").drop("mi")

    def feed(self, readings: pl.DataFrame) -> pl.DataFrame:
        """Take a batch of readings; return the intervals that are now final.

        Returns:
            Rows in :data:`agent.energy.core.INTERVAL_STORE_SCHEMA`, sorted by meter
            and interval.
        """
        interval_us = self.config.interval_us
        marks = self._to_mi(self.state.marks)
        fresh = resolve_readings(readings.lazy(), self._meters).collect()
        horizons = fresh.join(marks, on="mi", how="left").select(
            pl.when(pl.col("track") == "energy")
            .then(pl.col("horizon_energy_us"))
            .otherwise(pl.col("horizon_power_us"))
            .alias("h")
        )["h"]
        late = horizons.is_not_null() & (fresh["ts"] <= horizons)
        self.late_readings += int(late.sum())
        fresh = fresh.filter(~late)
        reads = pl.concat([self._to_mi(self.state.carry).select(READS_SCHEMA.names()), fresh])
        prepared = _prepare(reads.lazy(), self._attributes.lazy()).collect()
        computed = _compute(prepared.lazy(), self.config)
        energy, power, parts = pl.collect_all(
            [computed.energy_status, computed.power_status, computed.parts]
        )

        # Horizons: the last kept register read that has a finite successor (its status
        # can no longer change), the last valid power read.
        finite = energy.filter(pl.col("status") != STATUS_INVALID)
        last_finite = finite.group_by("mi").agg(pl.col("ts").max().alias("_last"))
        h_energy = (
            energy.join(last_finite, on="mi")
            .filter((pl.col("status") == STATUS_KEPT) & (pl.col("ts") < pl.col("_last")))
            .group_by("mi")
            .agg(pl.col("ts").max().alias("horizon_energy_us"))
        )
        h_power = (
            power.filter(pl.col("status") == STATUS_KEPT)
            .group_by("mi")
            .agg(pl.col("ts").max().alias("horizon_power_us"))
        )
        methods = self._attributes.select("mi", "method")
        new_marks = (
            methods.join(marks, on="mi", how="left")
            .join(h_energy.rename({"horizon_energy_us": "_he"}), on="mi", how="left")
            .join(h_power.rename({"horizon_power_us": "_hp"}), on="mi", how="left")
            .with_columns(
                pl.max_horizontal("horizon_energy_us", "_he").alias("horizon_energy_us"),
                pl.max_horizontal("horizon_power_us", "_hp").alias("horizon_power_us"),
            )
            .with_columns(
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
        )
        bounds = new_marks.select("mi", "cut_us", "new_cut")
        emitted = (
            parts.join(bounds, on="mi", how="inner")
            .filter(
                pl.col("new_cut").is_not_null()
                & (pl.col("k") * interval_us < pl.col("new_cut"))
                & (pl.col("cut_us").is_null() | (pl.col("k") * interval_us >= pl.col("cut_us")))
            )
            .drop("cut_us", "new_cut")
        )
        out = to_interval_schema(emitted.lazy(), self._attributes.lazy(), interval_us).collect()

        # Carry: from the last kept read at or before the new cut (the segment that
        # reaches into the first open interval) onwards, with settled statuses fixed.
        anchor_energy = (
            energy.join(bounds, on="mi")
            .filter(
                (pl.col("status") == STATUS_KEPT)
                & (pl.col("new_cut").is_null() | (pl.col("ts") <= pl.col("new_cut")))
                & pl.col("new_cut").is_not_null()
            )
            .group_by("mi")
            .agg(pl.col("ts").max().alias("_k0"))
        )
        carry_energy = (
            energy.join(anchor_energy, on="mi", how="left")
            .join(last_finite, on="mi", how="left")
            .filter(pl.col("_k0").is_null() | (pl.col("ts") >= pl.col("_k0")))
            .with_columns(
                pl.when(pl.col("ts") < pl.col("_last"))
                .then(pl.col("status"))
                .otherwise(pl.lit(None, pl.UInt8))
                .alias("fixed")
            )
        )
        anchor_power = (
            power.join(bounds, on="mi")
            .filter(
                (pl.col("status") == STATUS_KEPT)
                & pl.col("new_cut").is_not_null()
                & (pl.col("ts") <= pl.col("new_cut"))
            )
            .group_by("mi")
            .agg(pl.col("ts").max().alias("_p0"))
        )
        carry_power = (
            power.join(anchor_energy, on="mi", how="left")
            .join(anchor_power, on="mi", how="left")
            .filter(
                pl.when(pl.col("method") == "register")
                .then(pl.col("_k0").is_null() | (pl.col("ts") > pl.col("_k0")))
                .otherwise(pl.col("_p0").is_null() | (pl.col("ts") >= pl.col("_p0")))
            )
            .with_columns(pl.lit(None, pl.UInt8).alias("fixed"))
        )
        carry = pl.concat(
            [
                carry_energy.select(READS_SCHEMA.names()),
                carry_power.select(READS_SCHEMA.names()),
            ]
        )
        self.state = EngineState(
            carry=self._to_names(carry).select(CARRY_SCHEMA.names()),
            marks=self._to_names(
                new_marks.select(
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

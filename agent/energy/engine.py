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
from agent.energy.kernel import FIXED_NONE, NONE_TS, KernelState, MeterArrays, kernel_feed
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
        _parts(*_statuses(prepared, config), config), attributes, config.interval_us
    )
    if not with_rejected_counts:
        out = out.select(INTERVAL_SCHEMA.names())
    return out


@dataclass
class EngineState:
    """What an incremental run carries between batches (persisted by the sink)."""

    carry: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CARRY_SCHEMA))
    marks: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MARKS_SCHEMA))


class IntervalEngine:
    """Incremental interval energy: feed reading batches, get the intervals they settle.

    Example::

        engine = IntervalEngine(site, EnergyConfig())
        for batch in batches:
            rows = engine.feed(batch)        # INTERVAL_STORE_SCHEMA rows now final
        state = engine.state                 # persist with the cursor; restore with
        IntervalEngine(site, config, state)  # ... and continue exactly where it stood

    The per-meter pass runs in the C kernel (:mod:`agent.energy.kernel`); Polars only
    resolves readings to meter indexes before it and names the intervals after it.
    """

    def __init__(
        self, site: Site, config: EnergyConfig | None = None, state: EngineState | None = None
    ) -> None:
        self.site = site
        self.config = config or EnergyConfig()
        self.config.check_site(site)
        #: Readings dropped because their meter had already settled a later time.
        self.late_readings = 0
        self._meters = meter_table(site)
        self._attributes = meter_attributes(self._meters).collect().sort("mi")
        self._names = self._attributes["meter"]
        self._arrays = MeterArrays.from_attributes(self._attributes)
        self._kernel_state = self._from_state(state or EngineState())
        # Built from the kernel state when asked for (rows of departed meters are gone).
        self._state: EngineState | None = None
        #: The last batch's readings resolved to meter indexes (``mi``, ``ts`` µs, ``value``):
        #: what the aggregator's silence search reads instead of resolving them again.
        self.resolved = pl.DataFrame(
            schema={"mi": pl.UInt32(), "ts": pl.Int64(), "value": pl.Float64()}
        )

    def _mi_of(self, meters: pl.Series) -> pl.Series:
        """Meter indexes of names (null for a meter no longer in the site)."""
        lookup = pl.Enum(self._names)
        return meters.cast(lookup, strict=False).to_physical().cast(pl.UInt32)

    def _from_state(self, state: EngineState) -> KernelState:
        """The kernel layout of a persisted state (rows of meters not in the site dropped)."""
        kernel = KernelState.empty(len(self._names))
        marks = state.marks.with_columns(self._mi_of(state.marks["meter"]).alias("mi")).filter(
            pl.col("mi").is_not_null()
        )
        index = marks["mi"].to_numpy()
        for name, target in (
            ("cut_us", kernel.cut_us),
            ("horizon_energy_us", kernel.horizon_energy_us),
            ("horizon_power_us", kernel.horizon_power_us),
        ):
            target[index] = marks[name].fill_null(NONE_TS).to_numpy()
        carry = state.carry.with_columns(self._mi_of(state.carry["meter"]).alias("mi")).filter(
            pl.col("mi").is_not_null()
        )
        kernel.mi = carry["mi"].to_numpy()
        kernel.track = (carry["track"] == "power").cast(pl.UInt8).to_numpy()
        kernel.ts = carry["ts"].to_numpy()
        kernel.value = carry["value"].to_numpy()
        kernel.imported = carry["imported"].cast(pl.UInt8).to_numpy()
        kernel.fixed = carry["fixed"].fill_null(FIXED_NONE).to_numpy()
        return kernel

    @property
    def state(self) -> EngineState:
        """The state to persist with the journal cursor (built when asked for)."""
        if self._state is None:
            k = self._kernel_state
            carry = pl.DataFrame(
                {
                    "meter": self._names.gather(pl.Series(k.mi)),
                    "track": pl.Series(["energy", "power"]).gather(pl.Series(k.track)),
                    "ts": k.ts,
                    "value": k.value,
                    "imported": k.imported.astype(bool),
                    "fixed": pl.Series(k.fixed).replace(FIXED_NONE, None),
                }
            )
            marks = pl.DataFrame(
                {
                    "meter": self._names,
                    "cut_us": k.cut_us,
                    "horizon_energy_us": k.horizon_energy_us,
                    "horizon_power_us": k.horizon_power_us,
                }
            ).with_columns(
                pl.col("cut_us", "horizon_energy_us", "horizon_power_us").replace(NONE_TS, None)
            )
            self._state = EngineState(
                carry=carry.cast(CARRY_SCHEMA),
                marks=marks.filter(
                    pl.any_horizontal(
                        pl.col("cut_us", "horizon_energy_us", "horizon_power_us").is_not_null()
                    )
                ).cast(MARKS_SCHEMA),
            )
        return self._state

    def feed(self, readings: pl.DataFrame) -> pl.DataFrame:
        """Take a batch of readings; return the intervals that are now final.

        Returns:
            Rows in :data:`agent.energy.core.INTERVAL_STORE_SCHEMA`, sorted by meter
            and interval.
        """
        fresh = (
            resolve_readings(readings.lazy(), self._meters)
            .select(
                "mi",
                pl.col("track").to_physical().cast(pl.UInt8),
                "ts",
                "value",
                pl.col("imported").cast(pl.UInt8),
            )
            .collect(engine=ENGINE)
        )
        self.resolved = fresh.select("mi", "ts", "value")
        parts, self._kernel_state, late = kernel_feed(
            self._arrays, self._kernel_state, fresh, self.config
        )
        self._state = None
        self.late_readings += late
        return to_interval_schema(parts.lazy(), self._attributes, self.config.interval_us).collect(
            engine=ENGINE
        )

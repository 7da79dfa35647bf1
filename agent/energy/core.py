"""Readings -> per-meter segments -> interval energy, as small LazyFrame pipelines.

Internal time axis: Int64 microseconds since the epoch (UTC); meters are integer
indexes (``mi``) into the meter table while computing, so sorts and joins are on
integers. Names and datetimes come back only in :func:`to_interval_schema`.

The model (PUE.md "Turning meter readings into energy"):

* A **segment** joins two consecutive valid reads of one meter. A register segment
  carries the register delta (wrap-corrected) and spreads it uniformly over its span,
  which is exactly linear interpolation of the register at interval boundaries; a
  power segment carries the two power samples and is integrated as a trapezoid on the
  linearly interpolated power. Summing a meter's interval energies therefore gives
  back the register delta exactly (up to float rounding): energy is moved in time,
  never lost or made up.
* **Read status** is decided from the read and its finite neighbours only (no
  sequential state machine, so it vectorises and an incremental run can reproduce
  it): a read is an isolated **spike** (rejected) when the step into it is
  implausible but the step over it, from its predecessor to its successor, is
  plausible. A non-isolated implausible step is a level change: a **reset** when the
  register fell (and it is not a wrap), a rejected **jump** when it rose faster than
  the rating allows. Either way the segment's register delta is not counted (the
  reads after it count from the new base, never "adding back" the old value); it
  may be filled from power readings and always counts as uncovered.
"""

from __future__ import annotations

import polars as pl

from agent.energy.config import EnergyConfig
from agent.schemas import INTERVAL_SCHEMA, IntervalFlag

__all__ = [
    "INTERVAL_STORE_SCHEMA",
    "READS_SCHEMA",
    "STATUS_INVALID",
    "STATUS_KEPT",
    "STATUS_SPIKE",
    "intervals_from_parts",
    "meter_attributes",
    "power_segments",
    "power_status",
    "register_segments",
    "register_status",
    "resolve_readings",
    "to_interval_schema",
]

#: The resolved reads the pipelines work on (one row per reading of a site meter point).
READS_SCHEMA = pl.Schema(
    {
        "mi": pl.UInt32(),
        "track": pl.String(),
        "ts": pl.Int64(),
        "value": pl.Float64(),
        "imported": pl.Boolean(),
        # Status decided in an earlier incremental step (null: decide now).
        "fixed": pl.UInt8(),
    }
)

STATUS_KEPT = 0
#: NaN/inf, negative, or power above the rating: rejected on its own.
STATUS_INVALID = 1
#: An isolated implausible register read between two reads that agree with each other.
STATUS_SPIKE = 2

#: What the aggregator and the store keep: :data:`INTERVAL_SCHEMA` plus how many readings
#: (or register steps) were rejected as implausible in the interval. ``INTERVAL_SCHEMA``
#: itself is a shared contract and stays as it is; readers select its columns.
INTERVAL_STORE_SCHEMA = pl.Schema({**INTERVAL_SCHEMA, "rejected_readings": pl.UInt32()})

_US_PER_H = 3.6e9
_W_US_PER_KWH = 3.6e12
_F = IntervalFlag


def _flag(flag: IntervalFlag) -> pl.Expr:
    return pl.lit(int(flag), dtype=pl.UInt16)


def _no_flag() -> pl.Expr:
    return pl.lit(0, dtype=pl.UInt16)


def _prev(column: str, n: int = 1) -> pl.Expr:
    """``column`` of the row ``n`` before, within the same meter (frame sorted by mi, ts)."""
    same = pl.col("mi").shift(n) == pl.col("mi")
    return pl.when(same).then(pl.col(column).shift(n))


def resolve_readings(readings: pl.LazyFrame, meters: pl.DataFrame) -> pl.LazyFrame:
    """Keep the readings of site meter points and map them to meter indexes.

    Args:
        readings: Frames in ``READING_SCHEMA``.
        meters: :func:`agent.energy.config.meter_table` output.

    Returns:
        Reads in :data:`READS_SCHEMA` (unsorted).
    """
    points = (
        meters.lazy()
        .with_row_index("row")
        .select(
            "device",
            "point",
            "track",
            pl.col("meter").rank("dense").cast(pl.UInt32).sub(1).alias("mi"),
        )
    )
    wanted = (pl.col("track") == "energy") & (pl.col("quantity") == "energy_kwh") | (
        pl.col("track") == "power"
    ) & (pl.col("quantity") == "power_w")
    return (
        readings.join(points, on=["device", "point"], how="inner")
        .filter(wanted)
        .select(
            "mi",
            "track",
            pl.col("ts").dt.epoch("us").alias("ts"),
            "value",
            ((pl.col("quality").cast(pl.UInt8) & 2) != 0).alias("imported"),
            pl.lit(None, dtype=pl.UInt8).alias("fixed"),
        )
    )


def meter_attributes(meters: pl.DataFrame) -> pl.LazyFrame:
    """One row per meter index with rating, modulus and resolution (for joins)."""
    return (
        meters.lazy()
        .unique("meter", keep="first")
        .select(
            pl.col("meter").rank("dense").cast(pl.UInt32).sub(1).alias("mi"),
            "meter",
            "method",
            "rating_kw",
            "modulus_kwh",
            "resolution_kwh",
        )
    )


def _step_ok(delta: pl.Expr, dt_us: pl.Expr, config: EnergyConfig) -> tuple[pl.Expr, pl.Expr]:
    """(plausible increase, plausible wrap) of a register step ``delta`` over ``dt_us``."""
    bound = pl.col("rating_kw") * dt_us / _US_PER_H * (1.0 + config.rating_tolerance) + pl.col(
        "resolution_kwh"
    )
    up = (delta >= 0) & (bound.is_null() | (delta <= bound))
    wrapped = delta + pl.col("modulus_kwh")
    wrap_limit = (
        pl.when(bound.is_null())
        .then(pl.col("modulus_kwh") * config.wrap_max_fraction)
        .otherwise(bound)
    )
    wrap = (
        pl.col("modulus_kwh").is_not_null() & (delta < 0) & (wrapped >= 0) & (wrapped <= wrap_limit)
    )
    return up, wrap


def register_status(energy: pl.LazyFrame, config: EnergyConfig) -> pl.LazyFrame:
    """Give every register read a status (kept / invalid / spike).

    Args:
        energy: Register reads (``track == "energy"``) joined with meter attributes,
            sorted by ``mi, ts`` with no duplicate ``(mi, ts)``.
        config: The energy options.

    Returns:
        The reads with a ``status`` column (UInt8), same order.
    """
    finite = pl.col("value").is_finite() & (pl.col("value") >= 0)
    invalid = energy.filter(~finite).with_columns(pl.lit(STATUS_INVALID, pl.UInt8).alias("status"))
    good = energy.filter(finite).with_columns(
        _prev("value").alias("_pv"),
        _prev("ts").alias("_pt"),
        pl.when(pl.col("mi").shift(-1) == pl.col("mi"))
        .then(pl.col("value").shift(-1))
        .alias("_nv"),
        pl.when(pl.col("mi").shift(-1) == pl.col("mi")).then(pl.col("ts").shift(-1)).alias("_nt"),
    )
    up1, wrap1 = _step_ok(pl.col("value") - pl.col("_pv"), pl.col("ts") - pl.col("_pt"), config)
    up2, wrap2 = _step_ok(pl.col("_nv") - pl.col("_pv"), pl.col("_nt") - pl.col("_pt"), config)
    spike = (~(up1 | wrap1) & (up2 | wrap2)).fill_null(False)
    good = good.with_columns(
        pl.coalesce(
            pl.col("fixed"),
            pl.when(spike)
            .then(pl.lit(STATUS_SPIKE, pl.UInt8))
            .otherwise(pl.lit(STATUS_KEPT, pl.UInt8)),
        ).alias("status")
    ).drop("_pv", "_pt", "_nv", "_nt")
    return pl.concat([good, invalid], how="vertical").sort("mi", "ts")


def power_status(power: pl.LazyFrame, config: EnergyConfig) -> pl.LazyFrame:
    """Give every power read a status: invalid if NaN/inf, negative or above the rating."""
    limit_w = pl.col("rating_kw") * 1000.0 * (1.0 + config.rating_tolerance)
    valid = (
        pl.col("value").is_finite()
        & (pl.col("value") >= 0)
        & (limit_w.is_null() | (pl.col("value") <= limit_w))
    )
    return power.with_columns(
        pl.when(valid)
        .then(pl.lit(STATUS_KEPT, pl.UInt8))
        .otherwise(pl.lit(STATUS_INVALID, pl.UInt8))
        .alias("status")
    )


def register_segments(
    energy_status: pl.LazyFrame, power_status_frame: pl.LazyFrame, config: EnergyConfig
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Segments between consecutive kept register reads, and rejected-jump events.

    Returns:
        ``(segments, jumps)``: segments with ``mi, t0, t1, e_kwh, p0, p1, covered,
        flags``; jumps with ``mi, ts`` (one rejected register step each).
    """
    kept = (
        energy_status.filter(pl.col("status") == STATUS_KEPT)
        .with_columns(
            _prev("value").alias("_pv"), _prev("ts").alias("t0"), _prev("imported").alias("_pi")
        )
        .filter(pl.col("t0").is_not_null())
    )
    delta = pl.col("value") - pl.col("_pv")
    dt = pl.col("ts") - pl.col("t0")
    up, wrap = _step_ok(delta, dt, config)
    seg = (
        kept.with_columns(
            up.alias("_up"),
            wrap.alias("_wrap"),
            (delta < 0).alias("_down"),
        )
        .with_columns(
            pl.when(pl.col("_up"))
            .then(delta)
            .when(pl.col("_wrap"))
            .then(delta + pl.col("modulus_kwh"))
            .otherwise(0.0)
            .alias("e_kwh"),
            ((pl.col("_up") | pl.col("_wrap")) & (dt <= int(config.max_gap_s * 1e6))).alias(
                "covered"
            ),
            (
                pl.when(pl.col("_wrap")).then(_flag(_F.WRAP)).otherwise(_no_flag())
                | pl.when(~(pl.col("_up") | pl.col("_wrap")))
                .then(_flag(_F.RESET))
                .otherwise(_no_flag())
                | pl.when(~(pl.col("_up") | pl.col("_wrap") | pl.col("_down")))
                .then(_flag(_F.REJECTED))
                .otherwise(_no_flag())
                | pl.when(dt > config.interval_us)
                .then(_flag(_F.INTERPOLATED))
                .otherwise(_no_flag())
                | pl.when(pl.col("imported") | pl.col("_pi"))
                .then(_flag(_F.IMPORTED))
                .otherwise(_no_flag())
            ).alias("flags"),
            (~(pl.col("_up") | pl.col("_wrap"))).alias("_reset"),
            (~(pl.col("_up") | pl.col("_wrap") | pl.col("_down"))).alias("_jump"),
        )
        .rename({"ts": "t1"})
    )
    columns = ["mi", "t0", "t1", "e_kwh", "covered", "flags"]
    normal = seg.filter(~pl.col("_reset")).select(columns)
    resets = seg.filter(pl.col("_reset")).select(columns)
    # Counted in the last interval the rejected step covers (where its flag is).
    jumps = seg.filter(pl.col("_jump")).select("mi", (pl.col("t1") - 1).alias("ts"))
    if config.reset_fill == "power":
        # Mean of the valid power readings inside (t0, t1]: a bound from what the meter
        # said about its own draw, not an "add back" of the old register value.
        fill = (
            power_status_frame.filter(pl.col("status") == STATUS_KEPT)
            .select("mi", "ts", "value")
            .join(resets.select("mi", "t0", "t1"), on="mi", how="inner")
            .filter((pl.col("ts") > pl.col("t0")) & (pl.col("ts") <= pl.col("t1")))
            .group_by("mi", "t1")
            .agg(pl.col("value").mean().alias("_mean_w"))
        )
        resets = (
            resets.join(fill, on=["mi", "t1"], how="left")
            .with_columns(
                pl.when(pl.col("_mean_w").is_not_null())
                .then(pl.col("_mean_w") * (pl.col("t1") - pl.col("t0")) / _W_US_PER_KWH)
                .otherwise(pl.col("e_kwh"))
                .alias("e_kwh"),
                (
                    pl.col("flags")
                    | pl.when(pl.col("_mean_w").is_not_null())
                    .then(_flag(_F.ESTIMATED))
                    .otherwise(_no_flag())
                ).alias("flags"),
            )
            .select(columns)
        )
    segments = pl.concat([normal, resets]).with_columns(
        pl.lit(None, pl.Float64).alias("p0"), pl.lit(None, pl.Float64).alias("p1")
    )
    return segments, jumps


def power_segments(power_status_frame: pl.LazyFrame, config: EnergyConfig) -> pl.LazyFrame:
    """Trapezoid segments between consecutive valid power reads of integrated meters.

    A gap longer than ``max_power_gap_s`` gets no segment: nothing is integrated
    across it and its time stays uncovered.
    """
    kept = power_status_frame.filter(pl.col("status") == STATUS_KEPT)
    return (
        kept.with_columns(
            _prev("value").alias("p0"), _prev("ts").alias("t0"), _prev("imported").alias("_pi")
        )
        .filter(
            pl.col("t0").is_not_null()
            & ((pl.col("ts") - pl.col("t0")) <= int(config.max_power_gap_s * 1e6))
        )
        .select(
            "mi",
            "t0",
            pl.col("ts").alias("t1"),
            pl.lit(None, pl.Float64).alias("e_kwh"),
            pl.lit(True).alias("covered"),
            (
                _flag(_F.ESTIMATED)
                | pl.when(pl.col("imported") | pl.col("_pi"))
                .then(_flag(_F.IMPORTED))
                .otherwise(_no_flag())
            ).alias("flags"),
            "p0",
            pl.col("value").alias("p1"),
        )
    )


def _spread(segments: pl.LazyFrame, interval_us: int) -> pl.LazyFrame:
    """Cut segments at interval boundaries: one row per (segment, interval) overlap."""
    k0 = pl.col("t0") // interval_us
    k1 = (pl.col("t1") - 1) // interval_us
    single = segments.filter(k0 == k1).with_columns(
        k0.alias("k"), pl.col("t0").alias("a"), pl.col("t1").alias("b")
    )
    multi = (
        segments.filter(k0 < k1)
        .with_columns(pl.int_ranges(k0, k1 + 1).alias("k"))
        .explode("k")
        .with_columns(
            pl.max_horizontal(pl.col("t0"), pl.col("k") * interval_us).alias("a"),
            pl.min_horizontal(pl.col("t1"), (pl.col("k") + 1) * interval_us).alias("b"),
        )
    )
    span = (pl.col("t1") - pl.col("t0")).cast(pl.Float64)
    pa = pl.col("p0") + (pl.col("p1") - pl.col("p0")) * (pl.col("a") - pl.col("t0")) / span
    pb = pl.col("p0") + (pl.col("p1") - pl.col("p0")) * (pl.col("b") - pl.col("t0")) / span
    width = pl.col("b") - pl.col("a")
    return pl.concat([single, multi]).select(
        "mi",
        "k",
        pl.when(pl.col("p0").is_null())
        .then(pl.col("e_kwh") * (width.cast(pl.Float64) / span))
        .otherwise((pa + pb) / 2.0 * width / _W_US_PER_KWH)
        .alias("energy_kwh"),
        pl.when(pl.col("covered")).then(width).otherwise(0).alias("covered_us"),
        "flags",
        "t0",
    )


def intervals_from_parts(
    segments: pl.LazyFrame, rejected: pl.LazyFrame, interval_us: int
) -> pl.LazyFrame:
    """Sum segment pieces and rejected-read counts per (meter index, interval index).

    Args:
        segments: Register and power segments (``mi, t0, t1, e_kwh, p0, p1, covered, flags``).
        rejected: One row per rejected reading or register step (``mi, ts``).
        interval_us: The base interval.

    Returns:
        ``mi, k, energy_kwh, covered_us, flags, rejected_readings`` sorted by ``mi, k``.
    """
    pieces = (
        _spread(segments, interval_us)
        # A fixed order inside each (meter, interval) makes the float sums identical
        # whatever batches the readings arrived in (restart equivalence).
        .sort("mi", "k", "t0")
        .group_by("mi", "k", maintain_order=True)
        .agg(
            pl.col("energy_kwh").sum(),
            pl.col("covered_us").sum(),
            pl.col("flags").bitwise_or(),
        )
    )
    counts = (
        rejected.select("mi", (pl.col("ts") // interval_us).alias("k"))
        .group_by("mi", "k")
        .agg(pl.len().cast(pl.UInt32).alias("rejected_readings"))
    )
    return (
        pieces.join(counts, on=["mi", "k"], how="full", coalesce=True)
        .with_columns(
            pl.col("energy_kwh").fill_null(0.0),
            pl.col("covered_us").fill_null(0),
            pl.col("flags").fill_null(0),
            pl.col("rejected_readings").fill_null(0),
        )
        .with_columns(
            (
                pl.col("flags")
                | pl.when(pl.col("covered_us") < interval_us)
                .then(_flag(_F.GAP))
                .otherwise(_no_flag())
                | pl.when(pl.col("rejected_readings") > 0)
                .then(_flag(_F.REJECTED))
                .otherwise(_no_flag())
            ).alias("flags")
        )
        .sort("mi", "k")
    )


def to_interval_schema(
    parts: pl.LazyFrame, attributes: pl.LazyFrame, interval_us: int
) -> pl.LazyFrame:
    """Map ``mi, k`` rows to :data:`INTERVAL_SCHEMA` (meter names, UTC datetimes)."""
    start = (pl.col("k") * interval_us).cast(pl.Datetime("us", "UTC"))
    return (
        parts.join(attributes.select("mi", "meter", "method"), on="mi", how="left")
        .select(
            "meter",
            start.alias("interval_start"),
            (start + pl.duration(microseconds=interval_us)).alias("interval_end"),
            "energy_kwh",
            (pl.col("covered_us").cast(pl.Float64) / interval_us).clip(0.0, 1.0).alias("coverage"),
            pl.col("flags").cast(pl.UInt16),
            "method",
            pl.col("rejected_readings").cast(pl.UInt32),
        )
        .select(list(INTERVAL_STORE_SCHEMA.names()))
        .sort("meter", "interval_start")
    )

"""Readings -> per-meter segments -> interval energy, as small LazyFrame pipelines.

Internal time axis: Int64 microseconds since the epoch (UTC); meters are integer
indexes (``mi``) into the meter table while computing, so sorts and joins are on
integers. Names and datetimes come back only in :func:`to_interval_schema`.

The model (docs/pue.md "Turning meter readings into energy"):

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

from typing import Final

import polars as pl

from agent.energy.config import EnergyConfig
from agent.schemas import INTERVAL_STORE_SCHEMA, IntervalFlag

__all__ = [
    "ENGINE",
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
        # An enum, not a string: gathered and compared as small integers.
        "track": pl.Enum(["energy", "power"]),
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


#: Polars engine for the aggregator's own collects. Polars 2 defaults to the streaming
#: engine; for these batch-sized, order-sensitive pipelines (stable sorts, ordered
#: group sums) the in-memory engine is about twice as fast on 2 cores and adds each
#: group's floats in a fixed order, so incremental and uninterrupted runs agree bit for bit.
ENGINE: Final = "in-memory"

# Reciprocals, multiplied by: Polars divides a column by a scalar as a multiplication by
# the reciprocal, but a one-row column exactly, so a division would round differently
# depending on how many rows a batch has. The C kernel multiplies by the same constants.
_H_PER_US = 1.0 / 3.6e9
_KWH_PER_W_US = 1.0 / 3.6e12
_F = IntervalFlag


def _flag(flag: IntervalFlag) -> pl.Expr:
    return pl.lit(int(flag), dtype=pl.UInt16)


def _no_flag() -> pl.Expr:
    return pl.lit(0, dtype=pl.UInt16)


def _prev(column: str, n: int = 1) -> pl.Expr:
    """``column`` of the row ``n`` before, within the same meter (frame sorted by mi, ts)."""
    same = pl.col("mi").shift(n) == pl.col("mi")
    return pl.when(same).then(pl.col(column).shift(n))


def _point_key(devices: pl.Enum, points: pl.Enum) -> pl.Expr:
    """One integer per (device, point) of the site (null for any other point).

    Strings are looked up once each in two small enums instead of joining on two
    string columns (measured: the enum casts are the fastest string lookup Polars has).
    """
    width = len(points.categories)
    # UInt32 is what gather takes as an index: no conversion pass.
    dtype = pl.UInt32 if len(devices.categories) * width <= 1 << 32 else pl.Int64
    device = pl.col("device").cast(devices, strict=False).to_physical().cast(dtype)
    point = pl.col("point").cast(points, strict=False).to_physical().cast(dtype)
    return (device * width + point).alias("_key")


#: Largest (devices x points) table resolved by a gather rather than a join.
_DENSE_MAX = 1 << 22


class _SitePoints:
    """The (device, point) -> (mi, track) lookup of one meter table.

    Building it takes ~2 ms on the 4,000-point benchmark site (what resolving ~60k
    readings takes), so the last one is reused while the meter table is unchanged.
    """

    __slots__ = ("dense", "key", "meters", "points")

    def __init__(self, meters: pl.DataFrame) -> None:
        # A shallow copy: an in-place edit of the caller's frame does not reach it.
        self.meters = meters.clone()
        devices = pl.Enum(meters["device"].unique().sort())
        point_names = pl.Enum(meters["point"].unique().sort())
        self.key = _point_key(devices, point_names)
        self.points = meters.select(
            self.key,
            pl.col("track").cast(READS_SCHEMA["track"]),
            pl.col("meter").rank("dense").cast(pl.UInt32).sub(1).alias("mi"),
        )
        size = len(devices.categories) * len(point_names.categories)
        # When every site point belongs to one meter, ``mi`` and ``track`` are gathered
        # from tables indexed by ``_key`` (no hashing); a point shared by two meters
        # gives two rows, so it needs a join.
        self.dense: tuple[pl.Series, ...] | None = None
        if size <= _DENSE_MAX and self.points["_key"].is_unique().all():
            self.dense = tuple(
                pl.repeat(None, size, dtype=READS_SCHEMA[name], eager=True)
                .alias(name)
                .scatter(self.points["_key"], self.points[name])
                for name in ("mi", "track")
            )


_SITE_POINTS: list[_SitePoints] = []


def _site_points(meters: pl.DataFrame) -> _SitePoints:
    cached = next(iter(_SITE_POINTS), None)
    if cached is not None and cached.meters.equals(meters):
        return cached
    site = _SitePoints(meters)
    _SITE_POINTS[:] = [site]
    return site


def _resolve_points(readings: pl.LazyFrame, site: _SitePoints) -> pl.LazyFrame:
    """Add ``mi`` and ``track`` to readings with a ``_key``, dropping other points.

    Keeps the readings' order (a reading of a point shared by two meters gives two rows).
    """
    if site.dense is not None:
        return readings.with_columns(
            pl.lit(table).gather(pl.col("_key")).alias(table.name) for table in site.dense
        ).filter(pl.col("mi").is_not_null())
    return readings.join(site.points.lazy(), on="_key", how="inner", maintain_order="left")


def resolve_readings(readings: pl.LazyFrame, meters: pl.DataFrame) -> pl.LazyFrame:
    """Keep the readings of site meter points and map them to meter indexes.

    Args:
        readings: Frames in ``READING_SCHEMA``.
        meters: :func:`agent.energy.config.meter_table` output.

    Returns:
        Reads in :data:`READS_SCHEMA`, in the order of ``readings``.
    """
    site = _site_points(meters)
    is_power = pl.col("quantity") == "power_w"
    return (
        # Quantity first: two cheap compares spare the string lookups of the readings
        # no meter uses (currents, voltages, temperatures ... on a real site).
        readings.filter(is_power | (pl.col("quantity") == "energy_kwh"))
        .with_columns(site.key)
        .pipe(_resolve_points, site)
        .filter((pl.col("track") == "power") == is_power)
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
    """One row per meter index with rating, modulus and resolution, sorted by ``mi``.

    ``mi`` runs 0..n-1 in meter-name order, so a column of this table can be gathered
    by ``mi`` instead of joined.
    """
    return (
        meters.lazy()
        .unique("meter", keep="first", maintain_order=True)
        .select(
            pl.col("meter").rank("dense").cast(pl.UInt32).sub(1).alias("mi"),
            "meter",
            "method",
            "rating_kw",
            "modulus_kwh",
            "resolution_kwh",
        )
        .sort("mi")
    )


def _step_ok(delta: pl.Expr, dt_us: pl.Expr, config: EnergyConfig) -> tuple[pl.Expr, pl.Expr]:
    """(plausible increase, plausible wrap) of a register step ``delta`` over ``dt_us``."""
    bound = pl.col("rating_kw") * dt_us * _H_PER_US * (1.0 + config.rating_tolerance) + pl.col(
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


def _prev_finite(column: str, finite: pl.Expr, n: int) -> pl.Expr:
    """``column`` of the nearest ``finite`` row before (``n=1``) or after (``n=-1``).

    Only within the same meter (frame sorted by mi, ts); null when there is none.
    """
    masked = pl.when(finite)
    near_mi = masked.then(pl.col("mi")).shift(n)
    near = masked.then(pl.col(column)).shift(n)
    if n > 0:
        near_mi, near = near_mi.forward_fill(), near.forward_fill()
    else:
        near_mi, near = near_mi.backward_fill(), near.backward_fill()
    return pl.when(near_mi == pl.col("mi")).then(near)


def register_status(energy: pl.LazyFrame, config: EnergyConfig) -> pl.LazyFrame:
    """Give every register read a status (kept / invalid / spike).

    Neighbours are the nearest finite reads of the same meter, found with shifted and
    filled columns, so the frame is never split, re-joined or re-sorted.

    Args:
        energy: Register reads (``track == "energy"``) joined with meter attributes,
            sorted by ``mi, ts`` with no duplicate ``(mi, ts)``.
        config: The energy options.

    Returns:
        The reads with a ``status`` column (UInt8), same order.
    """
    finite = pl.col("value").is_finite() & (pl.col("value") >= 0)
    good = energy.with_columns(
        finite.alias("_finite"),
        _prev_finite("value", finite, 1).alias("_pv"),
        _prev_finite("ts", finite, 1).alias("_pt"),
        _prev_finite("value", finite, -1).alias("_nv"),
        _prev_finite("ts", finite, -1).alias("_nt"),
    )
    up1, wrap1 = _step_ok(pl.col("value") - pl.col("_pv"), pl.col("ts") - pl.col("_pt"), config)
    up2, wrap2 = _step_ok(pl.col("_nv") - pl.col("_pv"), pl.col("_nt") - pl.col("_pt"), config)
    spike = (~(up1 | wrap1) & (up2 | wrap2)).fill_null(False)
    return good.with_columns(
        pl.when(~pl.col("_finite"))
        .then(pl.lit(STATUS_INVALID, pl.UInt8))
        .otherwise(
            pl.coalesce(
                pl.col("fixed"),
                pl.when(spike)
                .then(pl.lit(STATUS_SPIKE, pl.UInt8))
                .otherwise(pl.lit(STATUS_KEPT, pl.UInt8)),
            )
        )
        .alias("status")
    ).drop("_finite", "_pv", "_pt", "_nv", "_nt")


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
        flags`` in the reads' ``mi, ts`` order (so sorted by ``mi, t0``); jumps with
        ``mi, ts`` (one rejected register step each).
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
    # Counted in the last interval the rejected step covers (where its flag is).
    jumps = seg.filter(pl.col("_jump")).select("mi", (pl.col("t1") - 1).alias("ts"))
    segments = seg.select(*columns, "_reset")
    if config.reset_fill == "power":
        # Mean of the valid power readings inside (t0, t1] of a reset segment: a bound
        # from what the meter said about its own draw, not an "add back" of the old
        # register value. A left join keeps the segments in (mi, t0) order.
        fill = (
            power_status_frame.filter(pl.col("status") == STATUS_KEPT)
            .select("mi", "ts", "value")
            .join(segments.filter(pl.col("_reset")).select("mi", "t0", "t1"), on="mi", how="inner")
            .filter((pl.col("ts") > pl.col("t0")) & (pl.col("ts") <= pl.col("t1")))
            .group_by("mi", "t1")
            .agg(pl.col("value").mean().alias("_mean_w"))
        )
        filled = pl.col("_reset") & pl.col("_mean_w").is_not_null()
        segments = segments.join(fill, on=["mi", "t1"], how="left", maintain_order="left").select(
            "mi",
            "t0",
            "t1",
            pl.when(filled)
            .then(pl.col("_mean_w") * (pl.col("t1") - pl.col("t0")) * _KWH_PER_W_US)
            .otherwise(pl.col("e_kwh"))
            .alias("e_kwh"),
            "covered",
            (
                pl.col("flags") | pl.when(filled).then(_flag(_F.ESTIMATED)).otherwise(_no_flag())
            ).alias("flags"),
        )
    segments = segments.select(columns).with_columns(
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
    """Cut segments at interval boundaries: one row per (segment, interval) overlap.

    Rows come out in segment order, each segment's pieces in interval order, so
    segments sorted by ``mi, t0`` (they do not overlap within a meter) give pieces
    sorted by ``mi, k, t0`` without a sort.
    """
    k0 = pl.col("t0") // interval_us
    k1 = (pl.col("t1") - 1) // interval_us
    pieces = (
        segments.with_columns(pl.int_ranges(k0, k1 + 1).alias("k"))
        .explode("k")
        .with_columns(
            # For a segment inside one interval these are t0 and t1 themselves.
            pl.max_horizontal(pl.col("t0"), pl.col("k") * interval_us).alias("a"),
            pl.min_horizontal(pl.col("t1"), (pl.col("k") + 1) * interval_us).alias("b"),
        )
    )
    span = (pl.col("t1") - pl.col("t0")).cast(pl.Float64)
    pa = pl.col("p0") + (pl.col("p1") - pl.col("p0")) * (pl.col("a") - pl.col("t0")) / span
    pb = pl.col("p0") + (pl.col("p1") - pl.col("p0")) * (pl.col("b") - pl.col("t0")) / span
    width = pl.col("b") - pl.col("a")
    return pieces.select(
        "mi",
        "k",
        pl.when(pl.col("p0").is_null())
        .then(pl.col("e_kwh") * (width.cast(pl.Float64) / span))
        .otherwise((pa + pb) / 2.0 * width * _KWH_PER_W_US)
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
        segments: Register and power segments (``mi, t0, t1, e_kwh, p0, p1, covered,
            flags``), sorted by ``mi, t0``.
        rejected: One row per rejected reading or register step (``mi, ts``).
        interval_us: The base interval.

    Returns:
        ``mi, k, energy_kwh, covered_us, flags, rejected_readings`` sorted by ``mi, k``.
    """
    pieces = (
        _spread(segments, interval_us)
        # Pieces arrive sorted by (mi, k, t0): a fixed order inside each (meter, interval)
        # makes the float sums identical whatever batches the readings arrived in
        # (restart equivalence).
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
    parts: pl.LazyFrame, attributes: pl.DataFrame, interval_us: int
) -> pl.LazyFrame:
    """Map ``mi, k`` rows (sorted) to :data:`INTERVAL_SCHEMA` (meter names, UTC datetimes).

    Args:
        parts: ``mi, k, energy_kwh, covered_us, flags, rejected_readings``.
        attributes: :func:`meter_attributes`, collected (row ``mi`` is meter ``mi``).
        interval_us: The base interval.

    Returns:
        The rows in :data:`INTERVAL_STORE_SCHEMA` order, sorted by meter and interval
        start (``mi`` is the dense rank of the meter name, so (mi, k) order is (meter,
        start) order: names are gathered by index, no join and no string sort).
    """
    start = (pl.col("k") * interval_us).cast(pl.Datetime("us", "UTC"))
    return parts.select(
        pl.lit(attributes["meter"]).gather(pl.col("mi")).alias("meter"),
        start.alias("interval_start"),
        (start + pl.duration(microseconds=interval_us)).alias("interval_end"),
        "energy_kwh",
        (pl.col("covered_us").cast(pl.Float64) * (1.0 / interval_us))
        .clip(0.0, 1.0)
        .alias("coverage"),
        pl.col("flags").cast(pl.UInt16),
        pl.lit(attributes["method"]).gather(pl.col("mi")).alias("method"),
        pl.col("rejected_readings").cast(pl.UInt32),
    )

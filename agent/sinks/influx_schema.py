"""The documented, stable InfluxDB schema of pue-agent (see ``docs/line-protocol.md``).

One function per kind of frame turns it into line protocol. Tags identify a
series and nothing else (site, device, point, quantity, role, meter, metric,
period kind, category, rule...): values that can change for the same series and
timestamp are fields, so a replay or a recomputation overwrites the point
instead of adding a second series. Field names carry their unit (``power_w``,
``energy_kwh``, ``benefit_cny``).

Rows that cannot be written (a NaN reading, a finding whose period label has
no date) are returned apart, to be quarantined by the sink: nothing is dropped
silently.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import polars as pl

from agent.sinks.lineprotocol import LineSpec, Precision, to_lines
from agent.site import Site

__all__ = [
    "DERIVED_KINDS",
    "FRAME_KINDS",
    "MEASUREMENTS",
    "REALTIME_SCHEMA",
    "FrameKind",
    "Serialised",
    "SiteTags",
    "serialise",
]

FrameKind = Literal["readings", "gaps", "realtime", "intervals", "kpis", "findings"]
FRAME_KINDS: tuple[FrameKind, ...] = (
    "readings",
    "gaps",
    "realtime",
    "intervals",
    "kpis",
    "findings",
)
#: Kinds computed from the interval store (routed to ``derived_retention_policy`` /
#: ``derived_bucket``); the others follow the journal (``retention_policy`` / ``bucket``).
DERIVED_KINDS: frozenset[FrameKind] = frozenset({"intervals", "kpis", "findings"})

#: Measurement per kind of frame. Stable: renaming one is a migration (docs/line-protocol.md).
MEASUREMENTS: dict[FrameKind, str] = {
    "readings": "pue_reading",
    "gaps": "pue_gap",
    "realtime": "pue_realtime",
    "intervals": "pue_interval",
    "kpis": "pue_kpi",
    "findings": "pue_finding",
}

_READINGS = LineSpec(
    MEASUREMENTS["readings"],
    tags={
        "site": "site",
        "device": "device",
        "point": "point",
        "quantity": "quantity",
        "role": "role",
    },
    fields={"quality": "quality"},
    time="ts",
    dynamic_fields=[("quantity", "value")],
)
_GAPS = LineSpec(
    MEASUREMENTS["gaps"],
    tags={"site": "site", "device": "device"},
    fields={"readings": "readings", "reason": "reason", "duration_s": "duration_s"},
    time="first_ts",
)
#: The real-time PUE (a ratio of powers, from the site's E_DC / E_IT formulas:
#: :class:`agent.realtime.LatestPower`), one point per journal batch that moved it.
REALTIME_SCHEMA = pl.Schema(
    {
        "ts": pl.Datetime("us", "UTC"),
        "pue": pl.Float64(),
        "e_dc_power_w": pl.Float64(),
        "e_it_power_w": pl.Float64(),
        "meters_reporting": pl.Int64(),
        "meters_total": pl.Int64(),
    }
)
_REALTIME = LineSpec(
    MEASUREMENTS["realtime"],
    tags={"site": "site"},
    fields={name: name for name in REALTIME_SCHEMA if name != "ts"},
    time="ts",
)
_INTERVALS = LineSpec(
    MEASUREMENTS["intervals"],
    tags={"site": "site", "meter": "meter", "device": "device", "point": "point", "role": "role"},
    fields={
        "energy_kwh": "energy_kwh",
        "coverage": "coverage",
        "flags": "flags",
        "method": "method",
        "duration_s": "duration_s",
    },
    time="interval_start",
)
_KPIS = LineSpec(
    MEASUREMENTS["kpis"],
    tags={"site": "site", "period_kind": "period_kind", "metric": "metric", "category": "category"},
    fields={
        "value": "value",
        "unit": "unit",
        "status": "status",
        "coverage": "coverage",
        "period": "period",
        "duration_s": "duration_s",
    },
    time="period_start",
)
_FINDING_FIELDS = (
    "result",
    "advisory",
    "measured_value",
    "comparator",
    "threshold",
    "coverage",
    "category",
    "benefit_cny",
    "document",
    "clause",
    "jurisdiction",
    "policy_status",
    "facts_used",
    "explanation",
)
_FINDINGS = LineSpec(
    MEASUREMENTS["findings"],
    tags={
        "site": "site",
        "policy_id": "policy_id",
        "rule_id": "rule_id",
        "metric": "metric",
        "window": "window",
        "period": "period",
    },
    fields={name: name for name in _FINDING_FIELDS},
    time="period_start",
)


@dataclass(frozen=True)
class SiteTags:
    """What the site model adds to every point: the site id and each meter's role."""

    site_id: str | None
    timezone: str
    #: (device, point) -> role, for raw readings.
    points: pl.DataFrame
    #: meter -> device, point, role, for interval rows.
    meters: pl.DataFrame

    @classmethod
    def from_site(cls, site: Site | None, *, site_id: str | None = None) -> SiteTags:
        """Build the lookups from a site model (``site_id`` overrides the model's id)."""
        rows: list[tuple[str, str, str, str]] = []
        meters: list[tuple[str, str, str | None, str]] = []
        if site is not None:
            for meter in site.meters:
                for point in (meter.energy_point, meter.power_point):
                    if point is not None:
                        rows.append((meter.device, point, meter.role.value, meter.id))
                meters.append(
                    (
                        meter.id,
                        meter.device,
                        meter.energy_point or meter.power_point,
                        meter.role.value,
                    )
                )
        points = (
            pl.DataFrame(
                rows,
                schema={
                    "device": pl.String,
                    "point": pl.String,
                    "role": pl.String,
                    "meter": pl.String,
                },
                orient="row",
            )
            .unique(subset=["device", "point"], keep="first")
            .drop("meter")
        )
        meter_frame = pl.DataFrame(
            meters,
            schema={"meter": pl.String, "device": pl.String, "point": pl.String, "role": pl.String},
            orient="row",
        )
        return cls(
            site_id=site_id or (site.id if site is not None else None),
            timezone=site.timezone if site is not None else "Asia/Shanghai",
            points=points,
            meters=meter_frame,
        )


@dataclass(frozen=True)
class Serialised:
    """Line protocol for a frame, and the rows that could not become a line."""

    lines: pl.Series
    #: Rows (as the input frame's columns) that produced no line, with a ``reason`` column.
    unwritable: pl.DataFrame


def _site(frame: pl.DataFrame, tags: SiteTags) -> pl.DataFrame:
    return frame.with_columns(pl.lit(tags.site_id, dtype=pl.String).alias("site"))


def _duration(start: str, end: str) -> pl.Expr:
    return ((pl.col(end) - pl.col(start)).dt.total_microseconds() / 1e6).alias("duration_s")


def _period_start(tz: str) -> pl.Expr:
    """Start of a period label ("2026", "2026-10", "2026-10-05") in site-local time, as UTC."""
    label = pl.col("period")
    parsed = pl.coalesce(
        label.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
        (label + "-01").str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
        (label + "-01-01").str.to_datetime("%Y-%m-%d", strict=False, time_unit="us"),
    )
    return (
        parsed.dt.replace_time_zone(tz, non_existent="null")
        .dt.convert_time_zone("UTC")
        .alias("period_start")
    )


def _split_unwritable(
    frame: pl.DataFrame, spec: LineSpec, precision: Precision, columns: list[str], reason: str
) -> Serialised:
    lines = to_lines(frame, spec, precision=precision)
    missing = lines.is_null()
    if not bool(missing.any()):
        return Serialised(
            lines, frame.head(0).select(columns).with_columns(pl.lit(reason).alias("reason"))
        )
    bad = frame.filter(missing).select(columns).with_columns(pl.lit(reason).alias("reason"))
    return Serialised(lines.filter(~missing), bad)


def serialise(
    kind: FrameKind,
    frame: pl.DataFrame,
    tags: SiteTags,
    *,
    precision: Precision = "us",
    quantities: Collection[str] | None = None,
) -> Serialised:
    """Turn a frame of ``kind`` into line protocol of the documented schema.

    Args:
        kind: Which contract the frame follows (reading batch, gap record,
            INTERVAL_SCHEMA, KPI_SCHEMA or FINDING_SCHEMA).
        frame: The rows.
        tags: Site id and meter roles.
        precision: Timestamp unit of the lines.
        quantities: For readings: only these quantities (``None``: all).

    Returns:
        The lines, and the rows that cannot be written with the reason why.
    """
    columns = frame.columns
    if kind == "readings":
        if quantities is not None:
            frame = frame.filter(pl.col("quantity").is_in(list(quantities)))
        finite = frame["value"].is_finite()
        nonfinite = frame.filter(~finite).with_columns(
            pl.lit("value is NaN or infinite: line protocol cannot carry it").alias("reason")
        )
        if nonfinite.height:
            frame = frame.filter(finite)
        frame = _site(frame, tags).join(
            tags.points, on=["device", "point"], how="left", maintain_order="left"
        )
        lines = to_lines(frame, _READINGS, precision=precision)
        return Serialised(lines, nonfinite)
    if kind == "gaps":
        frame = _site(frame, tags).with_columns(_duration("first_ts", "last_ts"))
        return _split_unwritable(frame, _GAPS, precision, columns, "no timestamp")
    if kind == "realtime":
        frame = _site(frame, tags)
        return _split_unwritable(frame, _REALTIME, precision, columns, "no timestamp")
    if kind == "intervals":
        frame = (
            _site(frame, tags)
            .join(tags.meters, on="meter", how="left", maintain_order="left")
            .with_columns(_duration("interval_start", "interval_end"))
        )
        return _split_unwritable(frame, _INTERVALS, precision, columns, "no timestamp")
    if kind == "kpis":
        frame = frame.with_columns(
            pl.col("site").fill_null(pl.lit(tags.site_id, dtype=pl.String)),
            _duration("period_start", "period_end"),
        )
        return _split_unwritable(frame, _KPIS, precision, columns, "no timestamp or no field")
    if kind == "findings":
        frame = frame.with_columns(
            pl.col("site").fill_null(pl.lit(tags.site_id, dtype=pl.String)),
            _period_start(tags.timezone),
        )
        return _split_unwritable(
            frame, _FINDINGS, precision, columns, "period label is not a date (YYYY[-MM[-DD]])"
        )
    raise ValueError(f"unknown frame kind {kind!r} (known: {', '.join(FRAME_KINDS)})")

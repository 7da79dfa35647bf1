"""Site KPIs from interval energy: PUE, pPUE, REF, CUE, fossil share, rack occupancy.

Everything here is a pure function of interval rows, the site model and the green
ledger, so ``pue-agent report verify`` re-runs exactly what the agent ran. A period
figure is always a ratio of *summed energies* over the period (never a mean of
interval ratios), and a period whose coverage is below the threshold is reported
as ``insufficient_data`` with a null value.

Coverage of an energy total over a period = covered meter-time of its member meters
/ (members x period length); a meter with no rows in the period counts as not
covered at all. A ratio's coverage is the lower of its numerator's and
denominator's.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from agent.periods import month_bounds, shift_month, ttm_bounds, whole_hour_offsets
from agent.schemas import KPI_SCHEMA, KpiStatus, PeriodKind
from agent.site import MeterRole, Site

__all__ = [
    "DEFAULT_KINDS",
    "GREEN_SCHEMA",
    "KPI_ENGINE",
    "QUANTITIES",
    "compute_kpis",
    "kpi_choices",
    "meter_signs",
    "sort_kpis",
]

#: Name recorded in a report's ``kpis.json``; ``verify`` refuses a bundle naming another.
KPI_ENGINE = "agent.kpi.compute_kpis"

#: The documentary renewable ledger as :func:`compute_kpis` reads it (``agent.green``
#: produces it; the report's interim engine uses the same columns).
GREEN_SCHEMA = pl.Schema(
    {
        "month": pl.String(),  # local month the certificates / contract are for, YYYY-MM
        "kind": pl.String(),  # "certificate" | "contract"
        "energy_kwh": pl.Float64(),
        "reference": pl.String(),
    }
)

#: Energy totals formed per period, by the meters (and signs) that make them up.
QUANTITIES = ("e_dc", "e_it", "e_cooling", "e_renewable_metered", "e_rack")

DEFAULT_KINDS: tuple[PeriodKind, ...] = (
    PeriodKind.INTERVAL,
    PeriodKind.HOUR,
    PeriodKind.DAY,
    PeriodKind.MONTH,
    PeriodKind.TTM,
)

_US_PER_H = 3.6e9
_LABEL = {
    PeriodKind.INTERVAL: "%Y-%m-%dT%H:%M",
    PeriodKind.HOUR: "%Y-%m-%dT%H",
    PeriodKind.DAY: "%Y-%m-%d",
    PeriodKind.MONTH: "%Y-%m",
}
_EVERY = {PeriodKind.HOUR: "1h", PeriodKind.DAY: "1d", PeriodKind.MONTH: "1mo"}


def meter_signs(site: Site) -> pl.DataFrame:
    """One row per site meter with its sign in every total of :data:`QUANTITIES`.

    ``e_dc``/``e_it`` follow the site's formulas (``-`` terms subtract); cooling and
    metered renewable (on-site generation and metered green supply) follow roles;
    ``e_rack`` marks IT meters that name a rack.
    """
    meters = site.meters
    # Columns by position in ``site.meters`` (``site.meter(id)`` is a linear search:
    # quadratic for a 2,000-meter site); this runs on every ``compute_kpis`` call.
    position = {m.id: i for i, m in enumerate(meters)}
    columns = {q: [0.0] * len(meters) for q in QUANTITIES}
    for name in ("e_dc", "e_it"):
        assert name in ("e_dc", "e_it")
        column = columns[name]
        for sign, meter_id in site.expand(name):
            column[position[meter_id]] += float(sign)
    renewable = (MeterRole.ONSITE_RENEWABLE, MeterRole.GREEN_CONTRACT)
    columns["e_cooling"] = [float(m.role is MeterRole.COOLING) for m in meters]
    columns["e_renewable_metered"] = [float(m.role in renewable) for m in meters]
    columns["e_rack"] = [float(m.role is MeterRole.IT and m.rack is not None) for m in meters]
    return pl.DataFrame(
        {"meter": list(position), "rack": [m.rack for m in meters], **columns},
        schema={"meter": pl.String, "rack": pl.String, **dict.fromkeys(QUANTITIES, pl.Float64)},
    )


def _in_window(rows: pl.LazyFrame, start: datetime, end: datetime, meters: pl.Enum) -> pl.LazyFrame:
    """Rows of site meters starting in ``[start, end)``, ``meter`` cast to the site enum."""
    return (
        rows.filter((pl.col("interval_start") >= start) & (pl.col("interval_start") < end))
        .with_columns(pl.col("meter").cast(meters, strict=False))
        .filter(pl.col("meter").is_not_null())
    )


def _with_covered(rows: pl.LazyFrame) -> pl.LazyFrame:
    return rows.select(
        "meter",
        "interval_start",
        "interval_end",
        "energy_kwh",
        (
            pl.col("coverage")
            * (pl.col("interval_end") - pl.col("interval_start")).dt.total_microseconds()
        ).alias("covered_us"),
    )


def _roll(rows: pl.LazyFrame, kind: PeriodKind, timezone: str) -> pl.LazyFrame:
    """Sum meter rows into local calendar periods of ``kind``.

    Rows have ``meter, interval_start, interval_end, energy_kwh, covered_us``; the
    result has the same columns, so rolls chain (hours -> days -> months).
    """
    if kind is PeriodKind.INTERVAL:
        return rows
    every = _EVERY[kind]
    if kind is PeriodKind.HOUR and whole_hour_offsets(timezone):
        # Local hours are UTC hours here: skip the (slow) per-row zone conversion.
        key = pl.col("interval_start").dt.truncate("1h")
        end = pl.col("_key") + pl.duration(hours=1)
        start = pl.col("_key")
    else:
        key = pl.col("interval_start").dt.convert_time_zone(timezone).dt.truncate(every)
        start = pl.col("_key").dt.convert_time_zone("UTC")
        end = pl.col("_key").dt.offset_by(every).dt.convert_time_zone("UTC")
    return (
        rows.with_columns(key.alias("_key"))
        .group_by("meter", "_key")
        .agg(pl.col("energy_kwh").sum(), pl.col("covered_us").sum())
        .select(
            "meter",
            start.alias("interval_start"),
            end.alias("interval_end"),
            "energy_kwh",
            "covered_us",
        )
    )


def _label(kind: PeriodKind, timezone: str, month: str) -> pl.Expr:
    if kind is PeriodKind.TTM:
        return pl.lit(month)
    return pl.col("period_start").dt.convert_time_zone(timezone).dt.strftime(_LABEL[kind])


@dataclass(frozen=True)
class _Signs:
    """The site's meter signs, prepared once per :func:`compute_kpis` call.

    ``frame`` is :func:`meter_signs` with ``meter`` cast to ``enum`` (the site's meters, in
    ``site.meters`` order). ``classes`` holds the distinct rows of signs (a 2,000-meter
    site has a handful: PDUs, incomers, PV, ...) keyed by ``_class``; ``member[i]`` is the
    class of the meter with enum index ``i``.
    """

    frame: pl.DataFrame
    enum: pl.Enum
    classes: pl.DataFrame
    member: pl.Series
    members: dict[str, float]

    @classmethod
    def of(cls, site: Site) -> _Signs:
        """Signs, enum and classes of ``site``."""
        signs = meter_signs(site)
        enum = pl.Enum(signs["meter"])
        keys = list(zip(*(signs[q].to_list() for q in QUANTITIES), strict=True))
        index: dict[tuple[float, ...], int] = {}
        member = [index.setdefault(key, len(index)) for key in keys]
        classes = pl.DataFrame(
            {
                "_class": list(index.values()),
                **{q: [k[i] for k in index] for i, q in enumerate(QUANTITIES)},
            },
            schema={"_class": pl.UInt32, **dict.fromkeys(QUANTITIES, pl.Float64)},
        )
        return cls(
            frame=signs.with_columns(pl.col("meter").cast(enum)),
            enum=enum,
            classes=classes,
            member=pl.Series("_class", member, dtype=pl.UInt32),
            members={q: float((signs[q] != 0).sum()) for q in QUANTITIES},
        )


def _totals(meter_periods: pl.LazyFrame, signs: _Signs) -> pl.LazyFrame:
    """Per period: every total of :data:`QUANTITIES` and its coverage (0..1).

    Energy and covered time are summed per period and sign class first (a gather by the
    meter's enum index, small integer keys), then weighted by the class's signs: interval
    PUE of 89 M one-minute rows took 2.6 s instead of 4.2-4.6 s with the signs joined onto
    every row. Sums are the same up to rounding (added in another order).
    """
    members = signs.members
    period_us = (pl.col("interval_end") - pl.col("interval_start")).dt.total_microseconds()
    meter_class = pl.lit(signs.member).gather(pl.col("meter").to_physical()).alias("_class")
    return (
        meter_periods.group_by("interval_start", "interval_end", meter_class)
        .agg(pl.col("energy_kwh").sum(), pl.col("covered_us").sum())
        .join(signs.classes.lazy(), on="_class", how="inner")
        .group_by("interval_start", "interval_end")
        .agg(
            *[(pl.col(q) * pl.col("energy_kwh")).sum().alias(q) for q in QUANTITIES],
            *[
                pl.col("covered_us").filter(pl.col(q) != 0).sum().alias(f"_cov_{q}")
                for q in QUANTITIES
            ],
        )
        .with_columns(
            *[
                (
                    pl.col(f"_cov_{q}") / (members[q] * period_us)
                    if members[q]
                    else pl.lit(None, pl.Float64)
                ).alias(f"cov_{q}")
                for q in QUANTITIES
            ]
        )
        .rename({"interval_start": "period_start", "interval_end": "period_end"})
    )


def _rack_occupancy(meter_periods: pl.LazyFrame, signs: pl.DataFrame, site: Site) -> pl.LazyFrame:
    """Per period: racks whose IT meters drew more than the idle threshold, over declared racks."""
    racks = signs.lazy().filter(pl.col("e_rack") != 0).select("meter", "rack")
    per_meter = racks.group_by("rack").agg(pl.len().alias("_n"))
    idle_w = site.facts.rack_idle_threshold_w
    declared = site.facts.racks
    by_rack = (
        meter_periods.join(racks, on="meter", how="inner")
        .group_by("interval_start", "rack")
        .agg(pl.col("energy_kwh").sum(), pl.col("covered_us").sum())
        .join(per_meter, on="rack")
        .with_columns((pl.col("covered_us") / pl.col("_n")).alias("_covered_mean_us"))
        .with_columns(
            # Mean draw while measured: energy over the covered time, so a rack is not
            # called idle because its meter was silent part of the month.
            (pl.col("energy_kwh") * 1000.0 / (pl.col("_covered_mean_us") / _US_PER_H)).alias(
                "_mean_w"
            )
        )
    )
    return by_rack.group_by(pl.col("interval_start").alias("period_start")).agg(
        (pl.col("_mean_w") > idle_w).sum().cast(pl.Float64).alias("_occupied"),
        pl.lit(float(declared) if declared else None, pl.Float64).alias("_declared"),
    )


def _metric(
    metric: str,
    *,
    value: pl.Expr,
    coverage: pl.Expr,
    unit: str,
    threshold: float,
    category: int | None = None,
) -> pl.Expr:
    """One KPI of a period as a struct (metric, value, unit, status, coverage, category).

    A period's KPIs are a list of these structs, exploded into rows: one plan per kind.
    """
    ok = (coverage.fill_null(0.0) >= threshold) & value.is_not_null() & value.is_finite()
    return pl.struct(
        pl.lit(metric).alias("metric"),
        pl.when(ok).then(value).otherwise(None).cast(pl.Float64).alias("value"),
        pl.lit(unit).alias("unit"),
        pl.when(ok)
        .then(pl.lit(KpiStatus.OK.value))
        .otherwise(pl.lit(KpiStatus.INSUFFICIENT_DATA.value))
        .alias("status"),
        coverage.cast(pl.Float64).alias("coverage"),
        pl.lit(category, pl.Int8).alias("category"),
    )


def _kind_rows(wide: pl.LazyFrame, site: Site, metrics: list[pl.Expr]) -> pl.LazyFrame:
    """KPI rows (:data:`KPI_SCHEMA` columns) of every period in ``wide``, one per metric."""
    return (
        wide.select(
            "period_kind",
            "period",
            "period_start",
            "period_end",
            pl.concat_list(metrics).alias("_m"),
        )
        .explode("_m")
        .unnest("_m")
        .select(pl.lit(site.id).alias("site"), *KPI_SCHEMA.names()[1:])
    )


def _safe_div(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return pl.when(b > 0).then(a / b)


def _energy_metrics(site: Site, kind: PeriodKind, thr: float, *, cooling: bool) -> list[pl.Expr]:
    row = functools.partial(_metric, threshold=thr)
    pue = _safe_div(pl.col("e_dc"), pl.col("e_it"))
    pue_cov = pl.min_horizontal("cov_e_dc", "cov_e_it")
    out = [row("pue", value=pue, coverage=pue_cov, unit="", category=site.pue_category)]
    if kind is PeriodKind.INTERVAL:
        return out
    out += [
        row("e_dc_kwh", value=pl.col("e_dc"), coverage=pl.col("cov_e_dc"), unit="kWh"),
        row("e_it_kwh", value=pl.col("e_it"), coverage=pl.col("cov_e_it"), unit="kWh"),
    ]
    if cooling:
        ppue = _safe_div(pl.col("e_cooling") + pl.col("e_it"), pl.col("e_it"))
        cov = pl.min_horizontal("cov_e_cooling", "cov_e_it")
        out.append(row("ppue_cooling", value=ppue, coverage=cov, unit=""))
    return out


def _green_metrics(site: Site, thr: float, *, renewable_meters: bool) -> list[pl.Expr]:
    """Renewable, fossil and carbon KPIs; ``_documentary`` is the period's ledger kWh."""
    e_dc = pl.col("e_dc")
    metered = pl.col("e_renewable_metered").fill_null(0.0)
    doc = pl.col("_documentary")
    ren_cov = (
        pl.min_horizontal("cov_e_dc", "cov_e_renewable_metered")
        if renewable_meters
        else pl.col("cov_e_dc")
    )
    ref = _safe_div(metered + doc, e_dc).clip(upper_bound=1.0)
    ref_metered = _safe_div(metered, e_dc).clip(upper_bound=1.0)
    # Fossil: grid energy not covered by renewable attributes the site owns (the grid's
    # own non-fossil share is inside the emission factor, so it is not claimed twice).
    fossil = (e_dc - metered - doc).clip(lower_bound=0.0)
    # Every row of this block shares the threshold.
    row = functools.partial(_metric, threshold=thr)
    out = [
        row("ref", value=ref, coverage=ren_cov, unit=""),
        row("ref_metered", value=ref_metered, coverage=ren_cov, unit=""),
        # The documentary part is what the certificates/contracts add after the cap, so
        # ref_metered + ref_documentary == ref.
        row("ref_documentary", value=ref - ref_metered, coverage=ren_cov, unit=""),
        row("e_renewable_metered_kwh", value=metered, coverage=ren_cov, unit="kWh"),
        row("e_renewable_documentary_kwh", value=doc, coverage=pl.lit(1.0), unit="kWh"),
        row("energy_fossil_kwh", value=fossil, coverage=ren_cov, unit="kWh"),
        row("energy_non_fossil_kwh", value=e_dc - fossil, coverage=ren_cov, unit="kWh"),
        # Our definition (docs/pue.md): share of E_DC whose origin a meter or certificate proves,
        # i.e. the time-coverage of E_DC's meters.
        _metric(
            "carbon_traceability",
            value=pl.col("cov_e_dc"),
            coverage=pl.col("cov_e_dc"),
            unit="",
            threshold=0.0,
        ),
    ]
    factor = site.facts.emission_factor
    ef = pl.lit(factor.kg_co2_per_kwh if factor else None, pl.Float64)
    co2 = fossil * ef
    cue_cov = pl.min_horizontal(ren_cov, pl.col("cov_e_it"))
    out += [
        row("co2_kg", value=co2, coverage=ren_cov, unit="kgCO2"),
        row("cue", value=_safe_div(co2, pl.col("e_it")), coverage=cue_cov, unit="kgCO2/kWh"),
    ]
    return out


def _documentary_kwh(green: pl.DataFrame | None, months: Sequence[str]) -> float:
    if green is None or green.height == 0:
        return 0.0
    total = green.filter(pl.col("month").is_in(list(months)))["energy_kwh"].sum()
    return float(total or 0.0)


def compute_kpis(
    intervals: pl.LazyFrame,
    site: Site,
    green: pl.DataFrame | None,
    *,
    month: str,
    coverage_threshold: float = 0.95,
    kinds: Sequence[PeriodKind] = DEFAULT_KINDS,
) -> pl.DataFrame:
    """Every KPI of local month ``month`` and of the twelve months ending with it.

    Signature (stable; ``agent.report`` and ``rules`` call it)::

        compute_kpis(intervals: pl.LazyFrame, site: Site, green: pl.DataFrame | None, *,
                     month: str, coverage_threshold: float = 0.95,
                     kinds: Sequence[PeriodKind] = DEFAULT_KINDS) -> pl.DataFrame

    Args:
        intervals: Interval rows (``INTERVAL_SCHEMA`` columns) covering the
            trailing-twelve-month window; rows outside it are ignored. Rows of the month
            must not straddle local hours (base intervals, or hourly roll-ups in
            whole-hour zones); rows before it only feed the TTM, summed per meter, so
            any granularity that does not cross the month's start will do (e.g. the
            store's daily roll-ups, :func:`agent.kpi.from_store.earlier_rows`).
        site: The site model (formulas, roles, racks, emission factor, time zone).
        green: Documentary renewable energy (:data:`GREEN_SCHEMA`: ``month, kind,
            energy_kwh, reference``), or ``None``.
        month: Local month label ``YYYY-MM``.
        coverage_threshold: Minimum coverage (0..1) for a value; below it the row is
            ``insufficient_data`` with a null value.
        kinds: Period kinds to compute.

    Returns:
        Rows in :data:`agent.schemas.KPI_SCHEMA`: ``pue`` for every interval, hour and
        local day of the month, the month (interim) and the TTM (annual); energies and
        ``ppue_cooling`` for hours and longer; ``ref`` (+ metered/documentary parts),
        ``cue``, ``co2_kg``, fossil/non-fossil energy, ``carbon_traceability`` and
        ``rack_occupancy`` for the month and the TTM.
    """
    if not 0.0 <= coverage_threshold <= 1.0:
        raise ValueError(f"coverage_threshold {coverage_threshold} is not between 0 and 1")
    tz = site.timezone
    m_start, m_end = month_bounds(month, tz)
    t_start, t_end = ttm_bounds(month, tz)
    # Meter names become an enum of the site's meters once (other meters -> null ->
    # dropped), so every group-by and join below works on small integer keys instead of
    # hashing tens of millions of strings again.
    signs = _Signs.of(site)
    rows = intervals.pipe(_in_window, t_start, t_end, signs.enum).pipe(_with_covered)
    per_kind = _meter_periods(rows, tz, (m_start, m_end), (t_start, t_end))
    documentary = {
        PeriodKind.MONTH: _documentary_kwh(green, [month]),
        PeriodKind.TTM: _documentary_kwh(green, [shift_month(month, -k) for k in range(12)]),
    }
    # The only pass over the intervals: per-period totals of every kind (and rack
    # occupancy), one collect with the default (streaming) engine.
    wanted = list(dict.fromkeys(kinds))
    annual = [k for k in wanted if k in documentary]
    collected = pl.collect_all(
        [
            *[
                _totals(per_kind[kind], signs).with_columns(
                    pl.lit(kind.value).alias("period_kind"),
                    _label(kind, tz, month).alias("period"),
                )
                for kind in wanted
            ],
            *[_rack_occupancy(per_kind[kind], signs.frame, site) for kind in annual],
        ]
    )
    wide = dict(zip(wanted, collected, strict=False))
    for kind, occupancy in zip(annual, collected[len(wanted) :], strict=True):
        wide[kind] = (
            wide[kind]
            .join(occupancy, on="period_start", how="left")
            .with_columns(pl.lit(documentary[kind], pl.Float64).alias("_documentary"))
        )
    # KPI rows: one small plan per set of metrics (interval; hour and day; month and TTM).
    # Planning the ~20 metric expressions costs more than evaluating them on these few
    # rows, so kinds sharing metrics share a plan, run by the in-memory engine.
    roles = {m.role for m in site.meters}
    plans = []
    for group in _METRIC_GROUPS:
        members = [wide[k] for k in group if k in wide]
        if members:
            metrics = _group_metrics(site, roles, group[0], coverage_threshold)
            plans.append(_kind_rows(pl.concat(members, how="vertical").lazy(), site, metrics))
    return sort_kpis(pl.concat(pl.collect_all(plans, engine="in-memory"), how="vertical"))


#: Period kinds that share a set of metrics (see :func:`_group_metrics`).
_METRIC_GROUPS = (
    (PeriodKind.INTERVAL,),
    (PeriodKind.HOUR, PeriodKind.DAY),
    (PeriodKind.MONTH, PeriodKind.TTM),
)


def _group_metrics(
    site: Site, roles: set[MeterRole], kind: PeriodKind, threshold: float
) -> list[pl.Expr]:
    """The metric structs of ``kind``'s periods (``pue`` only for intervals)."""
    metrics = _energy_metrics(site, kind, threshold, cooling=MeterRole.COOLING in roles)
    if kind in (PeriodKind.MONTH, PeriodKind.TTM):
        renewable = bool(roles & {MeterRole.ONSITE_RENEWABLE, MeterRole.GREEN_CONTRACT})
        metrics += _green_metrics(site, threshold, renewable_meters=renewable)
        metrics.append(
            _metric(
                "rack_occupancy",
                value=_safe_div(pl.col("_occupied").fill_null(0.0), pl.col("_declared")),
                coverage=pl.col("cov_e_rack"),
                unit="",
                threshold=threshold,
            )
        )
    return metrics


def _meter_periods(
    rows: pl.LazyFrame,
    tz: str,
    month_span: tuple[datetime, datetime],
    ttm_span: tuple[datetime, datetime],
) -> dict[PeriodKind, pl.LazyFrame]:
    """Per period kind, meter rows summed per period (the columns of :func:`_with_covered`).

    Rows before the month feed the TTM only (summed per meter).
    """
    m_start, m_end = month_span
    t_start, t_end = ttm_span
    in_month = (pl.col("interval_start") >= m_start) & (pl.col("interval_start") < m_end)
    month_rows = rows.filter(in_month)
    hours = _roll(month_rows, PeriodKind.HOUR, tz).cache()
    days = _roll(hours, PeriodKind.DAY, tz).cache()
    months = _roll(days, PeriodKind.MONTH, tz)
    ttm = (
        pl.concat([rows.filter(~in_month), months])
        .group_by("meter")
        .agg(pl.col("energy_kwh").sum(), pl.col("covered_us").sum())
        .with_columns(
            pl.lit(t_start)
            .dt.cast_time_unit("us")
            .dt.replace_time_zone("UTC")
            .alias("interval_start"),
            pl.lit(t_end).dt.cast_time_unit("us").dt.replace_time_zone("UTC").alias("interval_end"),
        )
    )
    return {
        PeriodKind.INTERVAL: month_rows,
        PeriodKind.HOUR: hours,
        PeriodKind.DAY: days,
        PeriodKind.MONTH: months,
        PeriodKind.TTM: ttm,
    }


def sort_kpis(frame: pl.DataFrame) -> pl.DataFrame:
    """KPI rows in :data:`KPI_SCHEMA`, in :func:`compute_kpis` order (kind, start, metric).

    For callers that compute kinds in separate :func:`compute_kpis` calls and concatenate.
    """
    order = {k.value: i for i, k in enumerate(DEFAULT_KINDS)}
    return (
        frame.with_columns(pl.col("period_kind").replace_strict(order).alias("_o"))
        .sort("_o", "period_start", "metric")
        .drop("_o")
        .select(KPI_SCHEMA.names())
        .cast(KPI_SCHEMA)
    )


def kpi_choices(
    site: Site,
    *,
    coverage_threshold: float,
    energy: dict[str, object] | None = None,
    computed_at: datetime | None = None,
) -> dict[str, object]:
    """The choices behind a KPI run, recorded next to every stored/printed result."""
    factor = site.facts.emission_factor
    return {
        "engine": "agent.kpi.compute_kpis",
        "coverage_threshold": coverage_threshold,
        "coverage_rule": "covered meter-time / (members x period); ratio = min of its parts",
        "period_pue": "sum(E_DC) / sum(E_IT) over the period (never a mean of ratios)",
        "pue_category": site.pue_category,
        "timezone": site.timezone,
        "ref": "min(1, (metered on-site/green meters + certificates + contracts) / E_DC)",
        "fossil": "max(0, E_DC - metered renewable - documentary renewable)",
        "emission_factor": (
            {"kg_co2_per_kwh": factor.kg_co2_per_kwh, "source": factor.source, "year": factor.year}
            if factor
            else None
        ),
        "carbon_traceability": "time-coverage of the E_DC meters (our definition)",
        "rack_idle_threshold_w": site.facts.rack_idle_threshold_w,
        "declared_racks": site.facts.racks,
        "energy": energy,
        **({"computed_at": computed_at.isoformat()} if computed_at else {}),
    }


def choices_json(choices: dict[str, object]) -> str:
    """Canonical JSON of :func:`kpi_choices`."""
    return json.dumps(choices, sort_keys=True, ensure_ascii=False)

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
from datetime import datetime

import polars as pl

from agent.kpi.periods import month_bounds, shift_month, ttm_bounds, whole_hour_offsets
from agent.schemas import KPI_SCHEMA, KpiStatus, PeriodKind
from agent.site import MeterRole, Site

__all__ = [
    "DEFAULT_KINDS",
    "GREEN_SCHEMA",
    "QUANTITIES",
    "compute_kpis",
    "kpi_choices",
    "meter_signs",
]

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
    signs: dict[str, dict[str, float]] = {m.id: dict.fromkeys(QUANTITIES, 0.0) for m in site.meters}
    for name in ("e_dc", "e_it"):
        assert name in ("e_dc", "e_it")
        for sign, meter_id in site.expand(name):
            signs[meter_id][name] += float(sign)
    for m in site.meters:
        if m.role is MeterRole.COOLING:
            signs[m.id]["e_cooling"] = 1.0
        if m.role in (MeterRole.ONSITE_RENEWABLE, MeterRole.GREEN_CONTRACT):
            signs[m.id]["e_renewable_metered"] = 1.0
        if m.role is MeterRole.IT and m.rack is not None:
            signs[m.id]["e_rack"] = 1.0
    return pl.DataFrame(
        {
            "meter": list(signs),
            # ``signs`` is keyed in ``site.meters`` order (``site.meter(id)`` is a linear
            # search: quadratic for a 2,000-meter site).
            "rack": [m.rack for m in site.meters],
            **{q: [signs[mid][q] for mid in signs] for q in QUANTITIES},
        },
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


def _totals(meter_periods: pl.LazyFrame, signs: pl.DataFrame) -> pl.LazyFrame:
    """Per period: every total of :data:`QUANTITIES` and its coverage (0..1)."""
    members = {q: float((signs[q] != 0).sum()) for q in QUANTITIES}
    period_us = (pl.col("interval_end") - pl.col("interval_start")).dt.total_microseconds()
    return (
        meter_periods.join(signs.lazy().drop("rack"), on="meter", how="inner")
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


def _rack_occupancy(
    meter_periods: pl.LazyFrame, signs: pl.DataFrame, site: Site, threshold: float
) -> pl.LazyFrame:
    """Per period: racks whose IT meters drew more than the idle threshold, over declared racks."""
    racks = signs.filter(pl.col("e_rack") != 0).select("meter", "rack")
    per_meter = racks.group_by("rack").agg(pl.len().alias("_n"))
    idle_w = site.facts.rack_idle_threshold_w
    declared = site.facts.racks
    by_rack = (
        meter_periods.join(racks.lazy(), on="meter", how="inner")
        .group_by("interval_start", "rack")
        .agg(pl.col("energy_kwh").sum(), pl.col("covered_us").sum())
        .join(per_meter.lazy(), on="rack")
        .with_columns((pl.col("covered_us") / pl.col("_n")).alias("_covered_mean_us"))
        .with_columns(
            # Mean draw while measured: energy over the covered time, so a rack is not
            # called idle because its meter was silent part of the month.
            (pl.col("energy_kwh") * 1000.0 / (pl.col("_covered_mean_us") / _US_PER_H)).alias(
                "_mean_w"
            )
        )
    )
    del threshold
    return by_rack.group_by(pl.col("interval_start").alias("period_start")).agg(
        (pl.col("_mean_w") > idle_w).sum().cast(pl.Float64).alias("_occupied"),
        pl.lit(float(declared) if declared else None, pl.Float64).alias("_declared"),
    )


def _rows(
    wide: pl.LazyFrame,
    *,
    site: Site,
    kind: PeriodKind,
    metric: str,
    value: pl.Expr,
    coverage: pl.Expr,
    unit: str,
    threshold: float,
    category: int | None = None,
    valid: pl.Expr | None = None,
) -> pl.LazyFrame:
    ok = coverage.fill_null(0.0) >= threshold
    if valid is not None:
        ok = ok & valid.fill_null(False)
    ok = ok & value.is_not_null() & value.is_finite()
    return wide.select(
        pl.lit(site.id).alias("site"),
        pl.lit(kind.value).alias("period_kind"),
        "period",
        "period_start",
        "period_end",
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


def _safe_div(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return pl.when(b > 0).then(a / b)


def _energy_metrics(
    wide: pl.LazyFrame, site: Site, kind: PeriodKind, thr: float
) -> list[pl.LazyFrame]:
    row = functools.partial(_rows, wide, site=site, kind=kind, threshold=thr)
    pue = _safe_div(pl.col("e_dc"), pl.col("e_it"))
    pue_cov = pl.min_horizontal("cov_e_dc", "cov_e_it")
    out = [row(metric="pue", value=pue, coverage=pue_cov, unit="", category=site.pue_category)]
    if kind is PeriodKind.INTERVAL:
        return out
    out += [
        row(metric="e_dc_kwh", value=pl.col("e_dc"), coverage=pl.col("cov_e_dc"), unit="kWh"),
        row(metric="e_it_kwh", value=pl.col("e_it"), coverage=pl.col("cov_e_it"), unit="kWh"),
    ]
    if any(m.role is MeterRole.COOLING for m in site.meters):
        ppue = _safe_div(pl.col("e_cooling") + pl.col("e_it"), pl.col("e_it"))
        cov = pl.min_horizontal("cov_e_cooling", "cov_e_it")
        out.append(row(metric="ppue_cooling", value=ppue, coverage=cov, unit=""))
    return out


def _green_metrics(
    wide: pl.LazyFrame, site: Site, kind: PeriodKind, thr: float, documentary_kwh: float
) -> list[pl.LazyFrame]:
    e_dc = pl.col("e_dc")
    metered = pl.col("e_renewable_metered").fill_null(0.0)
    doc = pl.lit(documentary_kwh, pl.Float64)
    ren_cov = (
        pl.min_horizontal("cov_e_dc", "cov_e_renewable_metered")
        if any(
            m.role in (MeterRole.ONSITE_RENEWABLE, MeterRole.GREEN_CONTRACT) for m in site.meters
        )
        else pl.col("cov_e_dc")
    )
    ref = _safe_div(metered + doc, e_dc).clip(upper_bound=1.0)
    ref_metered = _safe_div(metered, e_dc).clip(upper_bound=1.0)
    # Fossil: grid energy not covered by renewable attributes the site owns (the grid's
    # own non-fossil share is inside the emission factor, so it is not claimed twice).
    fossil = (e_dc - metered - doc).clip(lower_bound=0.0)
    # Every row of this block shares the frame, site, period kind and threshold.
    row = functools.partial(_rows, wide, site=site, kind=kind, threshold=thr)
    out = [
        row(metric="ref", value=ref, coverage=ren_cov, unit=""),
        row(metric="ref_metered", value=ref_metered, coverage=ren_cov, unit=""),
        # The documentary part is what the certificates/contracts add after the cap, so
        # ref_metered + ref_documentary == ref.
        row(metric="ref_documentary", value=ref - ref_metered, coverage=ren_cov, unit=""),
        row(metric="e_renewable_metered_kwh", value=metered, coverage=ren_cov, unit="kWh"),
        row(metric="e_renewable_documentary_kwh", value=doc, coverage=pl.lit(1.0), unit="kWh"),
        row(metric="energy_fossil_kwh", value=fossil, coverage=ren_cov, unit="kWh"),
        row(metric="energy_non_fossil_kwh", value=e_dc - fossil, coverage=ren_cov, unit="kWh"),
        # Our definition (PUE.md): share of E_DC whose origin a meter or certificate proves,
        # i.e. the time-coverage of E_DC's meters.
        _rows(
            wide,
            site=site,
            kind=kind,
            metric="carbon_traceability",
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
        row(metric="co2_kg", value=co2, coverage=ren_cov, unit="kgCO2"),
        row(metric="cue", value=_safe_div(co2, pl.col("e_it")), coverage=cue_cov, unit="kgCO2/kWh"),
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
        intervals: Interval rows (``INTERVAL_SCHEMA`` columns; any granularity that does
            not straddle local hours, e.g. base intervals or hourly roll-ups) covering
            the trailing-twelve-month window; rows outside it are ignored.
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
    signs = meter_signs(site)
    meter_enum = pl.Enum(signs["meter"])
    signs = signs.with_columns(pl.col("meter").cast(meter_enum))
    rows = intervals.pipe(_in_window, t_start, t_end, meter_enum).pipe(_with_covered)
    in_month = (pl.col("interval_start") >= m_start) & (pl.col("interval_start") < m_end)
    month_rows = rows.filter(in_month)
    hours = _roll(month_rows, PeriodKind.HOUR, tz).cache()
    days = _roll(hours, PeriodKind.DAY, tz).cache()
    months = _roll(days, PeriodKind.MONTH, tz)
    earlier = rows.filter(~in_month)
    ttm = (
        pl.concat([earlier, months])
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
    per_kind: dict[PeriodKind, pl.LazyFrame] = {
        PeriodKind.INTERVAL: month_rows,
        PeriodKind.HOUR: hours,
        PeriodKind.DAY: days,
        PeriodKind.MONTH: months,
        PeriodKind.TTM: ttm,
    }
    documentary = {
        PeriodKind.MONTH: _documentary_kwh(green, [month]),
        PeriodKind.TTM: _documentary_kwh(green, [shift_month(month, -k) for k in range(12)]),
    }
    frames: list[pl.LazyFrame] = []
    for kind in kinds:
        meter_periods = per_kind[kind]
        wide = (
            _totals(meter_periods, signs)
            .with_columns(_label(kind, tz, month).alias("period"))
            .cache()
        )
        frames += _energy_metrics(wide, site, kind, coverage_threshold)
        if kind in (PeriodKind.MONTH, PeriodKind.TTM):
            frames += _green_metrics(wide, site, kind, coverage_threshold, documentary[kind])
            occupancy = wide.join(
                _rack_occupancy(meter_periods, signs, site, coverage_threshold),
                on="period_start",
                how="left",
            )
            frames.append(
                _rows(
                    occupancy,
                    site=site,
                    kind=kind,
                    metric="rack_occupancy",
                    value=_safe_div(pl.col("_occupied").fill_null(0.0), pl.col("_declared")),
                    coverage=pl.col("cov_e_rack"),
                    unit="",
                    threshold=coverage_threshold,
                )
            )
    order = {k.value: i for i, k in enumerate(DEFAULT_KINDS)}
    result = pl.concat(pl.collect_all(frames), how="vertical")
    return (
        result.with_columns(pl.col("period_kind").replace_strict(order).alias("_o"))
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

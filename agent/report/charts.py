"""The report's charts as PNG bytes (matplotlib, Agg backend, CJK-capable font).

Charts are drawn from the same KPI frame that ``kpis.json`` holds, so every
plotted value is a number an auditor can look up and re-compute.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt  # the Agg backend is chosen above, before pyplot loads
import polars as pl
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["CHART_NAMES", "hourly_heatmap", "render_charts"]

CHART_NAMES = ("daily_pue", "ttm_pue", "energy_breakdown", "green_share")

_CJK_FONT_FILES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.otf"),
)
_COLOURS = {"it": "#2f6db5", "cooling": "#52a7c9", "losses": "#e0a43a", "other": "#9a9a9a"}


@cache
def _font_family() -> list[str]:
    """Register the Noto CJK face with matplotlib once; fall back to DejaVu (Latin only)."""
    for path in _CJK_FONT_FILES:
        if path.is_file():
            font_manager.fontManager.addfont(str(path))
            name = font_manager.FontProperties(fname=str(path)).get_name()
            return [name, "DejaVu Sans"]
    return ["DejaVu Sans"]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # Fixed metadata: the same figures give the same bytes (no timestamp in the PNG).
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _figure(legend_lines: int = 0) -> tuple[Figure, Axes]:
    """A chart 2.6 in tall, taller by the lines of a legend below it (the plot keeps its size)."""
    with mpl.rc_context({"font.family": _font_family()}):
        fig, ax = plt.subplots(figsize=(7.2, 2.6 + 0.13 * legend_lines), layout="constrained")
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _metric(kpis: pl.DataFrame, kind: str, metric: str) -> pl.DataFrame:
    return (
        kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric))
        .select("period", "value", "status")
        .sort("period")
    )


Thresholds = list[tuple[float, str]]


#: Line styles that tell the policy thresholds apart (they often lie 0.02-0.05 apart).
_THRESHOLD_STYLES = ((0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)), (0, (2, 2)), "-")


def _threshold_lines(ax: Axes, thresholds: Thresholds) -> None:
    """Each policy threshold as a dashed line, named in a legend below the chart.

    Labels written beside the lines overlapped, unreadable, wherever several documents
    set thresholds close together (1.15, 1.18, 1.2, 1.25); a legend keeps every
    document's name legible.
    """
    if not thresholds:
        return
    for i, (value, label) in enumerate(thresholds):
        ax.axhline(
            value,
            color="#c0392b",
            ls=_THRESHOLD_STYLES[i % len(_THRESHOLD_STYLES)],
            lw=0.9,
            label=label,
        )
    handles = [h for h in ax.get_lines() if h.get_label() in {label for _, label in thresholds}]
    ax.figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=1,
        frameon=False,
        prop={"family": _font_family(), "size": 6.5},
        labelcolor="#c0392b",
    )


def _include(ax: Axes, values: list[float]) -> None:
    """Widen the y axis so every value (a threshold, a marker) is inside it."""
    if not values:
        return
    low, high = ax.get_ylim()
    low, high = min(low, *values), max(high, *values)
    pad = (high - low) * 0.08 or 0.01
    ax.set_ylim(low - pad, high + pad)


def _daily_pue(kpis: pl.DataFrame, text: Mapping[str, str], thresholds: Thresholds) -> bytes:
    fig, ax = _figure(len(thresholds))
    rows = _metric(kpis, "day", "pue")
    days = [p[-2:] for p in rows["period"].to_list()]
    values = rows["value"].to_list()
    ax.plot(days, [v if v is not None else float("nan") for v in values], marker="o", ms=3)
    missing = [d for d, v in zip(days, values, strict=True) if v is None]
    if missing:
        ax.scatter(
            missing,
            [min(v for v in values if v is not None) if any(values) else 1.0] * len(missing),
            marker="x",
            color="#c0392b",
            label=text["insufficient"],
        )
        ax.legend(loc="upper left", prop={"family": _font_family(), "size": 7})
    _include(ax, [v for v, _ in thresholds])
    _threshold_lines(ax, thresholds)
    ax.set_xlabel(text["day"], fontfamily=_font_family())
    ax.set_ylabel("PUE")
    ax.tick_params(axis="x", labelsize=7)
    return _png(fig)


def _ttm_pue(history: pl.DataFrame, text: Mapping[str, str], thresholds: Thresholds) -> bytes:
    fig, ax = _figure(len(thresholds))
    months = history["period"].to_list()
    values = [v if v is not None else float("nan") for v in history["value"].to_list()]
    ax.plot(months, values, marker="o", ms=4, color="#1d5a3a")
    _include(ax, [v for v, _ in thresholds])
    _threshold_lines(ax, thresholds)
    ax.set_ylabel(text["ttm_axis"], fontfamily=_font_family())
    ax.tick_params(axis="x", labelsize=7, rotation=45)
    return _png(fig)


def _breakdown(breakdown: pl.DataFrame, text: Mapping[str, str]) -> bytes:
    fig, ax = _figure()
    days = [d[-2:] for d in breakdown["day"].to_list()]
    bottom = [0.0] * len(days)
    parts = {"it": "e_it", "cooling": "cooling", "losses": "losses", "other": "other"}
    for part, column in parts.items():
        mwh = [v / 1000.0 for v in breakdown[column].to_list()]
        # Only parts that have energy get a legend item (an all-zero part draws nothing).
        label = text[f"part_{part}"] if any(mwh) else None
        ax.bar(days, mwh, bottom=bottom, color=_COLOURS[part], label=label)
        bottom = [a + b for a, b in zip(bottom, mwh, strict=True)]
    ax.set_ylabel("MWh")
    ax.set_xlabel(text["day"], fontfamily=_font_family())
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylim(0, max(bottom, default=1.0) * 1.25)
    ax.legend(ncols=4, loc="upper center", prop={"family": _font_family(), "size": 7})
    return _png(fig)


def _green(kpis: pl.DataFrame, breakdown: pl.DataFrame, text: Mapping[str, str]) -> bytes:
    fig, ax = _figure()
    days = [d[-2:] for d in breakdown["day"].to_list()]
    share = (breakdown["renewable"] / breakdown["e_dc"] * 100.0).fill_nan(None).to_list()
    metered = any(v for v in share if v is not None)
    # A legend item only for what is drawn: all-zero bars are invisible, so say so instead.
    ax.bar(
        days,
        [v if v is not None else 0.0 for v in share],
        color="#3a9a5b",
        label=text["green_metered"] if metered else None,
    )
    if not metered:
        ax.text(
            0.5,
            0.04,
            text["green_metered_zero"],
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=7,
            color="#3a9a5b",
            fontfamily=_font_family(),
        )
    month = _metric(kpis, "month", "ref")
    # The month REF counts certificates and contracts too, so it may lie far above the
    # metered daily bars: the axis takes both in, or the legend would name a line not drawn.
    top = max([v for v in share if v is not None], default=0.0)
    if month.height and month["value"][0] is not None:
        ref = month["value"][0] * 100.0
        ax.axhline(ref, color="#1d5a3a", ls="--", lw=1, label=f"{text['green_month']} {ref:.1f} %")
        top = max(top, ref)
    ax.set_ylabel("%")
    ax.set_xlabel(text["day"], fontfamily=_font_family())
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylim(0, max(top, 1.0) * 1.3)
    ax.legend(loc="upper left", prop={"family": _font_family(), "size": 7})
    return _png(fig)


def hourly_heatmap(hours: pl.DataFrame, timezone: str, text: Mapping[str, str]) -> bytes:
    """Heat map of the hourly-matched green share: local day (rows) x hour of day (columns).

    ``hours`` are matched hours (``agent.kpi.hourly.HOUR_SCHEMA``); an hour without
    consumption or without data is left blank.
    """
    local = hours.select(
        pl.col("hour_start").dt.convert_time_zone(timezone).dt.strftime("%d").alias("day"),
        pl.col("hour_start").dt.convert_time_zone(timezone).dt.hour().alias("hour"),
        pl.when(pl.col("consumption_kwh") > 0)
        .then(pl.col("matched_kwh") / pl.col("consumption_kwh"))
        .alias("share"),
    )
    days = sorted(set(local["day"].to_list()))
    grid = [[float("nan")] * 24 for _ in days]
    row_of = {d: i for i, d in enumerate(days)}
    for day, hour, share in local.iter_rows():
        if share is not None:
            grid[row_of[day]][hour] = share * 100.0
    with mpl.rc_context({"font.family": _font_family()}):
        fig, ax = plt.subplots(figsize=(7.2, 0.16 * max(len(days), 8) + 0.9), layout="constrained")
    image = ax.imshow(grid, aspect="auto", cmap="YlGn", vmin=0.0, vmax=100.0)
    ax.set_xticks(range(0, 24, 2), [str(h) for h in range(0, 24, 2)], fontsize=7)
    ax.set_yticks(range(len(days)), days, fontsize=6)
    ax.set_xlabel(text["hourly_hour"], fontfamily=_font_family())
    ax.set_ylabel(text["day"], fontfamily=_font_family())
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    bar.set_label("%", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    return _png(fig)


def render_charts(
    kpis: pl.DataFrame,
    breakdown: pl.DataFrame,
    ttm_history: pl.DataFrame,
    text: Mapping[str, str],
    *,
    pue_thresholds: Thresholds | None = None,
) -> dict[str, bytes]:
    """Draw the four charts; returns PNG bytes by :data:`CHART_NAMES`.

    Args:
        kpis: KPI frame (KPI_SCHEMA) with day and month rows.
        breakdown: Daily energy by role (:func:`agent.report.breakdown.daily_breakdown`).
        ttm_history: Columns ``period``, ``value`` (TTM PUE per month), ``status``.
        text: Localised labels (see :mod:`agent.report.i18n`).
        pue_thresholds: Policy thresholds ``(value, label)`` drawn as labelled dashed lines.
    """
    thresholds = sorted(set(pue_thresholds or []))
    with mpl.rc_context({"font.family": _font_family(), "axes.unicode_minus": False}):
        return {
            "daily_pue": _daily_pue(kpis, text, thresholds),
            "ttm_pue": _ttm_pue(ttm_history, text, thresholds),
            "energy_breakdown": _breakdown(breakdown, text),
            "green_share": _green(kpis, breakdown, text),
        }

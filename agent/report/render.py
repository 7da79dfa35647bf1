"""Render the report: Jinja2 HTML (self-contained, charts as data URIs) and a WeasyPrint PDF."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from agent.report.charts import hourly_heatmap, render_charts
from agent.report.i18n import METHODOLOGY, POINT_NAMES, ROLE_NAMES, TEXT, TITLE_ZH, Lang
from agent.report.rollup import EVENT_KINDS
from agent.report.wording import FindingView, fact_value, view_finding
from agent.site import Site
from rules import Pack, benefit_payments

__all__ = ["FONT_FAMILY", "FontError", "ReportData", "cjk_font", "render_html", "render_pdf"]

#: The CJK family the PDF embeds (fonts-noto-cjk, installed by scripts/setup.sh).
FONT_FAMILY = "Noto Sans CJK SC"
_TEMPLATES = Path(__file__).with_name("templates")
#: Tables longer than this are cut in the PDF/HTML (the data files hold every row).
MAX_TABLE_ROWS = 60


class FontError(RuntimeError):
    """The CJK font is not installed, so Chinese text would not render."""


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything a rendered report shows (all computed before rendering)."""

    site: Site
    month: str
    start: datetime
    end: datetime
    kpis: pl.DataFrame
    breakdown: pl.DataFrame
    ttm_history: pl.DataFrame
    coverage: pl.DataFrame
    events: pl.DataFrame
    events_total: int
    findings: pl.DataFrame
    journal: Mapping[str, Any] | None
    fingerprint: str
    kpi_engine: str
    coverage_threshold: float
    generated: datetime
    #: Silent periods of the month (``agent.energy.silence.SILENCE_VIEW_SCHEMA``).
    silences: pl.DataFrame | None = None
    #: The policy packs by id (the wording of findings: titles, clauses, benefits).
    packs: Mapping[str, Pack] = field(default_factory=dict)
    #: Matched hours of the month (``agent.kpi.hourly.HOUR_SCHEMA``) for the hourly section.
    hourly: pl.DataFrame | None = None
    #: Whether contracts with hourly profiles or certificates were in the bundle's supply.
    hourly_supplied: bool = False


@cache
def cjk_font() -> tuple[str, str]:
    """Family and file of the CJK font fontconfig resolves for :data:`FONT_FAMILY`.

    Raises:
        FontError: if fontconfig substitutes another font (fonts-noto-cjk missing).
    """
    if shutil.which("fc-match") is None:
        raise FontError("fc-match not found: install fontconfig and fonts-noto-cjk")
    result = subprocess.run(
        ["fc-match", "-f", "%{family[0]}|%{file}", FONT_FAMILY],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    family, _, path = result.stdout.partition("|")
    if "CJK" not in family:
        raise FontError(
            f"font {FONT_FAMILY!r} is not installed (fontconfig offers {family!r}); "
            "run scripts/setup.sh (Debian package fonts-noto-cjk)"
        )
    return family, path


def _agent_version() -> str:
    try:
        return version("pue-agent")
    except PackageNotFoundError:
        return "dev"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}\u00a0%"


def _local(ts: datetime, site: Site) -> str:
    return ts.astimezone(site.zone).strftime("%Y-%m-%d %H:%M")


_CATEGORY_NAMES = {
    "zh": {1: ("基本", "UPS 输出端"), 2: ("中级", "PDU 输出端"), 3: ("高级", "IT 设备输入端")},
    "en": {
        1: ("basic, PUE1", "the UPS output"),
        2: ("intermediate, PUE2", "the PDU output"),
        3: ("advanced, PUE3", "the IT equipment input"),
    },
}


def _kpi(kpis: pl.DataFrame, kind: str, metric: str) -> dict[str, Any] | None:
    rows = kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric))
    return rows.row(0, named=True) if rows.height else None


def _summary(data: ReportData, t: Mapping[str, str], lang: Lang) -> list[dict[str, Any]]:
    spec = [
        ("month", "pue", "pue_month", 3),
        ("ttm", "pue", "pue_ttm", 3),
        ("month", "ppue_cooling", "ppue_cooling", 3),
        ("month", "ref", "ref", None),
        ("month", "ref_metered", "ref_metered", None),
        ("month", "ref_documentary", "ref_documentary", None),
        ("ttm", "ref", "ref", None),
        ("month", "cue", "cue", 3),
        ("month", "co2_kg", "co2_kg", 0),
        ("month", "carbon_traceability", "carbon_traceability", None),
        ("month", "rack_occupancy", "rack_occupancy", None),
        ("month", "e_dc_kwh", "e_dc", 1),
        ("month", "e_it_kwh", "e_it", 1),
        ("month", "e_renewable_metered_kwh", "e_renewable_onsite", 1),
        ("month", "e_renewable_documentary_kwh", "e_renewable_documentary", 1),
        ("month", "energy_non_fossil_kwh", "energy_non_fossil", 1),
        ("month", "energy_fossil_kwh", "energy_fossil", 1),
    ]
    rows = []
    for kind, metric, key, digits in spec:
        row = _kpi(data.kpis, kind, metric)
        if row is None:
            continue
        label = t[key] + (" (TTM)" if kind == "ttm" and metric != "pue" else "")
        insufficient = row["status"] != "ok" or row["value"] is None
        if insufficient:
            value = t["insufficient"]
        elif digits is None:
            value = _pct(row["value"])
        else:
            value = _num(row["value"], digits) + (f" {row['unit']}" if row["unit"] else "")
        category = ""
        if row["category"] is not None:
            category = _category_short(int(row["category"]), lang)
        rows.append(
            {
                "label": label,
                "value": value,
                "insufficient": insufficient,
                "coverage": _pct(row["coverage"]),
                "category": category,
            }
        )
    return rows


def _breakdown_rows(data: ReportData, t: Mapping[str, str]) -> list[dict[str, Any]]:
    """Month totals of cooling, losses and other energy (from the daily breakdown)."""
    month = _kpi(data.kpis, "month", "e_dc_kwh")
    insufficient = month is None or month["status"] != "ok"
    rows = []
    for column, key in (("cooling", "e_cooling"), ("losses", "e_losses"), ("other", "e_other")):
        total = float(data.breakdown[column].sum()) if data.breakdown.height else None
        rows.append(
            {
                "label": t[key],
                "value": t["insufficient"] if insufficient else f"{_num(total, 1)} kWh",
                "insufficient": insufficient,
                "coverage": _pct(month["coverage"]) if month else "—",
                "category": "",
            }
        )
    return rows


def _category_short(category: int, lang: Lang) -> str:
    name = _CATEGORY_NAMES[lang][category][0]
    return f"第 {category} 类（{name}）" if lang == "zh" else f"category {category} ({name})"


def _headline(data: ReportData, t: Mapping[str, str], lang: Lang) -> list[dict[str, str]]:
    """Page 1's boxes: monthly and annual PUE (category, coverage), REF and CUE."""
    boxes = []
    for kind, metric, key, digits in (
        ("month", "pue", "pue_month", 3),
        ("ttm", "pue", "pue_ttm", 3),
        ("month", "ref", "ref_short", None),
        ("month", "cue", "cue_short", 3),
    ):
        row = _kpi(data.kpis, kind, metric)
        ok = row is not None and row["status"] == "ok" and row["value"] is not None
        if not ok or row is None:
            value = t["insufficient"]
        elif digits is None:
            value = _pct(row["value"])
        else:
            value = _num(row["value"], digits)
        notes = []
        if row is not None and row["category"] is not None:
            notes.append(_category_short(int(row["category"]), lang))
        notes.append(f"{t['coverage']} {_pct(row['coverage']) if row else '—'}")
        if metric == "ref":
            ttm = _kpi(data.kpis, "ttm", "ref")
            if ttm is not None:
                ttm_ok = ttm["status"] == "ok" and ttm["value"] is not None
                notes.append(
                    f"{t['ttm_short']} {_pct(ttm['value']) if ttm_ok else t['insufficient']}"
                )
        if metric == "cue" and row is not None and row["unit"]:
            notes.insert(0, str(row["unit"]))
        boxes.append(
            {
                "label": t[key],
                "value": value,
                "insufficient": str(not ok),
                "note": " · ".join(notes),
            }
        )
    return boxes


def _facts(site: Site, t: Mapping[str, str], lang: Lang) -> list[tuple[str, str]]:
    facts = site.facts
    rows: list[tuple[str, str]] = []
    if facts.racks is not None:
        rows.append((t["racks"], fact_value("racks", facts.racks, lang)))
    if facts.compute_share_pct is not None:
        rows.append(
            (t["compute_share"], fact_value("compute_share_pct", facts.compute_share_pct, lang))
        )
    if facts.province:
        rows.append((t["province"], fact_value("province", facts.province, lang)))
    if facts.project_type:
        rows.append((t["project_type"], fact_value("project_type", facts.project_type, lang)))
    if facts.equipment_purchase_cny is not None:
        rows.append(
            (
                t["equipment_purchase"],
                fact_value("equipment_purchase_cny", facts.equipment_purchase_cny, lang),
            )
        )
    if facts.policies:
        rows.append((t["policies"], fact_value("policies", facts.policies, lang)))
    factor = facts.emission_factor
    if factor is not None:
        rows.append(
            (
                t["emission_factor"],
                f"{factor.kg_co2_per_kwh:g} kgCO₂/kWh · {factor.source} · {factor.year}",
            )
        )
    rows.append((t["rack_idle"], f"{facts.rack_idle_threshold_w:g} W"))
    return rows


_RESULT_ORDER = {"eligible": 0, "not_eligible": 1, "insufficient_data": 2, "not_applicable": 3}


def _findings(data: ReportData, lang: Lang) -> list[FindingView]:
    """Every finding in words, the site's own first (eligible, not eligible, …)."""
    payments = benefit_payments(data.packs.values())
    views = []
    for f in data.findings.iter_rows(named=True):
        pack = data.packs.get(str(f["policy_id"]))
        rule = next((r for r in pack.rules if r.id == f["rule_id"]), None) if pack else None
        views.append(view_finding(f, pack, rule, data.site, lang, payments.get(str(f["rule_id"]))))
    return sorted(views, key=lambda v: (_RESULT_ORDER.get(v.result, 9), v.rule_id))


def _silence_rows(data: ReportData, t: Mapping[str, str]) -> tuple[list[dict[str, Any]], str]:
    table = data.silences if data.silences is not None else pl.DataFrame()
    total = table.height
    rows = [
        {
            "meter": g["meter"],
            "start": _local(g["start"], data.site),
            "end": _local(g["end"], data.site),
            "minutes": f"{g['minutes']:,.0f}",
            "fill": t[f"fill_{g['fill']}"],
            "missing": g["fill"] == "missing",
            "covered": _pct(g["covered"]),
            "energy": _num(g["energy_kwh"], 3),
            "source": t["source_imported"] if g["imported"] else t["source_live"],
        }
        for g in table.head(MAX_TABLE_ROWS).iter_rows(named=True)
    ]
    note = ""
    if total > MAX_TABLE_ROWS:
        note = t["silences_truncated"].format(shown=MAX_TABLE_ROWS, total=total)
    return rows, note


def _coverage_rows(
    data: ReportData, t: Mapping[str, str], lang: Lang
) -> tuple[list[dict[str, Any]], str]:
    table = data.coverage.sort("coverage", "meter")
    total = table.height
    note = ""
    if total > MAX_TABLE_ROWS:
        table = table.head(MAX_TABLE_ROWS)
        note = t["meters_truncated"].format(shown=MAX_TABLE_ROWS, total=total)
    roles = ROLE_NAMES[lang]
    rows = [
        {
            "meter": m["meter"],
            "role": roles.get(m["role"], m["role"]),
            "coverage": _pct(m["coverage"]),
            "low": m["coverage"] < data.coverage_threshold,
            "intervals": f"{m['intervals']:,}",
            "energy": _num(m["energy_kwh"], 1),
            "counts": [m[k] for k in EVENT_KINDS],
        }
        for m in table.iter_rows(named=True)
    ]
    return rows, note


def _event_rows(data: ReportData, t: Mapping[str, str]) -> tuple[list[dict[str, Any]], str]:
    shown = min(data.events.height, MAX_TABLE_ROWS)
    rows = [
        {
            "meter": e["meter"],
            "kind": t.get(f"kind_{e['kind']}", e["kind"]),
            "start": _local(e["start"], data.site),
            "end": _local(e["end"], data.site),
            "intervals": e["intervals"],
            "coverage": _pct(e["min_coverage"]),
            "energy": _num(e["energy_kwh"], 3),
        }
        for e in data.events.head(shown).iter_rows(named=True)
    ]
    note = ""
    if data.events_total > shown:
        note = t["events_truncated"].format(shown=shown, total=data.events_total)
    return rows, note


def _inventory(
    data: ReportData, t: Mapping[str, str], lang: Lang
) -> tuple[list[dict[str, str]], str]:
    site = data.site
    in_dc = {m for _, m in site.expand("e_dc")}
    in_it = {m for _, m in site.expand("e_it")}
    roles = ROLE_NAMES[lang]
    # Non-IT meters first (few, and they decide E_DC); then IT meters up to the limit.
    meters = sorted(site.meters, key=lambda m: (m.role.value == "it", m.id))
    rows = [
        {
            "meter": m.id,
            "device": m.device,
            "role": roles.get(m.role.value, m.role.value),
            "metering_point": (
                POINT_NAMES[lang].get(m.metering_point.value, m.metering_point.value)
                if m.metering_point
                else ""
            ),
            "rack": m.rack or "",
            "in_formula": " ".join(
                name for name, members in (("E_DC", in_dc), ("E_IT", in_it)) if m.id in members
            ),
        }
        for m in meters[:MAX_TABLE_ROWS]
    ]
    note = ""
    if len(meters) > MAX_TABLE_ROWS:
        note = (
            f"… {len(meters) - MAX_TABLE_ROWS} more (data/site.json)"
            if lang == "en"
            else f"…… 另有 {len(meters) - MAX_TABLE_ROWS} 个电表，见 data/site.json"
        )
    del t
    return rows, note


def _formula(site: Site, name: str) -> str:
    terms = site.expand(name)  # type: ignore[arg-type]
    if len(terms) > 8:
        shown = " ".join(f"{'+' if s > 0 else '−'} {m}" for s, m in terms[:6])
        return f"{shown} … ({len(terms)} terms)"
    return " ".join(f"{'+' if s > 0 else '−'} {m}" for s, m in terms).lstrip("+ ")


def _thresholds(data: ReportData, views: list[FindingView]) -> list[tuple[float, str]]:
    """The annual-PUE thresholds of the site's own findings, each with its label."""
    own = {v.rule_id for v in views if v.outside is None}
    rows = data.findings.filter(
        pl.col("rule_id").is_in(list(own))
        & (pl.col("metric") == "pue")
        & pl.col("threshold").is_not_null()
    )
    labels: dict[float, list[str]] = {}
    for f in rows.iter_rows(named=True):
        labels.setdefault(float(f["threshold"]), []).append(
            f"{f['comparator']} {f['threshold']:g} · {f['document']}"
        )
    return [(value, " / ".join(dict.fromkeys(names))) for value, names in sorted(labels.items())]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _hourly_section(data: ReportData, t: Mapping[str, str]) -> dict[str, Any] | None:
    """The hourly-matching section: month figures, heat map, per-hour-of-day table."""
    hours = data.hourly
    if hours is None or hours.height == 0:
        return None
    boxes = []
    for metric, label, fmt in (
        ("hourly_matched_green_share", "hourly_share", "pct"),
        ("ref", "hourly_ref", "pct"),
        ("hourly_traceability_rate", "hourly_trace", "pct"),
        ("hourly_unmatched_hours", "hourly_unmatched", "int"),
        ("cue_hourly", "hourly_cue", "num"),
    ):
        row = _kpi(data.kpis, "month", metric)
        if row is None:
            continue
        value = row["value"]
        text = (
            _pct(value)
            if fmt == "pct"
            else (_num(value, 0) if fmt == "int" else f"{_num(value, 3)} {row['unit']}")
        )
        boxes.append({"label": t[label], "value": text, "insufficient": value is None})
    columns = {
        "consumption_kwh": "hourly_col_consumption",
        "matched_kwh": "hourly_col_matched",
        "onsite_used_kwh": "hourly_col_onsite",
        "storage_green_kwh": "hourly_col_storage",
        "contract_kwh": "hourly_col_contract",
        "certificate_kwh": "hourly_col_certificate",
    }
    by_hour = (
        hours.group_by(
            pl.col("hour_start").dt.convert_time_zone(data.site.timezone).dt.hour().alias("h")
        )
        .agg(*[pl.col(c).sum() for c in columns])
        .sort("h")
    )
    rows = [
        {
            "hour": f"{r['h']:02d}:00",
            "cells": [_num(r[c], 0) for c in columns],
            "share": _pct(_ratio(r["matched_kwh"], r["consumption_kwh"])),
        }
        for r in by_hour.iter_rows(named=True)
    ]
    png = hourly_heatmap(hours, data.site.timezone, dict(t))
    return {
        "boxes": boxes,
        "heatmap": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "headers": [t[c] for c in columns.values()],
        "rows": rows,
        "note": None if data.hourly_supplied else t["hourly_none"],
    }


def _last_day(data: ReportData) -> str:
    """The period's last local day (the end is exclusive: 2026-11-01 00:00 -> 2026-10-31)."""
    return (data.end - timedelta(microseconds=1)).astimezone(data.site.zone).strftime("%Y-%m-%d")


def render_html(data: ReportData, lang: Lang) -> str:
    """The report as one self-contained HTML5 document (charts as PNG data URIs)."""
    t = TEXT[lang]
    site = data.site
    font_family, font_file = cjk_font()
    views = _findings(data, lang)
    charts = render_charts(
        data.kpis,
        data.breakdown,
        data.ttm_history,
        dict(t),
        pue_thresholds=_thresholds(data, views),
    )
    captions = {
        "daily_pue": t["chart_daily_pue"],
        "ttm_pue": t["chart_ttm_pue"],
        "energy_breakdown": t["chart_breakdown"],
        "green_share": t["chart_green"],
    }
    category = site.pue_category
    cat_name, where = _CATEGORY_NAMES[lang][category]
    factor = site.facts.emission_factor
    cue_note = (
        t["cue_factor"].format(
            factor=f"{factor.kg_co2_per_kwh:g}", source=factor.source, year=factor.year
        )
        if factor
        else t["no_factor"]
    )
    coverage, coverage_note = _coverage_rows(data, t, lang)
    events, events_note = _event_rows(data, t)
    silences, silences_note = _silence_rows(data, t)
    inventory, inventory_note = _inventory(data, t, lang)
    own = [v for v in views if v.outside is None]
    first_day = data.start.astimezone(site.zone).strftime("%Y-%m-%d")
    signed = data.generated.astimezone(site.zone).strftime("%Y-%m-%d")
    context = {
        "lang": lang,
        "html_lang": "zh-CN" if lang == "zh" else "en",
        "t": t,
        "title_zh": TITLE_ZH,
        "css": (_TEMPLATES / "report.css").read_text(encoding="utf-8"),
        "site": {
            "id": site.id,
            "display_name": (site.name_zh or site.name) if lang == "zh" else site.name,
            "other_name": site.name if lang == "zh" and site.name_zh else (site.name_zh or ""),
            "timezone": site.timezone,
            "operator": site.operator or t["operator_unset"],
            "signer": site.signer or "",
        },
        "period": {
            "label": data.month,
            "text": t["period_text"].format(
                month=data.month, first=first_day, last=_last_day(data), tz=site.timezone
            ),
        },
        "category_text": t["category_text"].format(cat=category, name=cat_name, where=where),
        "generated": data.generated.strftime("%Y-%m-%d %H:%M:%S"),
        "signed_on": signed,
        "headline": _headline(data, t, lang),
        "summary": _summary(data, t, lang) + _breakdown_rows(data, t),
        "cue_note": cue_note,
        "facts": _facts(site, t, lang),
        "charts": [
            {
                "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                "caption": captions[name],
            }
            for name, png in charts.items()
        ],
        "page1_findings": [v for v in own if v.result in ("eligible", "not_eligible") or v.warning],
        "page1_other": sum(1 for v in own if v.result not in ("eligible", "not_eligible")),
        "own_findings": own,
        "hourly": _hourly_section(data, t),
        "outside_findings": [v for v in views if v.outside is not None],
        "silence_count": data.silences.height if data.silences is not None else 0,
        "event_kinds": [{"label": t[f"kind_{k}"]} for k in EVENT_KINDS],
        "coverage": coverage,
        "coverage_note": coverage_note,
        "events": events,
        "events_note": events_note,
        "silences": silences,
        "silences_note": silences_note,
        "inventory": inventory,
        "inventory_note": inventory_note,
        "formula_dc": _formula(site, "e_dc"),
        "formula_it": _formula(site, "e_it"),
        "methodology": [
            p.format(threshold=f"{data.coverage_threshold * 100:g} %") for p in METHODOLOGY[lang]
        ],
        "kpi_engine": data.kpi_engine,
        "font_note": t["font"].format(font=f"{font_family} ({Path(font_file).name}, SIL OFL 1.1)"),
        "journal": data.journal,
        "publisher_gap_batches": _gap_batches(data.journal),
        "fingerprint": data.fingerprint,
        "agent_version": _agent_version(),
    }
    return _environment().get_template("report.html.j2").render(context)


def _gap_batches(journal: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Publishers' gap records one row per gap batch (``journal.json`` lists them per device).

    A campus gap can name thousands of devices; the page shows each refused batch once
    with its device count, and ``journal.json`` keeps every device's row.
    """
    rows = (journal or {}).get("publisher_gaps") or []
    batches: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (str(row["agent"]), int(row["seq"]))
        first, last = _utc_seconds(row["first_ts"]), _utc_seconds(row["last_ts"])
        found = batches.get(key)
        if found is None:
            batches[key] = {
                "agent": key[0],
                "seq": key[1],
                "devices": 1,
                "first_ts": first,
                "last_ts": last,
                "readings": int(row["readings"]),
                "reason": row["reason"],
            }
            continue
        found["devices"] += 1
        found["first_ts"] = min(found["first_ts"], first)
        found["last_ts"] = max(found["last_ts"], last)
        found["readings"] += int(row["readings"])
    return [batches[k] for k in sorted(batches)]


def _utc_seconds(stamp: str) -> str:
    """``2026-11-02T08:00:20.000000Z`` as ``2026-11-02 08:00:20 UTC`` (sorts the same)."""
    return stamp[:19].replace("T", " ") + " UTC"


def render_pdf(html: str, target: Path) -> None:
    """Render the HTML to a PDF with WeasyPrint (fonts are subset and embedded)."""
    import weasyprint  # noqa: PLC0415 - heavy import, only when a PDF is written

    weasyprint.HTML(string=html, base_url=str(_TEMPLATES)).write_pdf(target)

"""The rules engine: policy packs + KPI history + declared facts -> findings.

Pure: no I/O, no clock, no logging. Given the same packs, KPI frame and facts it
returns the same findings, so a report can re-run it and an auditor can check it.

KPI inputs (``agent.schemas.KPI_SCHEMA``, long form) the built-in packs read:
``pue`` (``ttm``), ``ref`` and ``carbon_traceability`` (``ttm`` and ``month``,
ratios 0..1; a row whose unit is ``%`` is divided by 100), ``rack_occupancy``
(``month``), ``cue``, ``flexible_load_share`` and ``latency_*_ms`` (``month``), and
for Yinchuan's per-kWh subsidy the facility energy of the evaluated month,
``e_dc_kwh`` (``month``, kWh; ``e_dc`` is accepted as the same figure while the KPI
names settle). A metric that is absent gives ``insufficient_data``, never a zero.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import polars as pl

from agent.periods import month_days, month_index, month_label, month_of
from agent.schemas import FINDING_SCHEMA
from agent.site import Site, SiteFacts
from rules.pack import Benefit, Pack, Rule, load_packs

__all__ = [
    "DEFAULT_HORIZON_MONTHS",
    "DEFAULT_TREND_MONTHS",
    "DEFAULT_WARN_MARGIN",
    "METRIC_ALIASES",
    "ClaimState",
    "WarningChange",
    "benefit_payments",
    "claim_state",
    "evaluate",
    "load_packs",
    "warning_changes",
]

#: Early warning when a met threshold is this close (in the metric's unit: 0.02 of PUE).
DEFAULT_WARN_MARGIN = 0.02
#: TTM values (months, ending with the evaluated one) the trend is fitted to.
DEFAULT_TREND_MONTHS = 6
#: How far a trend is projected when the policy has no end date.
DEFAULT_HORIZON_MONTHS = 12
#: Other names a metric may carry in the KPI frame, tried in order when it is absent.
METRIC_ALIASES: dict[str, tuple[str, ...]] = {"e_dc_kwh": ("e_dc",), "e_it_kwh": ("e_it",)}

# A measured value equal to the threshold up to float noise (an energy ratio that should
# be 1.18 can come out as 1.1800000000000002) is "at" the threshold, so "below 1.18"
# is decided by the figure, not by the last bit of a division.
_EPSILON = 1e-9
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_WORDS = {"<": "below", "<=": "at most", ">": "above", ">=": "at least"}
_PERCENT_UNITS = frozenset({"%", "percent", "pct"})


def _what(rule: Rule) -> str:
    """``TTM pue`` / ``monthly ref``: the measured figure, for explanations."""
    return f"{'TTM' if rule.window == 'ttm' else 'monthly'} {rule.metric}"


def _holds(value: float, comparator: str, threshold: float) -> bool:
    if abs(value - threshold) <= _EPSILON * max(1.0, abs(threshold)):
        value = threshold
    return _COMPARE[comparator](value, threshold)


@dataclass(frozen=True, slots=True)
class _Kpi:
    value: float | None
    status: str
    coverage: float | None
    category: int | None


_Index = dict[tuple[str, str], dict[str, _Kpi]]


def _index(kpis: pl.DataFrame, site: str, category: int | None) -> _Index:
    """``{(metric, period_kind): {period: kpi}}`` for the month and TTM rows of one site."""
    frame = kpis.filter(pl.col("period_kind").is_in(["month", "ttm"]))
    if site:
        frame = frame.filter(pl.col("site") == site)
    if category is not None:
        frame = frame.filter(pl.col("category").is_null() | (pl.col("category") == category))
    index: _Index = {}
    columns = ("metric", "period_kind", "period", "value", "status", "coverage", "category", "unit")
    for metric, kind, period, raw, status, coverage, cat, unit in frame.select(columns).rows():
        # Packs state ratios as fractions (0.80 = 80 %).
        value = raw / 100.0 if raw is not None and unit in _PERCENT_UNITS else raw
        slot = index.setdefault((metric, kind), {})
        prior = slot.get(period)
        # With no category asked for, a figure present in several categories is taken in
        # the most precise one (docs/pue.md: category 3 meters closest to the IT load).
        if prior is None or (cat or 0) > (prior.category or 0):
            slot[period] = _Kpi(value, status, coverage, cat)
    return index


def _lookup(index: _Index, metric: str, window: str, period: str) -> tuple[str, _Kpi | None]:
    for name in (metric, *METRIC_ALIASES.get(metric, ())):
        kpi = index.get((name, window), {}).get(period)
        if kpi is not None:
            return name, kpi
    return metric, None


def _usable(kpi: _Kpi | None) -> bool:
    return kpi is not None and kpi.status == "ok" and kpi.value is not None


@dataclass
class _Finding:
    """Mutable row builder; ``as_row`` orders it as FINDING_SCHEMA."""

    values: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def as_row(self) -> tuple[Any, ...]:
        self.values["explanation"] = " ".join(self.notes)
        return tuple(self.values.get(name) for name in FINDING_SCHEMA.names())


def _policy_window(pack: Pack, first: date, last: date) -> tuple[str, bool, str | None]:
    """(policy_status, applies, note) of a pack for a period ``first..last``."""
    start, end = pack.effective_from, pack.effective_to
    outside: str | None = None
    if end is not None and first > end:
        outside = "expired"
    elif start is not None and last < start:
        outside = "not_yet"
    status = "draft" if pack.status == "draft" else (outside or "in_force")
    if outside == "expired":
        return status, False, f"The policy expired on {end} (in force {start or '?'}..{end})."
    if outside == "not_yet":
        return status, False, f"The policy takes effect on {start}."
    note = None
    if (start is not None and first < start) or (end is not None and last > end):
        note = f"The policy is in force for part of the period only ({start or '?'}..{end or '-'})."
    return status, True, note


def _province_matches(pack: Pack, province: str) -> bool:
    wanted = province.strip().casefold()
    return any(alias.casefold() == wanted for alias in pack.provinces)


def _jurisdiction(pack: Pack, facts: SiteFacts, used: dict[str, Any]) -> str | None:
    """A reason the site is outside the pack's jurisdiction, or None."""
    if facts.policies:
        used["policies"] = list(facts.policies)
        if pack.id not in facts.policies:
            return (
                f"The site's declared policies ({', '.join(facts.policies)}) do not list {pack.id}."
            )
        return None
    if not pack.provinces:
        return None
    if facts.province is None:
        return None  # noted by the caller: evaluated without a jurisdiction check
    used["province"] = facts.province
    if not _province_matches(pack, facts.province):
        return (
            f"The site is declared in {facts.province}; {pack.document} covers {pack.jurisdiction}."
        )
    return None


def _check_facts(rule: Rule, facts: SiteFacts, used: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(missing facts, failed conditions) for a rule."""
    missing: list[str] = []
    for name in rule.needed_facts():
        value = getattr(facts, name)
        if value is None:
            missing.append(name)
        else:
            used[name] = value
    failed: list[str] = []
    for condition in rule.facts:
        value = getattr(facts, condition.fact)
        if value is None:
            continue
        if condition.op == "in":
            ok = str(value) in (condition.values or [])
        else:
            assert condition.value is not None  # guaranteed by FactCondition's validator
            ok = _COMPARE[condition.op](float(value), condition.value)
        if not ok:
            failed.append(f"{condition.describe()} (declared: {value})")
    return missing, failed


def _facts_json(used: dict[str, Any]) -> str | None:
    if not used:
        return None
    return json.dumps(
        {name: {"value": value, "source": "declared"} for name, value in used.items()},
        ensure_ascii=False,
        sort_keys=True,
    )


def _first_met(
    index: _Index, rule: Rule, period: str, comparator: str, threshold: float
) -> tuple[str, float] | None:
    assert rule.metric is not None and rule.window is not None
    history = index.get((rule.metric, rule.window), {})
    for label in sorted(p for p in history if p <= period):
        kpi = history[label]
        if _usable(kpi) and kpi.value is not None and _holds(kpi.value, comparator, threshold):
            return label, kpi.value
    return None


def _benefit(
    benefit: Benefit, facts: SiteFacts, index: _Index, period: str, used: dict[str, Any]
) -> tuple[float | None, str]:
    """(amount in CNY or None, how it was computed)."""
    if benefit.kind == "per_rack":
        if facts.racks is None:
            return None, "No benefit estimate: racks not declared."
        used["racks"] = facts.racks
        amount = benefit.rate * facts.racks
        how = f"{benefit.rate:,.2f} CNY/rack x {facts.racks:,} racks = {amount:,.2f} CNY"
    elif benefit.kind == "per_kwh":
        assert benefit.basis_metric is not None
        name, kpi = _lookup(index, benefit.basis_metric, "month", period)
        if not _usable(kpi) or kpi is None or kpi.value is None:
            return None, f"No benefit estimate: {benefit.basis_metric} for {period} is missing."
        amount = benefit.rate * kpi.value
        how = (
            f"{benefit.rate:g} CNY/kWh x {kpi.value:,.1f} kWh ({name}, {period}) "
            f"= {amount:,.2f} CNY"
        )
    else:
        assert benefit.basis_fact is not None
        basis = getattr(facts, benefit.basis_fact)
        if basis is None:
            return None, f"No benefit estimate: {benefit.basis_fact} not declared."
        used[benefit.basis_fact] = basis
        amount = benefit.rate * float(basis)
        how = (
            f"{benefit.rate:.0%} x {float(basis):,.2f} CNY ({benefit.basis_fact}) "
            f"= {amount:,.2f} CNY"
        )
    if benefit.cap_cny is not None and amount > benefit.cap_cny:
        how += f", capped at {benefit.cap_cny:,.2f} CNY"
        amount = benefit.cap_cny
    if benefit.upto:
        how += " (an upper bound: the clause gives a maximum)"
    return amount, f"Benefit: {how}. [{benefit.clause}]"


def _claim_month(index: _Index, pack: Pack, rule: Rule, paid: str, period: str) -> str:
    """The month a ``once`` / ``annual`` benefit is claimed for (``period`` for the others).

    The first month whose test held: of the year for ``annual``, of the policy's life for
    ``once`` — or of the whole history for a 首次 rule (the first time is the first time;
    one before the policy is noted for the issuing body to decide).
    """
    if paid == "per_period":
        return period
    assert rule.metric is not None and rule.window is not None
    assert rule.comparator is not None and rule.threshold is not None
    floor = f"{period[:4]}-01" if paid == "annual" else ""
    if pack.effective_from is not None and not (rule.first_time and paid == "once"):
        floor = max(floor, month_label(month_of(pack.effective_from)))
    history = index.get((rule.metric, rule.window), {})
    for label in sorted(p for p in history if floor <= p <= period):
        kpi = history[label]
        if (
            _usable(kpi)
            and kpi.value is not None
            and _holds(kpi.value, rule.comparator, rule.threshold)
        ):
            return label
    return period


_PAID_WORDS = {"once": "one-time", "annual": "annual"}


def _claim(
    finding: _Finding,
    pack: Pack,
    rule: Rule,
    benefit: Benefit,
    facts: SiteFacts,
    index: _Index,
    period: str,
    used: dict[str, Any],
) -> None:
    """The benefit of an eligible finding, as often as its clause pays it.

    ``per_period``: the amount every month. ``once`` / ``annual``: the amount only in the
    finding of the month it became claimable, which ``first_met_period`` then names (for
    rules that are not 首次 too; for ``annual``, the first month of the year); later months
    say since when it is claimable and carry no amount, so a one-time subsidy is never read
    as claimed twice (:func:`claim_state`).
    """
    paid = benefit.paid
    claim = _claim_month(index, pack, rule, paid, period)
    if paid != "per_period":
        finding.values["first_met_period"] = claim
    if claim == period:
        amount, how = _benefit(benefit, facts, index, period, used)
        finding.values["benefit_cny"] = amount
        finding.notes.append(how)
        if paid == "once":
            finding.notes.append(f"Eligible — claim once, first met {period}.")
        elif paid == "annual":
            finding.notes.append(f"Eligible — claim once for {period[:4]}, first met {period}.")
        return
    finding.notes.append(
        f"Met, already claimable since {claim}: the {_PAID_WORDS[paid]} benefit is stated in "
        f"the {claim} finding and not counted again. [{benefit.clause}]"
    )


ClaimState = Literal["claim", "claimable_since"]


def claim_state(finding: Mapping[str, Any], paid: str | None) -> tuple[ClaimState, str] | None:
    """How an eligible finding's ``once`` / ``annual`` benefit reads, and since which month.

    ``("claim", month)``: eligible — claim once, first met ``month`` (the amount is in this
    finding). ``("claimable_since", month)``: met, already claimable since ``month`` (the
    amount is in that month's finding, not this one). ``None`` for any other finding.
    ``paid`` is the rule's :attr:`rules.pack.Benefit.paid` (:func:`benefit_payments`).
    """
    first = finding.get("first_met_period")
    if finding.get("result") != "eligible" or paid not in ("once", "annual") or not first:
        return None
    return ("claim" if first == finding.get("period") else "claimable_since"), first


def benefit_payments(packs: Iterable[Pack]) -> dict[str, Literal["once", "annual", "per_period"]]:
    """``{rule_id: how often its benefit is paid}`` for the rules that carry one."""
    return {rule.id: rule.benefit.paid for pack in packs for rule in pack.rules if rule.benefit}


def _trend(
    index: _Index, rule: Rule, period: str, horizon_end: int, months: int
) -> tuple[float, str] | None:
    """(slope per month, month the projection stops meeting the threshold) or None."""
    assert rule.metric is not None and rule.comparator is not None and rule.threshold is not None
    history = index.get((rule.metric, "ttm"), {})
    end = month_index(period)
    points = [
        (offset, kpi.value)
        for offset in range(-months + 1, 1)
        if (kpi := history.get(month_label(end + offset))) is not None
        and _usable(kpi)
        and kpi.value is not None
    ]
    if len(points) < 3 or points[-1][0] != 0:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    current = points[-1][1]
    for ahead in range(1, horizon_end - end + 1):
        if not _holds(current + slope * ahead, rule.comparator, rule.threshold):
            return slope, month_label(end + ahead)
    return None


def _warnings(
    finding: _Finding,
    pack: Pack,
    rule: Rule,
    index: _Index,
    period: str,
    *,
    margin: float,
    trend_months: int,
    horizon_months: int,
) -> None:
    assert rule.threshold is not None and rule.comparator is not None
    value: float = finding.values["measured_value"]
    kinds: list[str] = []
    details: list[str] = []
    margin = rule.warn_margin if rule.warn_margin is not None else margin
    if abs(value - rule.threshold) <= margin:
        kinds.append("margin")
        details.append(
            f"{_what(rule)} {value:.4g} is within {margin:g} of the threshold "
            f"{rule.comparator} {rule.threshold:g}"
        )
    if rule.window == "ttm":
        horizon = month_index(period) + horizon_months
        if pack.effective_to is not None:
            horizon = min(horizon, month_of(pack.effective_to))
        crossing = _trend(index, rule, period, horizon, trend_months)
        if crossing is not None:
            slope, month = crossing
            kinds.append("trend")
            details.append(
                f"the {trend_months}-month trend ({slope:+.4f}/month) would no longer meet "
                f"{rule.comparator} {rule.threshold:g} by {month}"
            )
    if kinds:
        finding.values["warning"] = ",".join(kinds)
        detail = "; ".join(details)
        finding.values["warning_detail"] = detail[0].upper() + detail[1:] + "."
        finding.notes.append(f"Early warning: {detail}.")


def _evaluate_rule(
    pack: Pack,
    rule: Rule,
    facts: SiteFacts,
    index: _Index,
    *,
    site: str,
    period: str,
    first: date,
    last: date,
    category: int | None,
    margin: float,
    trend_months: int,
    horizon_months: int,
) -> tuple[Any, ...]:
    policy_status, applies, date_note = _policy_window(pack, first, last)
    finding = _Finding(
        {
            "site": site,
            "period": period,
            "policy_id": pack.id,
            "rule_id": rule.id,
            "document": pack.document,
            "clause": f"{rule.clause_ref}: {rule.clause}",
            "jurisdiction": pack.jurisdiction,
            "policy_status": policy_status,
            "advisory": pack.advisory,
            "metric": rule.metric,
            "window": rule.window,
            "comparator": rule.comparator,
            "threshold": rule.threshold,
            "rule_kind": rule.kind,
        }
    )
    notes = finding.notes
    target = "" if rule.target_year is None else f" (target for {rule.target_year})"
    notes.append(f"{rule.title_en}{target}.")
    if pack.status == "draft":
        notes.append("Draft policy: the result is advisory.")
    elif not pack.binding:
        notes.append("Indicative target (not a subsidy condition): the result is advisory.")
    if pack.source_note:
        notes.append(pack.source_note)
    if date_note:
        notes.append(date_note)
    if rule.note:
        notes.append(f"Reading: {rule.note}")

    kpi: _Kpi | None = None
    if rule.metric is not None and rule.window is not None:
        _, kpi = _lookup(index, rule.metric, rule.window, period)
        if kpi is not None:
            finding.values["measured_value"] = kpi.value
            finding.values["coverage"] = kpi.coverage
            finding.values["category"] = kpi.category
    if finding.values.get("category") is None and rule.metric == "pue":
        finding.values["category"] = category

    used: dict[str, Any] = {}
    result = _decide(pack, rule, facts, kpi, used, notes, applies=applies, period=period)
    if result == "eligible" and rule.first_time:
        assert rule.comparator is not None and rule.threshold is not None
        first_met = _first_met(index, rule, period, rule.comparator, rule.threshold)
        if first_met is not None:
            label, value = first_met
            finding.values["first_met_period"] = label
            notes.append(
                f"First time (首次): {_what(rule)} first {_WORDS[rule.comparator]} "
                f"{rule.threshold:g} in {label} ({value:.4g}); the one-time benefit is keyed to "
                "that month."
            )
            if pack.effective_from is not None and month_days(label)[1] < pack.effective_from:
                notes.append(
                    f"That month precedes the policy ({pack.effective_from}): whether it counts "
                    "as the first time is for the issuing body to decide."
                )
    elif rule.first_time and rule.comparator is not None and rule.threshold is not None:
        # Not met now, but the history can still show an earlier first time (dip, rise).
        first_met = _first_met(index, rule, period, rule.comparator, rule.threshold)
        if first_met is not None:
            finding.values["first_met_period"] = first_met[0]
            notes.append(
                f"First time (首次) {_WORDS[rule.comparator]} {rule.threshold:g} was "
                f"{first_met[0]} ({first_met[1]:.4g})."
            )
    if result == "eligible" and rule.benefit is not None:
        _claim(finding, pack, rule, rule.benefit, facts, index, period, used)
    if result == "eligible" and rule.kind == "threshold":
        _warnings(
            finding,
            pack,
            rule,
            index,
            period,
            margin=margin,
            trend_months=trend_months,
            horizon_months=horizon_months,
        )
    finding.values["result"] = result
    finding.values["facts_used"] = _facts_json(used)
    return finding.as_row()


def _decide(
    pack: Pack,
    rule: Rule,
    facts: SiteFacts,
    kpi: _Kpi | None,
    used: dict[str, Any],
    notes: list[str],
    *,
    applies: bool,
    period: str,
) -> Literal["eligible", "not_eligible", "insufficient_data", "not_applicable"]:
    if not applies:
        return "not_applicable"
    outside = _jurisdiction(pack, facts, used)
    if outside is not None:
        notes.append(outside)
        return "not_applicable"
    if pack.provinces and facts.province is None and not facts.policies:
        notes.append("Province not declared: evaluated without checking the jurisdiction.")
    if rule.kind == "declaration":
        notes.append(
            f"Decided by {rule.declaration}. Not something the agent can measure: listed so "
            "every clause is visible."
        )
        return "insufficient_data"
    missing, failed = _check_facts(rule, facts, used)
    if failed:
        notes.append(f"Ruled out by declared facts: {'; '.join(failed)}.")
        return "not_applicable"
    if missing:
        notes.append(f"Needs declared facts not in the site model: {', '.join(missing)}.")
        return "insufficient_data"
    if not _usable(kpi):
        state = "no KPI row" if kpi is None else f"status {kpi.status}"
        notes.append(f"No usable {_what(rule)} for {period} ({state}).")
        return "insufficient_data"
    assert kpi is not None and kpi.value is not None
    if rule.kind == "report":
        notes.append(
            f"Reported figure: the clause sets no threshold ({rule.metric} {kpi.value:.4g})."
        )
        return "not_applicable"
    assert rule.comparator is not None and rule.threshold is not None
    met = _holds(kpi.value, rule.comparator, rule.threshold)
    verb = "meets" if met else "does not meet"
    notes.append(
        f"Measured {_what(rule)} {kpi.value:.4g} {verb} {rule.comparator} {rule.threshold:g}."
    )
    return "eligible" if met else "not_eligible"


def evaluate(
    packs: Iterable[Pack],
    kpis: pl.DataFrame,
    facts: SiteFacts,
    *,
    site: str | Site,
    period: str,
    category: int | None = None,
    warn_margin: float = DEFAULT_WARN_MARGIN,
    trend_months: int = DEFAULT_TREND_MONTHS,
    horizon_months: int = DEFAULT_HORIZON_MONTHS,
) -> pl.DataFrame:
    """Evaluate every rule of every pack for one month.

    Args:
        packs: Policy packs (a :class:`rules.pack.LoadedPacks` works too).
        kpis: KPI history in ``KPI_SCHEMA``; the ``month`` and ``ttm`` rows up to
            ``period`` are used (earlier months for "first time" and trends).
        facts: The site's declared facts (reported as declared in ``facts_used``).
        site: Site id (rows of other sites are ignored); a ``Site`` uses its id.
        period: The evaluated month, ``YYYY-MM`` in site-local time.
        category: PUE measurement category to use; ``None`` takes the highest present.
        warn_margin: Early warning when a met threshold is this close (rules may override).
        trend_months: TTM values the trend is fitted to.
        horizon_months: How far the trend is projected when the policy has no end date;
            otherwise it is projected to the policy's last month.

    Returns:
        One row per (pack, rule) in ``FINDING_SCHEMA``, in pack and rule order.

    Raises:
        ValueError: for a period that is not ``YYYY-MM``.
    """
    site_id = site.id if isinstance(site, Site) else site
    first, last = month_days(period)
    index = _index(kpis, site_id, category)
    rows = [
        _evaluate_rule(
            pack,
            rule,
            facts,
            index,
            site=site_id,
            period=period,
            first=first,
            last=last,
            category=category,
            margin=warn_margin,
            trend_months=trend_months,
            horizon_months=horizon_months,
        )
        for pack in packs
        for rule in pack.rules
    ]
    return pl.DataFrame(rows, schema=FINDING_SCHEMA, orient="row")


def evaluate_for_site(
    kpis: pl.DataFrame,
    site: Site,
    period: str,
    policies: Iterable[Pack],
    *,
    warn_margin: float = DEFAULT_WARN_MARGIN,
) -> pl.DataFrame:
    """Findings of every policy pack for ``site`` and ``period``: the one policy entry point.

    The CLI (``rules evaluate``), the HTTP API, the report and the aggregator's live
    refresh all call this, so they evaluate the same packs against the same KPI rows
    in the same PUE category: the site model's ``pue_category``, read here and nowhere
    else. KPI rows stamped with another category (computed before the site changed) are
    not used.

    Args:
        kpis: KPI history (``KPI_SCHEMA``): month and TTM rows up to ``period``.
        site: The site model (id, declared facts, PUE category).
        period: The evaluated month, ``YYYY-MM`` in site-local time.
        policies: The loaded packs (:func:`rules.pack.load_packs`).
        warn_margin: Early warning when a met threshold is this close.

    Returns:
        One row per (pack, rule) in ``FINDING_SCHEMA``.
    """
    return evaluate(
        policies,
        kpis,
        site.facts,
        site=site.id,
        period=period,
        category=site.pue_category,
        warn_margin=warn_margin,
    ).select(FINDING_SCHEMA.names())


@dataclass(frozen=True, slots=True)
class WarningChange:
    """An early warning that appeared or cleared between two evaluations (log it once)."""

    site: str
    rule_id: str
    change: Literal["appeared", "cleared"]
    warning: str
    detail: str | None


def warning_changes(previous: pl.DataFrame | None, current: pl.DataFrame) -> list[WarningChange]:
    """The early warnings that appeared or cleared since the previous evaluation.

    The daemon logs each change once (and nothing while a warning persists), as the
    issue asks; this keeps that state comparison pure and testable.
    """

    def active(frame: pl.DataFrame | None) -> dict[tuple[str, str], tuple[str, str | None]]:
        if frame is None or frame.is_empty():
            return {}
        rows = frame.filter(pl.col("warning").is_not_null()).select(
            "site", "rule_id", "warning", "warning_detail"
        )
        return {(s, r): (w, d) for s, r, w, d in rows.rows()}

    before, after = active(previous), active(current)
    changes = [
        WarningChange(key[0], key[1], "appeared", warning, detail)
        for key, (warning, detail) in after.items()
        if key not in before
    ]
    changes += [
        WarningChange(key[0], key[1], "cleared", warning, detail)
        for key, (warning, detail) in before.items()
        if key not in after
    ]
    return changes

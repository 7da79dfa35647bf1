"""The engine against hand-built KPI frames: thresholds, dates, facts, benefits, warnings."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import polars as pl
import pytest

from agent.schemas import FINDING_SCHEMA
from agent.site import SiteFacts, parse_site
from rules.engine import evaluate, warning_changes
from rules.pack import Pack, load_packs
from tests.rules.helpers import SITE, SITE_TOML, frame, history, kpi

PACKS = load_packs(None).packs

_HOURLY_TRACE = "hourly_traceability_rate"

# Every threshold rule as docs/policies.md / the source text states it (hand-copied, not read
# from the packs): (metric, window, comparator, threshold).
EXPECTED = {
    "shanxi-2024-35-4": ("pue", "ttm", "<", 1.18),  # 首次低于 1.18
    "shihezi-2024-2-2.1": ("pue", "ttm", "<", 1.25),  # PUE值低于 1.25
    "shihezi-2024-2-2.2-city": ("latency_city_ms", "month", "<=", 1.0),  # 市内延时 1ms
    "shihezi-2024-2-2.2-region": ("latency_region_ms", "month", "<", 3.0),  # 低于 3ms
    "shihezi-2024-2-2.2-hub": ("latency_hub_ms", "month", "<=", 20.0),  # 不高于 20ms
    "yinchuan-2024-draft-5": ("pue", "ttm", "<", 1.2),  # PUE值低于1.2
    "yinchuan-2024-draft-5-green": ("ref", "ttm", ">=", 1.0),  # 100%绿色用能
    "qinghai-2024-11-1": ("ref", "ttm", ">=", 0.80),  # 80%以上
    "qinghai-2024-11-3": ("carbon_traceability", "ttm", ">=", 1.0),  # 每一度电可追溯
    "haidong-zero-carbon-park-plan-pue-2027": ("pue", "ttm", "<=", 1.15),  # 达到 1.15
    "haidong-zero-carbon-park-plan-pue-2030": ("pue", "ttm", "<=", 1.15),  # 1.15以下
    "haidong-zero-carbon-park-plan-new-large-pue": ("pue", "ttm", "<", 1.15),  # 低于 1.15
    "haidong-zero-carbon-park-plan-green-2027": ("ref", "ttm", ">=", 0.80),
    "haidong-zero-carbon-park-plan-green-2030": ("ref", "ttm", ">=", 1.0),
    "haidong-zero-carbon-park-plan-trace-2027": ("carbon_traceability", "ttm", ">=", 0.80),
    "haidong-zero-carbon-park-plan-trace-2030": ("carbon_traceability", "ttm", ">=", 1.0),
    "qinghai-2024-11-3-hourly": (_HOURLY_TRACE, "ttm", ">=", 1.0),  # 每一度电, hour by hour
    # 碳排放可溯源率 80% / 100%可溯源, traced hour by hour
    "haidong-zero-carbon-park-plan-trace-hourly-2027": (_HOURLY_TRACE, "ttm", ">=", 0.8),
    "haidong-zero-carbon-park-plan-trace-hourly-2030": (_HOURLY_TRACE, "ttm", ">=", 1.0),
    "haidong-zero-carbon-park-plan-occupancy-2027": ("rack_occupancy", "month", ">=", 0.65),
    "haidong-zero-carbon-park-plan-occupancy-2030": ("rack_occupancy", "month", ">=", 0.70),
    "cn-hub-nodes-2021-1742-hub-pue": ("pue", "ttm", "<=", 1.25),  # 1.25以下
}

# Facts that satisfy every fact condition of the built-in packs (new project, 5,000 racks,
# 80 % compute share); no province, so no jurisdiction rules a pack out.
ALL_FACTS = SiteFacts(
    racks=5000, compute_share_pct=80, project_type="new", equipment_purchase_cny=1_000_000
)
STEP = 0.001
# For each comparator: is (below, at, above) the threshold a pass?
PASSES = {
    "<": (True, False, False),
    "<=": (True, True, False),
    ">": (False, False, True),
    ">=": (False, True, True),
}


def run(
    rows: list[dict[str, Any]],
    facts: SiteFacts = ALL_FACTS,
    period: str = "2026-10",
    packs: list[Pack] = PACKS,
    **kwargs: Any,
) -> pl.DataFrame:
    return evaluate(packs, frame(rows), facts, site=SITE, period=period, **kwargs)


def finding(findings: pl.DataFrame, rule_id: str) -> dict[str, Any]:
    rows = findings.filter(pl.col("rule_id") == rule_id)
    assert rows.height == 1, rule_id
    return rows.row(0, named=True)


def test_expected_table_covers_every_threshold_rule_and_matches_the_packs() -> None:
    encoded = {
        rule.id: (rule.metric, rule.window, rule.comparator, rule.threshold)
        for pack in PACKS
        for rule in pack.rules
        if rule.kind == "threshold"
    }
    assert encoded == EXPECTED


CASES = [
    (rule_id, position, offset)
    for rule_id in EXPECTED
    for position, offset in enumerate((-STEP, 0.0, STEP))
]


@pytest.mark.parametrize(
    ("rule_id", "position", "offset"),
    CASES,
    ids=[f"{r}-{['below', 'at', 'above'][p]}" for r, p, _ in CASES],
)
def test_threshold_boundaries(rule_id: str, position: int, offset: float) -> None:
    metric, window, comparator, threshold = EXPECTED[rule_id]
    value = threshold + offset
    findings = run([kpi(metric, value, kind=window), kpi("e_dc_kwh", 1000.0, kind="month")])
    row = finding(findings, rule_id)
    expected = "eligible" if PASSES[comparator][position] else "not_eligible"
    assert row["result"] == expected, (rule_id, value)
    assert row["measured_value"] == pytest.approx(value)
    assert row["threshold"] == threshold
    assert row["comparator"] == comparator
    assert row["window"] == window
    assert row["coverage"] == 0.99


def test_pue_exactly_1_18_does_not_qualify_for_below_1_18_even_with_float_noise() -> None:
    # 1.1800000000000002 is what an energy ratio meant to be 1.18 can come out as.
    noisy = 118_000.00000000002 / 100_000
    for value in (1.18, noisy):
        row = finding(run([kpi("pue", value)]), "shanxi-2024-35-4")
        assert row["result"] == "not_eligible", value
    # A real difference below the threshold still counts.
    assert finding(run([kpi("pue", 1.1799)]), "shanxi-2024-35-4")["result"] == "eligible"


def test_output_has_the_finding_schema_and_one_row_per_rule() -> None:
    findings = run([kpi("pue", 1.1)])
    assert findings.schema == FINDING_SCHEMA
    assert findings.height == sum(len(p.rules) for p in PACKS)
    assert findings["rule_id"].n_unique() == findings.height


def test_shanxi_january_2027_is_not_applicable_expired() -> None:
    rows = [kpi("pue", 1.10, period="2027-01"), kpi("pue", 1.10, period="2026-12")]
    row = finding(run(rows, period="2027-01"), "shanxi-2024-35-4")
    assert row["result"] == "not_applicable"
    assert row["policy_status"] == "expired"
    assert "expired on 2026-12-31" in row["explanation"]
    assert row["measured_value"] == 1.10  # still shown as evidence
    assert row["benefit_cny"] is None
    # The last month in force still qualifies.
    last = finding(run(rows, period="2026-12"), "shanxi-2024-35-4")
    assert (last["result"], last["policy_status"]) == ("eligible", "in_force")


def test_before_a_policy_takes_effect_is_not_applicable() -> None:
    row = finding(run([kpi("pue", 1.1, period="2024-06")], period="2024-06"), "shanxi-2024-35-4")
    assert (row["result"], row["policy_status"]) == ("not_applicable", "not_yet")


def test_shihezi_expires_after_three_years() -> None:
    rows = [kpi("pue", 1.1, period=p) for p in ("2027-05", "2027-06")]
    may = finding(run(rows, period="2027-05"), "shihezi-2024-2-2.1")
    june = finding(run(rows, period="2027-06"), "shihezi-2024-2-2.1")
    assert may["result"] == "eligible"
    assert "part of the period only" in may["explanation"]  # ends 2027-05-19
    assert (june["result"], june["policy_status"]) == ("not_applicable", "expired")


def test_yinchuan_is_advisory_draft() -> None:
    findings = run([kpi("pue", 1.15), kpi("e_dc_kwh", 1000.0, kind="month")])
    for rule_id in ("yinchuan-2024-draft-5", "yinchuan-2024-draft-5-green"):
        row = finding(findings, rule_id)
        assert row["advisory"] is True
        assert row["policy_status"] == "draft"
    assert finding(findings, "yinchuan-2024-draft-5")["result"] == "eligible"
    assert finding(findings, "shanxi-2024-35-4")["advisory"] is False


def test_missing_rack_count_is_insufficient_data_not_a_guess() -> None:
    facts = SiteFacts(project_type="new", compute_share_pct=80)
    findings = run([kpi("pue", 1.10)], facts=facts)
    for rule_id in ("shanxi-2024-35-4", "shihezi-2024-2-2.1"):
        row = finding(findings, rule_id)
        assert row["result"] == "insufficient_data", rule_id
        assert "racks" in row["explanation"]
        assert row["benefit_cny"] is None


@pytest.mark.parametrize(
    ("facts", "result"),
    [
        # Shihezi: 计算功能占比大于 70% 且机架数不少于 1000 架, new or expanded.
        ({"racks": 999, "compute_share_pct": 80, "project_type": "new"}, "not_applicable"),
        ({"racks": 1000, "compute_share_pct": 80, "project_type": "new"}, "eligible"),
        ({"racks": 1001, "compute_share_pct": 80, "project_type": "new"}, "eligible"),
        ({"racks": 1000, "compute_share_pct": 70, "project_type": "new"}, "not_applicable"),
        ({"racks": 1000, "compute_share_pct": 70.1, "project_type": "new"}, "eligible"),
        ({"racks": 1000, "compute_share_pct": 80, "project_type": "expansion"}, "eligible"),
        ({"racks": 1000, "compute_share_pct": 80, "project_type": "existing"}, "not_applicable"),
        ({"racks": 1000, "project_type": "new"}, "insufficient_data"),
    ],
)
def test_shihezi_fact_conditions(facts: dict[str, Any], result: str) -> None:
    row = finding(run([kpi("pue", 1.20)], facts=SiteFacts(**facts)), "shihezi-2024-2-2.1")
    assert row["result"] == result
    used = json.loads(row["facts_used"])
    assert all(entry["source"] == "declared" for entry in used.values())
    assert used["racks"]["value"] == facts["racks"]


def test_a_fact_that_rules_out_wins_over_a_missing_one() -> None:
    # Shanxi names new or retrofitted centres; an existing one is out whatever its racks.
    row = finding(
        run([kpi("pue", 1.1)], facts=SiteFacts(project_type="existing")), "shanxi-2024-35-4"
    )
    assert row["result"] == "not_applicable"
    assert "project_type in new, retrofit (declared: existing)" in row["explanation"]


def test_shanxi_first_time_below_over_a_dip_rise_dip_history() -> None:
    # TTM PUE: above, first dip in 2025-09, back above, second dip from 2026-02.
    values = [1.21, 1.20, 1.19, 1.175, 1.178, 1.185, 1.19, 1.183, 1.172, 1.17, 1.168]
    rows = history("pue", "2025-06", values)
    assert rows[3]["period"] == "2025-09" and rows[8]["period"] == "2026-02"
    findings = run(rows, period="2026-04")
    row = finding(findings, "shanxi-2024-35-4")
    assert row["result"] == "eligible"
    assert row["first_met_period"] == "2025-09"  # the first dip, not the current one
    assert "first below 1.18 in 2025-09 (1.175)" in row["explanation"]
    # While above again (2026-01) the finding still shows when it first went below.
    between = finding(run(rows, period="2026-01"), "shanxi-2024-35-4")
    assert between["result"] == "not_eligible"
    assert between["first_met_period"] == "2025-09"
    # Before the first dip there is no first month.
    before = finding(run(rows, period="2025-08"), "shanxi-2024-35-4")
    assert before["first_met_period"] is None


def test_first_time_ignores_insufficient_months() -> None:
    rows = [
        kpi("pue", 1.10, period="2025-08", status="insufficient_data", coverage=0.5),
        kpi("pue", 1.17, period="2025-09"),
        kpi("pue", 1.17, period="2025-10"),
    ]
    assert finding(run(rows, period="2025-10"), "shanxi-2024-35-4")["first_met_period"] == "2025-09"


def test_shanxi_benefit_per_rack() -> None:
    facts = SiteFacts(racks=1200, project_type="retrofit")
    row = finding(run([kpi("pue", 1.17)], facts=facts), "shanxi-2024-35-4")
    # 1,000 CNY/rack x 1,200 racks = 1,200,000 CNY (under the 5,000,000 cap).
    assert row["benefit_cny"] == 1_200_000


def test_shanxi_benefit_is_capped_at_five_million() -> None:
    facts = SiteFacts(racks=6000, project_type="new")
    row = finding(run([kpi("pue", 1.17)], facts=facts), "shanxi-2024-35-4")
    # 1,000 x 6,000 = 6,000,000 > cap -> 5,000,000 CNY.
    assert row["benefit_cny"] == 5_000_000
    assert "capped at 5,000,000.00 CNY" in row["explanation"]


def test_yinchuan_benefit_is_rate_times_the_months_facility_energy() -> None:
    rows = [kpi("pue", 1.19), kpi("e_dc_kwh", 812_345.5, kind="month", unit="kWh")]
    row = finding(run(rows), "yinchuan-2024-draft-5")
    # 0.12 CNY/kWh x 812,345.5 kWh = 97,481.46 CNY.
    assert row["benefit_cny"] == pytest.approx(97_481.46)


def test_yinchuan_benefit_uses_e_dc_when_e_dc_kwh_is_absent() -> None:
    rows = [kpi("pue", 1.19), kpi("e_dc", 500_000.0, kind="month", unit="kWh")]
    row = finding(run(rows), "yinchuan-2024-draft-5")
    # 0.12 x 500,000 kWh = 60,000 CNY.
    assert row["benefit_cny"] == pytest.approx(60_000)
    assert "(e_dc, 2026-10)" in row["explanation"]


def test_yinchuan_without_energy_is_eligible_with_no_estimate() -> None:
    row = finding(run([kpi("pue", 1.19)]), "yinchuan-2024-draft-5")
    assert row["result"] == "eligible"
    assert row["benefit_cny"] is None
    assert "e_dc_kwh for 2026-10 is missing" in row["explanation"]


@pytest.mark.parametrize(
    ("purchase", "benefit"),
    [
        (150_000_000, 15_000_000),  # 10 % x 150,000,000 = 15,000,000 CNY
        (200_000_000, 20_000_000),  # 10 % x 200,000,000 = 20,000,000 = the cap exactly
        (300_000_000, 20_000_000),  # 10 % x 300,000,000 = 30,000,000 -> capped at 20,000,000
    ],
)
def test_shihezi_benefit_share_of_purchase_with_cap(purchase: float, benefit: float) -> None:
    facts = SiteFacts(
        racks=1500, compute_share_pct=75, project_type="new", equipment_purchase_cny=purchase
    )
    row = finding(run([kpi("pue", 1.22)], facts=facts), "shihezi-2024-2-2.1")
    assert row["result"] == "eligible"
    assert row["benefit_cny"] == pytest.approx(benefit)
    assert json.loads(row["facts_used"])["equipment_purchase_cny"]["value"] == purchase


def test_no_benefit_when_not_eligible() -> None:
    row = finding(run([kpi("pue", 1.19)]), "shanxi-2024-35-4")
    assert row["result"] == "not_eligible"
    assert row["benefit_cny"] is None


def test_insufficient_kpi_is_insufficient_data() -> None:
    rows = [kpi("pue", None, status="insufficient_data", coverage=0.80)]
    row = finding(run(rows), "shanxi-2024-35-4")
    assert row["result"] == "insufficient_data"
    assert row["coverage"] == 0.80
    assert "status insufficient_data" in row["explanation"]
    assert finding(run([]), "shanxi-2024-35-4")["result"] == "insufficient_data"


def test_province_outside_the_jurisdiction_is_not_applicable() -> None:
    facts = SiteFacts(racks=100, project_type="new", province="Qinghai")
    findings = run([kpi("pue", 1.1), kpi("ref", 0.9)], facts=facts)
    shanxi = finding(findings, "shanxi-2024-35-4")
    assert shanxi["result"] == "not_applicable"
    assert "declared in Qinghai" in shanxi["explanation"]
    assert finding(findings, "qinghai-2024-11-1")["result"] == "eligible"
    # Names in Chinese or as codes match too.
    zh = finding(run([kpi("ref", 0.9)], facts=SiteFacts(province="青海省")), "qinghai-2024-11-1")
    assert zh["result"] == "eligible"


def test_declared_policies_list_limits_the_packs() -> None:
    facts = SiteFacts(racks=100, project_type="new", policies=["yinchuan-2024-draft"])
    findings = run([kpi("pue", 1.1)], facts=facts)
    assert finding(findings, "shanxi-2024-35-4")["result"] == "not_applicable"
    assert finding(findings, "yinchuan-2024-draft-5")["result"] == "eligible"


def test_category_selects_the_pue_figure() -> None:
    rows = [kpi("pue", 1.25, category=1), kpi("pue", 1.17, category=3)]
    assert finding(run(rows, category=1), "shanxi-2024-35-4")["measured_value"] == 1.25
    chosen = finding(run(rows), "shanxi-2024-35-4")  # none asked: the most precise
    assert (chosen["measured_value"], chosen["category"]) == (1.17, 3)


def test_other_sites_rows_are_ignored() -> None:
    rows = [kpi("pue", 1.1, site="elsewhere")]
    assert finding(run(rows), "shanxi-2024-35-4")["result"] == "insufficient_data"


def test_percent_units_are_read_as_ratios() -> None:
    row = finding(run([kpi("ref", 85.0, unit="%")]), "qinghai-2024-11-1")
    assert row["measured_value"] == pytest.approx(0.85)
    assert row["result"] == "eligible"


def test_report_and_declaration_rules() -> None:
    findings = run([kpi("ref", 0.42, kind="month")])
    report = finding(findings, "shanxi-2024-35-15")
    assert (report["rule_kind"], report["result"], report["measured_value"]) == (
        "report",
        "not_applicable",
        0.42,
    )
    declared = finding(findings, "shanxi-2024-35-5")
    assert (declared["rule_kind"], declared["result"]) == ("declaration", "insufficient_data")
    assert "scheduling and monitoring platform" in declared["explanation"]


def test_margin_warning_on_a_met_threshold() -> None:
    row = finding(run([kpi("pue", 1.165)]), "shanxi-2024-35-4")
    assert row["result"] == "eligible"
    assert row["warning"] == "margin"
    assert "within 0.02 of the threshold < 1.18" in row["warning_detail"]
    # Outside the margin: no warning; the margin is configurable.
    assert finding(run([kpi("pue", 1.15)]), "shanxi-2024-35-4")["warning"] is None
    wide = finding(run([kpi("pue", 1.15)], warn_margin=0.05), "shanxi-2024-35-4")
    assert wide["warning"] == "margin"


def test_no_warning_on_a_missed_threshold() -> None:
    assert finding(run([kpi("pue", 1.19)]), "shanxi-2024-35-4")["warning"] is None


def test_trend_warning_when_the_projection_crosses_before_the_policy_ends() -> None:
    # Rising 0.01/month, 1.15 in 2026-06: projected 1.16 (07), 1.17 (08), 1.18 (09, not below
    # 1.18), before the measures end in 2026-12; 0.03 from the threshold, outside the margin.
    rows = history("pue", "2026-01", [1.10, 1.11, 1.12, 1.13, 1.14, 1.15])
    row = finding(run(rows, period="2026-06"), "shanxi-2024-35-4")
    assert row["result"] == "eligible"
    assert row["warning"] == "trend"
    assert "+0.0100/month" in row["warning_detail"]
    assert "by 2026-09" in row["warning_detail"]
    # The same series ending in 2026-09 at 1.15 would cross in 2026-12: still in force.
    later = history("pue", "2026-04", [1.10, 1.11, 1.12, 1.13, 1.14, 1.15])
    assert finding(run(later, period="2026-09"), "shanxi-2024-35-4")["warning"] == "trend"
    # Ending in 2026-10 it would cross in 2027-01, after the measures end: no warning.
    latest = history("pue", "2026-05", [1.10, 1.11, 1.12, 1.13, 1.14, 1.15])
    assert finding(run(latest, period="2026-10"), "shanxi-2024-35-4")["warning"] is None


def test_trend_beyond_the_policy_end_is_not_a_warning() -> None:
    # Rising 0.002/month from 1.15: it would reach 1.18 in 15 months, after 2026-12.
    rows = history("pue", "2026-01", [1.14, 1.142, 1.144, 1.146, 1.148, 1.15])
    row = finding(run(rows, period="2026-06", warn_margin=0.01), "shanxi-2024-35-4")
    assert row["warning"] is None


def test_falling_pue_gives_no_trend_warning() -> None:
    rows = history("pue", "2026-01", [1.17, 1.16, 1.15, 1.14, 1.13, 1.12])
    assert finding(run(rows, period="2026-06"), "shanxi-2024-35-4")["warning"] is None


def test_warning_changes_report_appear_and_clear_once() -> None:
    quiet = run([kpi("pue", 1.10)])
    noisy = run([kpi("pue", 1.17)])
    appeared = warning_changes(quiet, noisy)
    assert [(c.rule_id, c.change) for c in appeared if c.rule_id == "shanxi-2024-35-4"] == [
        ("shanxi-2024-35-4", "appeared")
    ]
    assert warning_changes(noisy, noisy) == []  # persisting: nothing to log
    cleared = warning_changes(noisy, quiet)
    assert ("shanxi-2024-35-4", "cleared") in {(c.rule_id, c.change) for c in cleared}
    assert all(c.change == "appeared" for c in warning_changes(None, noisy))


def test_engine_does_not_modify_its_inputs() -> None:
    kpis = frame(history("pue", "2026-01", [1.17] * 10))
    before = kpis.clone()
    evaluate(PACKS, kpis, ALL_FACTS, site=SITE, period="2026-10")
    assert kpis.equals(before)


def test_bad_period_label_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a month YYYY-MM"):
        run([], period="2026-13")


def test_draft_without_dates_is_evaluated_for_any_period() -> None:
    row = finding(
        run([kpi("pue", 1.1, period="2035-01")], period="2035-01"), "yinchuan-2024-draft-5"
    )
    assert (row["result"], row["policy_status"], row["advisory"]) == ("eligible", "draft", True)


def test_accepts_loaded_packs_and_a_site_object_as_the_report_adapter_passes_them() -> None:
    site = parse_site(tomllib.loads(SITE_TOML)["site"], source="site.toml")
    findings = evaluate(
        load_packs(None), frame([kpi("pue", 1.17)]), site.facts, site=site, period="2026-10"
    )
    row = finding(findings, "shanxi-2024-35-4")
    assert (row["site"], row["result"]) == ("dc-1", "eligible")
    # 1,000 CNY/rack x 1,200 racks (declared in SITE_TOML) = 1,200,000 CNY.
    assert row["benefit_cny"] == 1_200_000

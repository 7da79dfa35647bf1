"""Hourly thresholds in the policy packs: Qinghai 3 and Haidong's traceability targets."""

from __future__ import annotations

import polars as pl

from agent.site import SiteFacts
from rules import evaluate, load_packs
from tests.rules.helpers import SITE, frame, kpi


def test_hourly_traceability_rules_read_the_hourly_rate() -> None:
    """An hourly traceability rate of 0.85 over the TTM (2026-10, Qinghai site):

    Haidong 2027 (>= 0.80) passes, Haidong 2030 (>= 1.0) and Qinghai 3 hourly (every kWh,
    >= 1.0) do not; Haidong's load-shift report rule reports the flexible share as is.
    """
    loaded = load_packs(None)
    assert loaded.errors == []
    rows = [
        kpi("hourly_traceability_rate", 0.85),
        kpi("flexible_green_surplus_share", 0.4, kind="month"),
        kpi("hourly_matched_green_share", 0.61, kind="month"),
    ]
    findings = evaluate(
        loaded.packs, frame(rows), SiteFacts(province="Qinghai"), site=SITE, period="2026-10"
    )
    result = dict(zip(findings["rule_id"].to_list(), findings["result"].to_list(), strict=True))
    assert result["haidong-zero-carbon-park-plan-trace-hourly-2027"] == "eligible"
    assert result["haidong-zero-carbon-park-plan-trace-hourly-2030"] == "not_eligible"
    assert result["qinghai-2024-11-3-hourly"] == "not_eligible"
    shift = findings.filter(pl.col("rule_id") == "haidong-zero-carbon-park-plan-load-shift")
    assert shift["measured_value"][0] == 0.4

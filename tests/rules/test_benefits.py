"""Benefits follow their clause: once, once a year, or every month (issue 15, item 3).

Each table row is (evaluated month, result, first_met_period, benefit_cny, claim state,
words in the explanation), for one history of KPI figures.
"""

from __future__ import annotations

import tomllib
from typing import Any

import polars as pl
import pytest

from agent.site import SiteFacts
from rules import benefit_payments, claim_state, load_packs, parse_pack
from rules.engine import evaluate
from rules.pack import Pack
from tests.rules.helpers import SITE, frame, history, kpi

BUILTIN = load_packs(None).packs
Row = tuple[str, str, str | None, float | None, tuple[str, str] | None, str | None]


def _evaluate(packs: list[Pack], rows: list[dict[str, Any]], facts: SiteFacts, period: str) -> Any:
    return evaluate(packs, frame(rows), facts, site=SITE, period=period)


def _check(
    packs: list[Pack], rule_id: str, rows: list[dict[str, Any]], facts: SiteFacts, table: list[Row]
) -> None:
    paid = benefit_payments(packs)[rule_id]
    for period, result, first, amount, state, words in table:
        findings = _evaluate(packs, rows, facts, period)
        row = findings.filter(pl.col("rule_id") == rule_id).row(0, named=True)
        got = (row["result"], row["first_met_period"], row["benefit_cny"])
        assert got == (result, first, pytest.approx(amount) if amount else None), period
        assert claim_state(row, paid) == state, period
        if words is not None:
            assert words in row["explanation"], (period, row["explanation"])


# Shanxi (四): 一次性补贴 when the TTM PUE *first* drops below 1.18; 1,000 CNY/rack x 1,200
# racks = 1,200,000 CNY (under the 5,000,000 cap). TTM 2026-06..2026-12: first below in
# 2026-09 (1.17852), still below in 2026-10, above in 2026-11, below again in 2026-12.
SHANXI_TTM = [1.19, 1.185, 1.181, 1.17852, 1.176, 1.19, 1.175]
SHANXI_FACTS = SiteFacts(racks=1200, project_type="new", province="Shanxi")
SHANXI: list[Row] = [
    ("2026-08", "not_eligible", None, None, None, None),
    (
        "2026-09",
        "eligible",
        "2026-09",
        1_200_000,
        ("claim", "2026-09"),
        "Eligible — claim once, first met 2026-09.",
    ),
    (
        "2026-10",
        "eligible",
        "2026-09",
        None,
        ("claimable_since", "2026-09"),
        "Met, already claimable since 2026-09",
    ),
    ("2026-11", "not_eligible", "2026-09", None, None, None),
    (
        "2026-12",
        "eligible",
        "2026-09",
        None,
        ("claimable_since", "2026-09"),
        "Met, already claimable since 2026-09",
    ),
]


def test_shanxi_one_time_benefit_is_stated_once() -> None:
    rows = history("pue", "2026-06", SHANXI_TTM)
    _check(BUILTIN, "shanxi-2024-35-4", rows, SHANXI_FACTS, SHANXI)


# Shihezi 二(一): 10 % of the equipment purchase price, once (the policy takes effect on
# 2024-05-20): 10 % x 150,000,000 = 15,000,000 CNY (under the 20,000,000 cap). TTM PUE
# 1.22 in 2024-04 does not count (the policy is not yet in force); 1.24 in 2024-05 is the
# first month below 1.25 in the policy's life.
SHIHEZI_FACTS = SiteFacts(
    racks=1500, compute_share_pct=75, project_type="new", equipment_purchase_cny=150_000_000
)
SHIHEZI: list[Row] = [
    ("2024-04", "not_applicable", None, None, None, "takes effect on 2024-05-20"),
    ("2024-05", "eligible", "2024-05", 15_000_000, ("claim", "2024-05"), "claim once"),
    (
        "2024-06",
        "eligible",
        "2024-05",
        None,
        ("claimable_since", "2024-05"),
        "already claimable since 2024-05",
    ),
]


def test_shihezi_purchase_subsidy_is_paid_once_from_the_policys_start() -> None:
    rows = history("pue", "2024-04", [1.22, 1.24, 1.23])
    _check(BUILTIN, "shihezi-2024-2-2.1", rows, SHIHEZI_FACTS, SHIHEZI)


# Yinchuan 第五条 (draft): 0.12 CNY per kWh of each month's facility energy while the TTM
# PUE is below 1.2: 0.12 x 100,000 = 12,000 CNY for 2026-09, 0.12 x 250,000 = 30,000 CNY
# for 2026-10 — every month its own amount, no first month.
YINCHUAN: list[Row] = [
    ("2026-09", "eligible", None, 12_000, None, "0.12 CNY/kWh x 100,000.0 kWh"),
    ("2026-10", "eligible", None, 30_000, None, "0.12 CNY/kWh x 250,000.0 kWh"),
]


def test_yinchuan_per_kwh_benefit_is_stated_every_month() -> None:
    rows = [
        *history("pue", "2026-09", [1.19, 1.18]),
        kpi("e_dc_kwh", 100_000.0, period="2026-09", kind="month", unit="kWh"),
        kpi("e_dc_kwh", 250_000.0, period="2026-10", kind="month", unit="kWh"),
    ]
    _check(BUILTIN, "yinchuan-2024-draft-5", rows, SiteFacts(province="Ningxia"), YINCHUAN)


ANNUAL_PACK = """
id = "op-annual"
title_zh = "年度奖励测试"
title_en = "Annual award test"
issuer = "Test bureau"
document = "测〔2025〕9号"
jurisdiction = "Testland"
status = "in_force"
effective_from = 2025-01-01
source = "unit test"

[[rules]]
id = "op-annual-1"
clause_ref = "第一条"
clause = "月度PUE低于1.3的，每年按每机架10元给予奖励。"
title_en = "Monthly PUE below 1.3: 10 CNY per rack each year"
metric = "pue"
window = "month"
comparator = "<"
threshold = 1.3
requires = ["racks"]
[rules.benefit]
kind = "per_rack"
payment = "annual"
rate = 10
clause = "每年按每机架10元给予奖励"
"""

# Once per calendar year, in the first month of the year the test held: 10 CNY x 1,200
# racks = 12,000 CNY in 2025-11 and again in 2026-02 (2026-01 is above 1.3).
ANNUAL: list[Row] = [
    ("2025-11", "eligible", "2025-11", 12_000, ("claim", "2025-11"), "claim once for 2025"),
    ("2025-12", "eligible", "2025-11", None, ("claimable_since", "2025-11"), "annual benefit"),
    ("2026-01", "not_eligible", None, None, None, None),
    ("2026-02", "eligible", "2026-02", 12_000, ("claim", "2026-02"), "claim once for 2026"),
    ("2026-03", "eligible", "2026-02", None, ("claimable_since", "2026-02"), None),
]


def test_annual_benefit_is_stated_once_a_year() -> None:
    pack = parse_pack(tomllib.loads(ANNUAL_PACK), source="test")
    rows = history("pue", "2025-11", [1.2, 1.25, 1.35, 1.28, 1.2], kind="month")
    _check([pack], "op-annual-1", rows, SiteFacts(racks=1200), ANNUAL)


def test_default_payment_by_kind_and_as_written_in_the_packs() -> None:
    assert benefit_payments(BUILTIN) == {
        "shanxi-2024-35-4": "once",  # 一次性补贴
        "shihezi-2024-2-2.1": "once",
        "yinchuan-2024-draft-5": "per_period",  # 电费补贴, per kWh
    }
    text = ANNUAL_PACK.replace('payment = "annual"\n', "")
    assert benefit_payments([parse_pack(tomllib.loads(text), source="t")]) == {
        "op-annual-1": "once"
    }

"""The auditor's month end to end, through the CLI (issue 15, items 1-5).

``import`` (13 months, UPS 2 silent for three hours) -> ``green add`` (200 MWh) -> ``kpi``
-> ``report`` -> ``verify``, without the daemon. Expected figures are worked out in
``tests/report/auditor_site.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.cli import app
from rules import claim_state
from tests.report.auditor_site import QUARTERS_OCTOBER, write_readings, write_site

MONTH = "2026-10"
E_DC = QUARTERS_OCTOBER * 105.0  # 312,480 kWh
TTM_PUE = (304 * 1.19 + 61 * 1.05) / 365  # 1.166602…
REF_MONTH = 200_000 / E_DC  # one 200 MWh certificate: 0.640041…
SILENCE = {
    "meter": "ups-2",
    "period": MONTH,
    "start": "2026-10-11T18:00:00Z",  # 2026-10-12 02:00 +08:00, the last reading before
    "end": "2026-10-11T21:15:00Z",  # 05:15, the first after: 13 quarter-hours
    "imported": True,
    "minutes": 195.0,
    "fill": "interpolated",  # the register difference spread over the silence: covered
    "covered": 1.0,
    "energy_kwh": 650.0,  # 13 x 50 kWh
}


def _run(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _row(rows: list[dict[str, Any]], kind: str, metric: str) -> dict[str, Any]:
    return next(r for r in rows if r["period_kind"] == kind and r["metric"] == metric)


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("auditor")
    config = str(write_site(root))
    imported = _run("import", str(write_readings(root / "history.parquet")), "--config", config)
    _run(
        "green", "add", "--config", config, "--period", MONTH, "--kind", "certificate",
        "--mwh", "200", "--ref", "GEC-2026-10-0001",
    )  # fmt: skip
    _run("keys", "init", "--config", config)
    kpi = json.loads(_run("kpi", "--period", MONTH, "--json", "--config", config).stdout)
    september = json.loads(
        _run("rules", "evaluate", "--period", "2026-09", "--json", "--config", config).stdout
    )
    _run("report", "--month", MONTH, "--out", str(root / "out"), "--no-csv", "--config", config)
    bundle = root / "out" / f"sx-1-{MONTH}"
    verified = _run("verify", str(bundle)).stdout
    return {
        "imported": imported.stdout,
        "kpi": kpi,
        "september": september,
        "bundle": bundle,
        "verified": verified,
    }


def _json(bundle: Path, name: str) -> Any:
    return json.loads((bundle / "data" / name).read_text(encoding="utf-8"))


def _text(pdf: Path, *pages: int, layout: bool = False) -> str:
    span = ["-f", str(pages[0]), "-l", str(pages[-1])] if pages else []
    span += ["-layout"] if layout else []
    out = subprocess.run(
        ["pdftotext", *span, str(pdf), "-"], capture_output=True, text=True, check=True
    )
    return re.sub(r"[ \u00a0]+", " ", out.stdout)


def test_history_is_usable_right_after_import_and_matches_the_report(month: dict[str, Any]) -> None:
    assert "aggregated journal up to batch 1 with aggregator 'agg'" in month["imported"]
    kpis = month["kpi"]["kpis"]
    assert _row(kpis, "month", "pue")["value"] == pytest.approx(1.05, rel=1e-12)
    assert _row(kpis, "month", "pue")["category"] == 1
    assert _row(kpis, "ttm", "pue")["value"] == pytest.approx(TTM_PUE, rel=1e-12)
    assert _row(kpis, "month", "ref")["value"] == pytest.approx(REF_MONTH, rel=1e-12)
    report = _json(month["bundle"], "kpis.json")["kpis"]
    # The same figures in the signed report as `kpi --json` printed.
    for kind, metric in (("month", "pue"), ("month", "ref"), ("month", "cue")):
        assert _row(report, kind, metric)["value"] == _row(kpis, kind, metric)["value"]
    for metric in ("pue", "ref"):
        assert _row(report, "ttm", metric)["value"] == pytest.approx(
            _row(kpis, "ttm", metric)["value"], rel=1e-12
        )
    assert "bundle VALID" in month["verified"]
    assert "OK   silences: 1 silent periods re-derived" in month["verified"]


def test_the_one_time_benefit_is_stated_in_the_first_month_only(month: dict[str, Any]) -> None:
    september = next(
        f for f in month["september"]["findings"] if f["rule_id"] == "shanxi-2024-35-4"
    )
    # TTM 2026-09 = 430.15 / 365 = 1.178493 < 1.18: first met; 1,000 CNY x 1,200 racks.
    assert (september["result"], september["first_met_period"]) == ("eligible", "2026-09")
    assert september["benefit_cny"] == 1_200_000
    assert claim_state(september, "once") == ("claim", "2026-09")
    october = next(
        f
        for f in _json(month["bundle"], "findings.json")["findings"]
        if f["rule_id"] == "shanxi-2024-35-4"
    )
    assert (october["result"], october["first_met_period"]) == ("eligible", "2026-09")
    assert october["benefit_cny"] is None
    assert claim_state(october, "once") == ("claimable_since", "2026-09")


def test_a_silent_meter_in_imported_history_is_listed(month: dict[str, Any]) -> None:
    (listed,) = month["kpi"]["silent_periods"]
    assert listed == pytest.approx(SILENCE)
    (bundled,) = _json(month["bundle"], "silences.json")
    assert bundled == listed  # one figure, in kpi --json and the report alike
    # The table row, in local time (+08:00): one line of the PDF's layout text.
    zh = _text(month["bundle"] / "report.pdf", layout=True)
    assert "ups-2 2026-10-12 02:00 2026-10-12 05:15 195 寄存器插值 100.0 % 650.000 导入" in zh
    en = _text(month["bundle"] / "report.en.pdf", layout=True)
    assert (
        "ups-2 2026-10-12 02:00 2026-10-12 05:15 195 interpolated from registers 100.0 % "
        "650.000 imported"
    ) in en


def test_page_one_states_what_an_auditor_needs(month: dict[str, Any]) -> None:
    zh = _text(month["bundle"] / "report.pdf", 1)
    for words in (
        "太原一号数据中心",
        "山西算力示范有限公司",
        "2026-10（2026-10-01 至 2026-10-31",
        "1.050",  # monthly PUE
        "1.167",  # annual PUE
        "第 1 类（基本）",
        "64.0 %",  # REF
        "0.268",  # CUE = 112,480 kWh grid not covered x 0.7096 / 297,600 kWh
        "静默时段（电表无读数 ≥ 15 分钟）：1 个",
        "晋政办发〔2024〕35号",
        "已达标，自 2026-09 起可申领",
        "已于 2026-09 计列",
        "预警",
    ):
        assert words in zh, words
    # CUE: (312,480 - 200,000) kWh x 0.7096 kgCO2/kWh / 297,600 kWh = 0.26820…
    assert f"{112_480 * 0.7096 / 297_600:.3f}" == "0.268"
    # Other provinces' clauses are not on page 1.
    assert "青数〔2024〕11号" not in zh and "师市规发" not in zh
    en = _text(month["bundle"] / "report.en.pdf", 1)
    for words in (
        "2026-10 (2026-10-01 – 2026-10-31",
        "category 1 (basic, PUE1)",
        "met, already claimable since 2026-09",
        "stated in 2026-09",
    ):
        assert words in en, words


def test_chinese_report_is_chinese_and_signed_by_the_operator(month: dict[str, Any]) -> None:
    zh = _text(month["bundle"] / "report.pdf")
    for raw in ("in_force", "retrofit", "not_applicable", "insufficient", "{'", "`", "Shanxi"):
        assert raw not in zh, raw
    for words in ("改造升级", "山西", "现行有效", "不适用的政策条款", "（单位公章）", "王建国"):
        assert words in zh, words
    # The other provinces' clauses come last, in one table, before the signature.
    assert zh.index("不适用的政策条款") > zh.index("计算方法")
    assert zh.index("签名") > zh.index("不适用的政策条款")
    fingerprint = json.loads((month["bundle"] / "manifest.json").read_text())["signing_key"][
        "fingerprint"
    ]
    assert fingerprint[:32] in zh.replace("\n", "")
    en = _text(month["bundle"] / "report.en.pdf")
    assert "(company seal 公章)" in en and "Signing date" in en

"""The report's hourly-matching section, in both languages, re-derived by ``verify``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.keys import SigningKey
from agent.kpi.hourly import CERTIFICATE_SCHEMA, CONTRACT_HOURS_SCHEMA, GreenSupply
from agent.report.bundle import ReportRequest, build_bundle
from agent.report.verify import verify_bundle
from tests.green.sites import day_rows, green_site, rows_for

#: The 61 % month of test_hourly (REF 100 %, matched 1,464 of 2,400 kWh a day).
PV = {6: 64.0, 7: 100.0, 20: 100.0} | dict.fromkeys(range(8, 20), 178.0)


def test_report_hourly_section_zh_en_and_verify(tmp_path: Path) -> None:
    """June 2026 with a contract of 100 kWh at local 2026-06-15T22 and a day certificate of
    1 MWh produced 2026-06-16 (covers that day's 936 unmatched kWh in time order: hours
    00-05 = 600, then 06:00 takes 36, 21:00-23:00 take 300: 936 used, 64 unused).

    Matched: 30 x 1,464 + 100 + 936 = 44,956 of 72,000 kWh = 0.624388...; unmatched hours:
    30 x 10 - 1 (15th 22:00) - 10 (all of the 16th) = 289.
    """
    site = green_site()
    rows = [r for d in range(1, 31) for r in day_rows(f"2026-06-{d:02d}", PV)]
    supply = GreenSupply(
        pl.DataFrame(
            [("2026-06-15T22", 100.0, "PPA-7")], schema=CONTRACT_HOURS_SCHEMA, orient="row"
        ),
        pl.DataFrame(
            [("2026-06-16", "day", 1000.0, "GEC-16")], schema=CERTIFICATE_SCHEMA, orient="row"
        ),
    )
    key = SigningKey(Ed25519PrivateKey.generate(), "test")
    result = build_bundle(
        ReportRequest(
            site=site, month="2026-06", intervals=rows_for(rows), csv=False, supply=supply
        ),
        key,
        tmp_path,
        ("zh", "en"),
        make_zip=False,
    )
    month = result.kpis.filter(pl.col("period_kind") == "month")
    value = dict(zip(month["metric"].to_list(), month["value"].to_list(), strict=True))
    assert value["hourly_matched_green_share"] == pytest.approx(44_956 / 72_000)
    assert value["hourly_unmatched_hours"] == 289
    assert value["hourly_certificate_kwh"] == pytest.approx(936.0)
    assert value["ref"] == pytest.approx(1.0)
    stored = json.loads((result.directory / "data/green_hourly.json").read_text("utf-8"))
    assert stored["contracts"][0]["reference"] == "PPA-7"
    # verify re-derives the hourly rows from the bundle's own files.
    checks = verify_bundle(result.directory)
    assert checks.ok, checks.first_failure
    for pdf, title in (
        ("report.pdf", "逐小时绿电匹配"),
        ("report.en.pdf", "Hourly green matching"),
    ):
        text = subprocess.run(
            ["pdftotext", str(result.directory / pdf), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert title in text
        assert "62.4" in text  # the month's hourly-matched share, 62.4 %

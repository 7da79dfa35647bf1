"""The rendered report: PDF text, fonts, HTML validity, charts, manifest and data files."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import zipfile

import html5lib
import polars as pl
import pytest

from agent.report.bundle import BundleResult
from agent.schemas import INTERVAL_SCHEMA
from tests.report.conftest import kpi_value


def _pdftotext(path, *, layout: bool = True) -> str:
    args = ["pdftotext", *(["-layout"] if layout else []), str(path), "-"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_pdf_text_has_title_site_pue_with_category_and_documents(good_bundle: BundleResult) -> None:
    text = _pdftotext(good_bundle.directory / "report.pdf")
    # Reading order keeps a table cell's lines together (layout mode interleaves columns).
    flat = _squash(_pdftotext(good_bundle.directory / "report.pdf", layout=False))
    assert "数据中心能效月度认证报告" in text
    assert "演示数据中心" in text
    pue = kpi_value(good_bundle.kpis, "month", "pue")
    ttm = kpi_value(good_bundle.kpis, "ttm", "pue")
    assert pue is not None and ttm is not None
    # The headline figure is followed by its measurement category.
    assert re.search(rf"{pue:.3f}\s+PUE · 第 2 类", text) or f"{pue:.3f}" in text
    assert _squash(f"{pue:.3f}") in flat and _squash(f"{ttm:.3f}") in flat
    assert "第 2 类（中级）" in text
    documents = {d for d in good_bundle.findings["document"].to_list() if d}
    assert documents, "the rules engine produced no finding with a document number"
    for document in documents:
        # The Chinese report leaves out the packs' English remarks ("(number unconfirmed)").
        chinese = re.sub(r"\s*\([^()\u4e00-\u9fff]*\)", "", document)
        assert _squash(chinese) in flat, document


def test_english_pdf_also_carries_chinese_title_and_category(good_bundle: BundleResult) -> None:
    text = _pdftotext(good_bundle.directory / "report.en.pdf")
    assert "Monthly Certified Data-Centre Energy Report" in text
    assert "数据中心能效月度认证报告" in text
    assert "category 2 (intermediate, PUE2)" in text


def test_pdf_embeds_noto_cjk_and_names_it(good_bundle: BundleResult) -> None:
    fonts = subprocess.run(
        ["pdffonts", str(good_bundle.directory / "report.pdf")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cjk = [line for line in fonts.splitlines() if "Noto-Sans-CJK-SC" in line]
    assert cjk and all(" yes yes " in line for line in cjk)  # embedded and subset
    assert "Noto Sans CJK SC" in _pdftotext(good_bundle.directory / "report.pdf")


@pytest.mark.parametrize("name", ["report.html", "report.en.html"])
def test_html_parses_with_strict_html5_parser(good_bundle: BundleResult, name: str) -> None:
    html = (good_bundle.directory / name).read_text(encoding="utf-8")
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(html)  # raises ParseError on the first error
    assert parser.errors == []


def test_charts_are_images_in_html_and_pdf(good_bundle: BundleResult) -> None:
    html = (good_bundle.directory / "report.html").read_text(encoding="utf-8")
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 5  # four charts and the hourly-matching heat map
    assert all(base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n" for u in uris)
    listing = subprocess.run(
        ["pdfimages", "-list", str(good_bundle.directory / "report.pdf")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[2:]
    assert len([line for line in listing if " image " in line]) >= 4


def test_manifest_hashes_every_file_and_zip_matches(good_bundle: BundleResult) -> None:
    root = good_bundle.directory
    manifest = json.loads((root / "manifest.json").read_bytes())
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {
        "manifest.json",
        "manifest.sig",
    }
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == entry["sha256"]
    assert len((root / "manifest.sig").read_bytes()) == 64
    assert good_bundle.zip_path is not None
    with zipfile.ZipFile(good_bundle.zip_path) as archive:
        names = {n.split("/", 1)[1] for n in archive.namelist()}
    assert names == on_disk | {"manifest.json", "manifest.sig"}


def test_data_files_hold_the_interval_rows(good_bundle: BundleResult) -> None:
    root = good_bundle.directory / "data"
    parquet = pl.read_parquet(root / "intervals.parquet")
    assert parquet.schema == INTERVAL_SCHEMA
    # 42 simulated meters, 31 days of 96 quarter-hours each.
    assert parquet.height == 42 * 31 * 96 and parquet["meter"].n_unique() == 42
    csv = pl.read_csv(root / "intervals.csv.zst")
    assert csv.height == parquet.height
    assert csv["energy_kwh"].sum() == pytest.approx(parquet["energy_kwh"].sum(), rel=1e-12)
    kpis = json.loads((root / "kpis.json").read_text(encoding="utf-8"))
    assert {r["metric"] for r in kpis["kpis"]} >= {"pue", "ref", "cue", "ppue_cooling"}
    findings = json.loads((root / "findings.json").read_text(encoding="utf-8"))
    assert len(findings["findings"]) == good_bundle.findings.height > 0
    journal = json.loads((good_bundle.directory / "journal.json").read_text(encoding="utf-8"))
    assert journal["head_hash"] == "ef" * 32


def test_quality_tables_list_events(good_bundle: BundleResult) -> None:
    text = _pdftotext(good_bundle.directory / "report.pdf")
    for word in ("缺测", "复位", "翻转", "剔除"):
        assert word in text
    assert "pdu-003.output" in text and "chiller-1.input" in text


def test_low_coverage_month_says_insufficient_data(sparse_bundle: BundleResult) -> None:
    month = sparse_bundle.kpis.filter(
        (pl.col("period_kind") == "month") & (pl.col("metric") == "pue")
    ).row(0, named=True)
    assert month["status"] == "insufficient_data" and month["value"] is None
    assert month["coverage"] < 0.95
    text = _pdftotext(sparse_bundle.directory / "report.pdf")
    headline = text.split("核心指标", 1)[1].split("数据中心总耗电量", 1)[0]
    assert "数据不足" in headline
    month_line = next(
        line for line in headline.splitlines() if "月度 PUE（中期值）" in line and "%" in line
    )
    assert "数据不足" in month_line and not re.search(r"\b1\.\d{3}\b", month_line)
    stored = json.loads((sparse_bundle.directory / "data/kpis.json").read_text(encoding="utf-8"))
    row = next(r for r in stored["kpis"] if r["metric"] == "pue" and r["period_kind"] == "month")
    assert row["value"] is None and row["status"] == "insufficient_data"

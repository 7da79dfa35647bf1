"""The console in a real browser: Debian's chromium driven by selenium through chromedriver.

One browser for the module, against the package's one agent (``conftest.py``). The
browser's language is Chinese, so the page must open in Chinese; the tests switch to
English and back. Screenshots of both languages at laptop (1366x768) and phone (390x844)
sizes go to ``build/screenshots/`` for review.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from agent.keys import fingerprint, load_signing_key, public_key_pem
from agent.report.verify import verify_bundle
from agent.settings import load_settings
from tests.console.conftest import IDLE_CONSUMER, ConsoleSite
from tests.console.sitedata import SPARE_METER, tamper
from tests.paths import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = ROOT / "build" / "screenshots"
SIZES = {"laptop": (1366, 768), "phone": (390, 844)}
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--lang=zh-CN",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    # A missing browser fails loudly: scripts/setup.sh installs chromium and chromium-driver.
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert Path(binary).is_file(), f"{binary} is missing: run scripts/setup.sh"
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh"})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so Selenium Manager is never asked to download anything.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(*SIZES["laptop"])
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def downloads(browser: WebDriver, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("downloads")
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
    )
    return folder


def wait(
    driver: WebDriver, what: str, check: Callable[[WebDriver], Any], timeout_s: float = 15
) -> Any:
    """Wait for ``check`` to return something truthy; fail naming ``what``."""
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(check, message=what)


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def shown(driver: WebDriver, element_id: str) -> bool:
    return bool(driver.find_element(By.ID, element_id).is_displayed())


def set_language(driver: WebDriver, lang: str) -> None:
    Select(driver.find_element(By.ID, "lang")).select_by_value(lang)
    wait(
        driver,
        f"page in {lang}",
        lambda d: str(d.find_element(By.TAG_NAME, "html").get_attribute("lang")).startswith(lang),
    )


_CHART_FITS = """
const box = document.getElementById("chart");
const svg = box.querySelector("svg");
return !svg || box.offsetParent === null
    || svg.viewBox.baseVal.width === Math.max(300, Math.round(box.clientWidth));
"""


def screenshot(driver: WebDriver, name: str, size: str, *, mobile: bool) -> Path:
    """A full-page PNG at ``size`` (viewport width and height, device scale 1)."""
    width, height = SIZES[size]
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    try:
        # The chart is redrawn at the new width (a resize event, debounced) before the shot.
        wait(driver, "chart at the new width", lambda d: d.execute_script(_CHART_FITS))
        full = int(driver.execute_script("return document.documentElement.scrollHeight"))
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": max(full, height), "scale": 1},
            },
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{size}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def screenshots(driver: WebDriver, view: str, settle: Callable[[WebDriver], Any]) -> None:
    for lang in ("zh", "en"):
        set_language(driver, lang)
        wait(driver, f"{view} rendered in {lang}", settle)
        for size in SIZES:
            screenshot(driver, f"{view}-{lang}", size, mobile=size == "phone")


def log_in(driver: WebDriver, site: ConsoleSite, token: str) -> None:
    driver.get(site.agent.url + "/console/")
    wait(driver, "login form", lambda d: shown(d, "view-login"))
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "login-submit").click()


def log_out(driver: WebDriver) -> None:
    driver.find_element(By.ID, "logout").click()
    wait(driver, "login page after sign-out", lambda d: shown(d, "view-login"))


def test_without_a_token_only_the_login_page(browser: WebDriver, console_site: ConsoleSite) -> None:
    browser.get(console_site.agent.url + "/console/")
    # The browser asks for Chinese, so the page opens in Chinese.
    wait(browser, "login form", lambda d: shown(d, "view-login"))
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    assert text(browser, "login-h") == "登录"
    for view in ("view-ops", "view-audit", "view-verify", "tabs"):
        assert not shown(browser, view), view
    # Every input has a label.
    assert browser.find_element(By.CSS_SELECTOR, "label[for=token]").text
    log_in(browser, console_site, console_site.tokens.ops[:-1] + "x")
    wait(browser, "refusal shown", lambda d: text(d, "login-error") == "令牌无效。")
    assert not shown(browser, "view-ops")
    # The field is emptied; nothing of the token is kept by the page.
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""
    assert browser.execute_script("return document.cookie") == ""
    screenshot(browser, "login-zh", "phone", mobile=True)


def _row(rows: list[dict[str, Any]], kind: str, metric: str) -> dict[str, Any]:
    (row,) = [r for r in rows if r["period_kind"] == kind and r["metric"] == metric]
    return row


def test_ops_view_shows_the_figures_of_kpi_json(
    browser: WebDriver, console_site: ConsoleSite
) -> None:
    log_in(browser, console_site, console_site.tokens.ops)
    wait(browser, "ops view", lambda d: shown(d, "view-ops"))
    set_language(browser, "en")
    wait(browser, "month PUE", lambda d: text(d, "pue-month") != "—")
    rows = console_site.kpi_json["kpis"]
    for kind in ("month", "ttm"):
        pue = _row(rows, kind, "pue")
        # As `pue-agent kpi` prints them: 4 decimals, coverage in percent, the category.
        assert text(browser, f"pue-{kind}") == f"{pue['value']:.4f}"
        assert text(browser, f"pue-{kind}-coverage") == f"{pue['coverage'] * 100:.1f} %"
        assert text(browser, f"pue-{kind}-category") == str(pue["category"])
        for metric in ("ref_metered", "ref_documentary", "ref"):
            value = _row(rows, kind, metric)["value"]
            assert text(browser, f"{metric}-{kind}") == f"{value * 100:.2f} %", (kind, metric)
    # Stated arithmetic (tests/console/sitedata.py): today and this month 1.40, category 2.
    assert text(browser, "pue-today") == "1.4000"
    assert text(browser, "pue-month") == "1.4000"
    assert text(browser, "pue-month-category") == "2"
    # The hourly-matched green share: kpi --json's row when the KPI engine has one, else "—".
    share = {
        r["period_kind"]: r["value"] for r in rows if r["metric"] == "hourly_matched_green_share"
    }
    for kind in ("month", "ttm"):
        value = share.get(kind)
        expected_share = "—" if value is None else f"{value * 100:.2f} %"
        assert text(browser, f"hourly_matched_green_share-{kind}") == expected_share
    # The 24-hour chart: two lines of about 24 hourly points each.
    lines = browser.find_elements(By.CSS_SELECTOR, "#chart svg polyline")
    assert len(lines) == 2
    assert all(len(str(line.get_attribute("points")).split()) >= 23 for line in lines)
    assert "Last 24 hours" in text(browser, "chart-h")
    # Silent meter with since-when, in the site's time zone; the idle consumer's lag.
    wait(browser, "live figures", lambda d: SPARE_METER in text(d, "silent-table"))
    silent = text(browser, "silent-table")
    assert "never reported" in silent
    assert IDLE_CONSUMER in text(browser, "lag-table") and "batches" in text(browser, "lag-table")
    assert "Times in Asia/Shanghai" in text(browser, "tz")
    # Real-time PUE labelled as a power ratio; power with its unit.
    assert "power ratio" in text(browser, "rt-h")
    assert text(browser, "e-dc-power").endswith(" kW")
    assert text(browser, "power-it").endswith(" kW")


def test_a_value_updates_live_without_a_reload(
    browser: WebDriver, console_site: ConsoleSite
) -> None:
    wait(browser, "ops view", lambda d: shown(d, "view-ops") and text(d, "rt-as-of") != "—")
    browser.execute_script("window.__stillThePage = true")
    before = text(browser, "rt-as-of")
    wait(browser, "as-of time to move", lambda d: text(d, "rt-as-of") != before, timeout_s=10)
    assert browser.execute_script("return window.__stillThePage") is True
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    assert "live, updated" in text(browser, "live")


def test_ops_screenshots(browser: WebDriver, console_site: ConsoleSite) -> None:
    del console_site
    screenshots(
        browser, "ops", lambda d: text(d, "pue-month") != "—" and text(d, "rt-as-of") != "—"
    )


def test_auditor_sees_the_audit_views_only(browser: WebDriver, console_site: ConsoleSite) -> None:
    log_out(browser)
    console_site.report_ready()
    log_in(browser, console_site, console_site.tokens.auditor)
    wait(browser, "audit view", lambda d: shown(d, "view-audit"))
    assert not shown(browser, "tab-ops") and shown(browser, "tab-verify")
    browser.get(console_site.agent.url + "/console/#ops")
    wait(browser, "ops refused, audit shown", lambda d: shown(d, "view-audit"))
    assert not shown(browser, "view-ops")
    status = browser.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/v1/console/overview').then(r => done(r.status), e => done(String(e)));"
    )
    assert status == 403
    wait(browser, "fingerprint", lambda d: text(d, "key-fingerprint") == console_site.fingerprint)
    month = console_site.report_month
    wait(browser, "report month", lambda d: d.find_elements(By.ID, f"month-{month}"))
    card = text(browser, f"month-{month}")
    assert "CNY" in card or "—" in card  # benefits, with their unit, or none


def test_download_a_report_and_verify_it(
    browser: WebDriver, console_site: ConsoleSite, downloads: Path
) -> None:
    month = console_site.report_month
    browser.find_element(By.ID, f"zip-{month}").click()
    zip_path = downloads / console_site.bundle.name
    wait(
        browser,
        "zip download",
        lambda d: zip_path.is_file() and not list(downloads.glob("*.crdownload")),
    )
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(console_site.bundle.read_bytes()).hexdigest()
    # `pue-agent verify`'s checks with the public key whose fingerprint the page shows.
    public = load_signing_key(load_settings(console_site.agent.config)).public
    assert fingerprint(public) == text(browser, "key-fingerprint")
    result = verify_bundle(zip_path, pubkey=public_key_pem(public))
    assert result.ok, result.first_failure
    browser.find_element(By.ID, f"pdf-{month}-en").click()
    pdf = downloads / f"{console_site.bundle.stem}.en.pdf"
    wait(
        browser,
        "pdf download",
        lambda d: pdf.is_file() and not list(downloads.glob("*.crdownload")),
    )
    assert pdf.read_bytes().startswith(b"%PDF-")


def test_audit_screenshots(browser: WebDriver, console_site: ConsoleSite) -> None:
    month = console_site.report_month
    screenshots(browser, "audit", lambda d: d.find_elements(By.ID, f"month-{month}"))


def test_upload_a_tampered_bundle_and_see_the_failing_check(
    browser: WebDriver, console_site: ConsoleSite, tmp_path: Path
) -> None:
    browser.find_element(By.ID, "tab-verify").click()
    wait(browser, "verify view", lambda d: shown(d, "view-verify"))
    upload = browser.find_element(By.ID, "bundle")
    good = tmp_path / console_site.bundle.name
    shutil.copyfile(console_site.bundle, good)
    upload.send_keys(str(good))
    browser.find_element(By.ID, "verify-submit").click()
    wait(
        browser,
        "valid verdict",
        lambda d: shown(d, "verify-result") and "VALID" in text(d, "verdict"),
    )
    bad = tamper(console_site.bundle, tmp_path / "tampered.zip")
    upload.send_keys(str(bad))
    browser.find_element(By.ID, "verify-submit").click()
    wait(browser, "invalid verdict", lambda d: "INVALID" in text(d, "verdict"))
    assert "hashes" in text(browser, "verdict")
    failed = browser.find_element(By.CSS_SELECTOR, "#checks-table tr[data-outcome=failed]")
    assert failed.get_attribute("data-check") == "hashes"
    assert "kpis.json" in failed.text
    screenshots(browser, "verify", lambda d: "hashes" in text(d, "verdict"))
    set_language(browser, "zh")
    assert "报告包无效" in text(browser, "verdict") and "hashes" in text(browser, "verdict")


def test_no_script_errors_in_the_browser_console(browser: webdriver.Chrome) -> None:
    # The refusals the tests asked for (401 before sign-in, the auditor's 403) are logged
    # by the browser as failed resources; anything else severe is a bug in the page.
    entries: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    refused = [
        e["message"]
        for e in entries
        if "Failed to load resource" in e["message"]
        and ("401" in e["message"] or "403" in e["message"])
    ]
    assert refused, "the browser log was not captured"  # the sign-in page's 401 at least
    severe = [
        e["message"] for e in entries if e["level"] == "SEVERE" and e["message"] not in refused
    ]
    assert severe == []

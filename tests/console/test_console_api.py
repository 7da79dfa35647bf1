"""The console's HTTP side: page, sessions, roles, figures and bad input (no browser)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.report.verify import verify_bundle
from tests.console.conftest import IDLE_CONSUMER, ConsoleSite
from tests.console.sitedata import SPARE_METER, tamper, ttm_pue

DATA_GETS = (
    "/api/v1/console/session",
    "/api/v1/console/overview",
    "/api/v1/console/live",
    "/api/v1/console/events",
    "/api/v1/console/audit",
)
OPS_ONLY = ("/api/v1/console/overview", "/api/v1/console/live", "/api/v1/console/events")


@contextlib.contextmanager
def login(site: ConsoleSite, role: str) -> Iterator[httpx.Client]:
    """A client holding a console session of ``role``."""
    with site.client() as client:
        token = site.tokens.ops if role == "ops" else site.tokens.auditor
        response = client.post("/api/v1/console/login", json={"token": token})
        assert response.status_code == 200, response.text
        assert response.json() == {"role": role}
        yield client


def test_page_is_public_and_holds_no_secret(console_site: ConsoleSite) -> None:
    with console_site.client() as client:
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 302 and root.headers["Location"] == "/console/"
        page = client.get("/console/")
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        # Scripts only from the agent itself: nothing inline, nothing from the internet.
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "http://" not in page.text.replace('xmlns="http://www.w3.org', "")
        assert "https://" not in page.text
        for name, media in (
            ("console.js", "text/javascript"),
            ("console.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ):
            asset = client.get(f"/console/{name}")
            assert asset.status_code == 200 and asset.headers["Content-Type"].startswith(media)
            assert "https://" not in asset.text and "http://" not in asset.text.replace(
                "http://www.w3.org/2000/svg", ""
            )
        for bad in ("/console/..%2Fserver.py", "/console/.hidden.js", "/console/console.py"):
            assert client.get(bad).status_code == 404, bad


def test_data_needs_a_session_or_a_token(console_site: ConsoleSite) -> None:
    with console_site.client() as client:
        for path in DATA_GETS:
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.json()["status"] == 401
        client.cookies.set("pue_session", "forged-session-id")
        assert client.get("/api/v1/console/session").status_code == 401
        bearer = client.get("/api/v1/console/live", headers=console_site.tokens.header("ops"))
        assert bearer.status_code == 200


def test_login_gives_a_strict_http_only_cookie_and_logout_ends_it(
    console_site: ConsoleSite,
) -> None:
    with console_site.client() as client:
        response = client.post("/api/v1/console/login", json={"token": console_site.tokens.ops})
        assert response.status_code == 200
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        # The session id is not the token, nor derived from it in any visible way.
        assert console_site.tokens.ops not in cookie
        assert client.get("/api/v1/console/session").json()["role"] == "ops"
        assert client.post("/api/v1/console/logout").status_code == 200
        assert client.get("/api/v1/console/session").status_code == 401


def test_bad_logins_are_refused_clearly(console_site: ConsoleSite) -> None:
    tokens = console_site.tokens
    with console_site.client() as client:
        not_json = client.post("/api/v1/console/login", content=b"token=abc")
        assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
        bodies: list[Any] = [
            {"token": 5},
            {"token": tokens.ops[:-1] + "x"},
            {"token": "a\x00b"},
            [],
        ]
        for body in bodies:
            response = client.post("/api/v1/console/login", json=body)
            assert response.status_code == 401, body
            assert tokens.ops[:-1] not in response.text
        evil = client.post(
            "/api/v1/console/login",
            json={"token": tokens.ops},
            headers={"Origin": "http://evil.example"},
        )
        assert evil.status_code == 403
        assert "pue_session" not in evil.headers.get("Set-Cookie", "")


def test_auditor_session_sees_the_auditor_endpoints_only(console_site: ConsoleSite) -> None:
    with login(console_site, "auditor") as client:
        assert client.get("/api/v1/console/session").json()["role"] == "auditor"
        for path in OPS_ONLY:
            assert client.get(path).status_code == 403, path
        assert client.get("/api/v1/findings", params={"period": "2026-01"}).status_code == 403
        assert client.get("/api/v1/console/audit").status_code == 200


def _cell(rows: list[dict[str, Any]], kind: str, metric: str) -> dict[str, Any]:
    (row,) = [r for r in rows if r["period_kind"] == kind and r["metric"] == metric]
    return row


def test_overview_equals_kpi_json_and_the_stated_arithmetic(console_site: ConsoleSite) -> None:
    site = console_site
    rows = site.kpi_json["kpis"]
    with login(site, "ops") as client:
        overview = client.get("/api/v1/console/overview").json()
        today = overview["today"]["pue"]
        stored_day = client.get(
            "/api/v1/kpi", params={"period": today["period"], "kind": "day"}
        ).json()["kpis"]
    for kind in ("month", "ttm"):
        for metric in ("pue", "ref", "ref_metered", "ref_documentary"):
            expected = _cell(rows, kind, metric)
            shown = overview[kind][metric]
            assert shown["period"] == expected["period"] == site.month
            assert shown["value"] == expected["value"], (kind, metric)
            assert shown["coverage"] == expected["coverage"]
            assert shown["category"] == expected["category"]
    # Stated: a whole day and the whole month average 1.40 kWh E_DC per 1.00 kWh E_IT.
    assert overview["month"]["pue"]["value"] == pytest.approx(1.40, rel=1e-12)
    assert overview["month"]["pue"]["category"] == 2
    assert overview["ttm"]["pue"]["value"] == pytest.approx(
        ttm_pue(site.n_before, site.n_month), rel=1e-12
    )
    assert overview["month"]["ref_metered"]["value"] == pytest.approx(0.10 / 1.40, rel=1e-12)
    assert today["value"] == pytest.approx(1.40, rel=1e-12) and today["coverage"] == 1.0
    assert today["value"] == _cell(stored_day, "day", "pue")["value"]
    # 24 hourly points: 1.30 in local hours 00-11, 1.50 in 12-23 (this month's data);
    # mean facility power = one hour's E_DC in kWh = 4 x 1.30 or 4 x 1.50 kW.
    hourly = overview["hourly"]
    assert 23 <= len(hourly) <= 24
    for point in hourly:
        assert point["pue"] == pytest.approx(1.30, rel=1e-9) or point["pue"] == pytest.approx(
            1.50, rel=1e-9
        )
        assert point["e_dc_power_kw"] == pytest.approx(4 * point["pue"], rel=1e-9)


def test_live_lists_the_silent_meter_and_the_idle_consumer(console_site: ConsoleSite) -> None:
    with login(console_site, "ops") as client:
        first = client.get("/api/v1/console/live").json()
        (spare,) = [m for m in first["silent_meters"] if m["meter"] == SPARE_METER]
        assert spare["state"] == "never" and spare["device"] == "spare-9"
        # Every polled meter is fresh: only the unpolled one is listed.
        assert [m["meter"] for m in first["silent_meters"]] == [SPARE_METER]
        lag = {row["consumer"]: row for row in first["lag"]}
        assert lag[IDLE_CONSUMER]["batches"] >= 1 and lag[IDLE_CONSUMER]["alarm"] is False
        assert first["realtime"]["label"] == "realtime"
        assert first["realtime"]["meters_total"] == 23  # 22 sim meters + the spare one
        deadline = time.monotonic() + 10
        while True:
            later = client.get("/api/v1/console/live").json()
            behind = {row["consumer"]: row["batches"] for row in later["lag"]}[IDLE_CONSUMER]
            if behind > lag[IDLE_CONSUMER]["batches"]:
                break
            assert time.monotonic() < deadline, "the idle consumer's lag did not grow"
            time.sleep(0.2)


def test_events_stream_live_figures(console_site: ConsoleSite) -> None:
    with login(console_site, "ops") as client:
        seen: list[str] = []
        with client.stream("GET", "/api/v1/console/events") as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    seen.append(line)
                    break
        assert '"realtime"' in seen[0] and '"silent_meters"' in seen[0]


def test_reports_pdf_and_bad_input(console_site: ConsoleSite) -> None:
    console_site.report_ready()
    month = console_site.report_month
    with login(console_site, "auditor") as client:
        audit = client.get("/api/v1/console/audit").json()
        assert audit["key_fingerprint"] == console_site.fingerprint
        (entry,) = [m for m in audit["months"] if m["month"] == month]
        assert entry["pdf_langs"] == ["zh", "en"]
        assert entry["findings"] and all(
            "clause" in f and "benefit_cny" in f for f in entry["findings"]
        )
        zh = client.get(f"/api/v1/reports/{month}/pdf", params={"lang": "zh"})
        en = client.get(f"/api/v1/reports/{month}/pdf", params={"lang": "en"})
        assert zh.content.startswith(b"%PDF-") and en.content.startswith(b"%PDF-")
        assert zh.content != en.content
        with zipfile.ZipFile(console_site.bundle) as bundle:
            names = bundle.namelist()
            (en_member,) = [n for n in names if n.endswith("report.en.pdf")]
            assert en.content == bundle.read(en_member)
        assert client.get(f"/api/v1/reports/{month}/pdf", params={"lang": "fr"}).status_code == 400
        assert client.get("/api/v1/reports/2026-13/pdf").status_code == 400
        assert client.get("/api/v1/reports/1999-01/pdf").status_code == 404


def test_verify_endpoint_names_the_failing_check(console_site: ConsoleSite, tmp_path: Path) -> None:
    bundle = console_site.report_ready()
    bad = tamper(bundle, tmp_path / "tampered.zip")
    headers = {"Content-Type": "application/octet-stream"}
    with login(console_site, "auditor") as client:
        for junk in (b"", b"not a zip", b"PK\x03\x04" + b"\x00" * 64):
            body = client.post("/api/v1/console/verify", content=junk, headers=headers).json()
            assert body["ok"] is False and body["failed_check"] == "bundle", body
            assert "zip" in body["checks"][0]["detail"].lower()
        good = client.post("/api/v1/console/verify", content=bundle.read_bytes(), headers=headers)
        assert good.json()["ok"] is True, good.json()
        assert good.json()["key_fingerprint"] == console_site.fingerprint
        # The same checks, in the same order, as `pue-agent verify` with the site's key.
        expected = verify_bundle(bundle)
        assert [c["name"] for c in good.json()["checks"]] == [c.name for c in expected.checks]
        tampered = client.post("/api/v1/console/verify", content=bad.read_bytes(), headers=headers)
        body = tampered.json()
        assert body["ok"] is False and body["failed_check"] == "hashes", body
        assert (
            body["checks"][-1]["outcome"] == "failed"
            and "kpis.json" in body["checks"][-1]["detail"]
        )
        cross = client.post(
            "/api/v1/console/verify",
            content=bundle.read_bytes(),
            headers={**headers, "Origin": "http://evil.example"},
        )
        assert cross.status_code == 403


def test_a_reloaded_token_table_ends_old_sessions(console_site: ConsoleSite) -> None:
    site = console_site
    secret = site.tmp / "credentials" / "api_token_auditor"
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(login(site, "auditor"))
        # Afterwards (last in, first out): the old token back, then a reload.
        stack.callback(os.kill, site.agent.proc.pid, signal.SIGHUP)
        stack.callback(secret.write_text, site.tokens.auditor + "\n", encoding="utf-8")
        secret.write_text("aud-rotated-" + os.urandom(8).hex() + "\n", encoding="utf-8")
        os.kill(site.agent.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while client.get("/api/v1/console/session").status_code != 401:
            assert time.monotonic() < deadline, "the old token's session survived the reload"
            time.sleep(0.1)
    deadline = time.monotonic() + 10
    while True:
        with site.client() as fresh:
            ok = fresh.post("/api/v1/console/login", json={"token": site.tokens.auditor})
        if ok.status_code == 200:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)

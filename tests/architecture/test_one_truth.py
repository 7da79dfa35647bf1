"""Every reader finds the same store, and reads the site's PUE category the same way.

* A ``store_dir`` outside ``state_dir``: ``kpi``, ``rules evaluate``, ``report``, the
  API's KPI source and the aggregator's live refresh all read and write that store
  (before, eight places used ``state_dir/store`` whatever the setting said).
* Changing ``pue_category`` in the site model changes the category of ``kpi``'s PUE,
  the live findings, the report and the API's findings the same way (before, the live
  refresh took the highest category present while the others used the site's).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from agent import keys
from agent.aggregator import Aggregator, locate_store
from agent.api.sources import evaluate_findings, stored_kpis
from agent.cli import app
from agent.plugins import build_consumer
from agent.report.run import run_report
from agent.settings import AgentSettings, load_settings
from agent.site import Site, load_site_for
from agent.store import IntervalStore
from tests.kpi.helpers import constant_intervals
from tests.rules.helpers import SITE_TOML

MONTH = "2026-10"


def _write(tmp_path: Path, category: int) -> Path:
    """agent.toml (store outside the state directory) and site.toml; returns agent.toml."""
    (tmp_path / "conf").mkdir(exist_ok=True)
    site_toml = SITE_TOML.replace("pue_category = 2", f"pue_category = {category}")
    assert f"pue_category = {category}" in site_toml
    (tmp_path / "conf" / "site.toml").write_text(site_toml)
    config = tmp_path / "conf" / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        'site_file = "site.toml"\n'
        f'policies_dir = "{tmp_path / "no-operator-packs"}"\n'
        "[[sinks]]\n"
        'kind = "aggregator"\n'
        'name = "agg"\n'
        'store_dir = "../elsewhere/store"\n'
    )
    return config


def _fill(settings: AgentSettings) -> None:
    """Thirteen full months of 15-minute intervals: 1.15 kWh grid per 1 kWh IT (PUE 1.15)."""
    start = datetime(2025, 9, 30, 16, tzinfo=UTC)  # 2025-10-01 00:00 +08:00
    end = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 +08:00
    frame = constant_intervals({"grid-1": 1.15, "pdu-1": 1.0}, start, end)
    IntervalStore(settings.store_path()).write_intervals(frame, tag="000000000001")


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _pue(kpis: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(r for r in kpis if r["metric"] == "pue" and r["period_kind"] == kind)


def _pue_findings(findings: pl.DataFrame) -> dict[str, tuple[str, int | None, float | None]]:
    """Result, category and measured value of every PUE rule, by rule id."""
    pue = findings.filter(pl.col("metric") == "pue")
    return {
        r["rule_id"]: (r["result"], r["category"], r["measured_value"])
        for r in pue.iter_rows(named=True)
    }


def _live_findings(settings: AgentSettings, site: Site) -> pl.DataFrame:
    entry = settings.aggregator_entry()
    assert entry is not None
    aggregator = build_consumer(entry.kind, "agg", entry.options(), settings)
    assert isinstance(aggregator, Aggregator)
    store = IntervalStore(aggregator.store_root)
    refresher = aggregator.make_refresher(site, store)
    refresher.pending = {MONTH}
    assert refresher.refresh() == [MONTH]
    return IntervalStore(settings.store_path()).read_findings(month=MONTH)


def _everything(tmp_path: Path, category: int) -> dict[str, Any]:
    """What kpi, rules, the live refresh, the API and the report say, for one category."""
    config = _write(tmp_path, category)
    settings = load_settings(config)
    site = load_site_for(settings)
    assert site is not None
    kpi = _invoke("kpi", "--period", MONTH, "--json", "--config", str(config))
    rules = _invoke("rules", "evaluate", "--period", MONTH, "--json", "--config", str(config))
    live = _live_findings(settings, site)
    api_kpis = stored_kpis(settings)
    api_findings = evaluate_findings(api_kpis, site, MONTH, settings.policies_path())
    bundle, _ = run_report(
        settings, MONTH, langs=("en",), out_dir=tmp_path / f"reports-{category}", csv=False
    )
    return {
        "settings": settings,
        "kpi": kpi,
        "rules": _pue_findings(pl.DataFrame(rules["findings"])),
        "live": _pue_findings(live),
        "api_kpis": api_kpis,
        "api": _pue_findings(api_findings),
        "report": _pue_findings(bundle.findings),
        "report_kpis": bundle.kpis,
    }


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    settings = load_settings(_write(tmp_path, 2))
    site = load_site_for(settings)
    assert site is not None
    _fill(settings)
    keys.init_key(settings)
    return tmp_path


def test_a_store_outside_the_state_dir_is_found_by_every_reader(site_dir: Path) -> None:
    seen = _everything(site_dir, 2)
    settings = seen["settings"]
    store_root = (site_dir / "elsewhere" / "store").resolve()
    assert settings.store_path() == store_root
    assert locate_store(settings).root == store_root  # the InfluxDB/MQTT sinks' feed
    assert not (site_dir / "state" / "store").exists()  # nobody wrote the default place
    # kpi wrote its KPIs there; the API reads them there.
    ttm = _pue(seen["kpi"]["kpis"], "ttm")
    assert ttm["status"] == "ok"
    assert ttm["value"] == pytest.approx(1.15, rel=1e-9)  # 1.15 kWh grid per 1 kWh IT
    api_ttm = seen["api_kpis"].filter(
        (pl.col("metric") == "pue") & (pl.col("period_kind") == "ttm") & (pl.col("period") == MONTH)
    )
    # The live refresh rewrote the TTM after `kpi` (its per-meter sums of the earlier
    # months add in another order): the same figure, to the last printed digit and far below.
    assert api_ttm["value"].to_list() == [pytest.approx(ttm["value"], rel=1e-12)]
    # rules, the live refresh, the API and the report measured it (not insufficient_data).
    shanxi = "shanxi-2024-35-4"
    for reader in ("rules", "live", "api", "report"):
        result, _, measured = seen[reader][shanxi]
        assert result == "eligible", (reader, seen[reader][shanxi])  # TTM 1.15 < 1.18
        assert measured == pytest.approx(1.15, rel=1e-9), reader


def test_changing_the_pue_category_changes_every_output_alike(site_dir: Path) -> None:
    before = _everything(site_dir, 2)
    after = _everything(site_dir, 1)
    for seen, category in ((before, 2), (after, 1)):
        assert _pue(seen["kpi"]["kpis"], "month")["category"] == category
        report_pue = seen["report_kpis"].filter(pl.col("metric") == "pue")
        assert set(report_pue["category"].to_list()) == {category}
        # The same findings, in the same category, from every reader (values to 1e-12:
        # the live refresh sums the earlier months in another order).
        for reader in ("live", "api", "report"):
            assert seen[reader].keys() == seen["rules"].keys(), reader
            for rule, (result, rule_category, measured) in seen[reader].items():
                expected = seen["rules"][rule]
                assert (result, rule_category) == expected[:2], (reader, rule)
                if measured is None:
                    assert expected[2] is None, (reader, rule)
                else:
                    assert measured == pytest.approx(expected[2], rel=1e-12), (reader, rule)
        measured_categories = {c for _, c, m in seen["rules"].values() if m is not None}
        assert measured_categories == {category}

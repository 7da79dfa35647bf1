"""The signed report uses the green ledger `green add` keeps (issue 15, item 1).

Thirteen months of 15-minute intervals in the store: grid 1.15 kWh and IT 1.0 kWh per
interval (Asia/Shanghai months). October 2026 has 31 x 96 = 2,976 intervals, so E_DC =
2,976 x 1.15 = 3,422.4 kWh; the TTM (2025-11 .. 2026-10, 365 days) has E_DC = 365 x 96 x
1.15 = 40,296 kWh. One certificate of 1 MWh for 2026-10 gives REF = 1,000 / 3,422.4 for
the month and 1,000 / 40,296 for the TTM.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent import keys
from agent.cli import app
from agent.green import GreenLedgerError, load_green_file
from agent.settings import AgentSettings, load_settings
from agent.store import IntervalStore
from tests.kpi.helpers import constant_intervals
from tests.rules.helpers import SITE_TOML

MONTH = "2026-10"
MONTH_EDC = 31 * 96 * 1.15
TTM_EDC = 365 * 96 * 1.15


def _fill(settings: AgentSettings) -> None:
    start = datetime(2025, 9, 30, 16, tzinfo=UTC)  # 2025-10-01 00:00 +08:00
    end = datetime(2026, 10, 31, 16, tzinfo=UTC)  # 2026-11-01 00:00 +08:00
    frame = constant_intervals({"grid-1": 1.15, "pdu-1": 1.0}, start, end)
    IntervalStore(settings.store_path()).write_intervals(frame, tag="000000000001")


def _run(*args: str, ok: bool = True) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert (result.exit_code == 0) == ok, result.output
    return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """agent.toml of a site with 13 months in its store, a key and one 1 MWh certificate."""
    root = tmp_path_factory.mktemp("green-site")
    (root / "site.toml").write_text(SITE_TOML)
    config = root / "agent.toml"
    config.write_text(
        f'state_dir = "{root / "state"}"\nsite_file = "site.toml"\n'
        f'policies_dir = "{root / "no-operator-packs"}"\n'
    )
    settings = load_settings(config)
    _fill(settings)
    keys.init_key(settings)
    green = ("green", "add", "--config", str(config), "--kind", "certificate")
    _run(*green, "--period", MONTH, "--mwh", "1", "--ref", "GEC-2026-10-1")
    # Removed: must not count anywhere.
    _run(*green, "--period", MONTH, "--mwh", "5", "--ref", "GEC-REMOVED")
    listed = json.loads(_run("green", "list", "--config", str(config), "--json").stdout)
    removed = next(e["id"] for e in listed if e["ref"] == "GEC-REMOVED")
    _run("green", "remove", removed, "--config", str(config))
    return config


def _ref(rows: list[dict[str, Any]], kind: str) -> float:
    return next(r["value"] for r in rows if r["metric"] == "ref" and r["period_kind"] == kind)


def _report(config: Path, out: Path, *extra: str) -> dict[str, Any]:
    _run(
        "report",
        "--month",
        MONTH,
        "--lang",
        "en",
        "--out",
        str(out),
        "--no-csv",
        "--config",
        str(config),
        *extra,
    )
    bundle = out / f"dc-1-{MONTH}"
    verified = _run("verify", str(bundle))
    assert "bundle VALID" in verified.stdout
    kpis: dict[str, Any] = json.loads((bundle / "data" / "kpis.json").read_text())
    kpis["green"] = json.loads((bundle / "data" / "green.json").read_text())
    return kpis


def test_report_uses_the_ledger_by_default_and_agrees_with_kpi(site: Path, tmp_path: Path) -> None:
    kpi = json.loads(_run("kpi", "--period", MONTH, "--json", "--config", str(site)).stdout)
    assert _ref(kpi["kpis"], "month") == pytest.approx(1000 / MONTH_EDC, rel=1e-12)
    assert _ref(kpi["kpis"], "ttm") == pytest.approx(1000 / TTM_EDC, rel=1e-12)
    bundle = _report(site, tmp_path)
    # The same figure in the signed report as `kpi --json` printed: the month exactly; the
    # TTM to 1e-12 (the report sums the earlier months from daily roll-ups, in another order).
    assert _ref(bundle["kpis"], "month") == _ref(kpi["kpis"], "month")
    assert _ref(bundle["kpis"], "ttm") == pytest.approx(_ref(kpi["kpis"], "ttm"), rel=1e-12)
    assert bundle["green"] == [
        {"month": MONTH, "kind": "certificate", "energy_kwh": 1000.0, "reference": "GEC-2026-10-1"}
    ]


@pytest.mark.parametrize("source", ["ledger", "list-json", "rows"])
def test_green_option_reads_the_ledger_and_list_json_formats(
    site: Path, tmp_path: Path, source: str
) -> None:
    state = load_settings(site).green_ledger_path()
    path = tmp_path / "green.json"
    if source == "ledger":
        path.write_bytes(state.read_bytes())
    elif source == "list-json":
        # With --all: the removed entry is in the file and must not count.
        listed = _run("green", "list", "--all", "--json", "--config", str(site)).stdout
        assert "GEC-REMOVED" in listed
        path.write_text(listed)
    else:
        path.write_text(
            json.dumps(
                [
                    {
                        "month": MONTH,
                        "kind": "certificate",
                        "energy_kwh": 1000.0,
                        "reference": "GEC-2026-10-1",
                    }
                ]
            )
        )
    bundle = _report(site, tmp_path / "out", "--green", str(path))
    assert _ref(bundle["kpis"], "month") == pytest.approx(1000 / MONTH_EDC, rel=1e-12)


@pytest.mark.parametrize(
    "content",
    [
        '[{"month": "2026-10", "kwh": 5}]',
        '{"certificates": []}',
        "not json",
        '[{"period": "10/2026", "kind": "certificate", "mwh": 1, "ref": "x"}]',
    ],
)
def test_unknown_green_file_is_a_clear_error(site: Path, tmp_path: Path, content: str) -> None:
    path = tmp_path / "green.json"
    path.write_text(content)
    with pytest.raises(GreenLedgerError):
        load_green_file(path)
    result = _run(
        "report",
        "--month",
        MONTH,
        "--out",
        str(tmp_path),
        "--config",
        str(site),
        "--green",
        str(path),
        ok=False,
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = " ".join(result.output.split())
    assert "green" in text
    if content != '[{"period": "10/2026", "kind": "certificate", "mwh": 1, "ref": "x"}]':
        assert "month, kind, energy_kwh, reference" in text
        assert "period, kind, mwh, ref" in text

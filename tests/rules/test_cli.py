"""``pue-agent rules list`` / ``rules evaluate`` end to end through typer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner, Result

import agent.cli.rules
from agent.store import IntervalStore
from rules import POLICIES_DIR_ENV
from tests.rules.helpers import SITE_TOML, frame, history, kpi
from tests.rules.test_packs import MINIMAL


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    # Wide enough that table cells are not folded (the runner's terminal is 80 columns).
    monkeypatch.setattr(agent.cli.rules, "out", Console(width=400))
    application = typer.Typer()
    application.add_typer(agent.cli.rules.rules_app, name="rules")
    return application


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "site.toml").write_text(SITE_TOML, encoding="utf-8")
    path = tmp_path / "agent.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\nsite_file = "site.toml"\n', encoding="utf-8"
    )
    return path


@pytest.fixture
def kpis_file(tmp_path: Path) -> Path:
    rows = history("pue", "2025-11", [1.19, 1.175, 1.18, 1.17])
    rows.append(kpi("e_dc_kwh", 700_000.0, period="2026-02", kind="month", unit="kWh"))
    path = tmp_path / "kpis.parquet"
    frame(rows).write_parquet(path)
    return path


def invoke(app: typer.Typer, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["rules", *args], env=env)


def test_list_shows_every_pack(app: typer.Typer, tmp_path: Path) -> None:
    result = invoke(app, "list", "--policies-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    for pack_id in ("shanxi-2024-35", "shihezi-2024-2", "yinchuan-2024-draft", "qinghai-2024-11"):
        assert pack_id in result.output
    assert "ttm pue < 1.18 (first time)" in result.output


def test_list_json_and_a_refused_pack(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text(
        MINIMAL.replace('comparator = "<"', 'comparator = "below"'), encoding="utf-8"
    )
    result = invoke(app, "list", "--json", "--policies-dir", str(tmp_path))
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert {p["id"] for p in document["packs"]} >= {"shanxi-2024-35", "cn-hub-nodes-2021-1742"}
    assert "op-pack" not in {p["id"] for p in document["packs"]}
    assert "broken.toml: rules[0](op-pack-1).comparator" in document["refused"][0]
    assert "refused pack:" in result.stderr


def test_policies_dir_from_the_environment(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "op.toml").write_text(MINIMAL, encoding="utf-8")
    result = invoke(app, "list", "--json", env={POLICIES_DIR_ENV: str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "op-pack" in {p["id"] for p in json.loads(result.stdout)["packs"]}


def test_policies_dir_from_agent_toml_relative_to_the_file(
    app: typer.Typer, config: Path, tmp_path: Path
) -> None:
    # The operator's agent.toml names the packs' folder; a relative path is read from the
    # config file's folder. The live findings and the report take the same setting.
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "op.toml").write_text(MINIMAL, encoding="utf-8")
    config.write_text(config.read_text(encoding="utf-8") + 'policies_dir = "packs"\n')
    result = invoke(app, "list", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "op-pack" in {p["id"] for p in json.loads(result.stdout)["packs"]}
    # Without the setting (and no environment variable) only the built-in packs load.
    plain = tmp_path / "plain.toml"
    plain.write_text(f'state_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    result = invoke(app, "list", "--json", "--config", str(plain))
    assert "op-pack" not in {p["id"] for p in json.loads(result.stdout)["packs"]}


def test_evaluate_json(app: typer.Typer, config: Path, kpis_file: Path, tmp_path: Path) -> None:
    result = invoke(
        app,
        "evaluate",
        "--period",
        "2026-02",
        "--config",
        str(config),
        "--kpis",
        str(kpis_file),
        "--policies-dir",
        str(tmp_path / "none"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["site"], document["period"]) == ("dc-1", "2026-02")
    shanxi = next(f for f in document["findings"] if f["rule_id"] == "shanxi-2024-35-4")
    assert shanxi["result"] == "eligible"
    assert shanxi["first_met_period"] == "2025-12"
    # One-time (一次性) benefit: its amount is in the 2025-12 finding, not again in 2026-02.
    assert shanxi["benefit_cny"] is None
    assert "already claimable since 2025-12" in shanxi["explanation"]
    assert shanxi["category"] == 2
    qinghai = next(f for f in document["findings"] if f["rule_id"] == "qinghai-2024-11-1")
    assert qinghai["result"] == "not_applicable"  # the site is declared in Shanxi


def test_evaluate_table(app: typer.Typer, config: Path, kpis_file: Path, tmp_path: Path) -> None:
    result = invoke(
        app,
        "evaluate",
        "--period",
        "2026-02",
        "--config",
        str(config),
        "--kpis",
        str(kpis_file),
        "--policies-dir",
        str(tmp_path / "none"),
    )
    assert result.exit_code == 0, result.output
    assert "Findings for dc-1, 2026-02" in result.output
    assert "shanxi-2024-35" in result.output
    assert "eligible" in result.output
    assert "1,200,000" not in result.output  # stated once, in the 2025-12 finding
    assert "met, already claimable since 2025-12" in " ".join(result.output.split())
    first = invoke(
        app,
        "evaluate",
        "--period",
        "2025-12",
        "--config",
        str(config),
        "--kpis",
        str(kpis_file),
        "--policies-dir",
        str(tmp_path / "none"),
    )
    assert first.exit_code == 0, first.output
    # 1,000 CNY/rack x 1,200 declared racks = 1,200,000 CNY, in the month first met.
    assert "1,200,000" in first.output
    assert "claim once, first met 2025-12" in " ".join(first.output.split())


def test_evaluate_reads_the_interval_store(app: typer.Typer, config: Path, tmp_path: Path) -> None:
    # A real store where the settings put it (state_dir/store): no --kpis given.
    IntervalStore(tmp_path / "state" / "store").write_kpis(
        frame([kpi("pue", 1.19, period="2026-10")])
    )
    result = invoke(app, "evaluate", "--period", "2026-10", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    shanxi = next(
        f for f in json.loads(result.stdout)["findings"] if f["rule_id"] == "shanxi-2024-35-4"
    )
    assert (shanxi["result"], shanxi["measured_value"]) == ("not_eligible", 1.19)


def test_evaluate_refuses_a_bad_period(app: typer.Typer, config: Path, kpis_file: Path) -> None:
    result = invoke(
        app, "evaluate", "--period", "2026-13", "--config", str(config), "--kpis", str(kpis_file)
    )
    assert result.exit_code == 2
    assert "'2026-13': expected a month YYYY-MM" in result.stderr


def test_evaluate_without_a_store_is_insufficient_data(app: typer.Typer, config: Path) -> None:
    # No store yet (nothing aggregated): every measured rule lacks data, none is eligible.
    result = invoke(app, "evaluate", "--period", "2026-10", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    results = {f["result"] for f in json.loads(result.stdout)["findings"]}
    assert "eligible" not in results
    assert "insufficient_data" in results


def test_evaluate_explain_and_expired_note(app: typer.Typer, config: Path, tmp_path: Path) -> None:
    path = tmp_path / "late.parquet"
    frame([kpi("pue", 1.10, period="2027-01")]).write_parquet(path)
    result = invoke(
        app, "evaluate", "--period", "2027-01", "-c", str(config), "--kpis", str(path), "--explain"
    )
    assert result.exit_code == 0, result.output
    assert "policy expired" in result.output
    assert "The policy expired on 2026-12-31" in result.output

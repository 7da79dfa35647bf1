"""The CLI contract: every ``--json`` command prints JSON on failure too, with its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.journal import Journal
from tests.paths import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``pue-agent ARGS`` through the console-script entry point, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; main()", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_error(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = result.stdout.splitlines()
    error = json.loads(line)
    assert set(error) == {"error", "code"} and error["code"] == result.returncode != 0
    return str(error["error"])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    return path


def test_journal_stats_json_without_a_journal(config: Path) -> None:
    result = run("journal", "stats", "--config", str(config), "--json")
    assert result.returncode == 2
    assert json_error(result).startswith("no journal at ")


def test_journal_stats_json_reads_a_journal(tmp_path: Path, config: Path) -> None:
    journal = Journal(tmp_path / "state" / "journal" / "journal.sqlite")
    journal.close()
    result = run("journal", "stats", "--config", str(config), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert "lag" in data


def test_kpi_json_without_a_site(config: Path) -> None:
    result = run("kpi", "--period", "2026-10", "--config", str(config), "--json")
    assert result.returncode == 2
    assert "no site model configured" in json_error(result)


def test_settings_error_is_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("state_dir = [\n", encoding="utf-8")
    result = run("kpi", "--period", "2026-10", "--config", str(bad), "--json")
    assert result.returncode == 2
    assert "bad.toml" in json_error(result)


def test_usage_error_is_json(config: Path) -> None:
    result = run("kpi", "--config", str(config), "--json")  # --period missing
    assert result.returncode == 2
    assert "--period" in json_error(result)


def test_rules_evaluate_bad_period_is_json(config: Path) -> None:
    result = run("rules", "evaluate", "--period", "2026-13", "--config", str(config), "--json")
    assert result.returncode == 2
    assert "2026-13" in json_error(result)


def test_without_json_errors_stay_on_stderr(config: Path) -> None:
    result = run("kpi", "--period", "2026-10", "--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    assert "no site model configured" in result.stderr

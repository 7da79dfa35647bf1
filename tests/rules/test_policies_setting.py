"""``policies_dir`` in agent.toml reaches every reader of policy packs (live findings too)."""

from __future__ import annotations

from pathlib import Path

from agent.aggregator import build as build_aggregator
from agent.settings import load_settings
from agent.store import IntervalStore
from rules.pack import DEFAULT_POLICIES_DIR, LoadedPacks
from tests.foundation.test_check import run_check
from tests.kpi.helpers import small_site
from tests.rules.test_packs import MINIMAL


def _config_with_operator_pack(tmp_path: Path) -> Path:
    """agent.toml naming ``packs/`` (relative to it), which holds one operator pack."""
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "op.toml").write_text(MINIMAL, encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\npolicies_dir = "packs"\n')
    return config


def test_live_refresher_reads_the_configured_packs(tmp_path: Path) -> None:
    config = _config_with_operator_pack(tmp_path)
    settings = load_settings(config)
    assert settings.policies_path() == tmp_path / "packs"
    sink = build_aggregator("store", {}, settings)
    refresher = sink.make_refresher(small_site(), IntervalStore(tmp_path / "store"))
    packs = refresher._load_packs()  # what the refresher evaluates with
    assert isinstance(packs, LoadedPacks)
    assert "op-pack" in {p.id for p in packs.packs}


def test_default_is_the_documented_folder(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    assert load_settings(config).policies_path() == DEFAULT_POLICIES_DIR


def test_check_names_the_packs_and_refuses_a_broken_one(tmp_path: Path) -> None:
    config = _config_with_operator_pack(tmp_path)
    result = run_check(config)
    assert result.returncode == 0, result.stderr
    # The console folds long lines: compare with whitespace collapsed.
    assert f"(1 from {tmp_path / 'packs'})" in " ".join(result.stdout.split())
    (tmp_path / "packs" / "broken.toml").write_text("rules = [", encoding="utf-8")
    result = run_check(config)
    assert result.returncode != 0
    assert "policy pack refused" in result.stdout + result.stderr
    assert "broken.toml" in result.stdout + result.stderr

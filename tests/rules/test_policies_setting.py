"""``policies_dir`` in agent.toml reaches every reader of policy packs (live findings too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.settings import load_settings
from agent.sinks import local_store
from agent.store import IntervalStore
from rules.pack import DEFAULT_POLICIES_DIR, LoadedPacks
from tests.kpi.helpers import small_site
from tests.paths import ROOT
from tests.rules.test_packs import MINIMAL


def test_live_refresher_reads_the_configured_packs(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "op.toml").write_text(MINIMAL, encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\npolicies_dir = "packs"\n')
    settings = load_settings(config)
    assert settings.policies_path() == tmp_path / "packs"
    sink = local_store.build("store", {}, settings)
    refresher = sink.make_refresher(small_site(), IntervalStore(tmp_path / "store"))
    packs = refresher._load_packs()  # what the refresher evaluates with
    assert isinstance(packs, LoadedPacks)
    assert "op-pack" in {p.id for p in packs.packs}


def test_default_is_the_documented_folder(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    assert load_settings(config).policies_path() == DEFAULT_POLICIES_DIR


def test_check_names_the_packs_and_refuses_a_broken_one(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    (tmp_path / "packs" / "op.toml").write_text(MINIMAL, encoding="utf-8")
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\npolicies_dir = "packs"\n')

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent", "check", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = check()
    assert result.returncode == 0, result.stderr
    # The console folds long lines: compare with whitespace collapsed.
    assert f"(1 from {tmp_path / 'packs'})" in " ".join(result.stdout.split())
    (tmp_path / "packs" / "broken.toml").write_text("rules = [", encoding="utf-8")
    result = check()
    assert result.returncode != 0
    assert "policy pack refused" in result.stdout + result.stderr
    assert "broken.toml" in result.stdout + result.stderr

"""``policies_dir`` in agent.toml reaches every reader of policy packs (live findings too)."""

from __future__ import annotations

from pathlib import Path

from agent.settings import load_settings
from agent.sinks import local_store
from agent.store import IntervalStore
from rules.pack import DEFAULT_POLICIES_DIR, LoadedPacks
from tests.kpi.helpers import small_site
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

"""Policy packs: the built-in packs encode docs/policies.md; broken packs are refused clearly."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from agent.site import SiteFacts
from rules.engine import evaluate
from rules.pack import (
    BUILTIN_DIR,
    DEFAULT_POLICIES_DIR,
    POLICIES_DIR_ENV,
    Pack,
    PackError,
    configured_policies_dir,
    load_pack,
    load_packs,
)
from tests.rules.helpers import SITE, frame, kpi

# Every clause id of docs/policies.md (hand-copied), so a clause dropped from a pack fails here.
POLICIES_MD_IDS = {
    "shanxi-2024-35-4",
    "shanxi-2024-35-5",
    "shanxi-2024-35-1",
    "shanxi-2024-35-15",
    "shihezi-2024-2-2.1",
    "shihezi-2024-2-1.2",
    "shihezi-2024-2-1.3",
    "yinchuan-2024-draft-5",
    "yinchuan-2024-draft-5-green",
    "qinghai-2024-11-1",
    "qinghai-2024-11-3",
    "qinghai-2024-11-17",
}


def builtin() -> dict[str, Pack]:
    loaded = load_packs(None)
    assert loaded.errors == []
    return {pack.id: pack for pack in loaded.packs}


def test_builtin_packs_load_one_per_document() -> None:
    packs = builtin()
    assert set(packs) == {
        "shanxi-2024-35",
        "shihezi-2024-2",
        "yinchuan-2024-draft",
        "qinghai-2024-11",
        "haidong-zero-carbon-park-plan",
        "cn-hub-nodes-2021-1742",
    }
    assert len(list(BUILTIN_DIR.glob("*.toml"))) == 6


def test_every_policies_md_clause_is_encoded() -> None:
    rule_ids = {rule.id for pack in builtin().values() for rule in pack.rules}
    assert rule_ids >= POLICIES_MD_IDS
    # Shihezi 二(二) is three latency figures, encoded as three rules.
    assert {"shihezi-2024-2-2.2-city", "shihezi-2024-2-2.2-region", "shihezi-2024-2-2.2-hub"} <= (
        rule_ids
    )


def test_pack_dates_as_the_documents_state_them() -> None:
    packs = builtin()
    shanxi = packs["shanxi-2024-35"]
    assert (shanxi.effective_from, shanxi.effective_to) == (date(2024, 7, 1), date(2026, 12, 31))
    qinghai = packs["qinghai-2024-11"]
    assert (qinghai.effective_from, qinghai.effective_to) == (date(2024, 4, 1), date(2029, 3, 31))
    # Published 2024-05-20, valid three years: the last day is 2027-05-19 (inclusive).
    shihezi = packs["shihezi-2024-2"]
    assert (shihezi.effective_from, shihezi.effective_to) == (date(2024, 5, 20), date(2027, 5, 19))
    yinchuan = packs["yinchuan-2024-draft"]
    assert yinchuan.status == "draft" and yinchuan.advisory
    assert not shanxi.advisory


def test_national_pack_is_separate_and_marked_with_its_source() -> None:
    national = builtin()["cn-hub-nodes-2021-1742"]
    assert "press reports" in national.source
    assert national.source_note is not None and "Unconfirmed" in national.source_note
    assert national.advisory  # targets, not subsidy conditions


def test_valid_years_resolves_the_end_date(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "shihezi-2024-2.toml").read_text(encoding="utf-8")
    text = text.replace("effective_to = 2027-05-19\n", "")
    path = tmp_path / "shihezi.toml"
    path.write_text(text, encoding="utf-8")
    assert load_pack(path).effective_to == date(2027, 5, 19)


MINIMAL = """
id = "op-pack"
title_zh = "运营方测试政策"
title_en = "Operator test policy"
issuer = "Test bureau"
document = "测〔2026〕1号"
jurisdiction = "Testland"
status = "in_force"
effective_from = 2026-01-01
effective_to = 2026-12-31
source = "unit test"

[[rules]]
id = "op-pack-1"
clause_ref = "第一条"
clause = "PUE低于1.3的，每机架补贴100元，最高1万元。"
title_en = "PUE below 1.3"
metric = "pue"
window = "ttm"
comparator = "<"
threshold = 1.3
requires = ["racks"]
[rules.benefit]
kind = "per_rack"
rate = 100
cap_cny = 10000
clause = "每机架补贴100元，最高1万元"
"""


def test_user_pack_in_policies_dir_is_loaded_and_evaluated(tmp_path: Path) -> None:
    (tmp_path / "op.toml").write_text(MINIMAL, encoding="utf-8")
    loaded = load_packs(tmp_path)
    assert loaded.errors == []
    assert loaded.sources["op-pack"] == str(tmp_path / "op.toml")
    findings = evaluate(
        loaded,
        frame([kpi("pue", 1.25)]),
        SiteFacts(racks=80),
        site=SITE,
        period="2026-10",
    )
    row = findings.filter(findings["rule_id"] == "op-pack-1").row(0, named=True)
    assert row["result"] == "eligible"
    # 100 CNY/rack x 80 racks = 8,000 CNY, under the 10,000 cap.
    assert row["benefit_cny"] == 8_000
    # The built-in packs are still there beside it.
    assert "shanxi-2024-35" in {p.id for p in loaded.packs}


def test_user_pack_with_a_builtin_id_replaces_it(tmp_path: Path) -> None:
    text = MINIMAL.replace('"op-pack', '"shanxi-2024-35')
    (tmp_path / "shanxi-fix.toml").write_text(text, encoding="utf-8")
    loaded = load_packs(tmp_path)
    assert loaded.errors == []
    shanxi = next(p for p in loaded.packs if p.id == "shanxi-2024-35")
    assert [r.id for r in shanxi.rules] == ["shanxi-2024-35-1"]
    assert loaded.sources["shanxi-2024-35"].endswith("shanxi-fix.toml")


def test_two_user_packs_with_one_id_refuse_the_second(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(MINIMAL, encoding="utf-8")
    (tmp_path / "b.toml").write_text(MINIMAL, encoding="utf-8")
    loaded = load_packs(tmp_path)
    assert len(loaded.errors) == 1
    assert loaded.errors[0].startswith(f"{tmp_path / 'b.toml'}: id:")
    assert loaded.sources["op-pack"] == str(tmp_path / "a.toml")


# (description, edit to MINIMAL, expected "field: reason" fragment)
MALFORMED = [
    (
        "a comparator that is not one of < <= > >=",
        ('comparator = "<"', 'comparator = "below"'),
        "rules[0](op-pack-1).comparator: Input should be '<', '<=', '>' or '>='",
    ),
    (
        "a threshold rule without its threshold",
        ("threshold = 1.3\n", ""),
        "rules[0](op-pack-1): a threshold rule needs threshold",
    ),
    (
        "effective dates in the wrong order",
        ("effective_to = 2026-12-31", "effective_to = 2025-12-31"),
        "(pack): effective_to is before effective_from",
    ),
    (
        "a benefit with a negative rate",
        ("rate = 100", "rate = -100"),
        "rules[0](op-pack-1).benefit.rate: Input should be greater than 0",
    ),
    (
        "a fact the site model does not have",
        ('requires = ["racks"]', 'requires = ["rack_count"]'),
        "rules[0](op-pack-1).requires[0]: Input should be 'racks'",
    ),
    (
        "an unknown key (typo)",
        ('window = "ttm"', 'window = "ttm"\nthreshhold = 1.3'),
        "rules[0](op-pack-1).threshhold: Extra inputs are not permitted",
    ),
]


@pytest.mark.parametrize(("what", "edit", "expected"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_pack_is_refused_naming_file_and_field(
    tmp_path: Path, what: str, edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert old in MINIMAL
    path = tmp_path / "broken.toml"
    path.write_text(MINIMAL.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(PackError) as info:
        load_pack(path)
    assert f"{path}: {expected}" in str(info.value)
    # Through load_packs the pack is refused and the others still load.
    loaded = load_packs(tmp_path)
    assert "op-pack" not in {p.id for p in loaded.packs}
    assert any(expected in error for error in loaded.errors)
    assert "shanxi-2024-35" in {p.id for p in loaded.packs}


def test_toml_syntax_error_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "syntax.toml"
    path.write_text('id = "x"\ntitle_zh = \n', encoding="utf-8")
    with pytest.raises(PackError, match=r"syntax\.toml: \(toml\): .*line 2"):
        load_pack(path)


def test_valid_years_disagreeing_with_effective_to_is_refused(tmp_path: Path) -> None:
    text = (BUILTIN_DIR / "shihezi-2024-2.toml").read_text(encoding="utf-8")
    path = tmp_path / "shihezi.toml"
    path.write_text(text.replace("2027-05-19", "2027-05-20"), encoding="utf-8")
    with pytest.raises(PackError, match=r"\(pack\): effective_to 2027-05-20 disagrees"):
        load_pack(path)


def test_rule_id_must_carry_the_pack_id(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(MINIMAL.replace('id = "op-pack-1"', 'id = "other-1"'), encoding="utf-8")
    with pytest.raises(PackError, match="must start with the pack id 'op-pack-'"):
        load_pack(path)


def test_missing_policies_dir_is_not_an_error(tmp_path: Path) -> None:
    loaded = load_packs(tmp_path / "absent")
    assert loaded.errors == []
    assert len(loaded) == 6


def test_default_load_reads_the_directory_named_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the report, the API and the CLI get when they call load_packs() with no argument.
    (tmp_path / "op.toml").write_text(MINIMAL, encoding="utf-8")
    monkeypatch.setenv(POLICIES_DIR_ENV, str(tmp_path))
    assert "op-pack" in {p.id for p in load_packs()}
    monkeypatch.delenv(POLICIES_DIR_ENV)
    assert configured_policies_dir() == DEFAULT_POLICIES_DIR

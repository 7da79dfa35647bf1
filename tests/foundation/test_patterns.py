"""Range patterns (``pdu-[001-200]``): what they expand to, and clear errors otherwise."""

from __future__ import annotations

import pytest

from agent.patterns import MAX_EXPANSION, PatternError, expand, expand_entry


def test_a_range_keeps_the_width_of_its_start() -> None:
    assert expand("pdu-[001-200]")[:2] == ["pdu-001", "pdu-002"]
    assert expand("pdu-[001-200]")[-1] == "pdu-200"
    assert len(expand("pdu-[001-200]")) == 200
    assert expand("rack-[8-11]") == ["rack-8", "rack-9", "rack-10", "rack-11"]
    assert expand("no-range") == ["no-range"]


def test_several_ranges_expand_first_outermost() -> None:
    assert expand("r[1-2]-p[1-3]") == [
        "r1-p1", "r1-p2", "r1-p3", "r2-p1", "r2-p2", "r2-p3",
    ]  # fmt: skip


def test_fields_follow_the_key_by_range_text() -> None:
    entries = expand_entry(
        {"id": "ups-[01-20].l[1-3]", "device": "ups-[01-20]", "power_point": "output.[1-3].power",
         "role": "it", "rating_kw": 200},
        "id",
    )  # fmt: skip
    assert len(entries) == 60
    assert entries[5] == {
        "id": "ups-02.l3", "device": "ups-02", "power_point": "output.3.power",
        "role": "it", "rating_kw": 200,
    }  # fmt: skip


def test_a_single_range_moves_in_step_with_one_of_the_same_length() -> None:
    entries = expand_entry({"name": "pdu-[001-200]", "host": "10.20.1.[11-210]"}, "name")
    assert entries[0] == {"name": "pdu-001", "host": "10.20.1.11"}
    assert entries[-1] == {"name": "pdu-200", "host": "10.20.1.210"}


def test_brackets_that_are_not_ranges_stay_in_other_fields() -> None:
    # An IPv6 literal in a URL is not a pattern.
    [entry] = expand_entry({"name": "bmc-1", "url": "https://[fd00::17]"}, "name")
    assert entry["url"] == "https://[fd00::17]"
    entries = expand_entry({"name": "bmc-[1-2]", "url": "https://[fd00::[1-2]]"}, "name")
    assert [e["url"] for e in entries] == ["https://[fd00::1]", "https://[fd00::2]"]


BAD = [
    ({"id": "pdu-[200-001]"}, "runs backwards"),
    ({"id": "pdu-[001-200"}, "unbalanced"),
    ({"id": "pdu-001]"}, "unbalanced"),
    ({"id": "pdu-[a-z]"}, "is not a range like [001-200]"),
    ({"id": "pdu-[]"}, "is not a range like [001-200]"),
    ({"id": "pdu-[1-3]-[1-3]"}, "write each range once"),
    ({"id": f"pdu-[1-{MAX_EXPANSION + 1}]"}, "at most"),
    ({"id": "pdu-[1-3]", "device": "pdu-[1-4]"}, "has 4 values where id has 3"),
    ({"id": "ups-[1-2].l[1-3]", "device": "ups-[1-5]"}, "range [1-5] is not in id"),
    ({"id": "pdu-1", "device": "pdu-[1-3]"}, "has a range but id 'pdu-1' has none"),
]


@pytest.mark.parametrize(("entry", "message"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_patterns_are_named(entry: dict[str, str], message: str) -> None:
    with pytest.raises(PatternError, match=None) as caught:
        expand_entry(entry, "id")
    assert message in str(caught.value)
    # The error names the field and quotes what was written there.
    field, _, rest = str(caught.value).partition(": ")
    assert field in entry
    assert rest.startswith(repr(entry[field]))

"""Mappings and the batch decoder: bad input by reason, fuzzing, paths, topics."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.readings import Quality
from agent.settings import ConfigError
from collectors.mqtt.decode import Decoder
from collectors.mqtt.mapping import Rule, TopicRouter, load_mapping, parse_json_path, topic_matches

RULES = [
    Rule.model_validate(
        {
            "topic": "m/+/json",
            "segments": "_/device",
            "timestamp_path": "t",
            "timestamp_unit": "ms",
            "fields": [{"path": "p", "point": "power", "quantity": "power_w"}],
        }
    ),
    Rule.model_validate(
        {
            "topic": "m/+/num",
            "segments": "_/device",
            "format": "number",
            "fields": [{"point": "energy", "quantity": "energy_kwh", "scale": 0.001}],
        }
    ),
]


def _decoder(**kwargs: Any) -> Decoder:
    return Decoder(TopicRouter(RULES), **kwargs)


def test_each_bad_input_is_counted_by_reason_and_good_ones_pass() -> None:
    now = time.time()
    messages = [
        ("m/a/json", b'{"p": 12.5}', now),  # good
        ("m/a/json", b'{"p": 1', now),  # malformed
        ("m/a/json", b'{"p": "12.5"}', now),  # wrong type (string)
        ("m/a/json", b'{"p": true}', now),  # wrong type (bool)
        ("m/a/json", b"[1, 2]", now),  # wrong type (not an object)
        ("m/a/json", b'{"p": NaN}', now),  # non-finite
        ("m/a/json", b'{"p": 1e999}', now),  # non-finite (overflows to inf)
        ("m/a/json", b'{"q": 1}', now),  # missing
        ("m/a/json", b'{"p": null}', now),  # missing (null, not optional)
        ("m/a/json", b"\xff\xfe{", now),  # malformed (not UTF-8)
        ("m/a/json", b'{"p": 1}' + b" " * 100, now),  # oversize (limit 64 below)
        ("x/y", b"1", now),  # unknown topic
        ("m/b/num", b"1500", now),  # good: 1500 Wh * 0.001 = 1.5 kWh
        ("m/b/num", b"nan", now),  # malformed: not a JSON number
        ("m/b/num", b"1_000", now),  # malformed
    ]
    result = _decoder(max_payload_bytes=64).decode(messages)
    assert result.accepted == 2
    assert dict(result.rejected) == {
        "malformed": 4,
        "wrong_type": 3,
        "non_finite": 2,
        "missing_field": 2,
        "oversize": 1,
        "unknown_topic": 1,
    }
    assert result.accepted + sum(result.rejected.values()) == len(messages)
    assert result.frame.sort("point").select("device", "point", "value").rows() == [
        ("b", "energy", 1.5),
        ("a", "power", 12.5),
    ]
    # Examples name a topic per reason, never payload content.
    assert result.examples["unknown_topic"] == "x/y"
    assert result.examples["oversize"] == "m/a/json"
    assert "12.5" not in str(result.examples)


def test_payload_timestamp_used_within_skew_else_receive_time_flagged() -> None:
    now = 1_800_000_000.0
    messages = [
        ("m/a/json", json.dumps({"p": 1, "t": int((now - 10) * 1000)}).encode(), now),
        ("m/a/json", json.dumps({"p": 2, "t": int((now - 1000) * 1000)}).encode(), now),
        ("m/a/json", json.dumps({"p": 3, "t": "yesterday"}).encode(), now),
        ("m/a/json", json.dumps({"p": 4}).encode(), now),
        ("m/a/json", json.dumps({"p": 5, "t": None}).encode(), now),
    ]
    result = _decoder(max_skew_s=60).decode(messages)
    frame = result.frame.sort("value")
    stamps = [ts.timestamp() for ts in frame["ts"]]
    # 10 s old is within 60 s -> payload time; 1000 s old, absent or null -> receive time.
    assert stamps == [now - 10, now, now, now]
    assert frame["value"].to_list() == [1.0, 2.0, 4.0, 5.0]
    assert frame["quality"].to_list() == [
        Quality.GOOD,
        Quality.RECEIVE_TIME,
        Quality.RECEIVE_TIME,
        Quality.RECEIVE_TIME,
    ]
    # A timestamp that is there but unreadable is never replaced by the receive time.
    assert dict(result.rejected) == {"bad_timestamp": 1}


def _oracle(doc: object) -> str:
    """Expected outcome of the JSON rule (field "p", required) for a parsed document."""
    if not isinstance(doc, dict):
        return "wrong_type"
    value = doc.get("p")
    if value is None:
        return "missing_field"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "wrong_type"
    if not math.isfinite(float(value)):
        return "non_finite"
    stamp = doc.get("t")
    if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | float)):
        return "bad_timestamp"  # the rule's timestamp "t" is epoch ms: only numbers read
    return "accepted"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**6), 10**6)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["p", "q", "t"]), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=30))
def test_fuzz_random_json_counts_match_an_oracle(docs: list[object]) -> None:
    now = time.time()
    decoder = _decoder()
    result = decoder.decode([("m/z/json", json.dumps(d).encode(), now) for d in docs])
    expected: dict[str, int] = {}
    for doc in docs:
        outcome = _oracle(doc)
        expected[outcome] = expected.get(outcome, 0) + 1
    accepted = expected.pop("accepted", 0)
    assert result.accepted == accepted
    assert dict(result.rejected) == expected
    assert result.frame.height == accepted


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["m/a/json", "m/b/num", "spBv1.0/g/DDATA/n", "zz"]),
            st.binary(max_size=200),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_fuzz_random_bytes_never_raise_and_every_message_is_accounted(
    messages: list[tuple[str, bytes]],
) -> None:
    rules = [*RULES, *load_mapping("sparkplug_b").rules]
    decoder = Decoder(TopicRouter(rules))
    result = decoder.decode([(t, p, time.time()) for t, p in messages])
    assert result.accepted + result.ignored + sum(result.rejected.values()) == len(messages)
    assert result.frame["value"].is_finite().all()


def test_json_paths_and_topic_filters() -> None:
    assert parse_json_path("aenergy.total") == ("aenergy", "total")
    assert parse_json_path("emeters[1].power") == ("emeters", 1, "power")
    for bad in ("", "a..b", ".a", "a[x]", "a[0]b"):
        with pytest.raises(ValueError, match="bad JSON path"):
            parse_json_path(bad)
    assert topic_matches("+/status/em:0", "shellypro3em-x/status/em:0")
    assert not topic_matches("+/status/em:0", "a/b/status/em:0")
    assert topic_matches("a/#", "a")
    assert topic_matches("a/#", "a/b/c")
    assert not topic_matches("#", "$SYS/broker/load")


def test_bad_mapping_file_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[rules]]\ntopic = "a/+"\nsegments = "_/dev"\n'
        'fields = [{ path = "p", point = "{device}.p", quantity = "watts" }]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_mapping(bad)
    message = str(info.value)
    assert str(bad) in message
    assert "rules.0.fields.0.quantity" in message
    assert "unknown quantity 'watts'" in message
    bad.write_text(
        '[[rules]]\ntopic = "a/+"\n'
        'fields = [{ path = "p", point = "{device}", quantity = "power_w" }]\n'
    )
    with pytest.raises(ConfigError, match=r"uses \['device'\]"):
        load_mapping(bad)
    bad.write_text("[[rules]\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_mapping(bad)


def test_builtin_mappings_load() -> None:
    shelly = load_mapping("shelly_gen2")
    assert [r.topic for r in shelly.rules][:2] == ["+/status/em:0", "+/status/emdata:0"]
    assert load_mapping("sparkplug_b").rules[0].format == "sparkplug_b"


def test_hostile_values_are_rejected_by_reason_and_never_raise() -> None:
    now = time.time()
    huge = "9" * 400
    deep = "[" * 100_000 + "]" * 100_000
    messages = [
        ("m/b/num", huge.encode(), now),  # issue 22: OverflowError in float()
        ("m/b/num", ("-" + huge).encode(), now),
        ("m/a/json", f'{{"p": {huge}}}'.encode(), now),
        ("m/a/json", f'{{"p": 1, "t": {huge}}}'.encode(), now),  # huge timestamp: bad
        ("m/b/num", ("9" * 5000).encode(), now),  # beyond int_max_str_digits: malformed
        ("m/b/num", b"1e308", now),  # finite, but 1e308 * 1000 overflows after scaling
        ("m/a/json", deep.encode(), now),  # RecursionError inside the C parser
        ("m/a/json", ('{"p": ' * 5000 + "1" + "}" * 5000).encode(), now),
        ("m/a/json", b'{"p": 1' + b" " * 1_000_000 + b"}", now),  # 1 MB
        ("m/b/num", b"-Infinity", now),
        ("m/b/num", b"NaN", now),
        ("m/b/num", b"1e309", now),
        ("m/b/num", b"-1e309", now),
    ]
    rules = [
        *RULES[:1],
        Rule.model_validate(
            {
                "topic": "m/+/num",
                "segments": "_/device",
                "format": "number",
                "fields": [{"point": "energy", "quantity": "energy_kwh", "scale": 1000}],
            }
        ),
    ]
    result = Decoder(TopicRouter(rules), max_payload_bytes=2_000_000).decode(messages)
    assert dict(result.rejected) == {"non_finite": 8, "malformed": 3, "bad_timestamp": 1}
    assert result.accepted == 1  # the 1 MB message
    assert result.frame["value"].to_list() == [1.0]
    assert result.frame["quality"].to_list() == [Quality.RECEIVE_TIME]

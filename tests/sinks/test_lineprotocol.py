"""Vectorised line protocol: checked against influxdb-client's own Point serialiser."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb_client.client.write.point import Point as _Point
from influxdb_client.domain.write_precision import WritePrecision

from agent.sinks.lineprotocol import LineSpec, encode_lines, to_lines

Point: Any = _Point


def _float_text(line: str) -> str:
    """The value of the single field ``v=...`` in ``m v=... ts`` (simple keys only)."""
    _, field, _ts = line.split(" ")
    assert field.startswith("v=")
    return field[2:]


# Any Unicode but lone surrogates (not encodable), with the characters that need care
# (space, comma, equals, quote, backslash, control characters, Chinese) made frequent.
_chars = st.characters(exclude_categories=["Cs"], exclude_characters=["\x00"])
_tricky = st.sampled_from([" ", ",", "=", '"', "\\", "\n", "\t", "\r", "中", "文", "电", "é"])
_text = st.lists(st.one_of(_chars, _tricky), max_size=12).map("".join)
_keys = _text.filter(lambda s: len(s) > 0)
_row = st.fixed_dictionaries(
    {
        "t_device": st.one_of(st.none(), _text),
        "t_point": st.one_of(st.none(), _text),
        "f_int": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "f_bool": st.one_of(st.none(), st.booleans()),
        "f_str": st.one_of(st.none(), _text),
        "dyn_key": _keys,
        "dyn_value": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "ts_us": st.integers(0, 4_000_000_000_000_000),
    }
)
_SCHEMA = {
    "t_device": pl.String,
    "t_point": pl.String,
    "f_int": pl.Int64,
    "f_bool": pl.Boolean,
    "f_str": pl.String,
    "dyn_key": pl.String,
    "dyn_value": pl.Int64,
    "ts_us": pl.Int64,
}


def _with_ts(frame: pl.DataFrame) -> pl.DataFrame:
    ts = pl.from_epoch("ts_us", time_unit="us").dt.replace_time_zone("UTC")
    return frame.with_columns(ts.alias("ts"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    measurement=_keys.filter(lambda s: not s.startswith("#")),
    tag_keys=st.tuples(_keys, _keys).filter(lambda k: k[0] != k[1]),
    rows=st.lists(_row, min_size=1, max_size=8),
)
def test_escaping_matches_influxdb_client_point_exactly(
    measurement: str, tag_keys: tuple[str, str], rows: list[dict[str, object]]
) -> None:
    """Measurement, tags, keys, strings, integers, booleans, nulls: byte for byte."""
    frame = _with_ts(pl.DataFrame(rows, schema=_SCHEMA))
    field_keys = {"f_int": "n,i=1", "f_bool": "ok", "f_str": "说明 text"}
    spec = LineSpec(
        measurement=measurement,
        tags={tag_keys[0]: "t_device", tag_keys[1]: "t_point"},
        fields={key: column for column, key in field_keys.items()},
        time="ts",
    )
    ours = to_lines(frame, spec).to_list()
    dynamic = LineSpec(
        measurement=measurement,
        tags=spec.tags,
        time="ts",
        dynamic_fields=[("dyn_key", "dyn_value")],
    )
    ours_dynamic = to_lines(frame, dynamic).to_list()
    for row, line, line_dynamic in zip(rows, ours, ours_dynamic, strict=True):
        point = Point(measurement).time(row["ts_us"], WritePrecision.US)
        point.tag(tag_keys[0], row["t_device"]).tag(tag_keys[1], row["t_point"])
        for column, key in field_keys.items():
            point.field(key, row[column])
        theirs = point.to_line_protocol()
        assert line == (theirs or None)
        # A field whose key comes from a column (the reading's quantity) escapes the same.
        point = Point(measurement).time(row["ts_us"], WritePrecision.US)
        point.tag(tag_keys[0], row["t_device"]).tag(tag_keys[1], row["t_point"])
        point.field(str(row["dyn_key"]), row["dyn_value"])
        assert line_dynamic == (point.to_line_protocol() or None)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(allow_subnormal=True), min_size=1, max_size=20))
def test_floats_match_point_numerically(values: list[float]) -> None:
    """Floats round-trip to the same double as Point's text; NaN and inf give no line."""
    frame = pl.DataFrame({"v": values, "ts": [datetime(2026, 1, 1, tzinfo=UTC)] * len(values)})
    ours = to_lines(frame, LineSpec("m", fields={"v": "v"}, time="ts")).to_list()
    for value, line in zip(values, ours, strict=True):
        theirs = Point("m").field("v", value).time(1767225600000000, WritePrecision.US)
        expected = theirs.to_line_protocol()
        if not math.isfinite(value):
            assert line is None
            assert expected == ""
            continue
        assert line is not None
        assert float(_float_text(line)) == float(_float_text(expected)) == value
        assert line.endswith(" 1767225600000000")


def test_escaping_examples_are_exact() -> None:
    frame = pl.DataFrame(
        {
            "device": ["机房 A,1=2", "pdu-1", "x\\", ""],
            "value": [1.5, float("nan"), 3.0, 2.0],
            "note": ['say "hi" \\ ok', None, None, None],
            "ts": [datetime(2026, 1, 1, tzinfo=UTC)] * 4,
        }
    )
    spec = LineSpec(
        "pue reading,x",
        tags={"device id": "device"},
        fields={"power_w": "value", "note": "note"},
        time="ts",
    )
    lines = to_lines(frame, spec, precision="s").to_list()
    assert lines == [
        'pue\\ reading\\,x,device\\ id=机房\\ A\\,1\\=2 note="say \\"hi\\" \\\\ ok",power_w=1.5 '
        "1767225600",
        None,  # NaN and null: no field left, no line (Point gives "")
        "pue\\ reading\\,x,device\\ id=x\\  power_w=3.0 1767225600",
        "pue\\ reading\\,x power_w=2.0 1767225600",  # empty tag value: tag left out
    ]
    assert encode_lines(pl.Series(lines)).count(b"\n") == 3


def test_integer_bool_and_precision() -> None:
    ts = datetime(2026, 1, 1, 0, 0, 1, 234567, tzinfo=UTC)
    frame = pl.DataFrame({"n": [7], "b": [False], "ts": [ts]}).with_columns(
        pl.col("n").cast(pl.UInt16)
    )
    spec = LineSpec("m", fields={"flags": "n", "advisory": "b"}, time="ts")
    assert to_lines(frame, spec, precision="us").to_list() == [
        "m advisory=false,flags=7i 1767225601234567"
    ]
    assert to_lines(frame, spec, precision="ms").item().endswith(" 1767225601234")
    assert to_lines(frame, spec, precision="ns").item().endswith(" 1767225601234567000")


def test_unsupported_field_type_is_an_error() -> None:
    frame = pl.DataFrame({"x": [[1, 2]]})
    with pytest.raises(TypeError, match="cannot be a line-protocol field"):
        to_lines(frame, LineSpec("m", fields={"x": "x"}))
    assert math.isfinite(1.0)

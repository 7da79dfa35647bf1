r"""Vectorised InfluxDB line protocol from Polars frames.

Every line is built with Polars string expressions over whole columns, so a
batch of 100,000 readings costs a handful of column passes instead of 100,000
Python ``Point`` objects. The escaping rules are exactly those of
``influxdb-client``'s ``Point`` serialiser (checked by a property test):

* measurement: ``,`` and space escaped with a backslash (and ``\\n``, ``\\t``,
  ``\\r`` written as those two-character sequences);
* tag keys, tag values, field keys: the same plus ``=``; a tag value ending in a
  backslash gets a trailing space (otherwise the backslash would escape the
  separator); empty or null tag values are left out;
* field values: floats as the shortest round-trip decimal (Point trims a
  trailing ``.0`` and pads exponents; the value is the same double),
  integers with an ``i`` suffix, booleans ``true``/``false``, strings in double
  quotes with ``"`` and ``\\`` escaped; null and non-finite values are left out,
  and a row with no field left produces no line (``null``).

Tags are emitted sorted by key (InfluxDB's preferred order: cheaper indexing).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

__all__ = [
    "PRECISIONS",
    "LineSpec",
    "Precision",
    "encode_lines",
    "escape_key",
    "escape_measurement",
    "to_lines",
]

#: Timestamp precisions understood by both write APIs (1.x spells ``us`` as ``u``).
Precision = Literal["s", "ms", "us", "ns"]
PRECISIONS: tuple[Precision, ...] = ("s", "ms", "us", "ns")

_KEY_FROM = [",", "=", " ", "\n", "\t", "\r"]
_KEY_TO = ["\\,", "\\=", "\\ ", "\\n", "\\t", "\\r"]
_MEASUREMENT_ESCAPES = str.maketrans(
    {",": "\\,", " ": "\\ ", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
)
_KEY_ESCAPES = str.maketrans(dict(zip(_KEY_FROM, _KEY_TO, strict=True)))


def escape_measurement(name: str) -> str:
    """Escape a measurement name (commas, spaces, control characters)."""
    return name.translate(_MEASUREMENT_ESCAPES)


def escape_key(key: str) -> str:
    """Escape a tag key or field key (commas, equals signs, spaces, control characters)."""
    return key.translate(_KEY_ESCAPES)


@dataclass(frozen=True)
class LineSpec:
    """How the columns of a frame map onto line protocol.

    Attributes:
        measurement: Measurement name (constant for the frame).
        tags: Tag key -> column (String, or anything castable to String).
        fields: Field key -> column; the column's dtype decides the field type.
        time: Timestamp column (``Datetime``) or ``None`` to let the server stamp.
        dynamic_fields: ``(key_column, value_column)`` pairs whose field key is
            taken per row from ``key_column`` (e.g. the reading's quantity).
    """

    measurement: str
    tags: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)
    time: str | None = None
    dynamic_fields: Sequence[tuple[str, str]] = ()


def _escape_keys_expr(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_many(_KEY_FROM, _KEY_TO)


def _needs_escaping(series: pl.Series) -> bool:
    # One regex pass is cheaper than replace_many + the trailing-backslash check, and
    # device ids, point names and quantities almost never need escaping.
    return bool(series.str.contains(_SPECIAL).any())


_SPECIAL = r"[,= \n\t\r\\]"


def _tag_pieces(key: str, series: pl.Series) -> list[pl.Expr]:
    """Pieces of ``,key=value`` for one tag column (plain when no row needs care)."""
    value = pl.col(series.name)
    if series.dtype != pl.String:
        value = value.cast(pl.String)
        series = series.cast(pl.String)
    prefix = pl.lit(f",{escape_key(key)}=")
    missing = series.null_count() > 0 or bool((series.str.len_bytes() == 0).any())
    if not missing and not _needs_escaping(series):
        return [prefix, value]
    escaped = _escape_keys_expr(value)
    # A trailing backslash would escape the separator after it: Point appends a space.
    escaped = pl.when(escaped.str.ends_with("\\")).then(escaped + " ").otherwise(escaped)
    piece = (
        pl.when(value.is_not_null() & (value.str.len_bytes() > 0))
        .then(pl.concat_str([prefix, escaped]))
        .otherwise(pl.lit(""))
    )
    return [piece]


def _value_expr(series: pl.Series) -> tuple[pl.Expr, bool]:
    """The formatted field value and whether it can be null (then it needs care)."""
    value = pl.col(series.name)
    dtype = series.dtype
    nullable = series.null_count() > 0
    if dtype.is_float() or dtype.is_decimal():
        as_float = value.cast(pl.Float64)
        text = as_float.cast(pl.String)
        finite = series.cast(pl.Float64).is_finite()
        if nullable or not bool(finite.all()):
            return pl.when(as_float.is_finite()).then(text).otherwise(None), True
        return text, False
    if dtype.is_integer():
        return value.cast(pl.String) + pl.lit("i"), nullable
    if dtype == pl.Boolean:
        text = pl.when(value).then(pl.lit("true")).when(~value).then(pl.lit("false"))
        return text, nullable
    if dtype == pl.String:
        quoted = value.str.replace_many(["\\", '"'], ["\\\\", '\\"'])
        return pl.concat_str([pl.lit('"'), quoted, pl.lit('"')]), nullable
    raise TypeError(f"column {series.name!r}: type {dtype} cannot be a line-protocol field")


def to_lines(frame: pl.DataFrame, spec: LineSpec, *, precision: Precision = "us") -> pl.Series:
    """Serialise every row of ``frame`` to one line of line protocol.

    The frame is looked at first (nulls, characters that need escaping, non-finite
    values) so that the common case is one flat ``concat_str`` of raw columns.

    Args:
        frame: The rows; columns named in ``spec``.
        spec: Measurement, tags, fields and timestamp mapping.
        precision: Timestamp unit of the output (must match the write request's).

    Returns:
        A String series, one element per row; ``null`` where the row has no
        writable field (all null or non-finite), exactly where ``Point`` would
        produce an empty line.

    Raises:
        TypeError: for a field column whose type has no line-protocol form, or a
            spec without fields.
    """
    pieces: list[pl.Expr] = [pl.lit(escape_measurement(spec.measurement))]
    for key, column in sorted(spec.tags.items()):
        pieces += _tag_pieces(key, frame[column])
    fields: list[tuple[pl.Expr, bool]] = []
    for key, column in sorted(spec.fields.items()):
        text, nullable = _value_expr(frame[column])
        fields.append((pl.concat_str([pl.lit(f"{escape_key(key)}="), text]), nullable))
    for key_column, value_column in spec.dynamic_fields:
        keys = frame[key_column]
        key_expr = (
            _escape_keys_expr(pl.col(key_column)) if _needs_escaping(keys) else pl.col(key_column)
        )
        text, nullable = _value_expr(frame[value_column])
        fields.append((pl.concat_str([key_expr, pl.lit("="), text]), nullable))
    if not fields:
        raise TypeError("a line needs at least one field")
    pieces.append(pl.lit(" "))
    if any(nullable for _, nullable in fields):
        joined = pl.concat_str([f for f, _ in fields], separator=",", ignore_nulls=True)
        # No field left: null, so the row yields no line (concat_str propagates nulls).
        pieces.append(pl.when(joined.str.len_bytes() > 0).then(joined))
    else:
        for i, (expr, _) in enumerate(fields):
            if i:
                pieces.append(pl.lit(","))
            pieces.append(expr)
    if spec.time is not None:
        pieces += [pl.lit(" "), pl.col(spec.time).dt.epoch(precision).cast(pl.String)]
    return frame.select(pl.concat_str(pieces).alias("line")).to_series()


def encode_lines(lines: pl.Series) -> bytes:
    """Join lines (nulls dropped) into one request body, one line per row, newline-terminated."""
    kept = lines.drop_nulls()
    if kept.len() == 0:
        return b""
    # Polars' CSV writer with no quoting writes the lines straight into bytes: one copy,
    # instead of a joined Python str that then has to be encoded again.
    buffer = io.BytesIO()
    kept.to_frame("line").write_csv(buffer, include_header=False, quote_style="never")
    return buffer.getvalue()

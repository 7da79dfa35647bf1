"""The bundle's CSV writer gives exactly the text of Polars' own ``sink_csv``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import zstandard

from agent.report.bundle import _ISO, _write_csv

T0 = datetime(2026, 9, 30, 16, tzinfo=UTC)


def _frame(n: int = 3000) -> pl.DataFrame:
    starts = [T0 + timedelta(minutes=i % 1440) for i in range(n)]
    return pl.DataFrame(
        {
            "meter": [f"pdu-{i // 1440}.input" for i in range(n)],
            "interval_start": starts,
            "interval_end": [s + timedelta(minutes=1) for s in starts],
            "energy_kwh": [i / 7 for i in range(n)],
            "coverage": [1.0 if i % 5 else 0.25 for i in range(n)],
            "flags": pl.Series([i % 3 for i in range(n)], dtype=pl.UInt16),
            "method": ["register"] * n,
        }
    ).with_columns(pl.col("interval_start", "interval_end").dt.cast_time_unit("us"))


def _variants() -> dict[str, pl.DataFrame]:
    base = _frame()
    row = pl.int_range(pl.len())
    return {
        "plain": base,
        "empty": base.head(0),
        "quoted text": base.with_columns(
            pl.when(row % 4 == 0)
            .then(pl.lit('a,"b"\n'))
            .when(row % 4 == 1)
            .then(pl.lit(""))
            .when(row % 4 == 2)
            .then(None)
            .otherwise(pl.col("meter"))
            .alias("meter")
        ),
        "seconds": base.with_columns(pl.col("interval_start").dt.offset_by("7s")),
        "sub-second": base.with_columns(pl.col("interval_end").dt.offset_by("7ms")),
        "null time": base.with_columns(
            pl.when(row == 3).then(None).otherwise(pl.col("interval_end")).alias("interval_end")
        ),
        "before 1970": base.with_columns(pl.col("interval_start").dt.offset_by("-60y")),
        "long span": base.with_columns(pl.col("interval_start").dt.offset_by("300d")),
        "time units": base.with_columns(
            pl.col("interval_start").dt.cast_time_unit("ns"),
            pl.col("interval_end").dt.cast_time_unit("ms"),
        ),
        "other zone": base.with_columns(
            pl.col("interval_start").dt.convert_time_zone("Asia/Kolkata")
        ),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_csv_text_is_that_of_polars(name: str, tmp_path: Path) -> None:
    frame = _variants()[name]
    target = tmp_path / "out.csv.zst"
    _write_csv(frame.lazy(), target)
    with target.open("rb") as handle:
        text = zstandard.ZstdDecompressor().stream_reader(handle).read()
    expected = tmp_path / "expected.csv"
    frame.lazy().sink_csv(expected, datetime_format=_ISO)
    assert text == expected.read_bytes()


def test_csv_in_batches_of_a_parquet_file(tmp_path: Path) -> None:
    """Several Parquet row groups: one header, rows in order, times through the lookup."""
    frame = pl.concat([_frame(5000)] * 4)
    source = tmp_path / "rows.parquet"
    frame.write_parquet(source, row_group_size=3000)
    target = tmp_path / "out.csv.zst"
    _write_csv(pl.scan_parquet(source), target)
    with target.open("rb") as handle:
        text = zstandard.ZstdDecompressor().stream_reader(handle).read()
    assert text == frame.write_csv(datetime_format=_ISO).encode()

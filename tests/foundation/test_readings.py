from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from agent.readings import READING_SCHEMA, Quality, ReadingBatchError, make_batch, validate_batch


def _batch() -> pl.DataFrame:
    return make_batch(
        ts=datetime(2026, 10, 1, 8, 0, tzinfo=timezone(timedelta(hours=8))),
        device="pdu-1",
        point=["input.power", "input.energy"],
        quantity=["power_w", "energy_kwh"],
        value=[1234.5, 10.25],
        quality=int(Quality.SIMULATED),
    )


def test_make_batch_converts_to_utc_and_schema() -> None:
    batch = _batch()
    assert batch.schema == READING_SCHEMA
    # 08:00 +08:00 is 00:00 UTC.
    assert batch["ts"].to_list()[0] == datetime(2026, 10, 1, 0, 0, tzinfo=UTC)
    assert batch["device"].to_list() == ["pdu-1", "pdu-1"]
    assert batch["quality"].to_list() == [16, 16]


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ReadingBatchError, match="timezone-aware"):
        make_batch(
            ts=[datetime(2026, 1, 1)], device="d", point=["p"], quantity="power_w", value=[1.0]
        )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.drop("point"), "column 'point' is missing"),
        (lambda b: b.with_columns(pl.col("value").cast(pl.Float32)), "column 'value' has type"),
        (lambda b: b.with_columns(pl.lit("watts").alias("quantity")), "unknown quantity"),
        (lambda b: b.with_columns(pl.lit(None, pl.String).alias("device")), "null value"),
        (lambda b: b.with_columns(pl.lit(1).alias("extra")), "unexpected column"),
    ],
)
def test_validate_batch_names_the_problem(mutate, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ReadingBatchError, match=message):
        validate_batch(mutate(_batch()))


def test_nan_values_pass_the_door_to_be_rejected_and_counted_later() -> None:
    batch = _batch().with_columns(pl.lit(float("nan")).alias("value"))
    assert validate_batch(batch).height == 2

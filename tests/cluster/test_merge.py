"""The redundant-pair rule on its own (``collectors.nats.merge.dedupe``), values by hand.

Two pollers read one register; poller b is 300 ms behind poller a and, at the second
poll, reads a different value. The window is 2 s, polls are 15 s apart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from agent.readings import make_batch
from collectors.nats.merge import MergeState, dedupe

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
WINDOW_US = 2_000_000


def _readings(rows: list[tuple[float, float]]) -> pl.DataFrame:
    """(seconds after T0, kWh) of the one register point, in stream order."""
    return make_batch(
        [T0 + timedelta(seconds=s) for s, _ in rows],
        "pdu-1",
        ["total.energy"] * len(rows),
        "energy_kwh",
        [v for _, v in rows],
    )


def _no_last() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"device": pl.String, "point": pl.String, "quantity": pl.String, "last_us": pl.Int64}
    )


def test_earlier_stamped_reading_of_a_poll_wins_whatever_the_values() -> None:
    # Stream order: b's first poll arrives before a's (b is behind in time, not on the wire).
    page = _readings([(0.3, 100.0), (0.0, 100.0), (15.0, 100.5), (15.3, 100.7), (30.0, 101.0)])
    result = dedupe(page, _no_last(), WINDOW_US)
    kept = result.kept.select(pl.col("ts").dt.epoch("ms") - int(T0.timestamp() * 1000), "value")
    assert kept.rows() == [(0, 100.0), (15_000, 100.5), (30_000, 101.0)]
    assert result.dropped == 2
    assert result.disagreed == 1  # 100.7 at 15.3 s against the kept 100.5 at 15.0 s
    assert result.newest["ts_us"].to_list() == [int((T0 + timedelta(seconds=30)).timestamp() * 1e6)]


def test_a_lagging_pollers_copies_of_polls_taken_in_earlier_are_dropped() -> None:
    last_us = int((T0 + timedelta(seconds=15)).timestamp() * 1e6)
    last = pl.DataFrame(
        {
            "device": ["pdu-1"],
            "point": ["total.energy"],
            "quantity": ["energy_kwh"],
            "last_us": [last_us],
        }
    )
    # b's backlog (0.3 s and 15.3 s: polls a delivered on an earlier page), then a new poll.
    page = _readings([(0.3, 100.0), (15.3, 100.5), (30.3, 101.0)])
    result = dedupe(page, last, WINDOW_US)
    assert result.kept.height == 1 and result.kept["value"].to_list() == [101.0]
    assert result.dropped == 2


def test_chain_rules() -> None:
    genesis, h1, h2 = bytes(32), b"\x01" * 32, b"\x02" * 32
    assert MergeState.check(1, genesis, True, head=None).action == "take"
    assert MergeState.check(1, genesis, False, head=None).action == "reject"
    assert MergeState.check(2, h1, True, head=(2, h2)).action == "duplicate"
    verdict = MergeState.check(3, h1, True, head=(2, h2))
    assert verdict.action == "take" and verdict.problem == "batch 3: does not link to batch 2"
    joined = MergeState.check(7, h1, True, head=None)
    assert joined.problem == "chain joined at batch 7 (earlier ones not seen)"

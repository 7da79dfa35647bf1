"""Silent periods of meters, live and imported (issue 15, item 4).

A silence is the span between two consecutive readings of a meter that is at least
``min_s`` long (default 900 s) and longer than 1.5 x the meter's usual spacing.
"""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from agent.aggregator import catch_up, site_aggregator
from agent.cli import app
from agent.energy import interval_energy
from agent.energy.silence import SilenceTracker, describe_silences, find_silences
from agent.journal import Journal
from agent.readings import READING_SCHEMA
from agent.settings import load_settings
from agent.site import Site, parse_site
from agent.store import IntervalStore
from tests.rules.helpers import SITE_TOML

T0 = datetime(2026, 10, 9, 16, tzinfo=UTC)  # 2026-10-10 00:00 +08:00


def _site() -> Site:
    return parse_site(tomllib.loads(SITE_TOML)["site"], source="t")


def _reads(
    times: list[datetime], device: str, *, kwh_per_s: float, quality: int = 0
) -> pl.DataFrame:
    seconds = [(t - T0).total_seconds() for t in times]
    return pl.DataFrame(
        {
            "ts": times,
            "device": device,
            "point": "energy",
            "quantity": "energy_kwh",
            "value": [100.0 + kwh_per_s * s for s in seconds],
            "quality": quality,
        },
        schema=READING_SCHEMA,
    )


def _every(
    step: timedelta, hours: float, *, skip: tuple[datetime, datetime] | None = None
) -> list[datetime]:
    n = int(timedelta(hours=hours) / step)
    times = [T0 + i * step for i in range(n + 1)]
    if skip is not None:
        times = [t for t in times if not skip[0] < t < skip[1]]
    return times


def _spans(frame: pl.DataFrame) -> list[tuple[str, datetime, datetime]]:
    return [(m, s, e) for m, s, e in frame.select("meter", "start", "end").iter_rows()]


def test_fifteen_minute_history_is_silent_only_where_readings_are_missing() -> None:
    q = timedelta(minutes=15)
    silent = (T0 + 8 * q, T0 + 21 * q)  # readings at 02:00 and 05:15: 195 minutes apart
    readings = pl.concat(
        [
            _reads(_every(q, 12), "meter-1", kwh_per_s=0.1),
            _reads(_every(q, 12, skip=silent), "pdu-1", kwh_per_s=0.08),
        ]
    )
    found = find_silences(readings, _site(), imported=True)
    # 15 minutes apart is the meter's cadence, not a silence; 195 minutes is.
    assert _spans(found) == [("pdu-1", *silent)]
    assert found["imported"].to_list() == [True]
    assert found["period"].to_list() == ["2026-10"]


@pytest.mark.parametrize(
    ("missing", "listed"),
    [
        (1, True),  # 30 minutes between readings > 1.5 x 15: one reading missed
        (0, False),  # 15 minutes: the cadence
    ],
)
def test_one_missed_quarter_hour_is_a_silence(missing: int, listed: bool) -> None:
    q = timedelta(minutes=15)
    times = [t for i, t in enumerate(_every(q, 4)) if not 4 <= i < 4 + missing]
    found = find_silences(_reads(times, "meter-1", kwh_per_s=0.1), _site())
    assert bool(found.height) is listed


@pytest.mark.parametrize(("min_s", "listed"), [(900.0, True), (1800.0, False)])
def test_the_shortest_silence_is_configurable(min_s: float, listed: bool) -> None:
    # Polled every 15 s, silent for 20 minutes.
    s = timedelta(seconds=15)
    times = _every(s, 1, skip=(T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)))
    found = find_silences(_reads(times, "meter-1", kwh_per_s=0.1), _site(), min_s=min_s)
    assert bool(found.height) is listed


def test_a_live_silence_across_two_pages_is_found_once() -> None:
    s = timedelta(seconds=15)
    times = _every(s, 6, skip=(T0 + timedelta(hours=1), T0 + timedelta(hours=4)))
    readings = _reads(times, "pdu-1", kwh_per_s=0.01)
    cut = T0 + timedelta(hours=2)  # the first page ends inside the silence
    tracker = SilenceTracker()
    first = find_silences(readings.filter(pl.col("ts") < cut), _site(), tracker=tracker)
    second = find_silences(readings.filter(pl.col("ts") >= cut), _site(), tracker=tracker)
    assert first.height == 0
    assert _spans(second) == [("pdu-1", T0 + timedelta(hours=1), T0 + timedelta(hours=4))]
    assert second["imported"].to_list() == [False]
    # The tracker survives a restart through the aggregator's state file.
    assert SilenceTracker.from_json(json.loads(json.dumps(tracker.to_json()))) == tracker


def test_live_silence_through_the_aggregator_into_kpi_json(tmp_path: Path) -> None:
    """Live batches (one per 10 minutes of 1-minute polls); pdu-1 silent for 3 hours."""
    (tmp_path / "site.toml").write_text(SITE_TOML)
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\nsite_file = "site.toml"\n')
    settings = load_settings(config)
    m = timedelta(minutes=1)
    silent = (T0 + timedelta(hours=1), T0 + timedelta(hours=4))
    grid = _reads(_every(m, 6), "meter-1", kwh_per_s=0.1)
    pdu = _reads(_every(m, 6, skip=silent), "pdu-1", kwh_per_s=0.08)
    journal = Journal(settings.journal_path)
    for i in range(36):  # 36 batches of 10 minutes
        lo, hi = T0 + i * 10 * m, T0 + (i + 1) * 10 * m
        batch = pl.concat(
            [f.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)) for f in (grid, pdu)]
        )
        if batch.height:
            journal.append(batch, source="sim")
    aggregator = site_aggregator(settings)
    site = _site()
    assert aggregator is not None
    done = catch_up(aggregator, site, journal)
    journal.close()
    assert done.batches == 36
    stored = IntervalStore(settings.store_path()).read_silences()
    assert _spans(stored) == [("pdu-1", *silent)]
    result = CliRunner().invoke(
        app, ["kpi", "--period", "2026-10", "--json", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    (listed,) = json.loads(result.stdout)["silent_periods"]
    # 180 minutes between readings, within max_gap_s (6 h): the register difference is
    # spread over the silence and counts as covered; 0.08 kWh/s x 10,800 s = 864 kWh.
    assert listed["meter"] == "pdu-1" and listed["imported"] is False
    assert (listed["start"], listed["end"]) == ("2026-10-09T17:00:00Z", "2026-10-09T20:00:00Z")
    assert (listed["minutes"], listed["fill"], listed["covered"]) == (180.0, "interpolated", 1.0)
    assert listed["energy_kwh"] == pytest.approx(0.08 * 10_800, rel=1e-9)


def test_a_silence_longer_than_max_gap_is_missing_energy() -> None:
    """Seven silent hours > max_gap_s (6 h): the span counts as uncovered (missing)."""
    q = timedelta(minutes=15)
    silent = (T0 + 4 * q, T0 + 32 * q)  # 01:00 .. 08:00: 420 minutes
    readings = pl.concat(
        [
            _reads(_every(q, 12), "meter-1", kwh_per_s=0.1),
            _reads(_every(q, 12, skip=silent), "pdu-1", kwh_per_s=0.08),
        ]
    )
    site = _site()
    found = find_silences(readings, site, imported=True)
    intervals = interval_energy(readings.lazy(), site)
    (row,) = describe_silences(found, intervals, T0, T0 + timedelta(days=1)).to_dicts()
    assert (row["meter"], row["minutes"], row["fill"], row["covered"]) == (
        "pdu-1",
        420.0,
        "missing",
        0.0,
    )

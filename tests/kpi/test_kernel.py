"""The C kernel behind IntervalEngine against the Polars reference (``interval_energy``).

Random messy streams of three meters (a 16-bit register with power readings, a register
without rating or width, an integrated power-only meter): wraps, resets, spikes,
level jumps, NaN/inf/negative values, over-rating power, re-sent readings, long gaps,
imported readings, shuffled rows inside a batch, any batching, and a restart from the
persisted state at a random point. Every emitted interval must be the reference's:
same rows, coverage, flags and rejected counts; energies equal to 1e-12 (the reference
means and sums with Polars' kernels, which may round in another order).
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.energy import EnergyConfig, IntervalEngine, _kernel, interval_energy
from agent.energy.kernel import kernel_feed
from agent.readings import Quality
from tests.kpi.helpers import T0, reads, small_site

SITE = small_site(register_bits=16, register_unit_kwh=0.1)
MODULUS_KWH = 2**16 * 0.1
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EVENTS = ["normal"] * 12 + ["wrap", "reset", "spike", "jump", "nan", "inf", "negative", "resend"]


def register_stream(rng: random.Random, n: int, *, wrap: bool) -> list[tuple[float, float]]:
    """A register's (seconds, kWh) reads with events drawn from ``EVENTS``."""
    t, value = rng.randint(0, 3600), rng.uniform(0, MODULUS_KWH - 1)
    rows = [(float(t), value)]
    while len(rows) < n:
        dt = rng.choice([rng.randint(1, 120), rng.randint(120, 900), rng.randint(3600, 8 * 3600)])
        t += dt
        # Up to 90 % of the 100 kW rating.
        value += rng.uniform(0, 0.9) * 100.0 * dt / 3600.0
        event = rng.choice(EVENTS)
        if event == "wrap" and wrap:
            value += MODULUS_KWH - value % MODULUS_KWH
        if event == "reset":
            value = rng.uniform(0, 5)
        if event == "jump":
            value += 1e5
        shown = value % MODULUS_KWH if wrap else value
        shown = {
            "spike": shown + 5e4,
            "nan": math.nan,
            "inf": math.inf,
            "negative": -shown - 1,
        }.get(event, shown)
        rows.append((float(t), shown))
        if event == "resend":
            rows.append((float(t), shown))
    return rows


def power_stream(rng: random.Random, n: int, rating_w: float) -> list[tuple[float, float]]:
    """(seconds, W) power reads with gaps and invalid values."""
    t = rng.randint(0, 3600)
    rows = []
    for _ in range(n):
        t += rng.choice([rng.randint(1, 90), rng.randint(90, 400), rng.randint(400, 4000)])
        value = rng.choice(
            [rng.uniform(0, rating_w)] * 8 + [math.nan, -5.0, rating_w * 1.5, math.inf]
        )
        rows.append((float(t), value))
    return rows


def messy_readings(seed: int, n: int) -> pl.DataFrame:
    """The three meters' readings in time order (ties in meter order), some imported."""
    rng = random.Random(seed)
    frames = [
        reads("grid", "e", "energy_kwh", register_stream(rng, n, wrap=True)),
        reads("grid", "p", "power_w", power_stream(rng, n, 100_000.0)),
        reads("it", "e", "energy_kwh", register_stream(rng, n, wrap=False)),
        reads("cool", "p", "power_w", power_stream(rng, n, 50_000.0)),
        # Not site points: ignored by both.
        reads("other", "e", "energy_kwh", [(10.0, 1.0), (20.0, 2.0)]),
    ]
    frame = pl.concat(frames).sort("ts", maintain_order=True)
    # By reading, not by row: a re-sent reading is imported exactly when its twin is.
    imported = pl.struct("device", "point", "ts").hash(seed) % 10 == 0
    return frame.with_columns(
        pl.when(imported)
        .then(pl.col("quality") | int(Quality.IMPORTED))
        .otherwise(pl.col("quality"))
        .cast(pl.UInt8)
        .alias("quality")
    )


def run_engine(
    frame: pl.DataFrame, config: EnergyConfig, rng: random.Random, cuts: list[int], restart: int
) -> tuple[pl.DataFrame, int]:
    """Feed ``frame`` in batches cut at ``cuts`` (rows shuffled inside each batch)."""
    engine = IntervalEngine(SITE, config)
    pieces = []
    bounds = sorted({c for c in cuts if 0 < c < frame.height})
    start = 0
    for i, end in enumerate([*bounds, frame.height]):
        batch = frame.slice(start, end - start)
        order = list(range(batch.height))
        rng.shuffle(order)
        pieces.append(engine.feed(batch[order]))
        if i == restart:
            engine = IntervalEngine(SITE, config, engine.state)
        start = end
    return pl.concat(pieces), engine.late_readings


def later_readings(after_s: float) -> tuple[pl.DataFrame, float]:
    """Clean readings an hour after ``after_s``, at a whole number of every interval tried.

    Registers jump to 1e9 kWh (implausible from anything before and over the first read,
    so never an isolated spike) and go on plausibly: every interval before them is final.
    """
    at = math.ceil((after_s + 3600) / 900) * 900.0
    steps = [(at + 60 * i, 1e9 + 0.1 * i) for i in range(3)]
    frame = pl.concat(
        [
            reads("grid", "e", "energy_kwh", steps),
            reads("it", "e", "energy_kwh", steps),
            reads("cool", "p", "power_w", [(t, 10.0) for t, _ in steps]),
        ]
    )
    return frame, at


@PROFILE
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(2, 60),
    cuts=st.lists(st.integers(1, 400), max_size=8),
    restart=st.integers(0, 8),
    interval_s=st.sampled_from([60, 300, 900]),
    reset_fill=st.sampled_from(["power", "none"]),
)
def test_kernel_matches_reference_on_messy_streams(
    seed: int, n: int, cuts: list[int], restart: int, interval_s: int, reset_fill: str
) -> None:
    config = EnergyConfig(interval_s=interval_s, reset_fill=reset_fill)  # type: ignore[arg-type]
    messy = messy_readings(seed, n)
    last = messy["ts"].max()
    assert isinstance(last, datetime)
    later, settled_s = later_readings((last - T0).total_seconds())
    frame = pl.concat([messy, later])
    got, late = run_engine(frame, config, random.Random(seed), cuts, restart)
    reference = interval_energy(frame.lazy(), SITE, config, with_rejected_counts=True).collect()
    # Only re-sent duplicates can be late (a later batch finds them settled).
    assert late <= frame.height
    settled = T0 + timedelta(seconds=settled_s)
    for meter in ("grid", "it", "cool"):
        mine = got.filter(pl.col("meter") == meter)
        # Everything before the later readings is final, and emitted exactly once.
        ref = reference.filter((pl.col("meter") == meter) & (pl.col("interval_start") < settled))
        mine = mine.filter(pl.col("interval_start") < settled)
        assert mine.height == ref.height, meter
        assert mine.drop("energy_kwh").equals(ref.drop("energy_kwh")), meter
        assert mine["energy_kwh"].to_list() == pytest.approx(
            ref["energy_kwh"].to_list(), rel=1e-12, abs=1e-15
        ), meter


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    cuts_a=st.lists(st.integers(1, 300), max_size=8),
    cuts_b=st.lists(st.integers(1, 300), max_size=8),
    restart=st.integers(0, 8),
)
def test_any_batching_and_restart_give_identical_bits(
    seed: int, cuts_a: list[int], cuts_b: list[int], restart: int
) -> None:
    # The kernel sums an interval's pieces in time order whatever the batches were, so
    # two runs agree exactly (no tolerance): the restart-equivalence guarantee.
    frame = messy_readings(seed, 40)
    one, _ = run_engine(frame, EnergyConfig(), random.Random(seed), cuts_a, restart=99)
    two, _ = run_engine(frame, EnergyConfig(), random.Random(seed + 1), cuts_b, restart)
    key = ["meter", "interval_start"]
    assert one.sort(key).equals(two.sort(key))


def test_state_round_trip_drops_meters_no_longer_in_the_site() -> None:
    engine = IntervalEngine(SITE)
    engine.feed(messy_readings(3, 20))
    state = engine.state
    assert set(state.marks["meter"]) <= {"grid", "it", "cool"}
    renamed = type(state)(
        carry=state.carry.with_columns(pl.lit("gone").alias("meter")),
        marks=state.marks.with_columns(pl.lit("gone").alias("meter")),
    )
    fresh = IntervalEngine(SITE, EnergyConfig(), renamed)
    assert fresh.state.carry.height == 0 and fresh.state.marks.height == 0


def _raw_feed(meters: int, mi: list[int], ts: list[int]) -> object:
    """Call the C entry point directly with one meter's attributes and fresh reads."""
    floats, times = np.zeros(meters), np.full(meters, np.iinfo(np.int64).min)
    none_u8, none_f = np.zeros(0, np.uint8), np.zeros(0)
    return _kernel.feed(
        np.zeros(meters, np.uint8),
        floats,
        floats,
        floats,
        times.copy(),
        times.copy(),
        times.copy(),
        np.zeros(0, np.uint32),
        none_u8,
        np.zeros(0, np.int64),
        none_f,
        none_u8,
        none_u8,
        np.array(mi, np.uint32),
        np.zeros(len(ts), np.uint8),
        np.array(ts, np.int64),
        np.zeros(len(ts)),
        np.zeros(len(ts), np.uint8),
        60_000_000,
        1,
        1,
        1.1,
        0.1,
        True,
        (1, 2, 4, 8, 16, 32, 64),
    )


def test_kernel_refuses_inconsistent_input_instead_of_reading_out_of_bounds() -> None:
    # A meter index beyond the attribute arrays (a bug upstream) is a clear error.
    with pytest.raises(ValueError, match="meter index or track out of range"):
        _raw_feed(1, [5], [0])
    # Columns of different lengths are named.
    with pytest.raises(ValueError, match="mi: expected 1 items"):
        _raw_feed(1, [0, 0], [0])
    # The marks are left as they were when a call is refused.
    engine = IntervalEngine(SITE)
    engine.feed(messy_readings(1, 10))
    before = engine.state.marks
    with pytest.raises(ValueError):
        kernel_feed(
            engine._arrays,  # the engine's own arrays, with one corrupt read
            engine._kernel_state,
            pl.DataFrame(
                {"mi": [99], "track": [0], "ts": [0], "value": [1.0], "imported": [0]},
                schema={
                    "mi": pl.UInt32,
                    "track": pl.UInt8,
                    "ts": pl.Int64,
                    "value": pl.Float64,
                    "imported": pl.UInt8,
                },
            ),
            EnergyConfig(),
        )
    assert engine.state.marks.equals(before)

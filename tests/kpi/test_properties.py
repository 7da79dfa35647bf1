"""Conservation properties (hypothesis): energy is moved in time, never lost or made up."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.energy import EnergyConfig, IntervalEngine, interval_energy
from agent.kpi import compute_kpis, month_bounds
from agent.schemas import PeriodKind
from tests.kpi.helpers import energy_reads, interval_rows, small_site

RATING_KW = 100.0
MODULUS_16_BIT = 2**16 * 0.1  # 6,553.6 kWh
SITE_WRAP = small_site(register_bits=16, register_unit_kwh=0.1)
PROFILE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def register_history(draw: st.DrawFn) -> tuple[list[tuple[float, float]], float]:
    """Read times (with gaps up to 8 h) and a 16-bit register that may wrap; true delta."""
    n = draw(st.integers(2, 20))
    steps = draw(
        st.lists(
            st.one_of(st.integers(1, 600), st.integers(600, 7 * 3600)),
            min_size=n - 1,
            max_size=n - 1,
        )
    )
    # Energy per step at a plausible load (up to 90 % of the rating).
    loads = draw(st.lists(st.floats(0.0, 0.9), min_size=n - 1, max_size=n - 1))
    start = draw(st.floats(0.0, MODULUS_16_BIT - 1.0))
    t, total = draw(st.integers(0, 3600)), 0.0
    rows = [(float(t), start)]
    for dt, load in zip(steps, loads, strict=True):
        t += dt
        total += load * RATING_KW * dt / 3600.0
        rows.append((float(t), (start + total) % MODULUS_16_BIT))
    return rows, total


@PROFILE
@given(history=register_history(), interval_s=st.sampled_from([60, 300, 900, 3600]))
def test_interval_sum_equals_true_register_delta(
    history: tuple[list[tuple[float, float]], float], interval_s: int
) -> None:
    rows, total = history
    out = interval_energy(
        energy_reads(rows).lazy(), SITE_WRAP, EnergyConfig(interval_s=interval_s)
    ).collect()
    grid = out.filter(pl.col("meter") == "grid")
    assert grid["energy_kwh"].sum() == pytest.approx(total, rel=1e-9, abs=1e-6)
    assert (grid["coverage"] <= 1.0).all() and (grid["coverage"] >= 0.0).all()


@PROFILE
@given(history=register_history(), cuts=st.lists(st.integers(1, 19), max_size=6))
def test_any_batching_gives_the_same_intervals_as_one_run(
    history: tuple[list[tuple[float, float]], float], cuts: list[int]
) -> None:
    rows, _ = history
    frame = energy_reads(rows)
    engine = IntervalEngine(SITE_WRAP)
    bounds = sorted({c for c in cuts if c < frame.height})
    pieces = []
    start = 0
    for end in [*bounds, frame.height]:
        pieces.append(engine.feed(frame.slice(start, end - start)))
        start = end
    got = pl.concat(pieces).filter(pl.col("meter") == "grid")
    batch = (
        interval_energy(frame.lazy(), SITE_WRAP, with_rejected_counts=True)
        .collect()
        .filter(pl.col("meter") == "grid")
        .head(got.height)
    )
    # Same rows, flags, coverage and counts; energies equal to the last bit but for rare
    # 1-ulp differences in Polars' float kernels between frame layouts (see docs/kpi.md).
    assert got.drop("energy_kwh").equals(batch.drop("energy_kwh"))
    assert got["energy_kwh"].to_list() == pytest.approx(
        batch["energy_kwh"].to_list(), rel=1e-12, abs=1e-15
    )


@PROFILE
@given(
    grid=st.lists(st.floats(0.0, 500.0), min_size=48, max_size=48),
    it=st.lists(st.floats(1.0, 400.0), min_size=48, max_size=48),
)
def test_splitting_or_merging_periods_never_changes_totals(
    grid: list[float], it: list[float]
) -> None:
    site = small_site()
    start, _ = month_bounds("2026-10", site.timezone)
    hour = timedelta(hours=1)
    frames = []
    for i, (g, e) in enumerate(zip(grid, it, strict=True)):
        frames += [
            interval_rows("grid", start + i * hour, 4, timedelta(minutes=15), g / 4),
            interval_rows("it", start + i * hour, 4, timedelta(minutes=15), e / 4),
            interval_rows("cool", start + i * hour, 1, hour, 0.0),
        ]
    intervals = pl.concat(frames).lazy()
    kpis = compute_kpis(
        intervals,
        site,
        None,
        month="2026-10",
        coverage_threshold=0.0,
        kinds=[
            PeriodKind.INTERVAL,
            PeriodKind.HOUR,
            PeriodKind.DAY,
            PeriodKind.MONTH,
            PeriodKind.TTM,
        ],
    )

    def energy(kind: str, metric: str) -> float:
        return float(
            kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric))[
                "value"
            ].sum()
        )

    assert energy("hour", "e_dc_kwh") == pytest.approx(sum(grid))
    for kind in ("day", "month", "ttm"):
        assert energy(kind, "e_dc_kwh") == pytest.approx(sum(grid))
        assert energy(kind, "e_it_kwh") == pytest.approx(sum(it))
    for kind in ("month", "ttm"):
        pue = kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == "pue"))["value"][0]
        assert pue == pytest.approx(sum(grid) / sum(it))
    days = kpis.filter((pl.col("period_kind") == "day") & (pl.col("metric") == "pue"))
    assert days.height == 2
    for day, lo in zip(days["value"], (0, 24), strict=True):
        assert day == pytest.approx(sum(grid[lo : lo + 24]) / sum(it[lo : lo + 24]))

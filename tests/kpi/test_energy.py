"""Worked examples of interval energy, with the arithmetic in comments."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest

from agent.energy import EnergyConfig, EnergyConfigError, IntervalEngine, interval_energy
from agent.schemas import INTERVAL_SCHEMA, IntervalFlag
from agent.site import parse_site
from tests.kpi.helpers import T0, energy_reads, power_reads, reads, small_site

F = IntervalFlag
MIN = 60.0


def grid_rows(frame: pl.DataFrame, config: EnergyConfig | None = None) -> pl.DataFrame:
    site = small_site(register_bits=32, register_unit_kwh=0.01)
    out = interval_energy(frame.lazy(), site, config, with_rejected_counts=True).collect()
    return out.filter(pl.col("meter") == "grid").sort("interval_start")


def test_schema_is_the_contract() -> None:
    site = small_site()
    out = interval_energy(energy_reads([(0, 1.0), (60, 2.0)]).lazy(), site).collect()
    assert out.schema == INTERVAL_SCHEMA


def test_linear_interpolation_at_boundaries() -> None:
    # Reads at 00:00:30 (10.0 kWh) and 00:01:30 (11.2 kWh): 1.2 kWh over 60 s, spread
    # uniformly; interval [00:00,00:01) holds 30 s of it = 0.6, [00:01,00:02) the other 0.6.
    out = grid_rows(energy_reads([(30, 10.0), (90, 11.2)]))
    assert out["energy_kwh"].to_list() == pytest.approx([0.6, 0.6])
    # Each interval is backed by data for 30 of its 60 s.
    assert out["coverage"].to_list() == pytest.approx([0.5, 0.5])
    assert all(f & F.GAP for f in out["flags"])


def test_wrap_of_32_bit_0_01_kwh_register() -> None:
    # Modulus 2^32 x 0.01 kWh = 42,949,672.96 kWh.
    # 00:00 42,949,672.00 -> 00:01 42,949,672.80: +0.80 kWh
    # 00:01 42,949,672.80 -> 00:02 0.64 (wrapped): 0.64 + 42,949,672.96 - 42,949,672.80 = 0.80 kWh
    out = grid_rows(energy_reads([(0, 42_949_672.00), (60, 42_949_672.80), (120, 0.64)]))
    assert out["energy_kwh"].to_list() == pytest.approx([0.80, 0.80], abs=1e-6)
    assert out["coverage"].to_list() == [1.0, 1.0]
    assert out["flags"].to_list() == [0, int(F.WRAP)]


def test_reset_after_reboot_counts_from_new_base_never_adds_back() -> None:
    # 1000.0 -> 1000.5 (+0.5), reboot: -> 0.2 (a decrease, far from the wrap point: a
    # reset), then 0.2 -> 0.7 (+0.5 from the new base). Prometheus' increase() would book
    # 0.2 kWh in the reset minute; we book nothing there (no power readings to bound it)
    # and mark the minute uncovered.
    out = grid_rows(energy_reads([(0, 1000.0), (60, 1000.5), (120, 0.2), (180, 0.7)]))
    assert out["energy_kwh"].to_list() == pytest.approx([0.5, 0.0, 0.5])
    assert out["coverage"].to_list() == [1.0, 0.0, 1.0]
    assert out["flags"][1] == F.RESET | F.GAP
    assert out["energy_kwh"].sum() == pytest.approx(1.0)


def test_reset_bounded_by_power_readings() -> None:
    # Same reboot, but the meter reported 30 kW at 00:01:20 and 00:01:40: the reset minute
    # gets mean power x duration = 30 kW x 1/60 h = 0.5 kWh, flagged estimated, still uncovered.
    frame = pl.concat(
        [
            energy_reads([(0, 1000.0), (60, 1000.5), (120, 0.2), (180, 0.7)]),
            power_reads([(80, 30_000.0), (100, 30_000.0)]),
        ]
    )
    out = grid_rows(frame)
    assert out["energy_kwh"].to_list() == pytest.approx([0.5, 0.5, 0.5])
    assert out["flags"][1] == F.RESET | F.ESTIMATED | F.GAP
    assert out["coverage"][1] == 0.0
    none = grid_rows(frame, EnergyConfig(reset_fill="none"))
    assert none["energy_kwh"][1] == 0.0


def test_meter_silent_for_three_hours_is_spread_and_covered() -> None:
    # 100.0 kWh at 00:00, silent, 190.0 kWh at 03:00: 90 kWh over 180 minutes = 0.5 kWh per
    # minute (30 kW, under the 100 kW rating). The 3 h gap is below max_gap_s (6 h): exact
    # for any period containing it, so covered, but every minute is flagged interpolated.
    out = grid_rows(energy_reads([(0, 100.0), (3 * 3600, 190.0)]))
    assert out.height == 180
    assert out["energy_kwh"].to_list() == pytest.approx([0.5] * 180)
    assert out["energy_kwh"].sum() == pytest.approx(90.0)
    assert set(out["coverage"].to_list()) == {1.0}
    assert set(out["flags"].to_list()) == {int(F.INTERPOLATED)}


def test_gap_longer_than_maximum_keeps_energy_but_is_uncovered() -> None:
    # 7 h silent, 210 kWh: 0.5 kWh/min is still spread (nothing lost), coverage 0.
    out = grid_rows(energy_reads([(0, 100.0), (7 * 3600, 310.0)]))
    assert out.height == 420
    assert out["energy_kwh"].sum() == pytest.approx(210.0)
    assert set(out["coverage"].to_list()) == {0.0}
    assert set(out["flags"].to_list()) == {int(F.INTERPOLATED | F.GAP)}


def test_isolated_spike_rejected_counted_flagged() -> None:
    # 10.0, 10.5, 9000.0 (a garbage read: +8989.5 kWh in 1 min is > 100 kW x 1/60 h x 1.1
    # + 0.01 = 1.8433 kWh), 11.5. 10.5 -> 11.5 over 2 min is plausible, so 9000.0 is an
    # isolated spike: rejected; the energy 10.5 -> 11.5 = 1.0 kWh is spread over 2 minutes.
    out = grid_rows(energy_reads([(0, 10.0), (60, 10.5), (120, 9000.0), (180, 11.5)]))
    assert out["energy_kwh"].to_list() == pytest.approx([0.5, 0.5, 0.5])
    assert out["rejected_readings"].to_list() == [0, 0, 1]
    assert out["flags"][2] & F.REJECTED
    assert out["flags"][1] & F.INTERPOLATED  # the 2-minute segment spans an interval


def test_level_jump_above_rating_rejected_and_new_base() -> None:
    # A meter swap to a higher base: 10.0, 10.5, then 5000.0, 5000.5, 5001.0. The jump is
    # implausible and not isolated (5000.5 follows 5000.0), so the step is rejected (not
    # counted, interval uncovered, REJECTED|RESET) and later reads count from 5000.0.
    out = grid_rows(
        energy_reads([(0, 10.0), (60, 10.5), (120, 5000.0), (180, 5000.5), (240, 5001.0)])
    )
    assert out["energy_kwh"].to_list() == pytest.approx([0.5, 0.0, 0.5, 0.5])
    assert out["flags"][1] & (F.REJECTED | F.RESET) == F.REJECTED | F.RESET
    assert out["rejected_readings"][1] == 1


def test_nan_inf_negative_and_over_rating_power_rejected() -> None:
    frame = pl.concat(
        [
            energy_reads([(0, 10.0), (30, math.nan), (60, 10.5), (90, -1.0), (120, 11.0)]),
            power_reads([(10, -5.0), (20, math.inf), (70, 200_000.0), (80, 30_000.0)]),
        ]
    )
    out = grid_rows(frame)
    # Energy untouched by the bad reads: 0.5 + 0.5.
    assert out["energy_kwh"].to_list() == pytest.approx([0.5, 0.5])
    # Minute 0: NaN register, -5 W, inf W; minute 1: -1 kWh register, 200 kW > 110 kW.
    assert out["rejected_readings"].to_list() == [3, 2]
    assert all(f & F.REJECTED for f in out["flags"])


def test_power_only_meter_trapezoids_estimated_with_max_gap() -> None:
    # Cooling meter: 6 kW at 00:00:00, 12 kW at 00:01:00 -> trapezoid (6+12)/2 kW x 1/60 h
    # = 0.15 kWh. Then silent until 00:20:00 (19 min > max_power_gap 5 min): nothing
    # integrated across, those minutes have no rows. 00:20 -> 00:21 at 12 kW = 0.2 kWh.
    frame = reads(
        "cool", "p", "power_w", [(0, 6000.0), (60, 12000.0), (1200, 12000.0), (1260, 12000.0)]
    )
    site = small_site()
    out = interval_energy(frame.lazy(), site).collect().sort("interval_start")
    assert out["energy_kwh"].to_list() == pytest.approx([0.15, 0.2])
    assert out["method"].to_list() == ["power_integration"] * 2
    assert all(f & F.ESTIMATED for f in out["flags"])


def test_trapezoid_split_at_boundary_uses_interpolated_power() -> None:
    # 0 W at 00:00:30, 12 kW at 00:01:30: power at 00:01:00 is 6 kW. First minute:
    # (0+6)/2 kW x 30 s = 3 kW x 1/120 h = 0.025 kWh; second: (6+12)/2 x 1/120 = 0.075.
    frame = reads("cool", "p", "power_w", [(30, 0.0), (90, 12000.0)])
    out = interval_energy(frame.lazy(), small_site()).collect().sort("interval_start")
    assert out["energy_kwh"].to_list() == pytest.approx([0.025, 0.075])


def test_imported_readings_flagged() -> None:
    frame = reads("grid", "e", "energy_kwh", [(0, 1.0), (60, 2.0)], quality=2)
    out = grid_rows(frame)
    assert out["flags"][0] & F.IMPORTED


def test_interval_must_align_with_local_days() -> None:
    with pytest.raises(EnergyConfigError, match="divide an hour"):
        EnergyConfig(interval_s=7)
    site = small_site()
    kathmandu = parse_site(
        {**site.model_dump(mode="json"), "timezone": "Asia/Kathmandu"}, source="t"
    )
    with pytest.raises(EnergyConfigError, match="UTC offset"):
        EnergyConfig(interval_s=1800).check_site(kathmandu)
    EnergyConfig(interval_s=900).check_site(kathmandu)  # +05:45 is a multiple of 15 min


def test_base_interval_configurable() -> None:
    # 15-minute intervals: reads at 00:00 (0) and 00:30 (3 kWh) -> 1.5 kWh per interval.
    site = small_site()
    out = interval_energy(
        energy_reads([(0, 0.0), (1800, 3.0)]).lazy(), site, EnergyConfig(interval_s=900)
    ).collect()
    grid = out.filter(pl.col("meter") == "grid")
    assert grid["energy_kwh"].to_list() == pytest.approx([1.5, 1.5])
    assert (grid["interval_end"] - grid["interval_start"]).to_list() == [timedelta(minutes=15)] * 2


def test_engine_matches_batch_and_holds_open_intervals() -> None:
    site = small_site(register_bits=32, register_unit_kwh=0.01)
    rows = [(i * 10.0, 100.0 + i * 0.05) for i in range(60)]
    frame = energy_reads(rows)
    engine = IntervalEngine(site)
    first = engine.feed(frame.head(25))
    second = engine.feed(frame.slice(25))
    got = pl.concat([first, second]).filter(pl.col("meter") == "grid")
    # The last read is at 590 s (settled horizon 580 s): minutes 0..8 are final, minute 9
    # is still open.
    assert got["interval_start"].to_list() == [T0 + timedelta(minutes=m) for m in range(9)]
    batch = grid_rows(frame).head(9)
    assert got.equals(batch)
    # A reading older than what is settled is late: dropped and counted.
    engine.feed(energy_reads([(100, 1e6)]))
    assert engine.late_readings == 1

"""Benchmark: journal -> interval energy -> KPIs, vs per-row Python doing the same arithmetic.

Run: ``.venv/bin/python -m tests.bench.bench_kpi [--pdus 2000] [--ticks 240] [--ttm-meters 2000]``.

Prints, in one run: end-to-end readings/s (journal -> intervals -> store -> KPIs), the
per-row Python baseline on a slice of the same readings, their ratio, and the time of
the trailing-twelve-month PUE of a ``--ttm-meters`` site at 1-minute intervals (goal
<= 10 s). A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from agent.energy import EnergyConfig, IntervalEngine
from agent.journal import Journal
from agent.kpi import compute_kpis, month_bounds
from agent.schemas import INTERVAL_SCHEMA, PeriodKind
from agent.site import Site, parse_site
from agent.store import IntervalStore
from collectors.sim.simulator import SiteSimulator, site_table

START = datetime(2026, 10, 10, tzinfo=UTC)


def python_baseline(
    frame: pl.DataFrame, site: Site, interval_s: int = 60
) -> dict[tuple[str, int], float]:
    """Per-row Python: register deltas with wrap check, linear spread over intervals."""
    points = {(m.device, m.energy_point): m for m in site.meters if m.energy_point}
    last: dict[str, tuple[float, float]] = {}
    out: dict[tuple[str, int], float] = {}
    step = float(interval_s)
    for ts, device, point, quantity, value in zip(
        (frame["ts"].dt.epoch("us") / 1e6).to_list(),
        frame["device"].to_list(),
        frame["point"].to_list(),
        frame["quantity"].to_list(),
        frame["value"].to_list(),
        strict=True,
    ):
        if quantity != "energy_kwh":
            continue
        meter = points.get((device, point))
        if meter is None or value != value or value < 0:
            continue
        prev = last.get(meter.id)
        last[meter.id] = (ts, value)
        if prev is None:
            continue
        t0, v0 = prev
        delta = value - v0
        bound = (meter.rating_kw or float("inf")) * (ts - t0) / 3600 * 1.1
        if delta < 0 or delta > bound:
            continue
        k = int(t0 // step)
        while k * step < ts:
            a, b = max(t0, k * step), min(ts, (k + 1) * step)
            out[(meter.id, k)] = out.get((meter.id, k), 0.0) + delta * (b - a) / (ts - t0)
            k += 1
    return out


def end_to_end(pdus: int, ticks: int) -> None:
    sim = SiteSimulator(pdus=pdus)
    site = parse_site(site_table(sim), source="sim")
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite")
        per_batch = 6  # one batch per minute of 10-second ticks
        for i in range(0, ticks, per_batch):
            frame = pl.concat(
                [sim.tick(START + timedelta(seconds=10 * (i + j))) for j in range(per_batch)]
            )
            journal.append(frame, source="sim")
        total = journal.stats()["readings"]
        assert isinstance(total, int)
        store = IntervalStore(Path(tmp) / "store")
        engine = IntervalEngine(site, EnergyConfig())
        t = time.perf_counter()
        seq = 0
        rows = 0
        while page := journal.read(seq, limit=16):
            emitted = engine.feed(pl.concat([b.frame for b in page]))
            store.write_intervals(emitted, tag=f"{page[0].seq:012d}")
            rows += emitted.height
            seq = page[-1].seq
        t_energy = time.perf_counter() - t
        t = time.perf_counter()
        kpis = compute_kpis(store.read_intervals(), site, None, month="2026-10")
        t_kpi = time.perf_counter() - t
        elapsed = t_energy + t_kpi
        print(
            f"site: {len(site.meters)} meters, {total:,} readings "
            f"in {journal.stats()['batches']} batches"
        )
        print(
            f"journal -> intervals -> store: {t_energy:.2f} s "
            f"({total / t_energy:,.0f} readings/s), {rows:,} interval rows"
        )
        print(f"KPIs (all kinds, month): {t_kpi:.2f} s, {kpis.height:,} KPI rows")
        print(f"end to end: {total / elapsed:,.0f} readings/s")
        # Per-row Python on a slice of the same readings (it is slow; extrapolated per reading).
        sample = pl.concat([b.frame for b in journal.read(0, limit=3)])
        t = time.perf_counter()
        python_baseline(sample, site)
        t_py = time.perf_counter() - t
        py_rate = sample.height / t_py
        print(f"per-row Python (energy only, {sample.height:,} readings): {py_rate:,.0f}/s")
        print(
            f"ratio end to end / per-row Python: {total / elapsed / py_rate:.2f}x "
            f"(goal: >= 5,000,000 readings/s end to end)"
        )


def ttm(meters: int) -> None:
    """TTM PUE of a ``meters``-meter site at 1-minute intervals: the month at base intervals,
    the eleven months before it as the store's hourly roll-ups."""
    sim = SiteSimulator(pdus=meters - 19)
    site = parse_site(site_table(sim), source="sim")
    ids = [m.id for m in site.meters]
    # Timing data, but physically shaped: the incomers carry the IT load plus overhead, so
    # the printed PUE lands near 1.25 (a PUE of 0.0015 would look like a bug, not a benchmark).
    it_meters = sum(1 for m in site.meters if m.role.value == "it")
    weight = {m.id: 1.0 for m in site.meters}
    weight.update({m: it_meters * 0.6 for m in ids if m.startswith("grid-")})
    weight.update({m: it_meters * 0.05 for m in ids if m.startswith("pv-")})
    m_start, m_end = month_bounds("2026-10", site.timezone)
    t_start, _ = month_bounds("2025-11", site.timezone)
    rng = np.random.default_rng(1)

    def frame(start: datetime, end: datetime, step: timedelta) -> pl.DataFrame:
        starts = pl.datetime_range(
            start, end, step, closed="left", eager=True, time_unit="us", time_zone="UTC"
        )
        n = starts.len()
        return (
            pl.DataFrame(
                {
                    "meter": pl.Series(ids).repeat_by(n).explode(),
                    "interval_start": pl.concat([starts] * len(ids)),
                }
            )
            .with_columns(
                (pl.col("interval_start") + step).alias("interval_end"),
                pl.Series(
                    "energy_kwh",
                    rng.uniform(0.9, 1.1, n * len(ids))
                    * np.repeat([weight[m] for m in ids], n),
                ),
                pl.lit(1.0).alias("coverage"),
                pl.lit(0, pl.UInt16).alias("flags"),
                pl.lit("register").alias("method"),
            )
            .cast(INTERVAL_SCHEMA)
        )

    t = time.perf_counter()
    hourly = frame(t_start, m_start, timedelta(hours=1))
    minutes = frame(m_start, m_end, timedelta(minutes=1))
    print(
        f"TTM input: {hourly.height:,} hourly + {minutes.height:,} one-minute rows "
        f"(built in {time.perf_counter() - t:.1f} s)"
    )
    t = time.perf_counter()
    kpis = compute_kpis(
        pl.concat([hourly, minutes]).lazy(), site, None, month="2026-10", kinds=[PeriodKind.TTM]
    )
    t_ttm = time.perf_counter() - t
    pue = kpis.filter(pl.col("metric") == "pue")["value"][0]
    print(
        f"TTM PUE ({len(ids)} meters, 1-minute month + hourly roll-ups): "
        f"{t_ttm:.2f} s (pue {pue:.4f})"
    )
    t = time.perf_counter()
    kpis = compute_kpis(pl.concat([hourly, minutes]).lazy(), site, None, month="2026-10")
    print(
        f"all KPI kinds for the month + TTM: {time.perf_counter() - t:.2f} s, {kpis.height:,} rows"
    )


def main() -> None:
    """Parse arguments and run both benchmarks."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--pdus", type=int, default=2000)
    parser.add_argument("--ticks", type=int, default=240)
    parser.add_argument("--ttm-meters", type=int, default=2000)
    args = parser.parse_args()
    end_to_end(args.pdus, args.ticks)
    ttm(args.ttm_meters)


if __name__ == "__main__":
    main()

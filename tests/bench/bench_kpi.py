"""Benchmark: journal -> interval energy -> KPIs, vs per-row Python doing the same arithmetic.

Run: ``.venv/bin/python -m tests.bench.bench_kpi [--pdus 2000] [--ticks 1440] [--ttm-meters 2000]``.

Prints, in one run:

* end-to-end readings/s of a ``--pdus`` site (2,018 meters, a register and a power reading
  each every 10 s): journal -> intervals -> store through the aggregator sink's own
  ``process_page`` (its default page of 64 batches, the next page read while one is
  aggregated, engine state saved per page), then the month's KPIs from the store. The
  median of 5 runs after a warm-up. Default ``--ticks 1440``: 4 hours, 5.8 M readings,
  what the agent catches up after a 4-hour stop; then the same for 40 minutes (one page:
  no read-ahead, and the KPI computation weighs six times more per reading);
* the per-row Python baseline on a slice of the same readings, and the ratio;
* the trailing-twelve-month PUE of a ``--ttm-meters`` site at 1-minute intervals on
  in-memory input (goal <= 10 s; ``bench_ttm_store`` times it from the store).

A minute or two on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from agent.aggregator import Aggregator, AggregatorOptions
from agent.energy import IntervalEngine
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


def _stream_once(journal: Journal, site: Site, root: Path) -> tuple[float, int]:
    """Journal -> intervals -> store as the aggregator sink does it (its ``process_page``,
    default page size, the next page read while one is aggregated). Returns (s, rows)."""
    options = AggregatorOptions()
    sink = Aggregator(
        name="bench", options=options, store_root=root, config=options.energy_config()
    )
    store = IntervalStore(root)
    engine = IntervalEngine(site, sink.config)
    limit = options.page_batches
    t = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(journal.read, 0, limit=limit)
        while page := ahead.result():
            ahead = pool.submit(journal.read, page[-1].seq, limit=limit)
            sink.process_page(engine, store, page)
    return time.perf_counter() - t, sink.intervals_written


def end_to_end(pdus: int, ticks: int, repeats: int = 3) -> None:
    """Readings/s from the journal to the store and the month's KPIs (median of repeats)."""
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
        print(
            f"site: {len(site.meters)} meters, {total:,} readings "
            f"in {journal.stats()['batches']} batches ({ticks} ticks of 10 s)"
        )
        # Warm-up (first use of the IPC reader, thread pools, the kernel's pages).
        _stream_once(journal, site, Path(tmp) / "warm")
        runs = []
        for r in range(repeats):
            root = Path(tmp) / f"store-{r}"
            t_energy, rows = _stream_once(journal, site, root)
            store = IntervalStore(root)
            t = time.perf_counter()
            kpis = compute_kpis(store.read_intervals(), site, None, month="2026-10")
            t_kpi = time.perf_counter() - t
            runs.append((t_energy + t_kpi, t_energy, t_kpi, rows, kpis.height))
        elapsed, t_energy, t_kpi, rows, kpi_rows = sorted(runs)[len(runs) // 2]
        print(
            f"journal -> intervals -> store (sink's process_page, read-ahead): {t_energy:.3f} s "
            f"({total / t_energy:,.0f} readings/s), {rows:,} interval rows"
        )
        print(f"KPIs (all kinds, month, from the store): {t_kpi:.3f} s, {kpi_rows:,} KPI rows")
        print(
            f"end to end (median of {repeats}): {total / elapsed:,.0f} readings/s "
            f"(runs: {', '.join(f'{total / r[0] / 1e6:.2f}' for r in runs)} M/s)"
        )
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


def synthetic_intervals(
    site: Site, start: datetime, end: datetime, step: timedelta, rng: np.random.Generator
) -> pl.DataFrame:
    """INTERVAL_SCHEMA rows of every meter of ``site`` from ``start`` to ``end`` at ``step``.

    Timing data, but physically shaped: the incomers carry the IT load plus overhead, so
    the printed PUE lands near 1.25 (a PUE of 0.0015 would look like a bug, not a benchmark).
    """
    ids = [m.id for m in site.meters]
    it_meters = sum(1 for m in site.meters if m.role.value == "it")
    weight = {m.id: 1.0 for m in site.meters}
    weight.update({m: it_meters * 0.6 for m in ids if m.startswith("grid-")})
    weight.update({m: it_meters * 0.05 for m in ids if m.startswith("pv-")})
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
                rng.uniform(0.9, 1.1, n * len(ids)) * np.repeat([weight[m] for m in ids], n),
            ),
            pl.lit(1.0).alias("coverage"),
            pl.lit(0, pl.UInt16).alias("flags"),
            pl.lit("register").alias("method"),
        )
        .cast(INTERVAL_SCHEMA)
    )


def ttm(meters: int) -> None:
    """TTM PUE of a ``meters``-meter site at 1-minute intervals: the month at base intervals,
    the eleven months before it as the store's hourly roll-ups, passed in memory.

    The same figure read from a real store on disk: ``tests/bench/bench_ttm_store.py``.
    """
    sim = SiteSimulator(pdus=meters - 19)
    site = parse_site(site_table(sim), source="sim")
    m_start, m_end = month_bounds("2026-10", site.timezone)
    t_start, _ = month_bounds("2025-11", site.timezone)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    hourly = synthetic_intervals(site, t_start, m_start, timedelta(hours=1), rng)
    minutes = synthetic_intervals(site, m_start, m_end, timedelta(minutes=1), rng)
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
        f"TTM PUE ({len(site.meters)} meters, 1-minute month + hourly roll-ups): "
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
    parser.add_argument("--ticks", type=int, default=1440)
    parser.add_argument("--ttm-meters", type=int, default=2000)
    args = parser.parse_args()
    end_to_end(args.pdus, args.ticks, repeats=5)
    if args.ticks > 240:
        end_to_end(args.pdus, 240, repeats=5)
    ttm(args.ttm_meters)


if __name__ == "__main__":
    main()

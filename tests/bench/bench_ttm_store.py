"""Benchmark: ``pue-agent kpi --period 2026-10`` of a 2,000-meter site, cold, from the store.

Run: ``.venv/bin/python -m tests.bench.bench_ttm_store [--store DIR] [--earlier-minutes]
[--no-baseline]``.

Goal (issue 6): the trailing-twelve-month PUE of a 2,000-meter site at 1-minute
intervals in <= 10 s on 2 cores. What is timed is what the command runs,
:func:`agent.kpi.from_store.compute_and_store_month` (read the store, compute every KPI
kind, store them),
plus the TTM alone, each in a fresh process right after the store was written (so no
roll-up cache exists yet: "cold"; the OS page cache is not dropped) and then again
(the store's caches on disk). The baseline, in the same run, is the previous reading path:
``read_hourly`` for the eleven months before + the previous ``read_intervals`` for the
month (every row through the de-duplicating sort: 89 M rows) into today's
``compute_kpis`` — it needs ~20 GB of memory and is skipped when less is available.
KPI frames of both paths are compared: same rows, statuses and categories; values equal
to 1e-9 relative, coverage to 1e-12.

The store is written once through ``IntervalStore.write_intervals`` (not timed): the
month at 1-minute intervals, one part per local day (like aggregator pages, ~2.9 M rows
each), and the eleven months before as hourly interval rows, one part per local month
(``--earlier-minutes``: at 1 minute too, ~8 min and ~8 GB more). A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from agent.kpi import month_bounds, shift_month, ttm_bounds
from agent.schemas import INTERVAL_SCHEMA, PeriodKind
from agent.site import Site, parse_site
from agent.store import IntervalStore
from collectors.sim.simulator import SiteSimulator, site_table
from tests.bench.bench_kpi import synthetic_intervals
from tests.kpi.helpers import hourly_parts_summed

MONTH = "2026-10"
GOAL_S = 10.0
BASELINE_GIB = 21.0  # peak RSS of the baseline measured on this machine: ~20 GB


def _site() -> Site:
    return parse_site(site_table(SiteSimulator(pdus=1981)), source="sim")


def build(state: Path, *, earlier_minutes: bool) -> None:
    """Write the benchmark store under ``state/store`` (skipped when already complete)."""
    done = state / f"built-{'minutes' if earlier_minutes else 'hourly'}"
    if done.exists():
        return
    site = _site()
    store = IntervalStore(state / "store")
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    earlier_step = timedelta(minutes=1) if earlier_minutes else timedelta(hours=1)
    for back in range(11, 0, -1):
        start, end = month_bounds(shift_month(MONTH, -back), site.timezone)
        day = start
        # One local day per part at 1 minute (memory), one month per part at 1 hour.
        span = timedelta(days=1) if earlier_minutes else end - start
        while day < end:
            stop = min(day + span, end)
            store.write_intervals(
                synthetic_intervals(site, day, stop, earlier_step, rng),
                tag=f"{back:02d}-{day:%Y%m%d}",
            )
            day = stop
    start, end = month_bounds(MONTH, site.timezone)
    day, page = start, 0
    while day < end:
        page += 1
        frame = synthetic_intervals(site, day, day + timedelta(days=1), timedelta(minutes=1), rng)
        store.write_intervals(frame, tag=f"{page:012d}")
        day += timedelta(days=1)
    print(
        f"store written in {time.perf_counter() - t:.0f} s: {len(site.meters)} meters; "
        f"{MONTH} at 1-minute intervals ({page} parts, one per local day), the 11 months "
        f"before at {'1-minute' if earlier_minutes else '1-hour'} intervals"
    )
    done.touch()


def _old_read_intervals(store: IntervalStore, start: datetime, end: datetime) -> pl.LazyFrame:
    """``IntervalStore.read_intervals`` as it was: every row through the de-duplicating sort."""
    files = [
        f
        for m in {f"{start:%Y-%m}", f"{end:%Y-%m}"}
        for f in (store.root / "intervals" / f"month={m}").glob("part-*.parquet")
    ]
    return (
        pl.scan_parquet(sorted(files), include_file_paths="_file")
        .filter((pl.col("interval_start") >= start) & (pl.col("interval_start") < end))
        .sort("_file", maintain_order=True)
        .unique(["meter", "interval_start"], keep="last", maintain_order=True)
        .select(INTERVAL_SCHEMA.names())
        .sort("meter", "interval_start")
    )


def _old_path(store: IntervalStore, site: Site, kinds: list[PeriodKind] | None) -> pl.DataFrame:
    """The previous ``compute_month`` reading path (into today's ``compute_kpis``).

    The eleven months before from ``read_hourly`` (hourly roll-ups summed over parts),
    the month from the previous ``read_intervals``.
    """
    from agent.kpi import DEFAULT_KINDS, compute_kpis  # noqa: PLC0415

    m_start, m_end = month_bounds(MONTH, site.timezone)
    t_start, _ = ttm_bounds(MONTH, site.timezone)
    intervals = pl.concat(
        [hourly_parts_summed(store, t_start, m_start), _old_read_intervals(store, m_start, m_end)]
    )
    return compute_kpis(intervals, site, None, month=MONTH, kinds=kinds or DEFAULT_KINDS)


def child(mode: str, state: Path, out: Path) -> None:
    """Run one timed call in this (fresh) process; print seconds and peak RSS as JSON."""
    from agent.kpi.from_store import compute_and_store_month, store_kpis  # noqa: PLC0415

    site = _site()
    store = IntervalStore(state / "store")
    t = time.perf_counter()
    if mode == "new-all":
        kpis, _ = compute_and_store_month(store, site, None, MONTH, 0.95)
    elif mode == "new-ttm":
        kpis = store_kpis(store, site, None, month=MONTH, kinds=[PeriodKind.TTM])
    elif mode == "old-all":
        kpis = _old_path(store, site, None)
    else:
        kpis = _old_path(store, site, [PeriodKind.TTM])
    seconds = time.perf_counter() - t
    kpis.write_parquet(out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds": seconds, "peak_gib": peak}))


def _run(mode: str, state: Path, out: Path) -> tuple[float, float]:
    """Run ``child(mode)`` in a fresh interpreter; its seconds and peak RSS (GiB)."""
    command = ["-m", "tests.bench.bench_ttm_store", "--child", mode]
    done = subprocess.run(
        [sys.executable, *command, "--store", str(state), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["peak_gib"])


def _drop_caches(state: Path) -> None:
    """Remove the store's cached month roll-ups (as right after the parts were written)."""
    for cache in (state / "store" / "rollup").glob("month=*/daily.parquet"):
        cache.unlink()


def _available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def same_kpis(a: pl.DataFrame, b: pl.DataFrame) -> str:
    """Empty when equal (values to 1e-9 relative, coverage 1e-12), else what differs."""
    if a.height != b.height:
        return f"{a.height} vs {b.height} rows"
    if not a.drop("value", "coverage").equals(b.drop("value", "coverage")):
        return "periods, metrics, statuses or categories differ"
    for column, tolerance in (("value", 1e-9), ("coverage", 1e-12)):
        x, y = a[column], b[column]
        if not x.is_null().equals(y.is_null()):
            return f"{column}: nulls differ"
        scale = pl.max_horizontal(x.abs(), y.abs(), pl.lit(1e-300))
        worst = pl.select(((x - y).abs() / scale).max()).item()
        if worst is not None and worst > tolerance:
            return f"{column}: relative difference {worst:.2e}"
    return ""


def main() -> None:
    """Build the store, time old and new paths in fresh processes, compare their KPIs."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, help="State directory to (re)use; default temp.")
    parser.add_argument("--earlier-minutes", action="store_true")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.store, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        state = args.store or Path(tmp) / "state"
        build(state, earlier_minutes=args.earlier_minutes)
        out = Path(tmp)
        times = {}
        _drop_caches(state)
        times["new-ttm"] = _run("new-ttm", state, out / "new-ttm.parquet")
        _drop_caches(state)
        times["new-all"] = _run("new-all", state, out / "new-all.parquet")
        times["new-all-warm"] = _run("new-all", state, out / "new-all-warm.parquet")
        print(
            f"new path, TTM only, cold:        {times['new-ttm'][0]:6.2f} s "
            f"(peak {times['new-ttm'][1]:.1f} GiB)  goal <= {GOAL_S:.0f} s"
        )
        print(
            f"new path, `pue-agent kpi`, cold: {times['new-all'][0]:6.2f} s "
            f"(peak {times['new-all'][1]:.1f} GiB)"
        )
        print(f"new path, `pue-agent kpi`, warm: {times['new-all-warm'][0]:6.2f} s")
        available = _available_gib()
        if args.no_baseline:
            print("baseline skipped (--no-baseline)")
            return
        if available < BASELINE_GIB:
            print(f"baseline skipped ({available:.1f} GiB available, needs ~{BASELINE_GIB:.0f})")
            return
        for mode in ("old-ttm", "old-all"):
            times[mode] = _run(mode, state, out / f"{mode}.parquet")
        print(
            f"old path, TTM only:              {times['old-ttm'][0]:6.2f} s "
            f"(peak {times['old-ttm'][1]:.1f} GiB)"
        )
        print(
            f"old path, `pue-agent kpi`:       {times['old-all'][0]:6.2f} s "
            f"(peak {times['old-all'][1]:.1f} GiB)"
        )
        print(
            f"speed-up (cold): TTM {times['old-ttm'][0] / times['new-ttm'][0]:.1f}x, "
            f"all kinds {times['old-all'][0] / times['new-all'][0]:.1f}x"
        )
        pairs = (("new-ttm", "old-ttm"), ("new-all", "old-all"), ("new-all-warm", "old-all"))
        for new, old in pairs:
            diff = same_kpis(
                pl.read_parquet(out / f"{old}.parquet"), pl.read_parquet(out / f"{new}.parquet")
            )
            print(f"KPIs {new} vs {old}: {diff or 'same (float tolerance)'}")


if __name__ == "__main__":
    main()

"""Benchmark: ``pue-agent report`` for a large site, and ``verify`` of its bundle.

    .venv/bin/python -m tests.bench.bench_report [--meters 2000] [--days 31] [--no-baseline]

Goal (issue 9): 2,000 meters at 1-minute intervals over 31 days (~89 M interval rows):
report ≤ 60 s and ≤ 4 GiB peak memory; verify ≤ 30 s.

What is measured is what an operator runs. The data is generated once (not timed) into a
real interval store through ``IntervalStore.write_intervals`` (one part per local day,
tagged like aggregator pages, with its hourly roll-up), plus hourly roll-up parts for
the 22 months of history; the signing key is created with ``keys.init_key``. The report
child then calls :func:`agent.report.run.run_report` — the body of ``pue-agent report``:
settings, site model, key, the month read from the store, history from its roll-ups,
bundle and zip. Report and verify each run in a fresh process, so the peak RSS printed
is theirs alone. A baseline ``--no-csv`` report runs in the same invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from agent import keys
from agent.periods import month_bounds, shift_month
from agent.report.run import run_report
from agent.report.verify import verify_bundle
from agent.settings import AgentSettings, load_settings
from agent.store import IntervalStore
from tests.report.simdata import intervals_for, sim_site

MONTH = "2026-10"
GOAL_REPORT_S, GOAL_PEAK_GIB, GOAL_VERIFY_S = 60.0, 4.0, 30.0


def _settings(work: Path) -> AgentSettings:
    site = json.loads((work / "site.json").read_text(encoding="utf-8"))
    return load_settings(None, state_dir=work / "state", site=site)


def _generate(work: Path, meters: int, days: int) -> None:
    stamp = work / f"store-{meters}-{days}.done"
    if stamp.exists():
        return
    sim, site = sim_site(pdus=meters - 18)  # the simulator adds 18 non-PDU meters
    assert len(site.meters) == meters
    work.mkdir(parents=True, exist_ok=True)
    (work / "site.json").write_text(json.dumps(site.model_dump(mode="json")), encoding="utf-8")
    settings = _settings(work)
    store = IntervalStore(settings.state_dir / "store")
    start, _ = month_bounds(MONTH, site.timezone)
    for day in range(days):
        t0 = start + timedelta(days=day)
        frame = intervals_for(sim, site, t0, t0 + timedelta(days=1), timedelta(minutes=1))
        store.write_intervals(frame, tag=f"{day + 1:012d}")
    # History: the store's hourly roll-up parts for the 22 months before (what
    # ``read_history`` reads), written in the documented layout, one part per UTC month.
    h_start, _ = month_bounds(shift_month(MONTH, -22), site.timezone)
    for back in range(22, 0, -1):
        m_start, m_end = month_bounds(shift_month(MONTH, -back), site.timezone)
        rows = intervals_for(sim, site, m_start, m_end, timedelta(hours=1))
        for (label,), part in (
            rows.with_columns(month=pl.col("interval_start").dt.strftime("%Y-%m"))
            .partition_by("month", as_dict=True)
            .items()
        ):
            target = store.root / "hourly" / f"month={label}" / f"part-history-{back:02d}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            part.drop("month").write_parquet(target, compression="zstd")
    assert h_start < start
    with contextlib.suppress(keys.SigningKeyError):  # key of an interrupted generation
        keys.init_key(settings)
    stamp.touch()


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) of this process: unlike the wall time,
    it does not depend on what else runs on the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child_report(work: Path, out: Path, csv: bool) -> None:
    logging.basicConfig(level=logging.DEBUG, format="%(message)s", stream=sys.stderr)
    for noisy in ("matplotlib", "fontTools", "weasyprint", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = _settings(work)
    out.mkdir(parents=True, exist_ok=True)
    key = keys.load_signing_key(settings)
    (out / "bench.pub.pem").write_text(keys.public_key_pem(key.public), encoding="ascii")
    t0, cpu0 = time.perf_counter(), _cpu_s()
    run_report(settings, MONTH, langs=("zh", "en"), out_dir=out, overwrite=True, csv=csv)
    elapsed, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    figures = {
        "seconds": round(elapsed, 1),
        "cpu_s": round(cpu, 1),
        "peak_gib": round(_peak_gib(), 2),
    }
    print(json.dumps(figures))


def _child_verify(out: Path) -> None:
    bundle = next(p for p in out.iterdir() if p.is_dir())
    t0 = time.perf_counter()
    result = verify_bundle(bundle, pubkey=out / "bench.pub.pem")
    elapsed = time.perf_counter() - t0
    failure = result.first_failure
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 1),
                "peak_gib": round(_peak_gib(), 2),
                "ok": result.ok,
                "failure": failure.detail if failure else None,
            }
        )
    )


def _verdict(ok: bool) -> str:
    return "meets goal" if ok else "MISSES goal"


def _run(base: list[str], *extra: str) -> tuple[dict[str, Any], list[str]]:
    done = subprocess.run([*base, *extra], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    stages = [line for line in done.stderr.splitlines() if line.startswith("report stage")]
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures, stages


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pue-bench-report-store"))
    parser.add_argument("--no-csv", action="store_true", help="(child) report without CSV")
    parser.add_argument("--no-baseline", action="store_true", help="skip the --no-csv run")
    parser.add_argument("--child", choices=["report", "verify"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work: Path = args.work / f"{args.meters}x{args.days}"
    if args.child == "report":
        _child_report(work, args.out, not args.no_csv)
        return
    if args.child == "verify":
        _child_verify(args.out)
        return
    t0 = time.perf_counter()
    _generate(work, args.meters, args.days)
    print(f"store ready in {time.perf_counter() - t0:.0f} s ({work})", flush=True)
    rows = args.meters * args.days * 1440
    print(f"{args.meters:,} meters x {args.days} days at 1 min = {rows:,} interval rows")
    base = [
        sys.executable,
        "-m",
        "tests.bench.bench_report",
        "--meters",
        str(args.meters),
        "--days",
        str(args.days),
        "--work",
        str(args.work),
    ]
    runs: list[tuple[str, Path, list[str]]] = [
        ("report (CSV + Parquet, as shipped)", work / "out", [])
    ]
    if not args.no_baseline:
        runs.append(("baseline: report --no-csv", work / "out-nocsv", ["--no-csv"]))
    for label, out, extra in runs:
        figures, stages = _run(base, "--child", "report", "--out", str(out), *extra)
        print(f"{label}:")
        for line in stages:
            print("    " + line)
        seconds, peak = figures["seconds"], figures["peak_gib"]
        print(
            f"  report {seconds} s ({_verdict(seconds <= GOAL_REPORT_S)} <= {GOAL_REPORT_S:.0f} s),"
            f" peak {peak} GiB ({_verdict(peak <= GOAL_PEAK_GIB)} <= {GOAL_PEAK_GIB:.0f} GiB),"
            f" CPU {figures['cpu_s']} s, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if extra:
            continue
        vfig, _ = _run(base, "--child", "verify", "--out", str(out))
        state = "OK" if vfig["ok"] else f"FAILED: {vfig['failure']}"
        print(
            f"  verify {vfig['seconds']} s ({_verdict(vfig['seconds'] <= GOAL_VERIFY_S)} <= "
            f"{GOAL_VERIFY_S:.0f} s), peak {vfig['peak_gib']} GiB, {state}",
            flush=True,
        )
        sizes = {p.name: p.stat().st_size for p in out.rglob("*") if p.is_file()}
        print("  largest files:", sorted(sizes.items(), key=lambda kv: -kv[1])[:4])


if __name__ == "__main__":
    main()

"""Benchmark: monthly report bundle for a large site, and ``verify`` of it.

    .venv/bin/python -m tests.bench.bench_report [--meters 2000] [--days 31] [--no-csv]

Goal (issue 9): 2,000 meters at 1-minute intervals over 31 days (~89 M interval rows):
report ≤ 60 s and ≤ 4 GiB peak memory; verify ≤ 30 s. The interval data is generated
once into a Parquet store under ``--work`` (not timed); the report and verify each run in
a fresh process so their peak RSS is their own.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.keys import SigningKey, public_key_pem
from agent.report.bundle import ReportRequest, build_bundle
from agent.report.periods import month_bounds, shift_month
from agent.report.rollup import daily_rollup
from agent.report.verify import verify_bundle
from agent.site import parse_site
from tests.report.simdata import intervals_for, sim_site

MONTH = "2026-10"


def _generate(work: Path, meters: int, days: int) -> None:
    stamp = work / f"data-{meters}-{days}.done"
    if stamp.exists():
        return
    sim, site = sim_site(pdus=meters - 18)  # the simulator adds 18 non-PDU meters
    assert len(site.meters) == meters
    (work / "store").mkdir(parents=True, exist_ok=True)
    (work / "site.json").write_text(json.dumps(site.model_dump(mode="json")), encoding="utf-8")
    start, _ = month_bounds(MONTH, site.timezone)
    for day in range(days):
        t0 = start + timedelta(days=day)
        frame = intervals_for(sim, site, t0, t0 + timedelta(days=1), timedelta(minutes=1))
        frame.write_parquet(work / "store" / f"day-{day:02d}.parquet", compression="zstd")
    # History: what the store's roll-ups give for the 22 months before (per meter, per day).
    h_start, _ = month_bounds(shift_month(MONTH, -22), site.timezone)
    hourly = intervals_for(sim, site, h_start, start, timedelta(hours=6))
    daily_rollup(hourly.lazy(), site).sink_parquet(work / "history.parquet")
    stamp.touch()


def _child_report(work: Path, out: Path, csv: bool) -> None:
    logging.basicConfig(level=logging.DEBUG, format="%(message)s", stream=sys.stderr)
    for noisy in ("matplotlib", "fontTools", "weasyprint", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    site = parse_site(json.loads((work / "site.json").read_text(encoding="utf-8")), source="b")
    key = SigningKey(Ed25519PrivateKey.generate(), "bench")
    (out / "bench.pub.pem").write_text(public_key_pem(key.public), encoding="ascii")
    request = ReportRequest(
        site=site,
        month=MONTH,
        intervals=pl.scan_parquet(sorted((work / "store").glob("day-*.parquet"))),
        history=pl.scan_parquet(work / "history.parquet"),
        csv=csv,
    )
    t0 = time.perf_counter()
    build_bundle(request, key, out, ("zh", "en"), overwrite=True)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(json.dumps({"seconds": round(elapsed, 1), "peak_gib": round(peak, 2)}))


def _child_verify(out: Path) -> None:
    bundle = next(p for p in out.iterdir() if p.is_dir())
    t0 = time.perf_counter()
    result = verify_bundle(bundle, pubkey=out / "bench.pub.pem")
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    failure = result.first_failure
    print(
        json.dumps(
            {
                "seconds": round(elapsed, 1),
                "peak_gib": round(peak, 2),
                "ok": result.ok,
                "failure": failure.detail if failure else None,
            }
        )
    )


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pue-bench-report"))
    parser.add_argument("--no-csv", action="store_true")
    parser.add_argument("--child", choices=["report", "verify"])
    args = parser.parse_args()
    work: Path = args.work / f"{args.meters}x{args.days}"
    out = work / "out"
    if args.child == "report":
        _child_report(work, out, not args.no_csv)
        return
    if args.child == "verify":
        _child_verify(out)
        return
    t0 = time.perf_counter()
    _generate(work, args.meters, args.days)
    print(f"data ready in {time.perf_counter() - t0:.0f} s ({work})", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = args.meters * args.days * 1440
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
    report = subprocess.run(
        [*base, "--child", "report", *(["--no-csv"] if args.no_csv else [])],
        capture_output=True,
        text=True,
        check=False,
    )
    if report.returncode:
        sys.exit(f"report failed:\n{report.stderr[-3000:]}")
    figures = json.loads(report.stdout.strip().splitlines()[-1])
    for line in report.stderr.splitlines():
        if line.startswith("report stage"):
            print("  " + line)
    print(f"report: {rows:,} interval rows, {figures['seconds']} s, peak {figures['peak_gib']} GiB")
    verify = subprocess.run(
        [*base, "--child", "verify"], capture_output=True, text=True, check=True
    )
    vfig = json.loads(verify.stdout.strip().splitlines()[-1])
    print(
        f"verify: {vfig['seconds']} s, peak {vfig['peak_gib']} GiB, "
        f"{'OK' if vfig['ok'] else 'FAILED: ' + str(vfig['failure'])}"
    )
    sizes = {p.name: p.stat().st_size for p in (out).rglob("*") if p.is_file()}
    print("largest files:", sorted(sizes.items(), key=lambda kv: -kv[1])[:4])


if __name__ == "__main__":
    main()

"""Benchmark: 100 policy packs x 36 months of KPIs through ``rules.engine.evaluate``.

Run with ``.venv/bin/python -m tests.bench.bench_rules``. Target (issue 8): one
evaluation of 100 packs over a 36-month KPI history in under 1 s.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import polars as pl

from agent.site import SiteFacts
from rules.engine import evaluate
from rules.pack import Pack, load_packs, parse_pack
from tests.rules.helpers import SITE, frame, kpi, months

PACKS = 100
MONTHS = 36
REPEATS = 7
METRICS = {
    "pue": 1.17,
    "ref": 0.82,
    "carbon_traceability": 0.9,
    "rack_occupancy": 0.68,
    "cue": 0.3,
    "flexible_load_share": 0.2,
    "latency_city_ms": 0.8,
    "latency_region_ms": 2.5,
    "latency_hub_ms": 18.0,
    "e_dc_kwh": 800_000.0,
}


def packs() -> list[Pack]:
    """100 packs: the built-in ones cloned under new ids (same rule mix as production)."""
    builtin = load_packs(None).packs
    result: list[Pack] = []
    for i in range(PACKS):
        raw: dict[str, Any] = builtin[i % len(builtin)].model_dump(mode="json")
        old = raw["id"]
        raw["id"] = f"{old}-copy{i}"
        for rule in raw["rules"]:
            rule["id"] = rule["id"].replace(old, raw["id"], 1)
        result.append(parse_pack(raw, source=f"bench-{i}"))
    return result


def kpis() -> pl.DataFrame:
    """36 months of month and TTM rows for every metric the packs read, with a drift."""
    rows = []
    for step, label in enumerate(months("2024-01", MONTHS)):
        for metric, base in METRICS.items():
            value = base * (1 + 0.002 * ((step % 7) - 3))
            for kind in ("month", "ttm"):
                rows.append(kpi(metric, value, period=label, kind=kind))
    return frame(rows)


def main() -> None:
    """Time one evaluation (last month) and a full sweep over all 36 months."""
    pack_list = packs()
    history = kpis()
    facts = SiteFacts(
        racks=5000, compute_share_pct=80, project_type="new", equipment_purchase_cny=1e8
    )
    rules = sum(len(p.rules) for p in pack_list)
    last = months("2024-01", MONTHS)[-1]

    timings = []
    findings = pl.DataFrame()
    for _ in range(REPEATS):
        start = time.perf_counter()
        findings = evaluate(pack_list, history, facts, site=SITE, period=last)
        timings.append(time.perf_counter() - start)
    print(
        f"{PACKS} packs ({rules} rules) x {MONTHS} months of KPIs ({history.height} rows), "
        f"one period: median {statistics.median(timings) * 1000:.1f} ms, "
        f"max {max(timings) * 1000:.1f} ms over {REPEATS} runs; {findings.height} findings"
    )

    start = time.perf_counter()
    total = 0
    for label in months("2024-01", MONTHS):
        total += evaluate(pack_list, history, facts, site=SITE, period=label).height
    sweep = time.perf_counter() - start
    print(f"all {MONTHS} periods in turn: {sweep * 1000:.1f} ms ({total} findings)")
    verdict = "PASS" if max(timings) < 1.0 else "FAIL"
    print(f"{verdict}: one evaluation < 1 s")


if __name__ == "__main__":
    main()

"""``pue-agent demo``: the agent on its embedded default, with no external server.

The demo starts simulated devices **behind the real protocols** on loopback ports — SNMP
agents answering as APC rack PDUs and Smart-UPSes, an in-process MQTT broker with Shelly Pro
3EM meters, a Modbus TCP gateway with the grid incomers (pymodbus), a Redfish service for a
GPU server, BACnet/IP chillers (bacpypes3), all serving
data the project generates — and
polls them with the real collectors (``--no-protocols``: the in-process ``sim`` collector
instead). Either way the local store computes interval
energy, and ``--minutes`` ends with a sample monthly report generated on an accelerated clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from agent.journal import Journal
from agent.periods import month_bounds
from agent.pipeline import Agent
from agent.plugins import Collector, Consumer, ConsumerContext, build_collector, build_consumer
from agent.realtime import LatestPower
from agent.settings import AgentSettings, CollectorEntry, load_settings
from agent.site import Site, parse_site
from agent.store import IntervalStore
from collectors.sim.devices.demo_site import DemoDevices
from collectors.sim.simulator import SiteSimulator, site_table

__all__ = ["DemoView", "demo_settings", "run_demo", "simulate_month"]

_ROLE_ORDER = ("grid_import", "onsite_renewable", "it", "cooling", "other")


@dataclass
class DemoView:
    """A consumer that follows the journal and renders live figures in the terminal."""

    name: str = "demo-view"
    console: Console = field(default_factory=Console)
    store_root: Path | None = None
    latest: LatestPower | None = None
    readings_by_source: Counter[str] = field(default_factory=Counter)
    devices_by_source: dict[str, set[str]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _since_start: str = "—"
    _stored: dict[str, str] = field(default_factory=dict)
    _last_energy_check: float = 0.0

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        return "live terminal view of the journal"

    async def run(self, ctx: ConsumerContext) -> None:
        """Follow the journal from the view's cursor until the agent stops."""
        assert ctx.site is not None, "the demo view needs a site model"
        self.latest = LatestPower(ctx.site)
        cursor = ctx.journal.cursor(self.name)
        with Live(self._render(ctx), console=self.console, refresh_per_second=2) as live:
            while True:
                page = await asyncio.to_thread(
                    ctx.journal.read, cursor, limit=256, kinds=("readings",)
                )
                for batch in page:
                    self.latest.update(batch.frame)
                    self.readings_by_source[batch.source] += batch.frame.height
                    seen = self.devices_by_source.setdefault(batch.source, set())
                    seen.update(batch.frame["device"].unique().to_list())
                    cursor = batch.seq
                if page:
                    ctx.journal.advance_cursor(self.name, cursor)
                await self._refresh_energy(ctx)
                live.update(self._render(ctx))
                if page:
                    continue
                if ctx.stopping.is_set():
                    return
                ctx.new_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.new_data.wait(), timeout=1.0)

    async def _refresh_energy(self, ctx: ConsumerContext) -> None:
        """Figures from the store: energy PUE so far, today's PUE, REF, findings."""
        if self.store_root is None or ctx.site is None:
            return
        if time.monotonic() - self._last_energy_check < 5.0:
            return
        self._last_energy_check = time.monotonic()
        self._stored = await asyncio.to_thread(_stored_figures, self.store_root, ctx.site)
        if time.monotonic() - self.started < 600:
            # Real rack-PDU registers count 0.1 kWh (~70 s of a 5 kW rack): over a few minutes
            # the energy ratio is dominated by that resolution, so it is not shown yet.
            self._since_start = "— (after 10 min: PDU registers count 0.1 kWh steps)"
            return
        self._since_start = await asyncio.to_thread(_energy_pue, self.store_root, ctx.site)

    def _render(self, ctx: ConsumerContext) -> Group:
        head_seq, head_hash = ctx.journal.head
        elapsed = max(time.monotonic() - self.started, 1e-6)
        site = ctx.site
        table = Table(title=f"pue-agent demo — {site.name if site else '?'}", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        snap = self.latest.snapshot(stale_after_s=30.0) if self.latest else None
        if snap is not None:
            pue = f"{snap.pue_realtime:.3f}" if snap.pue_realtime else "—"
            table.add_row("PUE (realtime, power ratio)", pue)
            table.add_row("PUE (interval energy since start)", self._since_start)
            for label, value in self._stored.items():
                table.add_row(label, value)
            table.add_row("as of (UTC)", str(snap.as_of)[:19] if snap.as_of else "—")
            table.add_row("meters reporting", f"{snap.meters_reporting}/{snap.meters_total}")
            if snap.stale_meters:
                table.add_row("meters silent > 30 s", ", ".join(snap.stale_meters[:6]))
            for role in _ROLE_ORDER:
                if role in snap.power_by_role_w:
                    table.add_row(f"power {role}", f"{snap.power_by_role_w[role] / 1000:,.1f} kW")
        for source in sorted(self.readings_by_source):
            devices = len(self.devices_by_source.get(source, ()))
            table.add_row(
                f"readings via {source}",
                f"{self.readings_by_source[source]:,} from {devices} "
                f"device{'' if devices == 1 else 's'}",
            )
        total = sum(self.readings_by_source.values())
        table.add_row("readings/s", f"{total / elapsed:,.0f}")
        table.add_row("journal head", f"#{head_seq} {head_hash[:16]}…")
        return Group(table)


def _energy_pue(store_root: Path, site: Site) -> str:

    start = datetime.now(UTC) - timedelta(days=1)
    intervals = IntervalStore(store_root).read_intervals(start, datetime.now(UTC) + timedelta(1))
    rows = intervals.select("meter", "energy_kwh").collect()
    if rows.height == 0:
        return "— (first interval not closed yet)"
    energy = dict(rows.group_by("meter").agg(pl.col("energy_kwh").sum()).iter_rows())
    try:
        e_dc = sum(sign * energy[m] for sign, m in site.expand("e_dc"))
        e_it = sum(sign * energy[m] for sign, m in site.expand("e_it"))
    except KeyError:
        return "— (not every meter has a closed interval yet)"
    return f"{e_dc / e_it:.3f} (E_DC {e_dc:,.2f} kWh / E_IT {e_it:,.2f} kWh)" if e_it else "—"


def _kpi_text(kpis: pl.DataFrame, kind: str, metric: str, digits: int = 3) -> str:
    rows = kpis.filter((pl.col("period_kind") == kind) & (pl.col("metric") == metric))
    if rows.height == 0:
        return "— (not computed yet)"
    row = rows.sort("period_start").row(-1, named=True)
    coverage = f"coverage {row['coverage']:.0%}" if row["coverage"] is not None else ""
    if row["status"] != "ok" or row["value"] is None:
        return f"insufficient data ({coverage}, {row['period']})"
    category = f", category {row['category']}" if row["category"] is not None else ""
    return f"{row['value']:.{digits}f} ({row['period']}{category}, {coverage})"


def _stored_figures(store_root: Path, site: Site) -> dict[str, str]:
    """Today's PUE, the month's REF and the findings, as the aggregator last stored them."""
    store = IntervalStore(store_root)
    month = datetime.now(site.zone).strftime("%Y-%m")
    kpis = store.read_kpis(month=month)
    findings = store.read_findings(month=month)
    counts = Counter(findings["result"].to_list()) if findings.height else Counter()
    summary = ", ".join(f"{n} {result}" for result, n in sorted(counts.items())) or "—"
    return {
        "PUE today (local day, energy)": _kpi_text(kpis, "day", "pue"),
        "REF / green share (month)": _kpi_text(kpis, "month", "ref", 2),
        f"rule findings {month}": summary,
    }


def _ports(ports: list[int]) -> str:
    """``udp/39337,44716``, not a Python list."""
    return ",".join(str(port) for port in ports)


def demo_settings(
    state_dir: Path,
    *,
    site: dict[str, Any],
    collectors: list[dict[str, Any]],
) -> AgentSettings:
    """Settings for the demo: its collectors, its site model, its own state directory."""
    return load_settings(
        None,
        state_dir=state_dir,
        site=site,
        collectors=[CollectorEntry(**entry) for entry in collectors],
    )


async def _run_agent(
    settings: AgentSettings,
    consumers: list[Consumer],
    *,
    seconds: float | None,
    until_collectors_done: bool = False,
) -> int:

    site: Site = parse_site(settings.site or {}, source="demo")
    collectors: list[Collector] = [
        build_collector(e.kind, e.name or e.kind, e.options(), settings)
        for e in settings.collectors
    ]
    journal = Journal(settings.journal_path)
    agent = Agent(
        settings=settings, site=site, collectors=collectors, consumers=consumers, journal=journal
    )
    runner = asyncio.create_task(agent.run())
    deadline = None if seconds is None else time.monotonic() + seconds
    while not runner.done():
        if deadline is not None and time.monotonic() >= deadline:
            break
        if (
            until_collectors_done
            and agent.collector_tasks
            and all(t.done() for t in agent.collector_tasks.values())
        ):
            break
        await asyncio.wait({runner}, timeout=0.5)
    agent.stop()
    await runner
    return agent.committed_readings


async def run_demo(
    state_dir: Path,
    *,
    seconds: float | None,
    pdus: int,
    interval_s: float,
    protocols: bool,
    console: Console,
) -> tuple[AgentSettings, int]:
    """Run the live part of the demo; returns its settings and the readings committed."""
    devices: DemoDevices | None = None
    if protocols:
        devices = DemoDevices(pdus=pdus, interval_s=interval_s)
        await devices.start()
        settings = demo_settings(state_dir, site=devices.site(), collectors=devices.collectors())
        console.print(
            f"simulated devices on loopback: SNMP udp/{devices.snmp_port} "
            f"({pdus} APC rPDU2 PDUs, 4 APC Smart-UPS), MQTT tcp/{devices.mqtt_port} "
            f"(Shelly Pro 3EM meters), Modbus tcp/{devices.modbus_port} (grid incomers, "
            "CHINT DTSU666), "
            f"Redfish http/{_ports(devices.redfish_ports)} (GPU server BMC), "
            f"BACnet/IP udp/{_ports(devices.bacnet_ports)} (chillers); "
            f"{devices.wrap_device}'s 31-bit energy register wraps within the first minute"
        )
    else:
        sim = SiteSimulator(pdus=pdus)
        settings = demo_settings(
            state_dir,
            site=site_table(sim),
            collectors=[{"kind": "sim", "name": "sim", "pdus": pdus, "interval_s": interval_s}],
        )
    view = DemoView(console=console, store_root=settings.store_path())
    store = build_consumer("aggregator", "aggregator", {"kpi_refresh_s": 10.0}, settings)
    try:
        committed = await _run_agent(settings, [view, store], seconds=seconds)
    finally:
        if devices is not None:
            await devices.stop()
    # The live view may stop before the aggregator's last KPI refresh (both end with the
    # agent): what the store holds once everything has stopped, as a last table.
    site = parse_site(settings.site or {}, source="demo")
    final = Table(title="stored by the aggregator at stop", show_header=False)
    final.add_column("what", style="bold")
    final.add_column("value", justify="right")
    for label, value in _stored_figures(settings.store_path(), site).items():
        final.add_row(label, value)
    # Without a terminal the live view's last frame ends without a newline.
    console.print()
    console.print(final)
    return settings, committed


async def simulate_month(state_dir: Path, month: str, *, pdus: int) -> AgentSettings:
    """Generate one local month of 1-minute readings on an accelerated clock, into the store."""
    sim = SiteSimulator(pdus=pdus)
    table = site_table(sim)
    start, end = month_bounds(month, table["timezone"])
    settings = demo_settings(
        state_dir,
        site=table,
        collectors=[
            {
                "kind": "sim",
                "name": "sim-month",
                "pdus": pdus,
                "interval_s": 60.0,
                "speed": 1e9,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "ticks_per_batch": 240,
            }
        ],
    )
    store = build_consumer("aggregator", "aggregator", {}, settings)
    await _run_agent(settings, [store], seconds=None, until_collectors_done=True)
    return settings

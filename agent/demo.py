"""``pue-agent demo``: the agent on its embedded default, a simulated site, no servers needed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from agent.journal import Journal
from agent.plugins import ConsumerContext
from agent.realtime import LatestPower
from agent.settings import AgentSettings, CollectorEntry, load_settings
from agent.site import Site, parse_site
from collectors.sim.simulator import SiteSimulator, site_table

__all__ = ["DemoView", "demo_settings", "register"]

_ROLE_ORDER = ("grid_import", "onsite_renewable", "it", "cooling", "other")


@dataclass
class DemoView:
    """A consumer that follows the journal and renders live figures in the terminal."""

    name: str = "demo-view"
    console: Console = field(default_factory=Console)
    latest: LatestPower | None = None
    batches: int = 0
    readings: int = 0
    started: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        """One line for ``pue-agent check``."""
        return "live terminal view of the journal"

    async def run(self, ctx: ConsumerContext) -> None:
        """Follow the journal from the view's cursor until the agent stops."""
        assert ctx.site is not None, "the demo view needs a site model"
        self.latest = LatestPower(ctx.site)
        cursor = ctx.journal.cursor(self.name)
        with Live(
            self._render(ctx), console=self.console, refresh_per_second=2, transient=False
        ) as live:
            while True:
                page = await asyncio.to_thread(
                    ctx.journal.read, cursor, limit=256, kinds=("readings",)
                )
                for batch in page:
                    self.latest.update(batch.frame)
                    self.batches += 1
                    self.readings += batch.frame.height
                    cursor = batch.seq
                if page:
                    ctx.journal.advance_cursor(self.name, cursor)
                    live.update(self._render(ctx))
                    continue
                if ctx.stopping.is_set():
                    live.update(self._render(ctx))
                    return
                ctx.new_data.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.new_data.wait(), timeout=1.0)

    def _render(self, ctx: ConsumerContext) -> Group:
        head_seq, head_hash = ctx.journal.head
        elapsed = max(time.monotonic() - self.started, 1e-6)
        site = ctx.site
        title = f"pue-agent demo — {site.name if site else '?'}"
        table = Table(title=title, show_header=False, expand=False)
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        snap = self.latest.snapshot() if self.latest else None
        if snap is not None:
            pue = f"{snap.pue_realtime:.3f}" if snap.pue_realtime else "—"
            table.add_row("PUE (realtime, power ratio)", pue)
            table.add_row("as of (UTC)", str(snap.as_of)[:19] if snap.as_of else "—")
            table.add_row("meters reporting", f"{snap.meters_reporting}/{snap.meters_total}")
            for role in _ROLE_ORDER:
                if role in snap.power_by_role_w:
                    table.add_row(f"power {role}", f"{snap.power_by_role_w[role] / 1000:,.1f} kW")
        table.add_row("readings journalled (view)", f"{self.readings:,}")
        table.add_row("readings/s", f"{self.readings / elapsed:,.0f}")
        table.add_row("journal head", f"#{head_seq} {head_hash[:16]}…")
        return Group(table)


def demo_settings(state_dir: Path, *, pdus: int, interval_s: float, speed: float) -> AgentSettings:
    """Settings of the embedded default: one sim collector and its matching site model."""
    sim = SiteSimulator(pdus=pdus)
    return load_settings(
        None,
        state_dir=state_dir,
        site=site_table(sim),
        collectors=[
            CollectorEntry(
                kind="sim", name="demo-site", pdus=pdus, interval_s=interval_s, speed=speed
            )
        ],
    )


async def run_demo(settings: AgentSettings, seconds: float | None, console: Console) -> int:
    """Run the agent with the live view for ``seconds`` (or until Ctrl-C)."""
    from agent.pipeline import Agent  # noqa: PLC0415
    from agent.plugins import build_collector  # noqa: PLC0415

    site: Site = parse_site(settings.site or {}, source="demo")
    collectors = [
        build_collector(e.kind, e.name or e.kind, e.options(), settings)
        for e in settings.collectors
    ]
    journal = Journal(
        settings.journal_path, budget_bytes=int(settings.journal.budget_mb * 1024 * 1024)
    )
    view = DemoView(console=console)
    agent = Agent(
        settings=settings, site=site, collectors=collectors, consumers=[view], journal=journal
    )
    runner = asyncio.create_task(agent.run())
    if seconds is not None:
        done, _ = await asyncio.wait({runner}, timeout=seconds)
        if not done:
            agent.stop()
    await runner
    return agent.committed_readings


def register(app: typer.Typer) -> None:
    """Add ``pue-agent demo``."""

    @app.command()
    def demo(
        minutes: Annotated[float | None, typer.Option(help="Stop after N minutes.")] = None,
        state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its journal.")] = Path(
            "pue-agent-demo"
        ),
        pdus: Annotated[int, typer.Option(help="Simulated rack PDUs.")] = 24,
        interval_s: Annotated[float, typer.Option(help="Simulated seconds per reading.")] = 5.0,
        speed: Annotated[float, typer.Option(help="Simulated seconds per wall second.")] = 5.0,
    ) -> None:
        """Run the agent on a simulated site (no external servers) with a live view."""
        from agent.logs import configure_logging  # noqa: PLC0415

        configure_logging("warning", "console")
        settings = demo_settings(state_dir, pdus=pdus, interval_s=interval_s, speed=speed)
        console = Console()
        seconds = minutes * 60 if minutes is not None else None
        committed = asyncio.run(run_demo(settings, seconds, console))
        report = Journal(settings.journal_path).verify()
        console.print(
            f"{committed:,} readings journalled this run; journal "
            f"{'verified OK' if report.ok else 'BROKEN: ' + str(report.problem)} "
            f"({report.batches_checked} batches) in {settings.journal_path}"
        )

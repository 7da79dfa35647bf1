"""``pue-agent demo``: the agent on its embedded default, a simulated site, with a live view."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent.demo import run_demo, simulate_month
from agent.journal import Journal
from agent.logs import configure_logging
from agent.periods import shift_month
from agent.report.demo import write_demo_report

__all__ = ["demo"]


def demo(
    minutes: Annotated[
        float | None, typer.Option(help="Stop after N minutes, then write a sample report.")
    ] = None,
    state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its data.")] = Path(
        "pue-agent-demo"
    ),
    pdus: Annotated[int, typer.Option(help="Simulated rack PDUs.")] = 8,
    interval_s: Annotated[float, typer.Option(help="Seconds between polls.")] = 5.0,
    protocols: Annotated[
        bool, typer.Option(help="Simulated devices behind SNMP, MQTT and Redfish.")
    ] = True,
    report: Annotated[
        bool, typer.Option(help="After --minutes, simulate last month and report on it.")
    ] = True,
) -> None:
    """Run the agent on a simulated site (no external servers) with a live view."""
    configure_logging("warning", "console")
    console = Console()
    seconds = minutes * 60 if minutes is not None else None
    settings, committed = asyncio.run(
        run_demo(
            state_dir,
            seconds=seconds,
            pdus=pdus,
            interval_s=interval_s,
            protocols=protocols,
            console=console,
        )
    )
    check = Journal(settings.journal_path).verify()
    console.print(
        f"{committed:,} readings journalled this run; journal "
        f"{'verified OK' if check.ok else 'BROKEN: ' + str(check.problem)} "
        f"({check.batches_checked} batches) in {settings.journal_path}"
    )
    if minutes is not None and report:
        _sample_report(state_dir / "sample-month", pdus=pdus, console=console)


def _sample_report(state_dir: Path, *, pdus: int, console: Console) -> None:
    now_local = datetime.now(UTC) + timedelta(hours=8)
    month = shift_month(now_local.strftime("%Y-%m"), -1)
    console.print(f"simulating {month} at 1-minute resolution on an accelerated clock…")
    started = time.monotonic()
    settings = asyncio.run(simulate_month(state_dir, month, pdus=pdus))
    console.print(f"  done in {time.monotonic() - started:.1f} s")
    bundle = write_demo_report(settings, month, console=console)
    console.print(f"sample monthly report: {bundle}")

"""Modbus benchmark: meter polls/s and client CPU per 20-register poll, beside a plain loop.

Run: ``.venv/bin/python -m tests.bench.bench_modbus`` (about 20 s; ``--seconds`` per run).

Both clients poll the same pymodbus servers (Modbus TCP, two processes standing for two
gateways, so their CPU is not counted) serving a 20-register meter: 20 uint16 power values
at 0..19, function 3.
Client CPU is user+system time of this process divided by the polls completed.

* ``plain pymodbus loop`` — pymodbus's async client reading each register with its own
  request (20 requests per poll), one loop per connection: the reference.
* ``pue-agent modbus``    — this collector: the map coalesced into one 20-register request,
  values decoded and buffered into reading frames (journal excluded: ``emit`` counts rows),
  devices on their own cadence (set to 1 ms, so they poll back to back).

Both use the same number of TCP connections (buses / gateways), with several units each.
Goals (issue 17): >= 2,000 meter polls/s, <= 1/5 of the plain loop's CPU per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
from pymodbus.client import AsyncModbusTcpClient

from agent.plugins import CollectorContext
from agent.settings import AgentSettings
from collectors.modbus import build
from tests.servers import stop_process
from tests.servers.modbus import serve_map_process

MAP = (
    'name = "bench-meter20"\nvendor = "bench"\nmodel = "20 registers"\n'
    'document = { title = "benchmark meter", version = "1" }\n'
    '[defaults]\nfunction = 3\ntype = "uint16"\n'
    + "".join(
        f'[[registers]]\npoint = "p{i}"\nquantity = "power_w"\naddress = {i}\n' for i in range(20)
    )
)
BUSES = 4
SERVERS = 2
UNITS_PER_BUS = 4


async def plain_loop(ports: list[int], seconds: float) -> tuple[int, float, float]:
    """(polls, wall s, CPU s) of one-request-per-register loops, one per connection."""
    clients = [AsyncModbusTcpClient("127.0.0.1", port=ports[b % len(ports)]) for b in range(BUSES)]
    for c in clients:
        await c.connect()
    polls = 0
    stop = False

    async def loop(client: AsyncModbusTcpClient) -> None:
        nonlocal polls
        unit = 0
        while not stop:
            unit = unit % UNITS_PER_BUS + 1
            values = []
            for address in range(20):
                r = await client.read_holding_registers(address, count=1, device_id=unit)
                values.append(r.registers[0])
            polls += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(loop(c)) for c in clients]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for c in clients:
        c.close()
    return polls, wall, cpu


async def collector_run(
    ports: list[int], maps_dir: Path, seconds: float
) -> tuple[int, float, float]:
    """(polls, wall s, CPU s) of the modbus collector polling every unit back to back."""
    options: dict[str, Any] = {
        "flush_s": 0.5,
        "maps_dir": str(maps_dir),
        "buses": [
            {"name": f"gw{b}", "host": "127.0.0.1", "port": ports[b % len(ports)]}
            for b in range(BUSES)
        ],
        "defaults": {"interval_s": 0.001, "jitter_s": 0.0, "timeout_s": 2.0},
        "devices": [
            {"name": f"m{b}-{u}", "bus": f"gw{b}", "unit": u, "map": "bench-meter20"}
            for b in range(BUSES)
            for u in range(1, UNITS_PER_BUS + 1)
        ],
    }
    collector = build("bench", options, AgentSettings(state_dir=Path("/nonexistent")))
    collector.first_poll_now = True
    rows = 0

    async def emit(batch: pl.DataFrame) -> None:
        nonlocal rows
        rows += batch.height

    ctx = CollectorContext(name="bench", settings=collector.settings, emit=emit)  # type: ignore[arg-type]
    task = asyncio.create_task(collector.run(ctx))
    await asyncio.sleep(1.0)  # connect and warm up
    start_polls = sum(s.finished for s in collector.states.values())
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    polls = sum(s.finished for s in collector.states.values()) - start_polls
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    failures = sum(sum(s.failures.values()) for s in collector.states.values())
    assert failures == 0, f"{failures} failed polls"
    assert rows >= 20 * polls, (rows, polls)
    return polls, wall, cpu


def main() -> None:
    """Run both clients against the same server processes and print one table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-modbus-") as tmp:
        maps_dir = Path(tmp)
        (maps_dir / "bench-meter20.toml").write_text(MAP, encoding="utf-8")
        # One server process per two gateways: pymodbus's server, not the client, is the
        # slower side, and real gateways are separate devices.
        servers = [
            serve_map_process("bench-meter20", UNITS_PER_BUS, maps_dir) for _ in range(SERVERS)
        ]
        ports = [port for _, port in servers]
        try:
            # A stuck run fails loudly instead of hanging the benchmark script.
            limit = args.seconds + 60
            plain = asyncio.run(asyncio.wait_for(plain_loop(ports, args.seconds), limit))
            ours = asyncio.run(
                asyncio.wait_for(collector_run(ports, maps_dir, args.seconds), limit)
            )
        finally:
            for proc, _ in servers:
                stop_process(proc)
    rows = [("plain pymodbus loop", *plain), ("pue-agent modbus", *ours)]
    setup = f"{BUSES} connections x {UNITS_PER_BUS} units, {SERVERS} server processes"
    print(f"\n{setup}, 20-register meter, {args.seconds:g} s each")
    print(f"{'client':22} {'polls/s':>9} {'CPU us/poll':>12} {'requests/poll':>14}")
    for (name, polls, wall, cpu), requests in zip(rows, (20, 1), strict=True):
        print(f"{name:22} {polls / wall:9.0f} {cpu / polls * 1e6:12.0f} {requests:14d}")
    ratio = (ours[2] / ours[0]) / (plain[2] / plain[0])
    print(
        f"\npue-agent CPU per poll = {ratio:.3f} x the plain loop's (goal <= 0.2); "
        f"{ours[0] / ours[1]:.0f} polls/s (goal >= 2,000)"
    )


if __name__ == "__main__":
    main()

"""Benchmark: Redfish polls/s against 500 simulated BMCs served locally.

Run: ``.venv/bin/python -m tests.bench.bench_redfish [--bmcs 500] [--seconds 5]``

A subprocess (``tests.servers.redfish``) serves a real capture on one port per BMC with
pre-rendered answers, so the server costs little and runs on the other core. The client
side is the collector's own code: one :class:`RedfishClient` per BMC (keep-alive), a
:class:`DevicePoller` with its discovered plan, all BMCs polled concurrently under the
collector's default concurrency limit (64). Client CPU is this process's CPU time.

Baseline in the same script: the naive way, a new default ``httpx.AsyncClient`` (new TCP
connection, default TLS context) for every poll, same plan and same requests.

Figures seen on the 2-core team machine (load average ≈ 5 from other work), 500 BMCs:
  real/dell (2 req/poll):           keep-alive ≈ 437 polls/s, 2.2 ms client CPU/poll;
                                    baseline ≈ 35 polls/s, 28 ms client CPU/poll
  real/nvidia_viking (15 req/poll): keep-alive ≈ 50-72 polls/s, 14-15 ms client CPU/poll

Goal (issue 5): all 500 BMCs polled every 30 s on one core, i.e. ≥ 16.7 polls/s using less
than one core, which is a client CPU budget of 60 ms per poll.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from agent.logs import configure_logging
from collectors.redfish.client import ClientConfig, RedfishClient
from collectors.redfish.plan import PlanEvaluator
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import load_profile

GOAL_POLLS_PER_S = 500 / 30.0


@dataclass
class Figures:
    """What one run measured."""

    label: str
    polls: int
    requests: int
    wall_s: float
    cpu_s: float

    @property
    def polls_per_s(self) -> float:
        return self.polls / self.wall_s

    @property
    def cpu_ms_per_poll(self) -> float:
        return 1000 * self.cpu_s / self.polls

    def line(self) -> str:
        one_core = 1000 / self.cpu_ms_per_poll
        return (
            f"{self.label:<34} {self.polls_per_s:9.1f} polls/s"
            f"  {self.cpu_ms_per_poll:7.2f} ms CPU/poll  {self.requests / self.polls:5.1f} req/poll"
            f"  one-core capacity {one_core:8.1f} polls/s"
            f" ({one_core * 30:7.0f} BMCs @30 s)"
        )


def start_servers(tree: str, count: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.redfish", "--tree", tree, "--count", str(count)],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ports: list[int] = json.loads(proc.stdout.readline())
    return proc, ports


def config(i: int, port: int) -> ClientConfig:
    return ClientConfig(device=f"bmc-{i}", url=f"http://127.0.0.1:{port}", auth="none")


async def discover_all(ports: list[int]) -> tuple[list[DevicePoller], Figures]:
    """One poller per BMC, its tree walked once (timed: the start-up cost)."""
    profile = load_profile()
    limiter = asyncio.Semaphore(64)
    pollers = [
        DevicePoller(RedfishClient(config(i, port), limiter), profile)
        for i, port in enumerate(ports)
    ]
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(p.poll() for p in pollers))
    requests = sum(p.client.requests for p in pollers)
    return pollers, Figures(
        "discovery+first poll",
        len(pollers),
        requests,
        time.monotonic() - wall0,
        time.process_time() - cpu0,
    )


async def run(
    pollers: list[DevicePoller], ports: list[int], seconds: float, *, naive: bool, label: str
) -> Figures:
    """Poll every BMC back to back for ``seconds`` (all BMCs concurrently)."""
    limiter = asyncio.Semaphore(64)
    polls = 0
    requests = 0
    deadline = time.monotonic() + seconds

    async def loop(poller: DevicePoller, i: int) -> None:
        nonlocal polls, requests
        plan = poller.plan
        assert plan is not None
        while time.monotonic() < deadline:
            if naive:
                # Baseline: what a quick script does, a fresh default httpx client (new
                # connection, default TLS context) for every poll, same plan and requests.
                async with (
                    limiter,
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[i]}") as http,
                ):
                    evaluator = PlanEvaluator(poller.device)
                    for fetch in plan.fetches:
                        evaluator.take(fetch, (await http.get(fetch.path)).json())
                    frame = evaluator.finish(plan, datetime.now(UTC))
                requests += len(plan.fetches)
            else:
                before = poller.client.requests
                result = await poller.poll()
                assert not result.errors, result.errors
                frame = result.frame
                requests += poller.client.requests - before
            assert frame.height
            polls += 1

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(loop(p, i) for i, p in enumerate(pollers)))
    return Figures(label, polls, requests, time.monotonic() - wall0, time.process_time() - cpu0)


async def bench_tree(tree: str, ports: list[int], seconds: float) -> None:
    pollers, discovery = await discover_all(ports)
    print(
        f"{tree}: discovery of {len(ports)} BMCs: {discovery.wall_s:.1f} s wall,"
        f" {discovery.cpu_s:.1f} s CPU, {discovery.requests / len(ports):.0f} requests per BMC"
    )
    ours = await run(pollers, ports, seconds, naive=False, label=f"{tree}: keep-alive")
    print(ours.line())
    base = await run(pollers, ports, seconds, naive=True, label=f"{tree}: baseline new client")
    print(base.line())
    print(
        f"{'':<34} keep-alive/baseline: {ours.polls_per_s / base.polls_per_s:.2f}x polls/s,"
        f" {base.cpu_ms_per_poll / ours.cpu_ms_per_poll:.2f}x less CPU per poll;"
        f" goal met: {ours.polls_per_s >= GOAL_POLLS_PER_S and ours.cpu_ms_per_poll < 60}\n"
    )
    await asyncio.gather(*(p.client.aclose() for p in pollers))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bmcs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    # real/nvidia_viking (15 requests per poll, 168 to discover) is the heavy case: add it
    # with --trees real/dell,real/nvidia_viking (its discovery of 500 BMCs takes ~1-2 min).
    parser.add_argument("--trees", default="real/dell")
    args = parser.parse_args()
    configure_logging("warning", "console")
    print(f"Redfish benchmark: {args.bmcs} BMCs on 127.0.0.1, {args.seconds:g} s per run")
    print(f"goal: {GOAL_POLLS_PER_S:.1f} polls/s (every BMC every 30 s) on one core\n")
    for tree in args.trees.split(","):
        proc, ports = start_servers(tree, args.bmcs)
        try:
            asyncio.run(bench_tree(tree, ports, args.seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()

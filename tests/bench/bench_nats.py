"""Campus transport benchmark: readings/s from 10 agents through JetStream into one consumer.

Run: ``.venv/bin/python -m tests.bench.bench_nats`` (about a minute; ``--quick`` shortens it).

One ``nats-server`` with JetStream on loopback (file store, R1). Ten publishing agents
each hold real journal batches of the simulated site (``SiteSimulator``, 3 ticks of
2,000 PDUs per batch: 12,108 readings, ~120 kB of Arrow IPC + LZ4) and one consumer
takes them all in:

* ``core NATS pair`` — the transport's ceiling: the same payload bytes published on
  core NATS by ten connections and received by one subscriber (nothing stored, no acks);
* ``bare nats-py JetStream pair`` — the baseline the goal is measured against: the same
  bytes published to a JetStream stream (file store) by ten nats-py publishers waiting
  for the acks, fetched by one pull consumer that acknowledges them; no headers, no
  checks. The difference to the core pair is the server storing every byte;
* ``JetStream, pue-agent path`` — what the ``nats`` sink and collector do: each agent
  publishes its batches with the chain headers and ``Nats-Msg-Id`` and waits for the
  stream's acks (pipelined per page, as the sink does); the consumer fetches from a
  durable pull consumer, parses the headers, re-derives every batch's SHA-256 link and
  checks each agent's chain continuity, and acknowledges each page.

Then the aggregator side on its own (``collector into the journal``): ten agents' batches
(each agent with devices of its own) wait on the stream and the ``nats`` collector's page
handling takes them in through the durable consumer — chain checks, decode and schema
check, de-duplication, emit into a real journal (fsynced), its merge-state transaction,
the ack. Also printed: decoding payloads into reading frames, readings/s on one core.

Goal (issue 18): at least 500,000 readings/s into the consumer (both the transport and
the collector into the aggregator's journal) and at least 80 % of the bare pair's rate.
The bare pair is the bare JetStream one: the stream is the issue's transport (durable,
replicated), and the ratio measures what pue-agent adds to it (chain headers, parsing,
SHA-256 links, continuity). Against core NATS, which stores nothing, the ratio is
printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors
import polars as pl
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from agent.journal import AppendResult, Journal, RawBatch, decode_payload
from agent.plugins import CollectorContext, build_collector
from agent.settings import AgentSettings
from collectors.nats.collector import NatsCollector
from collectors.nats.link import encode_headers, parse_message
from collectors.nats.merge import MergeState
from collectors.sim.simulator import SiteSimulator
from tests.servers.nats import start_nats

GOAL_READINGS_S = 500_000
GOAL_RATIO = 0.8
AGENTS = 10


def _batches(folder: Path, count: int) -> list[RawBatch]:
    """``count`` real journal batches of the simulated site (chain fields included)."""
    sim = SiteSimulator(pdus=2000)
    journal = Journal(folder / "journal.sqlite")
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(count):
        ticks = [sim.tick(t0 + timedelta(seconds=10 * (3 * i + k))) for k in range(3)]
        journal.append(pl.concat(ticks), source="sim")
    batches = journal.read_raw(0, limit=count)
    journal.close()
    return batches


async def _bare(url: str, batches: list[RawBatch]) -> float:
    """Seconds for ten core-NATS publishers to deliver every payload to one subscriber."""
    total = AGENTS * len(batches)
    done = asyncio.Event()
    received = 0

    async def on_message(msg: Msg) -> None:
        nonlocal received
        received += 1
        if received == total:
            done.set()

    consumer = await nats.connect(url)
    await consumer.subscribe("bare.>", cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1)
    await consumer.flush()
    publishers = [await nats.connect(url) for _ in range(AGENTS)]
    started = time.perf_counter()

    async def publish(i: int, client: Client) -> None:
        for batch in batches:
            await client.publish(f"bare.agent{i}", batch.payload)
        await client.flush()

    await asyncio.gather(*(publish(i, c) for i, c in enumerate(publishers)))
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - started
    for client in [*publishers, consumer]:
        await client.close()
    return elapsed


async def _jetstream(url: str, batches: list[RawBatch], run: int, *, pue: bool) -> float:
    """Seconds for ten acked JetStream publishers to reach one pull consumer.

    ``pue``: the pue-agent path (chain headers and ``Nats-Msg-Id``; the consumer parses
    them, re-derives each link and checks continuity); otherwise the bare nats-py pair
    (payload only, the consumer just receives and acknowledges).
    """
    stream, prefix = f"BENCH{run}{'P' if pue else 'B'}", f"bench{run}{'p' if pue else 'b'}"
    admin = await nats.connect(url)
    js = admin.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"], duplicate_window=600.0))
    total = AGENTS * len(batches)
    publishers = [await nats.connect(url) for _ in range(AGENTS)]
    consumer = await nats.connect(url)
    cjs = consumer.jetstream()
    sub = await cjs.pull_subscribe(
        f"{prefix}.>",
        durable="bench",
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1),
    )
    heads: dict[str, tuple[int, bytes]] = {}
    started = time.perf_counter()

    async def publish(i: int, client: Client) -> None:
        pjs = client.jetstream(timeout=30)
        agent = f"agent{i}"
        for start in range(0, len(batches), 256):
            page = batches[start : start + 256]
            futures = [
                await pjs.publish_async(
                    f"{prefix}.{agent}",
                    b.payload,
                    headers=encode_headers(agent, b) if pue else None,
                )
                for b in page
            ]
            await asyncio.gather(*futures)

    async def consume() -> None:
        seen = 0
        while seen < total:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs if pue else ():
                batch = parse_message(msg)
                verdict = MergeState.check(
                    batch.seq, batch.prev_hash, batch.link_ok(), head=heads.get(batch.agent)
                )
                if verdict.action != "take" or verdict.problem is not None:
                    raise RuntimeError(f"{batch.agent}:{batch.seq}: {verdict}")
                heads[batch.agent] = (batch.seq, batch.hash)
            await msgs[-1].ack()
            seen += len(msgs)

    await asyncio.gather(consume(), *(publish(i, c) for i, c in enumerate(publishers)))
    elapsed = time.perf_counter() - started
    for client in [*publishers, consumer]:
        await client.close()
    await js.delete_stream(stream)
    await admin.close()
    return elapsed


def _agent_batches(folder: Path, agent: int, count: int) -> list[RawBatch]:
    """An agent's own journal batches: the simulated site with device names of its own."""
    sim = SiteSimulator(pdus=2000, seed=agent + 1)
    journal = Journal(folder / f"agent{agent}.sqlite")
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i in range(count):
        ticks = pl.concat([sim.tick(t0 + timedelta(seconds=10 * (3 * i + k))) for k in range(3)])
        renamed = ticks.with_columns(pl.format("a{}-{}", pl.lit(agent), "device").alias("device"))
        journal.append(renamed, source="sim")
    batches = journal.read_raw(0, limit=count)
    journal.close()
    return batches


async def _into_journal(url: str, folder: Path, per_agent: int) -> tuple[int, float]:
    """Readings and seconds for the ``nats`` collector to take a published backlog in.

    Ten agents' batches (each agent its own devices) are published first; then the
    collector's page handling runs on the durable consumer: chain checks, decode and
    schema check, de-duplication against the newest reading per point, emit into a real
    journal (fsynced), the merge state's transaction, the ack.
    """
    stream = "BENCHC"
    client = await nats.connect(url)
    js = client.jetstream(timeout=30)
    await js.add_stream(StreamConfig(name=stream, subjects=["benchc.>"], duplicate_window=600.0))
    readings = 0
    for agent in range(AGENTS):
        batches = _agent_batches(folder, agent, per_agent)
        readings += sum(b.n_rows for b in batches)
        futures = [
            await js.publish_async(
                f"benchc.a{agent}", b.payload, headers=encode_headers(f"a{agent}", b)
            )
            for b in batches
        ]
        await asyncio.gather(*futures)
    settings = AgentSettings(state_dir=folder / "aggregator")
    collector = build_collector(
        "nats", "campus", {"servers": [url], "stream": stream, "subject_prefix": "benchc"}, settings
    )
    assert isinstance(collector, NatsCollector)
    journal = Journal(folder / "aggregator" / "journal.sqlite")

    async def emit(batch: pl.DataFrame) -> AppendResult | None:
        return await asyncio.to_thread(journal.append, batch, source="campus")

    ctx = CollectorContext(name="campus", settings=settings, emit=emit)
    sub = await js.pull_subscribe(
        "benchc.>",
        durable="bench",
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1),
    )
    total = AGENTS * per_agent
    started = time.perf_counter()
    while collector.state.position < total:
        msgs = await sub.fetch(64, timeout=5.0)
        await collector._handle(ctx, msgs)
        await msgs[-1].ack()
    elapsed = time.perf_counter() - started
    assert collector.emitted_readings == readings, "every reading taken in once"
    journal.close()
    await client.close()
    return readings, elapsed


def main() -> None:
    """Print the figures (best of the runs for both paths)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer batches and one run")
    args = parser.parse_args()
    per_agent = 20 if args.quick else 80
    runs = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        batches = _batches(folder, per_agent)
        readings = sum(b.n_rows for b in batches) * AGENTS
        megabytes = sum(len(b.payload) for b in batches) * AGENTS / 1e6
        cluster = start_nats(folder / "nats", nodes=1)
        try:
            url = cluster.urls[0]
            core, bare, jet = [], [], []
            for run in range(runs):
                core.append(asyncio.run(_bare(url, batches)))
                bare.append(asyncio.run(_jetstream(url, batches, run, pue=False)))
                jet.append(asyncio.run(_jetstream(url, batches, run, pue=True)))
            merged, merge_s = asyncio.run(_into_journal(url, folder, max(2, per_agent // 4)))
        finally:
            cluster.stop()
        started = time.perf_counter()
        for batch in batches:
            decode_payload(batch.payload)
        decode_s = (time.perf_counter() - started) * AGENTS
    core_rate, into_rate = readings / min(core), merged / merge_s
    bare_rate, jet_rate = readings / min(bare), readings / min(jet)
    print(
        f"{AGENTS} agents x {per_agent} journal batches = {readings:,} readings, "
        f"{megabytes:.1f} MB of payload"
    )
    print(f"  core NATS pair (no store)   {core_rate:>14,.0f} readings/s  ({min(core):.2f} s)")
    print(f"  bare nats-py JetStream pair {bare_rate:>14,.0f} readings/s  ({min(bare):.2f} s)")
    print(f"  JetStream, pue-agent path   {jet_rate:>14,.0f} readings/s  ({min(jet):.2f} s)")
    print(f"  pue-agent / bare JetStream  {jet_rate / bare_rate:>14.0%}")
    print(f"  pue-agent / core NATS       {jet_rate / core_rate:>14.0%}")
    print(f"  payload decode (one core)   {readings / decode_s:>14,.0f} readings/s")
    print(
        f"  collector into the journal  {into_rate:>14,.0f} readings/s  "
        f"({merged:,} readings of 10 agents' own devices: verify, dedupe, fsync, ack)"
    )
    ok = min(jet_rate, into_rate) >= GOAL_READINGS_S and jet_rate / bare_rate >= GOAL_RATIO
    print(
        f"goal >= {GOAL_READINGS_S:,} readings/s (transport and into the aggregator's "
        f"journal) and >= {GOAL_RATIO:.0%} of bare JetStream: "
        f"{'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

"""A campus over a real three-node NATS JetStream cluster on loopback.

Publishing agents (``sim`` collector on an accelerated clock + ``nats`` sink, stream R3)
and site aggregator hosts (``nats`` collector + aggregator) run as real agents in this
event loop. The expected intervals are a single agent's (``helpers.reference_intervals``):
120 ticks of 10 s of 4 PDUs and the facility meters, 60 s intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import polars as pl
import pytest

from agent.journal import Journal
from collectors.nats.link import encode_headers
from tests.cluster.helpers import (
    aggregator_agent,
    assert_equal_intervals,
    collector_of,
    publisher_agent,
    reading_totals,
    reference_intervals,
    sim_readings,
    sink_of,
    store_intervals,
    wait_for,
)
from tests.paths import ROOT
from tests.servers.nats import NatsCluster, start_nats

TICKS = 120  # 20 simulated minutes, 40 journal batches per publisher
SPEED = 600.0  # 2 s of wall time


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = start_nats(tmp_path_factory.mktemp("nats"), nodes=3)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return asyncio.run(reference_intervals(tmp_path_factory.mktemp("reference"), TICKS))


def _link(cluster: NatsCluster, name: str) -> dict[str, Any]:
    """Stream, subjects and timeouts of one test (each test has its own stream)."""
    return {
        "servers": cluster.urls,
        "stream": f"PUE_{name.upper()}",
        "subject_prefix": f"pue.{name}",
        "replicas": 3,
        "request_timeout_s": 2.0,
        "connect_timeout_s": 1.0,
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 1.0,
    }


_COLLECTOR: dict[str, Any] = {"lease_ttl_s": 2.0, "fetch_wait_s": 0.2, "fetch_batches": 32}


async def wait_for_async(attempt: Callable[[], Awaitable[Any]], what: str) -> None:
    """Retry ``attempt`` (a JetStream request) until it succeeds, for up to 15 s."""
    deadline = time.monotonic() + 15.0
    while True:
        try:
            await attempt()
            return
        except nats.js.errors.Error:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}") from None
            await asyncio.sleep(0.2)


async def _stream_state(cluster: NatsCluster, stream: str) -> Any:
    client = await nats.connect(servers=cluster.urls)
    try:
        return (await client.jetstream().stream_info(stream)).state
    finally:
        await client.close()


async def test_killing_one_nats_node_during_ingest_loses_nothing(
    cluster: NatsCluster, reference: pl.DataFrame, tmp_path: Path
) -> None:
    link = _link(cluster, "t1")
    site = aggregator_agent(tmp_path / "agg", link, "agg-1", **_COLLECTOR)
    pub = publisher_agent(tmp_path / "pub", link, "poller-a", TICKS, speed=SPEED)
    try:
        sink, merged = sink_of(pub), collector_of(site)
        await wait_for(lambda: sink.published >= 10, "10 batches acknowledged")
        cluster.kill(0)
        await wait_for(lambda: sink.published >= TICKS // 3, "every batch acknowledged", 40)
        total = sim_readings(TICKS).height
        await wait_for(lambda: merged.emitted_readings == total, "every reading merged", 40)
        await wait_for(site.aggregated, "every merged batch aggregated")
        await pub.stop()
        await site.stop()
    finally:
        pub.kill()
        site.kill()
        cluster.restart(0)
    state = await _stream_state(cluster, "PUE_T1")
    assert state.messages == TICKS // 3  # nothing lost, nothing stored twice
    assert merged.batches_duplicate == 0 and merged.batches_rejected == 0
    assert_equal_intervals(store_intervals(tmp_path / "agg"), reference)


async def test_redundant_pair_each_poller_down_in_turn_equals_a_single_agent(
    cluster: NatsCluster, reference: pl.DataFrame, tmp_path: Path
) -> None:
    # Two hosts poll the same meters (same simulated site and clock). Poller a is killed,
    # comes back (its simulated clock restarts: a backlog of polls b already delivered),
    # then b is killed and a finishes alone. The aggregator keeps one reading per poll.
    link = _link(cluster, "t2")
    speed = SPEED / 2  # both pollers must overlap in time
    site = aggregator_agent(tmp_path / "agg", link, "agg-1", **_COLLECTOR)
    pub_a = publisher_agent(tmp_path / "a", link, "poller-a", TICKS, speed=speed)
    pub_b = publisher_agent(tmp_path / "b", link, "poller-b", TICKS, speed=speed)
    try:
        merged = collector_of(site)
        await wait_for(lambda: sink_of(pub_a).published >= TICKS // 12, "a quarter of a's")
        pub_a.kill()
        await pub_a.wait_killed()
        pub_a = publisher_agent(tmp_path / "a", link, "poller-a", TICKS, speed=speed)
        b_sent = sink_of(pub_b).published
        await wait_for(lambda: sink_of(pub_b).published >= b_sent + 3, "b alone for a while")
        pub_b.kill()
        await pub_b.wait_killed()
        total = sim_readings(TICKS).height
        await wait_for(lambda: merged.emitted_readings == total, "every poll merged once", 40)
        await wait_for(site.aggregated, "every merged batch aggregated")
        await pub_a.stop()
        await site.stop()
    finally:
        pub_a.kill()
        pub_b.kill()
        site.kill()
    assert sink_of(pub_b).published < TICKS // 3  # b really was down at the end
    assert merged.deduplicated_readings > 0  # both pollers' readings arrived for a while
    assert merged.disagreeing_readings == 0
    assert_equal_intervals(store_intervals(tmp_path / "agg"), reference)
    # The source agent of every merged batch is recorded; a's chain continued after restart.
    provenance = merged.state.provenance()
    assert set(provenance["agent"]) == {"poller-a", "poller-b"}
    assert not merged.state.breaks()
    assert merged.state.heads["poller-a"][0] > TICKS // 3


async def test_standby_aggregator_takes_over_with_nothing_lost_or_doubled(
    cluster: NatsCluster, reference: pl.DataFrame, tmp_path: Path
) -> None:
    # The active aggregator runs in a process of its own and is SIGKILLed mid-ingest: no
    # clean stop, its lease is not released and must expire before the standby takes over.
    link = _link(cluster, "t3")
    spec = {"state_dir": str(tmp_path / "x"), "link": link, "holder": "agg-x"}
    log = tmp_path / "agg-x.log"
    with log.open("wb") as out:
        active = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.cluster.spawn",
                json.dumps({**spec, "collector": _COLLECTOR}),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    standby = None
    # The journal is published whether or not an aggregator is up yet: agg-x's start-up
    # (a new Python process) overlaps with the ingest.
    pub = publisher_agent(tmp_path / "pub", link, "poller-a", TICKS, speed=SPEED)
    try:
        await wait_for(lambda: b"aggregator lease taken" in log.read_bytes(), "agg-x leasing", 30)
        standby = aggregator_agent(tmp_path / "y", link, "agg-y", **_COLLECTOR)
        y = collector_of(standby)
        await wait_for(
            lambda: (
                _position(tmp_path / "x") >= TICKS // 9
                and any((tmp_path / "x" / "store" / "intervals").rglob("*.parquet"))
            ),
            "agg-x merging and aggregating",
        )
        assert not y.active and y.emitted_readings == 0  # one lease holder consumes
        active.kill()
        active.wait()
        killed_at = time.monotonic()
        await wait_for(lambda: y.active, "agg-y taking the lease over", 10)
        assert time.monotonic() - killed_at < 2.0 + 1.0  # the lease TTL, plus a poll
        total = sim_readings(TICKS).height
        await wait_for(lambda: y.emitted_readings == total, "agg-y merged everything", 40)
        await wait_for(standby.aggregated, "agg-y aggregated everything")
        await pub.stop()
        await standby.stop()
    finally:
        if active.poll() is None:
            active.kill()
            active.wait()
        pub.kill()
        if standby is not None:
            standby.kill()
    # The new holder's store holds every interval once, equal to a single agent's; the
    # intervals the old holder finished are the same numbers.
    assert_equal_intervals(store_intervals(tmp_path / "y"), reference)
    old = store_intervals(tmp_path / "x")
    assert 0 < old.height < reference.height
    assert_equal_intervals(
        old,
        reference.join(old["meter", "interval_start"], on=["meter", "interval_start"]).sort(
            "meter", "interval_start"
        ),
    )
    # The durable consumer acknowledged every message: nothing left, nothing pending.
    client = await nats.connect(servers=cluster.urls)
    try:
        info = await client.jetstream().consumer_info("PUE_T3", "site-aggregator")
    finally:
        await client.close()
    assert info.num_pending == 0 and info.num_ack_pending == 0
    assert info.ack_floor is not None and info.ack_floor.stream_seq == TICKS // 3


def _position(state_dir: Path) -> int:
    """The stream position an aggregator host has committed (0 before its first page)."""
    path = state_dir / "nats" / "campus" / "merge.sqlite"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            row = db.execute("SELECT stream_seq FROM position").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0]) if row else 0


async def test_bad_messages_are_refused_recorded_and_the_rest_merged(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    # A poller's journal of 6 batches; on the stream: batches 1-3, batch 4 with an altered
    # payload, a message that is no journal batch, then batches 5 and 6.
    link = _link(cluster, "t5")
    journal = Journal(tmp_path / "poller.sqlite")
    readings = sim_readings(15)
    per_batch = readings.height // 5
    for i in range(5):
        journal.append(readings.slice(i * per_batch, per_batch), source="sim")
    # Batch 6: a sound link of the chain whose payload is no reading batch (another schema).
    journal.append(pl.DataFrame({"meter": ["x"], "kwh": [1.0]}), source="sim")
    raw = journal.read_raw(0, limit=10)
    client = await nats.connect(servers=cluster.urls)
    try:
        js = client.jetstream()
        # Right after the cluster starts, placement may wait for the peers' first reports.
        await wait_for_async(
            lambda: js.add_stream(name="PUE_T5", subjects=["pue.t5.>"], num_replicas=3),
            "an R3 stream created",
        )
        subject = "pue.t5.poller-x"
        bad = raw[3]
        messages = [
            *((b.payload, encode_headers("poller-x", b)) for b in raw[:3]),
            (bad.payload[:-8] + bytes(8), encode_headers("poller-x", bad)),
            (b"not a batch", {"Nats-Msg-Id": "garbage:1"}),
            *((b.payload, encode_headers("poller-x", b)) for b in raw[4:]),
        ]
        for payload, headers in messages:
            # Retried while the stream settles; Nats-Msg-Id makes a retry store nothing twice.
            await wait_for_async(
                functools.partial(js.publish, subject, payload, headers=headers), "a publish"
            )
    finally:
        await client.close()
    site = aggregator_agent(tmp_path / "agg", link, "agg-1", **_COLLECTOR)
    try:
        merged = collector_of(site)
        await wait_for(lambda: merged.state.position == 7, "every message handled")
        await site.stop()
    finally:
        site.kill()
    assert merged.batches_taken == 4 and merged.batches_rejected == 2
    assert merged.emitted_readings == 4 * per_batch  # the good batches, nothing else lost
    problems = [problem for _, _, _, problem in merged.state.breaks()]
    assert problems == [
        "batch 4: content does not match its hash",
        "not a journal batch: header Pue-Agent is missing",
        "batches 4-4 missing: the chain jumps to 5",
        "batch 6: payload not a reading batch (column 'ts' is missing)",
    ]
    assert merged.state.heads["poller-x"][0] == 6  # the chain itself goes on


async def test_restart_everything_is_exactly_once(
    cluster: NatsCluster, reference: pl.DataFrame, tmp_path: Path
) -> None:
    link = _link(cluster, "t4")
    site = aggregator_agent(tmp_path / "agg", link, "agg-1", **_COLLECTOR)
    pub = publisher_agent(tmp_path / "pub", link, "poller-a", TICKS, speed=SPEED)
    try:
        await wait_for(lambda: sink_of(pub).published >= TICKS // 6, "half the batches sent")
        pub.kill()
        site.kill()
        await pub.wait_killed()
        await site.wait_killed()
    finally:
        pub.kill()
        site.kill()
    sent = sink_of(pub).published
    # Every NATS node down and up again (file store: the stream survives).
    for node in range(3):
        cluster.kill(node)
    for node in range(3):
        cluster.restart(node)
    # As if the agent died after JetStream's acks but before its cursor moved: it re-sends.
    journal_file = tmp_path / "pub" / "journal" / "journal.sqlite"
    with sqlite3.connect(journal_file) as db:
        db.execute("UPDATE cursors SET seq = MAX(seq - 5, 0) WHERE name = 'campus'")
    head = Journal(journal_file).head[0]
    # And the aggregator's merge state behind its journal, as a crash between the journal's
    # commit of a page and the merge state's leaves it - here at the extreme, the state file
    # lost: the stream is replayed from the start, and the readings the local journal holds
    # already must not be journalled again.
    for state_file in (tmp_path / "agg" / "nats" / "campus").glob("merge.sqlite*"):
        state_file.unlink()
    site = aggregator_agent(tmp_path / "agg", link, "agg-1", **_COLLECTOR)
    pub = publisher_agent(tmp_path / "pub", link, "poller-a", 0, speed=SPEED)
    try:
        merged = collector_of(site)
        await wait_for(lambda: sink_of(pub).published >= head - sent + 5, "re-sent and sent", 40)
        await wait_for(lambda: merged.state.heads.get("poller-a", (0,))[0] == head, "all merged")
        await wait_for(site.aggregated, "every merged batch aggregated")
        await pub.stop()
        await site.stop()
    finally:
        pub.kill()
        site.kill()
    assert sink_of(pub).duplicates >= 5  # JetStream's duplicate window dropped the re-sends
    state = await _stream_state(cluster, "PUE_T4")
    assert state.messages == head
    # Counts and sums per meter point: what the agent journalled, merged exactly once.
    published = Journal(journal_file)
    produced = pl.concat([b.frame for b in published.iter_batches(kinds=("readings",))])
    local = Journal(tmp_path / "agg" / "journal" / "journal.sqlite")
    merged_frame = pl.concat([b.frame for b in local.iter_batches(kinds=("readings",))])
    order = ["device", "point", "ts"]
    assert merged_frame.height == produced.height
    assert merged_frame.sort(order).equals(produced.sort(order))  # every reading, once
    totals = reading_totals(merged_frame).join(
        reading_totals(produced), on=["device", "point"], suffix="_produced"
    )
    assert (totals["n"] == totals["n_produced"]).all()
    assert ((totals["total"] - totals["total_produced"]).abs() <= 1e-9 * totals["total"]).all()
    got = store_intervals(tmp_path / "agg")
    expected = reference.filter(pl.col("interval_start") <= got["interval_start"].max())
    assert_equal_intervals(got, expected)

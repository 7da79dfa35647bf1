"""Chain of custody across hosts: a site report fed by two publishing agents over NATS.

A redundant pair (``poller-a``, ``poller-b``: the same simulated meters on the same
clock, as in ``test_campus``) publishes to one ``nats-server`` (JetStream, single node:
custody does not depend on replication); a site aggregator merges them; the month's
report is built from the aggregator's state with ``run_report``. Poller b's journal
starts with a gap record (readings its journal refused), which must reach the report.

60 ticks of 10 s, 3 ticks per journal batch: 20 reading batches per poller (b: 21 with
its gap record at seq 1).

A second pair (``test_late_*``) publishes hand-written journals in a fixed order: poller
a's backlog after poller b's newer readings. The aggregator drops a's readings as late,
one of a device's polls b missed among them; ``verify`` replays the merge page by page
and passes, where a merge of the month at once (what it did before) keeps them and
re-derives other intervals.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from agent import keys
from agent.cli import app as agent_app
from agent.energy import EnergyConfig, interval_energy
from agent.journal import Journal
from agent.readings import make_batch
from agent.report.bundle import INTERVALS, SITE
from agent.report.run import run_report
from agent.report.verify import VerifyResult, verify_bundle
from agent.settings import AgentSettings
from agent.site import parse_site
from collectors.nats.link import (
    Credentials,
    NatsLinkOptions,
    connect,
    encode_headers,
    ensure_stream,
)
from collectors.nats.merge import LAST_SCHEMA, dedupe, merge_order, parse_merge_order, replay
from tests.cluster.helpers import (
    INTERVAL_S,
    START,
    STEP_S,
    aggregator_agent,
    collector_of,
    publisher_agent,
    sim_readings,
    sink_of,
    wait_for,
)
from tests.servers.nats import NatsCluster, start_nats

TICKS = 60
BATCHES = TICKS // 3  # ticks_per_batch = 3 in helpers.sim_options
SPEED = 300.0  # 600 simulated seconds in 2 s: both pollers overlap in time
MONTH = "2026-11"  # helpers.START is 2026-11-02 08:00 UTC
GAP_REASON = "journal budget of 1024 bytes reached (test)"
GAP_TICKS = 3


@dataclass(frozen=True)
class Site:
    """What the campus run left behind."""

    bundle: Path
    local_journal: Path
    agent_journals: dict[str, Path]
    merge_gaps: pl.DataFrame
    journal_json: dict[str, Any]


@pytest.fixture(scope="module")
def nats_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = start_nats(tmp_path_factory.mktemp("nats"), nodes=1)
    try:
        yield running
    finally:
        running.stop()


def _link(node: NatsCluster) -> dict[str, Any]:
    return {
        "servers": node.urls,
        "stream": "PUE_CUSTODY",
        "subject_prefix": "pue.custody",
        "replicas": 1,
        "request_timeout_s": 2.0,
        "connect_timeout_s": 1.0,
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 1.0,
    }


async def _campus(root: Path, node: NatsCluster) -> AgentSettings:
    """Run the pair and the aggregator until every batch is merged; the aggregator's settings."""
    link = _link(node)
    # Poller b's journal refused some readings before it started publishing: a gap record.
    b_journal = Journal(AgentSettings(state_dir=root / "b").journal_path)
    b_journal.record_gap(sim_readings(GAP_TICKS), source="sim", reason=GAP_REASON)
    b_journal.close()
    site = aggregator_agent(
        root / "agg", link, "agg-1", lease_ttl_s=2.0, fetch_wait_s=0.2, fetch_batches=32
    )
    pub_a = publisher_agent(root / "a", link, "poller-a", TICKS, speed=SPEED)
    pub_b = publisher_agent(root / "b", link, "poller-b", TICKS, speed=SPEED)
    try:
        merged = collector_of(site)

        def merged_all() -> bool:
            heads = merged.state.heads
            return (
                heads.get("poller-a", (0, b""))[0] == BATCHES
                and heads.get("poller-b", (0, b""))[0] == BATCHES + 1
            )

        await wait_for(merged_all, "both pollers' chains merged to their ends", 40)
        await wait_for(site.aggregated, "every merged batch aggregated")
        assert sink_of(pub_a).published == BATCHES
        await pub_a.stop()
        await pub_b.stop()
        await site.stop()
    finally:
        pub_a.kill()
        pub_b.kill()
        site.kill()
    # Both pollers' readings arrived, and one reading per poll was kept. A copy that came
    # a page after a newer reading of its point is counted late (the pages decide which).
    assert merged.emitted_readings == sim_readings(TICKS).height
    assert merged.deduplicated_readings + merged.late_readings == sim_readings(TICKS).height
    return site.agent.settings


@pytest.fixture(scope="module")
def campus(tmp_path_factory: pytest.TempPathFactory, nats_node: NatsCluster) -> Site:
    root = tmp_path_factory.mktemp("campus")
    settings = asyncio.run(_campus(root, nats_node))
    keys.init_key(settings)
    result, _ = run_report(settings, MONTH, langs=("en",), out_dir=root / "out", csv=False)
    merge_db = sqlite3.connect(settings.state_dir / "nats" / "campus" / "merge.sqlite")
    try:
        gap_rows = merge_db.execute("SELECT agent, seq, readings, reason FROM publisher_gaps")
        merge_gaps = pl.DataFrame(
            gap_rows.fetchall(), schema=["agent", "seq", "readings", "reason"], orient="row"
        )
    finally:
        merge_db.close()
    return Site(
        bundle=result.directory,
        local_journal=settings.journal_path,
        agent_journals={
            agent: AgentSettings(state_dir=root / folder).journal_path
            for agent, folder in (("poller-a", "a"), ("poller-b", "b"))
        },
        merge_gaps=merge_gaps,
        journal_json=json.loads((result.directory / "journal.json").read_text("utf-8")),
    )


def _flat(merge_pages: str) -> list[int]:
    """``journal.json``'s merge order as one agent index per reading batch."""
    return [i for page in parse_merge_order(merge_pages) for i, n in page for _ in range(n)]


def _checks(result: VerifyResult, name: str) -> list[tuple[str, str]]:
    return [(c.outcome, c.detail) for c in result.checks if c.name == name]


def test_journal_json_lists_every_contributing_agents_chain(campus: Site) -> None:
    agents = {a["agent"]: a for a in campus.journal_json["agents"]}
    assert set(agents) == {"poller-a", "poller-b"}
    per_poller = sim_readings(TICKS).height  # each poller read every meter at every tick
    a, b = agents["poller-a"], agents["poller-b"]
    assert (a["first_seq"], a["last_seq"], a["batches"]) == (1, BATCHES, BATCHES)
    # b: the gap record (seq 1) and its 20 reading batches.
    assert (b["first_seq"], b["last_seq"], b["batches"]) == (1, BATCHES + 1, BATCHES + 1)
    assert a["readings"] == b["readings"] == per_poller
    assert (b["gap_batches"], b["gap_readings"]) == (1, sim_readings(GAP_TICKS).height)
    assert a["missing"] == b["missing"] == [] and a["breaks"] == b["breaks"] == []
    # The hashes are those of the publishers' own journals.
    for agent, path in campus.agent_journals.items():
        raw = Journal(path).read_raw(0, limit=BATCHES + 1)
        assert agents[agent]["first_hash"] == raw[0].hash.hex()
        assert agents[agent]["first_prev_hash"] == "00" * 32  # the chain's genesis
        assert agents[agent]["last_hash"] == raw[-1].hash.hex()
    # The local batches holding the merged readings: together, every batch of the site's
    # journal (each holds a page's kept readings), and none beyond its head. One agent's
    # list may be empty: when its pages came after the twin's, all its readings were
    # duplicates and none of its pages wrote a batch (the pollers' timing decides).
    local_head = Journal(campus.local_journal).head[0]
    held = {
        seq
        for agent in agents.values()
        for first, last in agent["local_seqs"]
        for seq in range(first, last + 1)
    }
    assert local_head > 0 and held == set(range(1, local_head + 1))
    assert campus.journal_json["available"] is True
    assert campus.journal_json["dedupe_window_s"] == 2.0
    # The merge order: every reading batch once, as an index into the agents' list
    # (0 = poller-a, 1 = poller-b; b's gap record is no reading batch).
    order = _flat(campus.journal_json["merge_pages"])
    assert (order.count(0), order.count(1), len(order)) == (BATCHES, BATCHES, 2 * BATCHES)


def test_verify_with_every_agent_journal_rederives_equal_intervals(campus: Site) -> None:
    result = verify_bundle(
        campus.bundle,
        journal=campus.local_journal,
        agent_journals=[campus.agent_journals["poller-b"], campus.agent_journals["poller-a"]],
    )
    assert result.ok, [(c.name, c.detail) for c in result.checks]
    agent_checks = _checks(result, "agent journal")
    assert [o for o, _ in agent_checks] == ["ok", "ok"]
    assert "agent poller-a" in agent_checks[0][1] and "agent poller-b" in agent_checks[1][1]
    # "ok", not "warning": every bundled interval row was re-derived from the merged
    # readings of both agents' journals and matched (a warning names unmatched rows).
    ((outcome, detail),) = _checks(result, "re-merge")
    assert outcome == "ok" and "the 2 agents' readings merged in the aggregator's" in detail
    bundled = pl.read_parquet(campus.bundle / "data/intervals.parquet").height
    assert detail.startswith(f"{bundled:,} interval rows") and bundled > 0


def test_verify_with_the_site_journal_only_names_the_unchecked_chains(campus: Site) -> None:
    result = verify_bundle(campus.bundle, journal=campus.local_journal)
    assert result.ok, [(c.name, c.detail) for c in result.checks]
    ((outcome, detail),) = _checks(result, "agent journal")
    assert outcome == "skipped" and "poller-a, poller-b" in detail
    assert _checks(result, "re-merge")[0][0] == "skipped"


def _rewrite_one_reading(path: Path, seq: int) -> None:
    """Change one value in batch ``seq``'s payload; its stored hash is left as it was."""
    with sqlite3.connect(path) as db:
        (payload,) = db.execute("SELECT payload FROM batches WHERE seq = ?", (seq,)).fetchone()
        frame = pl.read_ipc(io.BytesIO(payload))
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 0)
            .then(pl.col("value") + 1.0)
            .otherwise(pl.col("value"))
            .alias("value")
        )
        buffer = io.BytesIO()
        frame.write_ipc(buffer, compression="lz4")
        db.execute("UPDATE batches SET payload = ? WHERE seq = ?", (buffer.getvalue(), seq))


def test_a_reading_rewritten_in_one_agent_journal_fails_naming_agent_and_batch(
    campus: Site, tmp_path: Path
) -> None:
    tampered = tmp_path / "poller-a.sqlite"
    shutil.copy(campus.agent_journals["poller-a"], tampered)
    _rewrite_one_reading(tampered, 7)
    stored = Journal(tampered).read_raw(6, limit=1)[0].hash.hex()
    result = verify_bundle(
        campus.bundle,
        journal=campus.local_journal,
        agent_journals=[tampered, campus.agent_journals["poller-b"]],
    )
    failure = result.first_failure
    assert failure is not None and failure.name == "agent journal"
    assert failure.detail.startswith("agent poller-a: batch #7: ")
    assert f"expected hash {stored}, its content gives " in failure.detail
    # The same through the CLI: exit 1, the message, no traceback.
    out = CliRunner().invoke(
        agent_app,
        [
            "verify",
            str(campus.bundle),
            "--journal",
            str(campus.local_journal),
            "--journal",
            str(tampered),
            "--journal",
            str(campus.agent_journals["poller-b"]),
        ],
    )
    assert out.exit_code == 1, out.output
    assert "bundle INVALID: agent journal: agent poller-a: batch #7" in out.output
    assert "Traceback" not in out.output


def test_cli_verify_with_the_agent_journals_is_valid(campus: Site) -> None:
    out = CliRunner().invoke(
        agent_app,
        [
            "verify",
            str(campus.bundle),
            "--journal",
            str(campus.local_journal),
            *("--journal", str(campus.agent_journals["poller-a"])),
            *("--journal", str(campus.agent_journals["poller-b"])),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "OK   re-merge:" in out.output and out.output.rstrip().endswith("bundle VALID")


def test_an_edited_agent_list_fails_the_manifest_check(campus: Site, tmp_path: Path) -> None:
    bundle = tmp_path / campus.bundle.name
    shutil.copytree(campus.bundle, bundle)
    document = json.loads((bundle / "journal.json").read_text("utf-8"))
    # Drop poller-b from the list, as if only one agent had contributed.
    document["agents"] = [a for a in document["agents"] if a["agent"] != "poller-b"]
    (bundle / "journal.json").write_text(json.dumps(document), encoding="utf-8")
    result = verify_bundle(bundle, journal=campus.local_journal)
    failure = result.first_failure
    assert failure is not None and failure.name == "hashes"
    assert failure.detail.startswith("journal.json: SHA-256")


def test_a_publisher_gap_record_reaches_the_site_report(campus: Site) -> None:
    devices = sim_readings(GAP_TICKS)["device"].n_unique()
    # In the aggregator's merge state: one row per device of b's gap batch (seq 1).
    assert campus.merge_gaps.height == devices
    assert set(campus.merge_gaps["agent"]) == {"poller-b"} and set(campus.merge_gaps["seq"]) == {1}
    assert campus.merge_gaps["readings"].sum() == sim_readings(GAP_TICKS).height
    # In the signed report: journal.json and the HTML's table.
    gaps = campus.journal_json["publisher_gaps"]
    assert len(gaps) == devices and {g["reason"] for g in gaps} == {GAP_REASON}
    html = (campus.bundle / "report.html").read_text("utf-8")
    assert "Gaps recorded by publishing agents" in html and GAP_REASON in html
    assert "poller-a" in html and "poller-b" in html  # the agents' chains table


# -- a late backlog -------------------------------------------------------------------------

LATE_TICKS = 180  # 30 min of 10 s ticks, one tick per journal batch
B_TICKS = range(0, 120)  # phase 1: b publishes 0-20 min
A_BACKLOG = range(0, 60)  # phase 2: then a publishes its backlog, 0-10 min
PAIR_TICKS = range(120, 180)  # phase 3: b then a, tick by tick, 20-30 min
HOLE_DEVICE = "pdu-001"
HOLE_TICKS = range(12, 30)  # b did not get pdu-001 from 2 min to 5 min (18 polls)
A_OFFSET_KWH = 0.002  # phase 3: a reads pdu-001's energy 2 Wh higher at the same stamp


@dataclass(frozen=True)
class Late:
    """What the late-backlog run left behind."""

    bundle: Path
    local_journal: Path
    agent_journals: list[Path]
    batches: dict[str, list[pl.DataFrame]]  # reading batches per agent, in seq order
    journal_json: dict[str, Any]
    counters: dict[str, int]


def _tick(readings: pl.DataFrame, tick: int) -> pl.DataFrame:
    return readings.filter(pl.col("ts") == START + timedelta(seconds=STEP_S * tick))


async def _late_run(root: Path, node: NatsCluster) -> tuple[AgentSettings, dict[str, int]]:
    link = {**_link(node), "stream": "PUE_LATE", "subject_prefix": "pue.late"}
    ticks = sim_readings(LATE_TICKS)
    hole = pl.col("device") == HOLE_DEVICE
    b = [_tick(ticks, t) for t in B_TICKS]
    for t in HOLE_TICKS:
        b[t] = b[t].filter(~hole)
    b += [_tick(ticks, t) for t in PAIR_TICKS]
    a = [_tick(ticks, t) for t in A_BACKLOG]
    a += [
        _tick(ticks, t).with_columns(
            pl.when(hole & (pl.col("quantity") == "energy_kwh"))
            .then(pl.col("value") + A_OFFSET_KWH)
            .otherwise(pl.col("value"))
        )
        for t in PAIR_TICKS
    ]
    raw = {}
    for agent, frames in (("poller-a", a), ("poller-b", b)):
        journal = Journal(root / agent / "journal.sqlite")
        journal.append_many([(f, "sim") for f in frames])
        raw[agent] = journal.read_raw(0, limit=len(frames))
        journal.close()
    # Stream order: b's 20 minutes, a's 10-minute backlog, then b and a poll by poll.
    order = [("poller-b", i) for i in range(len(B_TICKS))]
    order += [("poller-a", i) for i in range(len(A_BACKLOG))]
    for k in range(len(PAIR_TICKS)):
        order += [("poller-b", len(B_TICKS) + k), ("poller-a", len(A_BACKLOG) + k)]
    options = NatsLinkOptions.model_validate(
        {k: v for k, v in link.items() if not k.startswith("reconnect_")}
    )
    client = await connect(options, Credentials(), "custody-test")
    try:
        js = client.jetstream()
        await ensure_stream(js, options)
        for agent, i in order:
            batch = raw[agent][i]
            await js.publish(
                options.subject(agent), batch.payload, headers=encode_headers(agent, batch)
            )
    finally:
        await client.close()
    # Small pages: the backlog is merged over several pages after b's.
    site = aggregator_agent(
        root / "agg", link, "agg-late", lease_ttl_s=2.0, fetch_wait_s=0.2, fetch_batches=8
    )
    try:
        merged = collector_of(site)

        def merged_all() -> bool:
            heads = merged.state.heads
            return heads.get("poller-a", (0, b""))[0] == len(a) and heads.get("poller-b", (0, b""))[
                0
            ] == len(b)

        await wait_for(merged_all, "both journals merged to their ends", 40)
        await wait_for(site.aggregated, "every merged batch aggregated")
        await site.stop()
    finally:
        site.kill()
    counters = {
        "emitted": merged.emitted_readings,
        "deduplicated": merged.deduplicated_readings,
        "late": merged.late_readings,
    }
    return site.agent.settings, counters


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory, nats_node: NatsCluster) -> Late:
    root = tmp_path_factory.mktemp("late")
    settings, counters = asyncio.run(_late_run(root, nats_node))
    keys.init_key(settings)
    result, _ = run_report(settings, MONTH, langs=("en",), out_dir=root / "out", csv=False)
    batches = {
        agent: [b.frame for b in Journal(root / agent / "journal.sqlite").iter_batches(0)]
        for agent in ("poller-a", "poller-b")
    }
    return Late(
        bundle=result.directory,
        local_journal=settings.journal_path,
        agent_journals=[root / "poller-b" / "journal.sqlite", root / "poller-a" / "journal.sqlite"],
        batches=batches,
        journal_json=json.loads((result.directory / "journal.json").read_text("utf-8")),
        counters=counters,
    )


PER_TICK = 44  # readings per tick of the 4-PDU simulated site (a power and an energy each)


def _hole_readings() -> int:
    """b's readings missing: pdu-001's per tick (power and energy), 18 polls."""
    one = _tick(sim_readings(1), 0)
    return one.filter(pl.col("device") == HOLE_DEVICE).height * len(HOLE_TICKS)


def test_late_backlog_is_dropped_and_counted_as_late(late: Late) -> None:
    assert sim_readings(1).height == PER_TICK
    hole = _hole_readings()
    assert hole == 2 * 18  # pdu-001 has one power and one energy point
    # Kept: all of b's (120 + 60 polls, less the hole); a's 60 backlog polls arrived after
    # b's newer readings of every point: late (its 36 readings of the hole among them, which
    # had no twin), not duplicates; a's 60 paired polls are b's twins: duplicates.
    assert late.counters == {
        "emitted": 180 * PER_TICK - hole,
        "deduplicated": 60 * PER_TICK,
        "late": 60 * PER_TICK,
    }
    order = _flat(late.journal_json["merge_pages"])
    assert (order.count(0), order.count(1)) == (120, 180)  # 0 = poller-a, 1 = poller-b
    pages = parse_merge_order(late.journal_json["merge_pages"])
    assert order[:120] == [1] * 120 and len(pages) > 1
    # A page of b's batches alone is one run: "1*8" (fetch_batches = 8), not "1,1,...".
    assert late.journal_json["merge_pages"].startswith("1*")


def test_late_backlog_verify_replays_the_pages_and_passes(late: Late) -> None:
    result = verify_bundle(
        late.bundle, journal=late.local_journal, agent_journals=late.agent_journals
    )
    assert result.ok, [(c.name, c.detail) for c in result.checks]
    ((outcome, detail),) = _checks(result, "re-merge")
    assert outcome == "ok", detail
    pages = len(parse_merge_order(late.journal_json["merge_pages"]))
    assert f"merged in the aggregator's {pages:,} pages) match; " in detail
    # 2,640 = 60 backlog polls x 44; 36 = the hole's readings, with no twin anywhere.
    late_note = f"{60 * PER_TICK:,} readings dropped as late, {_hole_readings():,} dropped with"
    assert late_note in detail


def _intervals_differing(late: Late, kept: pl.DataFrame) -> int:
    """Bundled interval rows whose energy the readings ``kept`` do not re-derive (verify's test)."""
    site = parse_site(json.loads((late.bundle / SITE).read_text("utf-8")), source="site")
    bundled = pl.read_parquet(late.bundle / INTERVALS)
    derived = interval_energy(kept.lazy(), site, EnergyConfig(interval_s=INTERVAL_S)).collect()
    joined = bundled.join(derived, on=["meter", "interval_start"], suffix="_raw")
    assert joined.height == bundled.height > 0
    return joined.filter(
        (pl.col("energy_kwh") - pl.col("energy_kwh_raw")).abs()
        > 1e-6 * pl.max_horizontal(pl.col("energy_kwh").abs(), pl.lit(1.0))
    ).height


def test_late_backlog_a_merge_of_the_month_at_once_would_cry_wolf(late: Late) -> None:
    window_us = 2_000_000
    a, b = late.batches["poller-a"], late.batches["poller-b"]
    # What verify did before: every reading of the month in one dedupe, agents in list order.
    whole = dedupe(pl.concat(a + b), pl.DataFrame(schema=LAST_SCHEMA), window_us).kept
    # What it does now: the recorded pages, each agent's batches in the recorded order.
    taken = [0, 0]
    pages = []
    for page in parse_merge_order(late.journal_json["merge_pages"]):
        parts = []
        for i, n in page:
            parts += (a, b)[i][taken[i] : taken[i] + n]
            taken[i] += n
        pages.append(pl.concat(parts))
    paged = replay(pages, window_us).kept
    # The month at once keeps a's 36 late readings of the hole (they have no twin)...
    assert whole.height == paged.height + _hole_readings() == 180 * PER_TICK
    # ... and on equal stamps a's energy reading (first in agent order), 2 Wh off.
    energy = (pl.col("device") == HOLE_DEVICE) & (pl.col("quantity") == "energy_kwh")
    late_pairs = pl.col("ts") >= START + timedelta(seconds=STEP_S * PAIR_TICKS[0])
    in_b = pl.concat(b).filter(energy & late_pairs).sort("ts")["value"]
    assert paged.filter(energy & late_pairs).sort("ts")["value"].equals(in_b)
    offset = (whole.filter(energy & late_pairs).sort("ts")["value"] - in_b).min()
    assert isinstance(offset, float) and offset > A_OFFSET_KWH - 1e-9
    # verify's interval comparison: the paged merge re-derives every bundled row, the
    # month at once does not (old verify failed `re-merge` on this untampered bundle).
    assert _intervals_differing(late, paged) == 0
    assert _intervals_differing(late, whole) > 0


def test_late_backlog_tampering_still_fails(late: Late, tmp_path: Path) -> None:
    tampered = tmp_path / "poller-a.sqlite"
    shutil.copy(late.agent_journals[1], tampered)
    _rewrite_one_reading(tampered, 70)
    result = verify_bundle(
        late.bundle, journal=late.local_journal, agent_journals=[late.agent_journals[0], tampered]
    )
    failure = result.first_failure
    assert failure is not None and failure.name == "agent journal"
    assert failure.detail.startswith("agent poller-a: batch #70: ")


def test_merge_order_text_by_hand() -> None:
    # Stream seqs 1-9 over four pages; page 30 merged only a gap batch (left out).
    rows = [
        ("poller-b", "readings", 10, 1),
        ("poller-b", "readings", 10, 2),
        ("poller-b", "readings", 10, 3),
        ("poller-a", "readings", 20, 4),
        ("poller-b", "readings", 20, 5),
        ("poller-a", "readings", 20, 6),
        ("poller-b", "gap", 30, 7),
        ("poller-a", "readings", 40, 9),  # rows in any order: sorted by page, stream seq
        ("poller-a", "readings", 40, 8),
    ]
    received = pl.DataFrame(
        rows, schema=["agent", "kind", "page", "stream_seq"], orient="row"
    ).with_columns(pl.col("page", "stream_seq").cast(pl.Int64))
    text = merge_order(received, ["poller-a", "poller-b"])
    assert text == "1*3;0,1,0;0*2"
    assert parse_merge_order(text) == [[(1, 3)], [(0, 1), (1, 1), (0, 1)], [(0, 2)]]
    for bad in ("1*", "x", "1*0", "1,,0"):
        with pytest.raises(ValueError, match="merge order entry"):
            parse_merge_order(bad)


def test_a_late_reading_is_counted_apart_from_a_twin_of_the_newest() -> None:
    t0 = START
    us = int(t0.timestamp() * 1e6)
    last = pl.DataFrame(
        {
            "device": ["pdu-001"],
            "point": ["total.energy"],
            "quantity": ["energy_kwh"],
            "last_us": [us + 15_000_000],  # the newest taken in: 15 s
        }
    )
    page = make_batch(
        [t0 + timedelta(seconds=s) for s in (0.3, 15.3, 30.3)],
        "pdu-001",
        ["total.energy"] * 3,
        "energy_kwh",
        [100.0, 100.5, 101.0],
    )
    result = dedupe(page, last, 2_000_000)
    # 0.3 s: 14.7 s older than the newest (> 2 s): late. 15.3 s: 0.3 s from it: a twin.
    assert (result.dropped, result.late, result.kept["value"].to_list()) == (2, 1, [101.0])

"""Journal: durability, cursors, pruning, budget, and tamper detection."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from agent.journal import Journal, JournalError, JournalFullError
from collectors.sim.simulator import SiteSimulator


def _batches(n: int, pdus: int = 4) -> list[pl.DataFrame]:
    sim = SiteSimulator(pdus=pdus)
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    return [sim.tick(t0 + timedelta(seconds=10 * i)) for i in range(n)]


def _journal_with(tmp_path: Path, n: int = 6) -> tuple[Journal, list[pl.DataFrame]]:
    journal = Journal(tmp_path / "j.sqlite")
    frames = _batches(n)
    for frame in frames:
        journal.append(frame, source="sim")
    return journal, frames


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    journal, frames = _journal_with(tmp_path)
    head = journal.head
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite")
    assert reopened.head == head
    read = list(reopened.iter_batches())
    assert [b.seq for b in read] == [1, 2, 3, 4, 5, 6]
    for batch, frame in zip(read, frames, strict=True):
        assert batch.frame.equals(frame)
    assert reopened.verify().ok


def test_group_commit_chains_each_batch(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    frames = _batches(3)
    results = journal.append_many([(f, "sim") for f in frames])
    assert [r.seq for r in results] == [1, 2, 3]
    assert len({r.hash for r in results}) == 3
    assert journal.verify().ok


def _raw(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "j.sqlite", isolation_level=None)


def test_flipped_byte_is_detected_and_named(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path)
    db = _raw(tmp_path)
    payload = bytearray(db.execute("SELECT payload FROM batches WHERE seq = 4").fetchone()[0])
    payload[len(payload) // 2] ^= 0x01
    db.execute("UPDATE batches SET payload = ? WHERE seq = 4", (bytes(payload),))
    report = journal.verify()
    assert not report.ok
    assert report.bad_seq == 4
    assert "batch 4" in (report.problem or "")


def test_deleted_batch_is_detected_and_named(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path)
    _raw(tmp_path).execute("DELETE FROM batches WHERE seq = 3")
    report = journal.verify()
    assert not report.ok
    assert report.bad_seq == 3
    assert "batch 3 missing" in (report.problem or "")


def test_deleted_newest_batch_is_detected(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path)
    _raw(tmp_path).execute("DELETE FROM batches WHERE seq = 6")
    report = journal.verify()
    assert not report.ok
    assert report.bad_seq == 6


def test_swapped_batches_are_detected_and_named(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path)
    db = _raw(tmp_path)
    rows = {
        seq: db.execute(
            "SELECT created_us, kind, source, n_rows, payload, prev_hash, hash FROM batches "
            "WHERE seq = ?",
            (seq,),
        ).fetchone()
        for seq in (2, 5)
    }
    for seq, other in ((2, 5), (5, 2)):
        db.execute(
            "UPDATE batches SET created_us=?, kind=?, source=?, n_rows=?, payload=?, "
            "prev_hash=?, hash=? WHERE seq = ?",
            (*rows[other], seq),
        )
    report = journal.verify()
    assert not report.ok
    assert report.bad_seq == 2


def test_swapped_payloads_only_are_detected(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path)
    db = _raw(tmp_path)
    p3 = db.execute("SELECT payload FROM batches WHERE seq = 3").fetchone()[0]
    p4 = db.execute("SELECT payload FROM batches WHERE seq = 4").fetchone()[0]
    db.execute("UPDATE batches SET payload = ? WHERE seq = 3", (p4,))
    db.execute("UPDATE batches SET payload = ? WHERE seq = 4", (p3,))
    report = journal.verify()
    assert not report.ok
    assert report.bad_seq == 3


def test_cursors_catch_up_in_order(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path)
    assert journal.register_cursor("influx") == 0
    first = journal.read(journal.cursor("influx"), limit=2)
    assert [b.seq for b in first] == [1, 2]
    journal.advance_cursor("influx", 2)
    rest = journal.read(journal.cursor("influx"), limit=100)
    assert [b.seq for b in rest] == [3, 4, 5, 6]
    assert journal.lag() == {"influx": 4}


def test_prune_only_below_the_slowest_cursor_and_chain_still_verifies(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path)
    journal.register_cursor("fast")
    journal.register_cursor("slow")
    journal.advance_cursor("fast", 6)
    journal.advance_cursor("slow", 3)
    assert journal.prune() == 3
    assert [b.seq for b in journal.iter_batches()] == [4, 5, 6]
    assert journal.verify().ok
    # New appends continue the chain after pruning and after reopening.
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite")
    reopened.append(_batches(1)[0], source="sim")
    assert reopened.head[0] == 7
    assert reopened.verify().ok


def test_budget_alarm_gap_and_nothing_needed_deleted(tmp_path: Path) -> None:
    frames = _batches(40, pdus=50)
    journal = Journal(tmp_path / "j.sqlite", budget_bytes=20_000)
    journal.register_cursor("influx")  # a sink that is down: its cursor never moves
    stored, refused = [], []
    for frame in frames:
        try:
            stored.append(journal.append(frame, source="sim"))
        except JournalFullError:
            refused.append(frame)
            journal.record_gap(frame, source="sim", reason="journal budget reached")
    assert stored and refused, "the budget must be reached part-way"
    assert journal.alarm is not None and "budget" in journal.alarm
    # Every stored batch is still there: the sink that is down still needs them.
    kept = {b.seq for b in journal.iter_batches(kinds=("readings",))}
    assert kept == {r.seq for r in stored}
    gaps = journal.gaps()
    assert gaps["readings"].sum() == sum(f.height for f in refused)
    assert set(gaps["reason"].to_list()) == {"journal budget reached"}
    assert journal.verify().ok
    # Once the sink catches up, pruning frees space and appends are accepted again.
    journal.advance_cursor("influx", journal.head[0])
    journal.append(frames[0], source="sim")
    assert journal.alarm is None


def test_budget_without_any_consumer_prunes_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", budget_bytes=5_000)
    with pytest.raises(JournalFullError):
        for frame in _batches(20, pdus=50):
            journal.append(frame, source="sim")
    assert journal.stats()["batches"] == journal.head[0]


def test_disk_full_is_a_clear_error_and_stores_nothing_partial(tmp_path: Path) -> None:
    journal, _ = _journal_with(tmp_path, n=2)
    head = journal.head
    # SQLite's page cap produces the same SQLITE_FULL error as a full file system.
    pages = journal._db.execute("PRAGMA page_count").fetchone()[0]
    journal._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = _batches(3, pdus=5000)
    with pytest.raises(JournalError, match="full"):
        journal.append_many([(f, "sim") for f in big])
    assert journal.head == head, "a failed commit must not move the head"
    assert journal.verify().ok
    journal._db.execute("PRAGMA max_page_count = 1073741823")
    journal.append(big[0], source="sim")
    assert journal.head[0] == head[0] + 1
    assert journal.verify().ok


def test_two_writers_continue_one_chain(tmp_path: Path) -> None:
    # The agent and `pue-agent import` may append to the same journal from two processes.
    agent_side = Journal(tmp_path / "j.sqlite")
    import_side = Journal(tmp_path / "j.sqlite")
    frames = _batches(4)
    agent_side.append(frames[0], source="sim")
    import_side.append(frames[1], source="import:sha256=00")
    agent_side.append(frames[2], source="sim")
    assert agent_side.head[0] == 3
    assert agent_side.verify().ok
    assert [b.source for b in import_side.iter_batches()] == ["sim", "import:sha256=00", "sim"]

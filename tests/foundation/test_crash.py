"""Crash safety: SIGKILL at random moments loses nothing the agent acknowledged."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.journal import Journal
from tests.paths import ROOT

KILLS = 20
PDUS = 2000
INTERVAL_S = 0.05
# Readings per tick: power + energy for every meter (PDUS PDUs + 19 site meters).
RATE = 2 * (PDUS + 19) / INTERVAL_S  # 80,760 readings/s offered


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
ack_file = "{tmp_path / "acks.txt"}"
log_format = "json"

[[collectors]]
kind = "sim"
name = "load"
pdus = {PDUS}
interval_s = {INTERVAL_S}
""",
        encoding="utf-8",
    )
    return config


def _acks(path: Path) -> list[tuple[int, str, int, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            continue  # torn last line: the kill hit mid-write; that ack never completed
        seq, digest, rows, wall = line.split()
        out.append((int(seq), digest, int(rows), float(wall)))
    return out


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    assert RATE >= 50_000
    config = _config(tmp_path)
    rng = random.Random(20261125)
    ack_path = tmp_path / "acks.txt"
    rates = []
    for run in range(KILLS):
        before = len(_acks(ack_path))
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Wait for the first acknowledgement of this run, then kill at a random moment.
        deadline = time.monotonic() + 60
        while len(_acks(ack_path)) == before:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "agent never acknowledged a batch"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        acks = _acks(ack_path)
        this_run = acks[before:]
        if len(this_run) > 1:
            span = this_run[-1][3] - this_run[0][3]
            if span > 0.5:
                rates.append(sum(a[2] for a in this_run[1:]) / span)
        journal = Journal(tmp_path / "state" / "journal" / "journal.sqlite")
        report = journal.verify()
        assert report.ok, f"run {run}: {report.problem}"
        stored = {
            int(seq): (bytes(h).hex(), int(n))
            for seq, h, n in journal._reader().execute("SELECT seq, hash, n_rows FROM batches")
        }
        journal.close()
        missing = [a for a in acks if stored.get(a[0]) != (a[1], a[2])]
        assert not missing, f"run {run}: acknowledged batches lost or changed: {missing[:3]}"
    assert len(_acks(ack_path)) > KILLS
    # The sustained ingest rate while alive, to show the kills hit a loaded agent.
    assert rates, "no run lived long enough to measure a rate"
    assert max(rates) >= 50_000, f"ingest rates {rates}"

"""The agent as systemd runs it: READY/WATCHDOG/STOPPING, SIGTERM with the API up, SIGHUP."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent.journal import Journal
from tests.paths import ROOT
from tests.servers import free_port, stop_process
from tests.service.conftest import Tokens


@dataclass
class AgentProcess:
    proc: subprocess.Popen[bytes]
    notify: socket.socket
    log: Path
    state: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def messages(self, timeout_s: float = 0.5) -> list[str]:
        """sd_notify datagrams received so far (waits up to ``timeout_s`` for the first)."""
        got: list[str] = []
        self.notify.settimeout(timeout_s)
        while True:
            try:
                got.append(self.notify.recv(4096).decode())
            except TimeoutError:
                return got
            self.notify.settimeout(0.01)

    def wait_for_message(self, prefix: str, timeout_s: float = 30.0) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            seen += self.messages()
            if any(m.startswith(prefix) for m in seen):
                return seen
        raise AssertionError(f"no {prefix!r} from the agent; got {seen}")

    def sources(self) -> dict[str, tuple[int, int]]:
        """Per journal source: (batches, highest seq), read through a read-only connection."""
        db = sqlite3.connect(f"file:{self.state}/journal/journal.sqlite?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT source, COUNT(*), MAX(seq) FROM batches WHERE kind = 'readings' "
                "GROUP BY source"
            ).fetchall()
        finally:
            db.close()
        return {str(s): (int(n), int(m)) for s, n, m in rows}


def _config(tmp: Path, port: int, collectors: str) -> Path:
    config = tmp / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp}/state"\nack_file = "{tmp}/acks.txt"\nlog_format = "json"\n'
        f"[api]\nenabled = true\nport = {port}\n{collectors}",
        encoding="utf-8",
    )
    return config


def _sim(name: str, pdus: int = 8, interval_s: float = 10, speed: float = 100) -> str:
    return (
        f'[[collectors]]\nkind = "sim"\nname = "{name}"\npdus = {pdus}\n'
        f"interval_s = {interval_s}\nspeed = {speed}\n"
    )


@pytest.fixture
def start_agent(tmp_path: Path, tokens: Tokens) -> Iterator[Callable[[str], AgentProcess]]:
    started: list[AgentProcess] = []

    def start(collectors: str) -> AgentProcess:
        port = free_port()
        config = _config(tmp_path, port, collectors)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        log = tmp_path / "agent.log"
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            "WATCHDOG_USEC": "400000",
            "CREDENTIALS_DIRECTORY": str(tokens.write(tmp_path / "credentials")),
        }
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(config)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        agent = AgentProcess(proc, notify, log, tmp_path / "state", port)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        stop_process(agent.proc)
        agent.notify.close()


def _wait(predicate: Callable[[], bool], agent: AgentProcess, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert agent.proc.poll() is None, agent.log.read_text()
        assert time.monotonic() < deadline, agent.log.read_text()[-3000:]
        time.sleep(0.05)


def test_sigterm_during_ingest_with_api_running(
    start_agent: Callable[[str], AgentProcess], tokens: Tokens, tmp_path: Path
) -> None:
    agent = start_agent(_sim("s", pdus=500, interval_s=0.05, speed=1))
    seen = agent.wait_for_message("READY=1")
    # READY comes once collectors run and the API is bound: it answers right away.
    assert httpx.get(agent.url + "/readyz", timeout=5).json() == {"ready": True, "reasons": []}
    acks = tmp_path / "acks.txt"
    _wait(lambda: acks.exists() and acks.stat().st_size > 0, agent)
    seen += agent.messages(1.5)
    assert sum(m == "WATCHDOG=1" for m in seen) >= 2, seen  # every 0.2 s (half of 0.4 s)
    metrics = httpx.get(agent.url + "/metrics", headers=tokens.header("ops"), timeout=5)
    assert metrics.status_code == 200
    assert "pue_agent_journal_readings_total" in metrics.text
    sent = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0, agent.log.read_text()
    assert time.monotonic() - sent < 10
    assert any(m.startswith("STOPPING=1") for m in agent.messages()), "no STOPPING=1"
    log = agent.log.read_text(encoding="utf-8")
    assert '"event": "stopped"' in log
    for token in (tokens.ops, tokens.auditor):
        assert token not in log
    # Nothing acknowledged is lost: the last acknowledged batch is the journal's head.
    lines = acks.read_text(encoding="utf-8").splitlines()
    journal = Journal(agent.state / "journal" / "journal.sqlite")
    assert journal.verify().ok
    assert journal.head[0] == int(lines[-1].split()[0])
    assert journal.stats()["readings"] == sum(int(line.split()[2]) for line in lines)
    with pytest.raises(httpx.TransportError):
        httpx.get(agent.url + "/healthz", timeout=2)


def test_sighup_adds_and_removes_collectors_without_restart(
    start_agent: Callable[[str], AgentProcess], tokens: Tokens, tmp_path: Path
) -> None:
    agent = start_agent(_sim("sim-a"))
    agent.wait_for_message("READY=1")
    _wait(lambda: agent.sources().get("sim-a", (0, 0))[0] >= 3, agent)
    pid = agent.proc.pid

    # 1. Add a second collector, rotate the ops token, reload.
    config = tmp_path / "agent.toml"
    config.write_text(config.read_text() + _sim("sim-b", pdus=4), encoding="utf-8")
    old_ops = tokens.ops
    tokens.ops = "ops-rotated-" + old_ops[4:]
    tokens.write(tmp_path / "credentials")
    agent.proc.send_signal(signal.SIGHUP)
    seen = agent.wait_for_message("READY=1")
    assert any(m.startswith("RELOADING=1") for m in seen), seen
    _wait(lambda: agent.sources().get("sim-b", (0, 0))[0] >= 3, agent)
    a_seq = agent.sources()["sim-a"][1]
    _wait(lambda: agent.sources()["sim-a"][1] > a_seq + 3, agent)  # the first one kept going
    assert agent.proc.pid == pid and agent.proc.poll() is None
    assert httpx.get(agent.url + "/metrics", headers=tokens.header("ops")).status_code == 200
    stale = {"Authorization": f"Bearer {old_ops}"}
    assert httpx.get(agent.url + "/metrics", headers=stale).status_code == 401

    # 2. A broken file is refused; both collectors keep polling.
    good = config.read_text()
    config.write_text(good + '[[collectors]]\nkind = "sim"\nname = "bad"\npdus = -1\n')
    agent.proc.send_signal(signal.SIGHUP)
    _wait(lambda: "reload refused" in agent.log.read_text(), agent)
    b_seq = agent.sources()["sim-b"][1]
    _wait(lambda: agent.sources()["sim-b"][1] > b_seq, agent)
    assert "bad" not in agent.sources()

    # 3. Remove the first collector: it stops, the second goes on.
    config.write_text(good.replace(_sim("sim-a"), ""), encoding="utf-8")
    agent.proc.send_signal(signal.SIGHUP)
    _wait(lambda: '"stopped": ["sim-a"]' in agent.log.read_text(), agent)
    a_final = agent.sources()["sim-a"][1]
    b_seq = agent.sources()["sim-b"][1]
    _wait(lambda: agent.sources()["sim-b"][1] > b_seq + 5, agent)
    assert agent.sources()["sim-a"][1] == a_final

    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=10) == 0
    lines = (tmp_path / "acks.txt").read_text(encoding="utf-8").splitlines()
    journal = Journal(agent.state / "journal" / "journal.sqlite")
    assert journal.verify().ok
    assert journal.head[0] == int(lines[-1].split()[0])
    assert journal.stats()["readings"] == sum(int(line.split()[2]) for line in lines)
    log = agent.log.read_text(encoding="utf-8")
    assert tokens.ops not in log and old_ops not in log

"""Run ``pue-agent run`` as a real process for the fault tests, logs captured to a file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.paths import ROOT
from tests.servers import free_port, stop_process
from tests.service.conftest import Tokens

__all__ = ["AgentProcess", "sim_collector", "start_agent", "wait_for"]


@dataclass
class AgentProcess:
    """A running agent: its process, state dir, API port and combined stdout/stderr log."""

    proc: subprocess.Popen[bytes]
    config: Path
    state: Path
    log: Path
    port: int

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the agent wrote so far (structlog, stdlib logging, tracebacks)."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def journal_rows(self) -> int:
        """Readings in the journal, through a read-only connection."""
        db = sqlite3.connect(f"file:{self.state}/journal/journal.sqlite?mode=ro", uri=True)
        try:
            (rows,) = db.execute(
                "SELECT COALESCE(SUM(n_rows), 0) FROM batches WHERE kind = 'readings'"
            ).fetchone()
        finally:
            db.close()
        return int(rows)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after a grace period; returns the exit code."""
        stop_process(self.proc)
        return int(self.proc.returncode)


def sim_collector(name: str, pdus: int = 8, interval_s: float = 0.2, speed: float = 1) -> str:
    """A ``[[collectors]]`` table for a fast ``sim`` collector."""
    return (
        f'[[collectors]]\nkind = "sim"\nname = "{name}"\npdus = {pdus}\n'
        f"interval_s = {interval_s}\nspeed = {speed}\n"
    )


def start_agent(
    tmp: Path,
    tokens: Tokens,
    body: str,
    *,
    state: Path | None = None,
    api: str = "",
    head: str = "",
) -> AgentProcess:
    """Start ``pue-agent run``: top-level keys ``head``, ``[api]`` + ``api``, then ``body``."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    state = state or tmp / "state"
    config = tmp / "agent.toml"
    config.write_text(
        f'state_dir = "{state}"\nlog_format = "json"\n{head}'
        f"[api]\nenabled = true\nport = {port}\n{api}\n{body}",
        encoding="utf-8",
    )
    log = tmp / "agent.log"
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(tokens.write(tmp / "credentials"))}
    env.pop("NOTIFY_SOCKET", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return AgentProcess(proc, config, state, log, port)


def wait_for(
    predicate: Callable[[], bool], agent: AgentProcess, what: str, timeout_s: float = 30.0
) -> None:
    """Poll ``predicate``; fail with the agent's log tail if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except (httpx.TransportError, sqlite3.OperationalError):
            pass
        assert agent.proc.poll() is None, f"agent exited: {agent.log_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out: {what}\n{agent.log_text()[-3000:]}"
        time.sleep(0.05)


def toml_text(table: dict[str, object], prefix: str = "") -> str:
    """A small TOML writer for test configs: scalars, lists, tables, arrays of tables."""

    def value(v: object) -> str:
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    lines = [
        f"{k} = {value(v)}"
        for k, v in table.items()
        if not isinstance(v, dict)
        and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))
        and v is not None
    ]
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            lines.append(f"[{name}]")
            lines.append(toml_text(v, f"{name}."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines.append(f"[[{name}]]")
                lines.append(toml_text(item, f"{name}."))
    return "\n".join(line for line in lines if line) + "\n"

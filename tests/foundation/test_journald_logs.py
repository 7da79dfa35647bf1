"""Logs under systemd carry their syslog priority, so ``journalctl -p err`` finds the errors.

systemd tells a service its stderr is the journal with ``JOURNAL_STREAM=<dev>:<inode>``;
journald reads a leading ``<N>`` on each line as that line's priority (sd-daemon(3)). The
agent runs here as a real process whose stderr is a file named in ``JOURNAL_STREAM``, the
way systemd would name its socket; no journald is needed to check the bytes it writes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from agent.logs import SYSLOG_PRIORITY, configure_logging, get_logger, under_journald
from tests.paths import ROOT
from tests.servers import free_port

_PREFIX = re.compile(r"^<(\d)>(\{.*\})$")


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    # The API without any token logs a warning at start.
    config.write_text(
        f'state_dir = "{tmp_path}/state"\nack_file = "{tmp_path}/acks.txt"\n'
        f'[api]\nenabled = true\nlisten = "127.0.0.1"\nport = {free_port()}\n'
        '[[collectors]]\nkind = "sim"\nname = "s"\npdus = 4\ninterval_s = 0.05\n',
        encoding="utf-8",
    )
    return config


def _run_until_reload_refused(tmp_path: Path, env: dict[str, str], stderr_path: Path) -> str:
    """Start the agent, make it log an error (a refused reload), stop it; its stderr."""
    config = _config(tmp_path)
    acks = tmp_path / "acks.txt"
    with stderr_path.open("wb") as stderr:
        if env.get("JOURNAL_STREAM") == "match":
            info = os.fstat(stderr.fileno())
            env = {**env, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            while not (acks.exists() and acks.stat().st_size > 0):
                assert proc.poll() is None, stderr_path.read_text(encoding="utf-8")
                assert time.monotonic() < deadline
                time.sleep(0.05)
            # A broken file on SIGHUP: the agent keeps running and logs an error.
            config.write_text("collectors = 5\n", encoding="utf-8")
            proc.send_signal(signal.SIGHUP)
            while "reload refused" not in stderr_path.read_text(encoding="utf-8"):
                assert proc.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return stderr_path.read_text(encoding="utf-8")


def test_each_line_carries_its_priority_under_journald(tmp_path: Path) -> None:
    env = {**os.environ, "JOURNAL_STREAM": "match"}
    log = _run_until_reload_refused(tmp_path, env, tmp_path / "stderr")
    seen: dict[str, set[int]] = {}
    for line in log.splitlines():
        match = _PREFIX.match(line)
        assert match, f"line without a priority prefix: {line!r}"
        event = json.loads(match.group(2))
        priority = int(match.group(1))
        assert priority == SYSLOG_PRIORITY[event["level"]], line
        seen.setdefault(event["level"], set()).add(priority)
    assert seen["error"] == {3}
    assert seen["warning"] == {4}
    assert seen["info"] == {6}
    refused = [line for line in log.splitlines() if "reload refused" in line]
    assert refused and all(line.startswith("<3>{") for line in refused)


def test_no_prefix_when_stderr_is_not_the_journal_stream(tmp_path: Path) -> None:
    # Inherited from a service but redirected (a child writing to a file): plain JSON.
    env = {**os.environ, "JOURNAL_STREAM": "8:123456789"}
    log = _run_until_reload_refused(tmp_path, env, tmp_path / "stderr")
    lines = log.splitlines()
    assert lines
    for line in lines:
        assert line.startswith("{"), line
        json.loads(line)


@pytest.mark.parametrize("value", ["", "garbage", "1:", ":2", "a:b"])
def test_malformed_journal_stream_is_not_believed(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", value)
    assert not under_journald()


def test_explicit_journald_format_prefixes_every_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # log_format = "journald" for a unit whose stderr systemd does not describe (a wrapper).
    configure_logging("debug", "journald")
    try:
        log = get_logger("test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
    finally:
        structlog.reset_defaults()
    lines = capsys.readouterr().err.splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert [json.loads(line[3:])["event"] for line in lines] == ["d", "i", "w", "e", "c"]

"""sd_notify datagrams, the watchdog interval and the reload plan, without a process."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agent.service import SdNotifier, plan_reload, watchdog_interval
from agent.settings import CollectorEntry, load_settings


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


def test_notify_sends_one_datagram_per_call(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with _listener(path) as sock:
        notifier = SdNotifier(str(path))
        assert notifier.enabled
        assert notifier.notify("READY=1", "STATUS=running 2 collector(s)")
        assert sock.recv(4096) == b"READY=1\nSTATUS=running 2 collector(s)"
        assert notifier.notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_abstract_socket() -> None:
    name = f"pue-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert SdNotifier("@" + name).notify("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"


def test_notify_without_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SdNotifier()
    assert not notifier.enabled
    assert not notifier.notify("READY=1")


def test_notify_to_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    assert not SdNotifier(str(tmp_path / "gone.sock")).notify("READY=1")


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_plan_reload_starts_stops_and_keeps(tmp_path: Path) -> None:
    a = CollectorEntry(kind="sim", name="a", pdus=2)
    b = CollectorEntry(kind="sim", name="b", pdus=2)
    c = CollectorEntry(kind="sim", name="c", pdus=2)
    c_changed = CollectorEntry(kind="sim", name="c", pdus=3)
    off = CollectorEntry(kind="sim", name="a", pdus=2, enabled=False)
    old = load_settings(None, state_dir=tmp_path, collectors=[a, c])
    new = load_settings(None, state_dir=tmp_path, collectors=[off, b, c_changed])
    plan = plan_reload(old, new)
    assert sorted(plan.start) == ["b", "c"]
    assert sorted(plan.stop) == ["a", "c"]
    assert plan.keep == []
    assert plan.needs_restart == []
    same = plan_reload(old, load_settings(None, state_dir=tmp_path, collectors=[a, c]))
    assert same.empty
    assert sorted(same.keep) == ["a", "c"]


def test_plan_reload_names_settings_that_need_a_restart(tmp_path: Path) -> None:
    old = load_settings(None, state_dir=tmp_path)
    new = load_settings(
        None,
        state_dir=tmp_path / "elsewhere",
        journal={"budget_mb": 10},
        api={"enabled": True},
    )
    assert plan_reload(old, new).needs_restart == ["state_dir", "journal", "api"]

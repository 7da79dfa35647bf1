"""A full disk degrades, never crashes: the whole agent on small tmpfs mounts (issue 22).

Before: with the store full, ``StoreError: … No space left on device`` escaped from
``process_page → save_state`` and the agent exited 1 while ``/readyz`` said 200; with
the journal's disk full it stayed up but said ready and raised no alarm.

Here the agent (sim + MQTT collectors, the aggregator, the API) runs as a real process
with its state dir on one 20 MB tmpfs and its interval store on another. Each is
filled to the last byte, then freed; meanwhile MQTT messages are published (QoS 1).
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from agent import keys, metrics
from agent.cli import app
from agent.journal import Journal
from agent.settings import load_settings
from agent.sinks.quarantine import Quarantine
from collectors.sim.simulator import SiteSimulator, site_table
from tests.faults.agentproc import AgentProcess, start_agent, toml_text, wait_for
from tests.kpi.test_import_catch_up import _config as import_config
from tests.kpi.test_import_catch_up import _csv as import_csv
from tests.mqtt.helpers import publisher
from tests.paths import ROOT
from tests.servers.influxdb import InfluxDB1, start_influxdb
from tests.servers.mosquitto import Mosquitto, start_mosquitto
from tests.service.conftest import Tokens

SERIES = 5


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "20m") -> Iterator[Path]:
    """Mount a small tmpfs on ``folder`` (this suite runs as root); unmount afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {folder} (needs root): {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system has not one byte left."""
    filler = folder / "filler.bin"
    with filler.open("wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 12, 1):
            block = b"\0" * chunk
            while True:
                try:
                    handle.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def _ready(agent: AgentProcess) -> tuple[int, list[str]]:
    response = httpx.get(agent.url + "/readyz", timeout=2)
    return response.status_code, response.json()["reasons"]


def _alarm(agent: AgentProcess, tokens: Tokens, component: str) -> float:
    text = httpx.get(agent.url + "/metrics", headers=tokens.header("ops"), timeout=5).text
    match = re.search(rf'pue_agent_alarm\{{alarm="storage",component="{component}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def _config(tmp: Path, broker: Mosquitto, store: Path, influx: InfluxDB1) -> tuple[str, str]:
    """The collectors and sinks tables, and the top-level keys (the site file)."""
    site = tmp / "site.toml"
    site.write_text(toml_text(site_table(SiteSimulator(pdus=2))), encoding="utf-8")
    mapping = tmp / "ft.toml"
    mapping.write_text(
        '[[rules]]\ntopic = "ft/+/p"\nsegments = "_/device"\nformat = "number"\n'
        'fields = [{ point = "p", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    return (
        f'[[collectors]]\nkind = "sim"\nname = "sim"\npdus = 2\ninterval_s = 0.5\nspeed = 1\n'
        f'[[collectors]]\nkind = "mqtt"\nname = "mq"\nhost = "{broker.host}"\n'
        f'port = {broker.port}\nmappings = ["{mapping}"]\n'
        'subscriptions = [{ topic = "ft/#", qos = 1 }]\nreconnect_initial_s = 0.1\n'
        "reconnect_max_s = 0.5\n"
        f'[[sinks]]\nkind = "aggregator"\nname = "aggregator"\nstore_dir = "{store}"\n'
        "page_batches = 4\n"
        f'[[sinks]]\nkind = "influxdb"\nname = "influx"\napi = "v1"\nurl = "{influx.url}"\n'
        'database = "pue"\n'
    ), f'site_file = "{site}"\n'


def test_full_disks_raise_alarms_pause_and_resume_losing_nothing(tmp_path: Path) -> None:
    tokens = Tokens()
    broker = start_mosquitto(tmp_path / "broker")
    influx = start_influxdb(tmp_path / "influx")
    influx.query("CREATE DATABASE pue", method="POST")
    published: dict[str, list[float]] = defaultdict(list)
    client = publisher(broker)
    with tmpfs(tmp_path / "statefs") as statefs, tmpfs(tmp_path / "storefs") as storefs:
        body, head = _config(tmp_path, broker, storefs / "store", influx)
        agent = start_agent(tmp_path / "run", tokens, body, state=statefs / "state", head=head)
        try:
            wait_for(lambda: _ready(agent)[0] == 200, agent, "ready")

            def publish(count: int) -> None:
                for i in range(count):
                    device = f"meter-{i % SERIES}"
                    value = float(len(published[device]) * 10 + i % 7) + 0.25
                    info = client.publish(f"ft/{device}/p", str(value).encode(), qos=1)
                    info.wait_for_publish(timeout=10)
                    published[device].append(value)

            # The collector subscribes after the agent reports ready: a retained message is
            # delivered whether it was published before or after the subscription, so once
            # it is journalled nothing published later can miss the subscription.
            warmup = client.publish("ft/meter-warmup/p", b"0.5", qos=1, retain=True)
            warmup.wait_for_publish(timeout=10)
            published["meter-warmup"].append(0.5)
            wait_for(lambda: _mqtt_rows(agent) == 1, agent, "subscribed (retained warm-up)")
            publish(50)
            # 1. The store's disk fills: the aggregator alarms, the journal carries on.
            filler = fill(storefs)
            wait_for(lambda: "storage:aggregator" in _ready(agent)[1], agent, "store alarm")
            assert _ready(agent)[0] == 503
            assert _alarm(agent, tokens, "aggregator") == 1.0
            rows = agent.journal_rows()
            wait_for(lambda: agent.journal_rows() > rows, agent, "journal still growing")
            filler.unlink()
            wait_for(lambda: _ready(agent) == (200, []), agent, "ready after store freed")
            assert _alarm(agent, tokens, "aggregator") == 0.0

            # 2. The state dir's disk fills: journal commits wait, collection pauses, and
            # MQTT messages stay unacknowledged at the broker (QoS 1), then flow in.
            filler = fill(statefs)
            wait_for(lambda: "storage:journal" in _ready(agent)[1], agent, "journal alarm")
            assert _alarm(agent, tokens, "journal") == 1.0
            publish(100)
            assert httpx.get(agent.url + "/healthz", timeout=2).status_code == 200
            filler.unlink()
            wait_for(lambda: _ready(agent) == (200, []), agent, "ready after state freed")
            publish(50)
            total = sum(len(v) for v in published.values())
            wait_for(lambda: _mqtt_rows(agent) == total, agent, f"{total} MQTT readings journalled")
            # InfluxDB holds each acknowledged reading once: count and sum per series.
            expected = {d: (len(v), sum(v)) for d, v in published.items()}
            wait_for(lambda: _influx_series(influx) == expected, agent, "InfluxDB caught up")
            assert httpx.get(agent.url + "/healthz", timeout=2).status_code == 200
        finally:
            code = agent.stop()
            client.disconnect()
            client.loop_stop()
            broker.stop()
            influx.stop()
        log = agent.log_text()
        assert code == 0, log[-3000:]
        # One log line per raised alarm, not one per retry.
        raised = re.findall(r'"event": "alarm raised"[^\n]*"component": "(\w+)"', log)
        raised += re.findall(r'"component": "(\w+)"[^\n]*"event": "alarm raised"', log)
        assert sorted(set(raised)) == sorted(set(raised) & {"aggregator", "journal"})
        assert raised.count("journal") == 1, raised
        assert "Traceback" not in log
        # Nothing acknowledged is lost, nothing doubled: count and sum per series.
        journal = Journal(statefs / "state" / "journal" / "journal.sqlite")
        try:
            assert journal.verify().ok
            got: dict[str, list[float]] = defaultdict(list)
            for batch in journal.iter_batches():
                if batch.kind == "readings" and batch.source == "mq":
                    for device, value in batch.frame.select("device", "value").iter_rows():
                        got[device].append(value)
            assert {d: len(v) for d, v in got.items()} == {d: len(v) for d, v in published.items()}
            for device, values in published.items():
                assert sum(got[device]) == pytest.approx(sum(values), abs=1e-9), device
            # The aggregator caught up with everything journalled before the agent stopped.
            assert journal.cursor("aggregator") == journal.head[0]
        finally:
            journal.close()


def _influx_series(influx: InfluxDB1) -> dict[str, tuple[int, float]]:
    """The MQTT series in InfluxDB: device -> (count, sum) of power_w."""
    try:
        rows = influx.rows(
            "SELECT count(power_w) AS n, sum(power_w) AS s FROM pue_reading "
            "WHERE device =~ /^meter-/ GROUP BY device",
            db="pue",
        )
    except RuntimeError as exc:  # the sink creates the database with its first write
        assert "database not found" in str(exc), exc
        return {}
    return {str(r["device"]): (int(r["n"]), float(r["s"])) for r in rows if r["n"]}


def _mqtt_rows(agent: AgentProcess) -> int:
    db = sqlite3.connect(f"file:{agent.state}/journal/journal.sqlite?mode=ro", uri=True)
    try:
        (rows,) = db.execute(
            "SELECT COALESCE(SUM(n_rows), 0) FROM batches WHERE kind = 'readings' AND source = 'mq'"
        ).fetchone()
    finally:
        db.close()
    return int(rows)


def test_quarantine_waits_for_space_with_the_alarm_raised(tmp_path: Path) -> None:
    # The sink moves its cursor only once the quarantine record is fsynced, so a full
    # disk must make the write wait (alarm raised), never raise out of the sink.
    with tmpfs(tmp_path / "qfs", size="1m") as folder:
        quarantine = Quarantine(folder, "influx")
        quarantine.lines(["m,a=b v=1 1"], kind="readings", status=400, message="first")
        filler = fill(folder)
        done = threading.Event()

        def quarantine_more() -> None:
            quarantine.lines(["m v=2 2"] * 50, kind="readings", status=400, message="x")
            done.set()

        worker = threading.Thread(target=quarantine_more, daemon=True)
        worker.start()
        deadline = time.monotonic() + 10
        while ("storage", "quarantine:influx") not in metrics.raised_alarms():
            assert time.monotonic() < deadline, "no storage alarm for the quarantine"
            time.sleep(0.02)
        assert not done.wait(0.5)  # still waiting for space, nothing half-written kept
        assert quarantine.path.read_text(encoding="utf-8").count("\n") == 1
        filler.unlink()
        assert done.wait(10)
        worker.join(5)
        assert ("storage", "quarantine:influx") not in metrics.raised_alarms()
        lines = quarantine.path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 51
        assert all(json.loads(line)["sink"] == "influx" for line in lines)
        assert quarantine.count == 51


def test_a_report_onto_a_full_disk_is_a_clear_error_and_no_bundle(tmp_path: Path) -> None:
    config = import_config(tmp_path)
    imported = CliRunner().invoke(app, ["import", str(import_csv(tmp_path / "h.csv")),
                                        "--config", str(config)])  # fmt: skip
    assert imported.exit_code == 0, imported.output
    keys.init_key(load_settings(config))
    with tmpfs(tmp_path / "out", size="256k") as out:
        result = subprocess.run(
            [sys.executable, "-m", "agent", "report", "--month", "2026-10", "--lang", "en",
             "--no-csv", "--out", str(out), "--config", str(config)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        assert (
            f"cannot write the report under {out}: no space left on device" in (result.stderr)
            or f"cannot write the report under {out}: ENOSPC" in result.stderr
        ), result.stderr
        assert "Traceback" not in result.stderr
        assert not list(out.glob("dc-1-*")), list(out.iterdir())  # no bundle, no zip

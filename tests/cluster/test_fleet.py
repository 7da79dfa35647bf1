"""The fleet: two sites, one NATS account, one InfluxDB; ``kpi --fleet`` and the API list both.

Two real agents (``sim`` collector on an accelerated clock, aggregator, ``fleet`` sink,
InfluxDB 1.x sink), each with its own site id, simulator seed and signing key, publish to
one real ``nats-server`` (JetStream, KV bucket ``pue_fleet``) and one real InfluxDB. The
coverage threshold is 0: 20 simulated minutes cover a tiny share of the month, and the
comparison needs the PUE values, not ``insufficient_data``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import structlog.testing
from typer.testing import CliRunner, Result

from agent.api.server import ApiServer
from agent.cli import app
from agent.fleet import FleetSink, fleet_list
from agent.pipeline import build_agent
from agent.settings import load_settings
from agent.store import IntervalStore
from collectors.sim.simulator import SiteSimulator, site_table
from tests.cluster.helpers import PDUS, RunningAgent, sim_options, wait_for
from tests.faults.agentproc import toml_text
from tests.servers import free_port
from tests.servers.influxdb import InfluxDB1, start_influxdb
from tests.servers.nats import NatsCluster, start_nats

TICKS = 120  # 20 simulated minutes of 10 s ticks
SPEED = 600.0  # 2 s of wall time
MONTH = "2026-11"  # the simulator starts 2026-11-02 08:00 UTC (16:00 in Asia/Shanghai)
DB = "fleet"
HEARTBEAT_S = 0.5
STALE_AFTER_S = 6.0  # 12 heartbeats: a running site is never this old (even on a loaded
# machine), a stopped one soon is
OPS_TOKEN = "ops-fleet-test-token-0123456789abcdef"
SITES = {"site-a": 11, "site-b": 22}  # the two signed sites: id -> simulator seed
SEEDS = {**SITES, "site-c": 33}  # and the outage test's site (no key: unsigned)

runner = CliRunner()


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    running = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    server = start_influxdb(tmp_path_factory.mktemp("influx"))
    try:
        server.create_database(DB)
        yield server
    finally:
        server.stop()


def _config(
    tmp: Path, site_id: str, nats_url: str, influx_url: str, api_port: int, speed: float = SPEED
) -> Path:
    """One site's agent.toml: the same file the agent, ``kpi``, ``keys`` and ``report`` read."""
    secrets = tmp / site_id / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "api_token_ops").write_text(OPS_TOKEN + "\n", encoding="utf-8")
    table: dict[str, Any] = {
        "state_dir": str(tmp / site_id / "state"),
        "secrets_dir": str(secrets),
        "api": {"enabled": True, "listen": "127.0.0.1", "port": api_port},
        "site": site_table(SiteSimulator(pdus=PDUS), site_id=site_id),
        "collectors": [sim_options(TICKS, speed=speed, seed=SEEDS[site_id])],
        "sinks": [
            {
                "kind": "aggregator",
                "name": "aggregator",
                "interval_s": 60,
                "rules": False,
                "kpi_refresh_s": 0.2,
                "kpi_coverage_threshold": 0.0,
            },
            {
                "kind": "fleet",
                "name": "fleet",
                "servers": [nats_url],
                "heartbeat_s": HEARTBEAT_S,
                "check_s": 0.1,
                "connect_timeout_s": 1.0,
                "request_timeout_s": 2.0,
                "reconnect_initial_s": 0.2,
                "reconnect_max_s": 1.0,
            },
            {
                "kind": "influxdb",
                "name": "influx",
                "api": "v1",
                "url": influx_url,
                "database": DB,
                "readings": False,
            },
        ],
    }
    path = tmp / f"{site_id}.toml"
    path.write_text(toml_text(table), encoding="utf-8")
    return path


async def _cli(*args: str) -> Result:
    # In a thread: the fleet read runs its own event loop (asyncio.run), not this test's.
    return await asyncio.to_thread(runner.invoke, app, list(args))


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _fleet_sink(running: RunningAgent) -> FleetSink:
    return next(c for c in running.agent.consumers if isinstance(c, FleetSink))


def _start(config: Path) -> RunningAgent:
    agent = build_agent(load_settings(config))
    return RunningAgent(agent, asyncio.create_task(agent.run(install_signals=False)))


def _simulated_end(running: RunningAgent) -> bool:
    tasks = running.agent.collector_tasks
    return bool(tasks) and all(t.done() for t in tasks.values()) and running.aggregated()


async def _kpi_json(config: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``kpi --json`` of one site, rows by (period_kind, metric)."""
    data = _json(
        await _cli(
            "kpi", "-c", str(config), "--period", MONTH, "--json", "--coverage-threshold", "0"
        )
    )
    return {(r["period_kind"], r["metric"]): r for r in data["kpis"]}


def _close(got: float | None, expected: float | None) -> bool:
    if got is None or expected is None:
        return got is expected
    return abs(got - expected) <= 1e-12


async def test_two_sites_one_nats_account_one_influxdb(
    nats_server: NatsCluster, influx: InfluxDB1, tmp_path: Path
) -> None:
    url = nats_server.urls[0]
    configs = {site: _config(tmp_path, site, url, influx.url, free_port()) for site in SITES}
    public: dict[str, Path] = {}
    for site, config in configs.items():
        assert (await _cli("keys", "init", "-c", str(config))).exit_code == 0
        shown = (await _cli("keys", "show", "-c", str(config))).stdout
        public[site] = tmp_path / f"{site}.pub.pem"
        public[site].write_text(shown[shown.index("-----BEGIN") :], encoding="utf-8")
    fingerprints = {
        site: next(
            line.split()[-1]
            for line in (await _cli("keys", "show", "-c", str(c))).stdout.splitlines()
            if line.startswith("fingerprint:")
        )
        for site, c in configs.items()
    }
    assert fingerprints["site-a"] != fingerprints["site-b"]

    a, b = _start(configs["site-a"]), _start(configs["site-b"])
    api = ApiServer(b.agent)
    await api.start()
    try:
        await wait_for(lambda: _simulated_end(a) and _simulated_end(b), "both sites aggregated", 60)
        await wait_for(
            lambda: _fleet_sink(a).published >= 2 and _fleet_sink(b).published >= 2,
            "both sites published their summary",
        )
        await a.stop()  # a clean stop publishes the final summary after the last refresh
        await asyncio.sleep(STALE_AFTER_S + 0.5)

        # -- kpi --fleet and the API: both sites, A stale (stopped), B fresh (heartbeat) ------
        fleet = _json(
            await _cli(
                "kpi",
                "--fleet",
                "--json",
                "-c",
                str(configs["site-b"]),
                "--stale-after",
                str(STALE_AFTER_S),
            )
        )
        rows = {r["site"]: r for r in fleet}
        assert sorted(rows) == ["site-a", "site-b"]
        assert rows["site-a"]["stale"] and rows["site-a"]["age_s"] > STALE_AFTER_S
        assert not rows["site-b"]["stale"] and rows["site-b"]["age_s"] < STALE_AFTER_S
        for site, row in rows.items():
            assert row["signature"] == "valid", row
            assert row["key_fingerprint"] == fingerprints[site]
            assert row["month"] == MONTH and row["category"] == 2
            assert row["pue_month"] is not None and row["pue_month"] > 1.0, row
        assert rows["site-a"]["pue_month"] != rows["site-b"]["pue_month"]  # other seeds

        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            refused = await client.get("/api/v1/fleet")
            assert refused.status_code == 401
            served = await client.get(
                "/api/v1/fleet",
                params={"stale_after_s": STALE_AFTER_S},
                headers={"Authorization": f"Bearer {OPS_TOKEN}"},
            )
        assert served.status_code == 200, served.text
        by_api = {r["site"]: r for r in served.json()}
        assert sorted(by_api) == ["site-a", "site-b"]
        moving = {"age_s", "published_at"}  # B re-publishes every heartbeat
        for site in SITES:
            assert {k: v for k, v in by_api[site].items() if k not in moving} == {
                k: v for k, v in rows[site].items() if k not in moving
            }
        await api.stop()
        await b.stop()
    finally:
        await api.stop()
        a.kill()
        b.kill()
        await asyncio.gather(a.task, b.task, return_exceptions=True)

    # -- each row equals the site's own `kpi --json` (to 1e-12) --------------------------------
    final = {
        r["site"]: r
        for r in _json(await _cli("kpi", "--fleet", "--json", "-c", str(configs["site-a"])))
    }
    for site, config in configs.items():
        own = await _kpi_json(config)
        row = final[site]
        pairs = {
            "pue_month": own[("month", "pue")]["value"],
            "coverage_month": own[("month", "pue")]["coverage"],
            "pue_ttm": own[("ttm", "pue")]["value"],
            "coverage_ttm": own[("ttm", "pue")]["coverage"],
            "ref_month": own[("month", "ref")]["value"],
            "ref_ttm": own[("ttm", "ref")]["value"],
        }
        for name, expected in pairs.items():
            assert _close(row[name], expected), (site, name, row[name], expected)

    # -- one InfluxDB holds both sites' month PUE (tag site) -----------------------------------
    written = influx.rows(
        "SELECT last(value) FROM pue_kpi WHERE metric = 'pue' AND period_kind = 'month' "
        "GROUP BY site",
        db=DB,
    )
    by_site = {r["site"]: r["last"] for r in written}
    assert sorted(by_site) == ["site-a", "site-b"]
    for site in SITES:
        assert by_site[site] == pytest.approx(final[site]["pue_month"], rel=1e-12)

    # -- a summary altered in the bucket is INVALID; a pinned other key is INVALID -------------
    nc = await nats.connect(servers=[url])
    try:
        kv = await nc.jetstream().key_value("pue_fleet")
        document = json.loads((await kv.get("site-a")).value or b"")
        document["summary"]["pue_month"] += 0.01
        await kv.put("site-a", json.dumps(document).encode())
    finally:
        await nc.close()
    tampered = {
        r["site"]: r
        for r in _json(
            await _cli(
                "kpi",
                "--fleet",
                "--json",
                "-c",
                str(configs["site-b"]),
                "--trust",
                f"site-b={public['site-a']}",
            )
        )
    }
    assert tampered["site-a"]["signature"] == "INVALID"
    assert tampered["site-a"]["signature_detail"] == "signature does not match the summary"
    assert tampered["site-b"]["signature"] == "INVALID"
    assert tampered["site-b"]["signature_detail"] == "signed with a key other than the trusted one"
    pinned_right = _json(
        await _cli(
            "kpi",
            "--fleet",
            "--json",
            "-c",
            str(configs["site-b"]),
            "--trust",
            f"site-b={public['site-b']}",
        )
    )
    assert {r["site"]: r["signature"] for r in pinned_right} == {
        "site-a": "INVALID",
        "site-b": "valid",
    }
    human = await _cli("kpi", "--fleet", "-c", str(configs["site-b"]))
    assert human.exit_code == 0, human.output
    assert "site-a" in human.stdout and "INVALID" in human.stdout and "STALE" in human.stdout

    # -- each site's report verifies with its own key and not with the other's ---------------
    for site, config in configs.items():
        out_dir = tmp_path / "reports" / site
        made = await _cli(
            "report",
            "-c",
            str(config),
            "--month",
            MONTH,
            "--lang",
            "en",
            "--no-csv",
            "--out",
            str(out_dir),
            "--coverage-threshold",
            "0",
        )
        assert made.exit_code == 0, made.output
        assert f"signed by key {fingerprints[site]}" in made.stdout
        bundle = next(out_dir.glob("*.zip"))
        other = "site-b" if site == "site-a" else "site-a"
        ok = await _cli("verify", str(bundle), "--pubkey", str(public[site]))
        assert ok.exit_code == 0, ok.output
        wrong = await _cli("verify", str(bundle), "--pubkey", str(public[other]))
        assert wrong.exit_code == 1, wrong.output
        assert "bundle INVALID: signature:" in wrong.stdout


async def test_a_nats_outage_neither_blocks_ingest_nor_logs_more_than_once(
    nats_server: NatsCluster, influx: InfluxDB1, tmp_path: Path
) -> None:
    url = nats_server.urls[0]
    # 120 ticks at 150x: 8 s of ingest, most of it while NATS is down.
    config = _config(tmp_path, "site-c", url, influx.url, free_port(), speed=150.0)
    settings = load_settings(config)
    site = _start(config)
    sink = _fleet_sink(site)
    try:
        with structlog.testing.capture_logs() as logs:
            await wait_for(lambda: sink.published >= 1, "a first summary")
            nats_server.kill(0)
            head_at_kill = site.agent.journal.head[0]
            await wait_for(lambda: sink.alarm is not None, "the sink's alarm")
            # Ingest goes on: every tick is journalled and aggregated while NATS is down.
            await wait_for(lambda: _simulated_end(site), "the simulated end, aggregated", 60)
            assert site.agent.journal.head[0] > head_at_kill
            await asyncio.sleep(3 * HEARTBEAT_S + 1.0)  # several more failed heartbeats
            assert sink.alarm is not None
            published = sink.published
            nats_server.restart(0)
            await wait_for(lambda: sink.alarm is None, "the sink's recovery", 30)
            await wait_for(lambda: sink.published > published, "a summary after recovery")
        alarms = [e for e in logs if e["event"] == "sink alarm" and e.get("sink") == "fleet"]
        cleared = [e for e in logs if e["event"] == "sink alarm cleared"]
        assert len(alarms) == 1, alarms  # once for the whole outage, however many retries
        assert len(cleared) == 1, cleared
        assert "NATS" in alarms[0]["message"]
        await site.stop()
    finally:
        site.kill()
        await asyncio.gather(site.task, return_exceptions=True)
    stored = IntervalStore(settings.store_path()).read_kpis(
        period_kind="month", period=MONTH, metric="pue"
    )
    rows = {r["site"]: r for r in await fleet_list(settings, stale_after_s=3600)}
    assert rows["site-c"]["pue_month"] == stored["value"].item()
    assert rows["site-c"]["signature"] == "unsigned"  # site-c has no key: said, not hidden


def test_unreachable_nats_exits_3_without_a_traceback(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "agent.toml"
    config.write_text(toml_text({"state_dir": str(tmp_path / "state")}), encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "kpi",
            "--fleet",
            "--json",
            "-c",
            str(config),
            "--nats-url",
            f"nats://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result
    error = json.loads(result.stdout)
    assert error["code"] == 3
    assert error["error"].startswith(f"fleet: NATS unreachable (nats://127.0.0.1:{port})")
    assert "Traceback" not in result.stdout + result.stderr

    # No NATS anywhere in the config and no --nats-url: a configuration error (exit 2).
    plain = runner.invoke(app, ["kpi", "--fleet", "--json", "-c", str(config)])
    assert plain.exit_code == 2, plain.output
    assert "no NATS configured for the fleet" in json.loads(plain.stdout)["error"]


def _retire_config(tmp: Path, site_id: str | None, nats_url: str, bucket: str) -> Path:
    """A site's config with only what ``--retire`` reads: its site model and fleet sink."""
    tmp.mkdir(parents=True)
    table: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "sinks": [
            {
                "kind": "fleet",
                "name": "fleet",
                "servers": [nats_url],
                "bucket": bucket,
                "heartbeat_s": 60,
                "connect_timeout_s": 1.0,
                "request_timeout_s": 2.0,
            }
        ],
    }
    if site_id is not None:
        table["site"] = site_table(SiteSimulator(pdus=PDUS), site_id=site_id)
    path = tmp / f"{site_id or 'reader'}.toml"
    path.write_text(toml_text(table), encoding="utf-8")
    return path


async def test_a_retired_site_leaves_the_fleet_list(
    nats_server: NatsCluster, tmp_path: Path
) -> None:
    # Two summaries in a bucket of this test's own; site-r is decommissioned: its own
    # config purges its key, the other site stays, and a second purge is harmless.
    bucket = "pue_fleet_retire"
    client = await nats.connect(servers=nats_server.urls)
    try:
        kv = await client.jetstream(timeout=2.0).create_key_value(
            nats.js.api.KeyValueConfig(bucket=bucket, history=1)
        )
        for site in ("site-r", "site-s"):
            summary = {"summary": {"site": site, "month": MONTH}, "signature": None}
            await kv.put(site, json.dumps(summary).encode())
    finally:
        await client.close()
    url = nats_server.urls[0]
    own = _retire_config(tmp_path / "r", "site-r", url, bucket)
    reader = _retire_config(tmp_path / "hq", None, url, bucket)

    async def listed() -> list[str]:
        rows = _json(await _cli("kpi", "--fleet", "--json", "-c", str(reader)))
        return [r["site"] for r in rows]

    assert await listed() == ["site-r", "site-s"]
    for _ in range(2):  # idempotent: the second purge of an absent key succeeds too
        retired = await _cli("kpi", "--fleet", "--retire", "-c", str(own))
        assert retired.exit_code == 0, retired.output
        assert f"site site-r's summary purged from bucket {bucket}" in retired.stdout
        assert "within 60 s" in retired.stdout  # the heartbeat that would list it again
        assert await listed() == ["site-s"]

    # Errors, each with its exit code and no traceback: no site model (a reader's config
    # has no key of its own), NATS unreachable, --retire without --fleet.
    no_site = await _cli("kpi", "--fleet", "--retire", "-c", str(reader))
    assert no_site.exit_code == 2 and "no site model configured" in no_site.stderr
    down = await _cli(
        "kpi",
        "--fleet",
        "--retire",
        "-c",
        str(own),
        "--nats-url",
        f"nats://127.0.0.1:{free_port()}",
    )
    assert down.exit_code == 3 and "NATS unreachable" in down.stderr, down.output
    alone = await _cli("kpi", "--retire", "-c", str(own))
    assert alone.exit_code == 2 and "--retire goes with --fleet" in alone.stderr
    assert await listed() == ["site-s"]

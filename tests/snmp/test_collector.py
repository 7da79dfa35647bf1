"""Scheduling and robustness of the collector: cadence beside black holes, failure logging,
GETBULK fallback, configuration errors, the lean v2c path against pysnmp's, and the
bookkeeping that keeps a poll cheap (shared timeouts, batched metrics, the slot pool)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import statistics
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import structlog
from prometheus_client import CollectorRegistry, Histogram
from pydantic import SecretStr

from agent import metrics
from agent.plugins import CollectorContext
from agent.settings import ConfigError
from collectors.snmp import build
from collectors.snmp.ber import encode_oid, parse_oid
from collectors.snmp.client import SnmpTimeoutError, UdpDispatcher, V2cSession
from collectors.snmp.collector import _observe_many, _Pool
from tests.paths import ROOT
from tests.servers import free_udp_port
from tests.servers.snmp import black_hole, bulk_dropping_relay, snmpd
from tests.snmp.conftest import Capture, poll_once, run_collector, settings, value_of
from tests.snmp.helpers import ONE_GAUGE_PROFILE, until
from tests.snmp.test_profiles_walks import CASES

HEALTHY = ["janitza-umg96_umg96", "apc-inrow", "apc_smart1500"]  # one GET PDU per poll each
INTERVAL_S = 0.25


def _intervals(starts: list[float], after: float) -> list[float]:
    kept = [t for t in starts if t >= after]
    return [b - a for a, b in itertools.pairwise(kept)]


async def _cadence_run(sim, holes: list[int]) -> tuple[dict[str, list[float]], object]:
    devices = [
        {"name": c, "host": "127.0.0.1", "port": sim.port, "community": c} for c in HEALTHY
    ] + [
        {"name": f"hole-{i}", "host": "127.0.0.1", "port": p, "community": "public"}
        for i, p in enumerate(holes)
    ]
    collector = build(
        "cadence",
        {
            "devices": devices,
            # Tight limits on purpose: failing devices must not take the healthy slots.
            "max_concurrent": 4,
            "max_concurrent_failing": 2,
            "defaults": {
                "interval_s": INTERVAL_S,
                "jitter_s": 0,
                "timeout_s": 0.4,
                "retries": 1,
                "backoff_max_s": 0.8,
            },
            "flush_s": 0.1,
        },
        settings(),
    )
    collector.first_poll_now = True
    collector.record_starts = True
    await run_collector(collector, until=3.2, polls=10**6)
    t0 = min(s.starts[0] for s in collector.states.values())
    # Skip the first 1.2 s: the black holes' first polls are still unproven then.
    return {c: _intervals(collector.states[c].starts, t0 + 1.2) for c in HEALTHY}, collector


async def test_black_hole_does_not_change_neighbours_cadence(sim) -> None:
    baseline, _ = await _cadence_run(sim, [])
    with (
        black_hole() as h1,
        black_hole() as h2,
        black_hole() as h3,
        structlog.testing.capture_logs() as events,
    ):
        beside, collector = await _cadence_run(sim, [h1, h2, h3])
    for name in HEALTHY:
        for run in (baseline, beside):
            assert len(run[name]) >= 6, name
            assert max(abs(i - INTERVAL_S) for i in run[name]) < 0.08, (name, run[name])
        assert abs(statistics.mean(beside[name]) - statistics.mean(baseline[name])) < 0.02
    failing = [e for e in events if e["event"] == "device failing"]
    assert sorted(e["device"] for e in failing) == ["hole-0", "hole-1", "hole-2"]
    assert all(e["reason"] == "timeout" for e in failing)
    # The black holes back off: fewer polls than their healthy neighbours.
    assert collector.states["hole-0"].polls < collector.states[HEALTHY[0]].polls / 2


async def test_failure_logged_once_and_recovery_once() -> None:
    """A device that is down, then comes up: 'device failing' once, 'device recovered' once."""
    port = free_udp_port()
    device = {
        "name": "meter",
        "host": "127.0.0.1",
        "port": port,
        "community": "public",
        "profile": "janitza-umg96",
        "interval_s": 0.2,
        "jitter_s": 0,
        "timeout_s": 0.2,
        "retries": 0,
        "backoff_max_s": 0.2,
    }
    collector = build("rec", {"devices": [device], "flush_s": 0.05}, settings())
    collector.first_poll_now = True
    overrides = [("1.3.6.1.4.1.34278.2.1.0", "integer", "10041")]  # JANITZA-MIB-UMG96 p3, W

    async def start_agent_later() -> None:
        while collector.states.get("meter") is None or collector.states["meter"].failed_polls < 3:
            await asyncio.sleep(0.05)

    with structlog.testing.capture_logs() as events:
        runner = asyncio.create_task(run_collector(collector, until=20, polls=10**6))
        await start_agent_later()
        with snmpd(overrides, port=port):
            state = collector.states["meter"]
            done = state.finished
            while state.failing or state.finished < done + 2:
                await asyncio.sleep(0.05)
        runner.cancel()
        try:
            capture = await runner
        except asyncio.CancelledError:
            capture = None
    names = [e["event"] for e in events]
    assert names.count("device failing") == 1
    assert names.count("device recovered") == 1
    recovered = next(e for e in events if e["event"] == "device recovered")
    assert recovered["failed_polls"] >= 3
    del capture


async def test_getbulk_fallback_to_getnext(sim) -> None:
    """An agent that never answers GETBULK: the walk is redone with GETNEXT, the device is
    remembered as GETNEXT-only, and the readings equal those of a direct poll."""
    direct, _ = await poll_once(sim, "vertiv-pdu_mg02e4w1")
    with bulk_dropping_relay(sim.port) as relay:
        entry = {"port": relay, "timeout_s": 0.3, "retries": 0}
        with structlog.testing.capture_logs() as events:
            relayed, collector = await poll_once(sim, "vertiv-pdu_mg02e4w1", **entry)
    poller = collector.states["vertiv-pdu_mg02e4w1"].poller
    assert poller.bulk_fallback and not poller.bulk
    assert any("GETNEXT" in e["event"] for e in events)
    cols = ["point", "quantity", "value"]
    assert relayed.select(cols).sort("point").equals(direct.select(cols).sort("point"))
    assert value_of(relayed, "pdu.1.power") == 1017.0  # VERTIV-V5-MIB pduTotalRealPower.1, W


@pytest.mark.parametrize("walk", [c[0] for c in CASES])
async def test_lean_v2c_path_equals_pysnmp(sim, walk) -> None:
    """The lean codec and pysnmp read every walk identically (GETBULK max-repetitions 7 to
    cross many PDU boundaries)."""
    lean, _ = await poll_once(sim, walk, max_repetitions=7)
    entry = {
        "name": walk,
        "host": "127.0.0.1",
        "port": sim.port,
        "community": walk,
        "max_repetitions": 7,
    }
    collector = build(
        "ref",
        {"devices": [entry], "engine": "pysnmp", "defaults": {"jitter_s": 0}, "flush_s": 0.05},
        settings(),
    )
    collector.first_poll_now = True
    ref = (await run_collector(collector)).frame()
    cols = ["point", "quantity", "value"]
    assert ref.height == lean.height > 0
    assert lean.select(cols).sort("point").equals(ref.select(cols).sort("point"))


async def test_no_matching_profile_is_a_clear_failure(sim) -> None:
    """Stulz WIB8000 (no shipped profile): logged once with the sysObjectID, no readings."""
    with structlog.testing.capture_logs() as events:
        frame, _ = await poll_once(sim, "stulz_wib8000")
    assert frame.height == 0
    [event] = [e for e in events if e["event"] == "device failing"]
    assert event["reason"] == "no_profile"
    assert "1.3.6.1.4.1.29462.10" in event["error"]


# -- configuration errors ------------------------------------------------------------------------


def test_bad_option_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"collectors\.s\.devices\.0\.port"):
        build(
            "s", {"devices": [{"name": "a", "host": "h", "port": 0, "community": "c"}]}, settings()
        )


def test_exactly_one_auth_method() -> None:
    # None on the device and none in [defaults] to fall back on.
    with pytest.raises(ConfigError, match=r"device 'a': give community_secret or v3 \(on the"):
        build("s", {"devices": [{"name": "a", "host": "h"}]}, settings())
    with pytest.raises(ConfigError, match="exactly one of community"):
        device = {"name": "a", "host": "h", "community": "c", "community_secret": "s"}
        build("s", {"devices": [device]}, settings())
    with pytest.raises(ConfigError, match="community_secret or v3, not both"):
        defaults = {"community_secret": "s", "v3": {"user": "u"}}
        build("s", {"defaults": defaults, "devices": [{"name": "a", "host": "h"}]}, settings())


def test_unknown_profile_and_quirk() -> None:
    with pytest.raises(ConfigError, match=r"devices\.0\.profile: unknown profile 'nope'"):
        build(
            "s",
            {"devices": [{"name": "a", "host": "h", "community": "c", "profile": "nope"}]},
            settings(),
        )
    with pytest.raises(ConfigError, match=r"devices\.0\.quirks: unknown quirk"):
        build(
            "s",
            {
                "devices": [
                    {
                        "name": "a",
                        "host": "h",
                        "community": "c",
                        "profile": "ups-mib",
                        "quirks": ["nope"],
                    }
                ]
            },
            settings(),
        )


def test_missing_secret_is_named_not_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secret 'pdu-community' not found"):
        build(
            "s",
            {"devices": [{"name": "a", "host": "h", "community_secret": "pdu-community"}]},
            settings(secrets_dir=tmp_path),
        )


def test_bad_profile_file_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        'description = "x"\nmib = "X"\n[match]\npresent = ["1.3.6.1.4.1.1"]\n'
        '[[metrics]]\nname = "m"\noid = "1.3.6.1.4.1.1.0"\npoint = "p"\nquantity = "watts"\n'
    )
    with pytest.raises(
        ConfigError, match=r"mine\.toml: metrics\.0\.quantity: .*unknown quantity 'watts'"
    ):
        build(
            "s",
            {
                "devices": [{"name": "a", "host": "h", "community": "c"}],
                "profiles_dir": str(tmp_path),
            },
            settings(),
        )


def test_operator_profile_folder_adds_a_family(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        'description = "x"\nmib = "X"\n[match]\npresent = ["1.3.6.1.4.1.1"]\n'
        '[[metrics]]\nname = "m"\noid = "1.3.6.1.4.1.1.0"\npoint = "p"\nquantity = "power_w"\n'
    )
    collector = build(
        "s",
        {
            "devices": [{"name": "a", "host": "h", "community": "c", "profile": "mine"}],
            "profiles_dir": str(tmp_path),
        },
        settings(),
    )
    assert "mine" in collector.profiles and "apc-rpdu2" in collector.profiles


def test_describe() -> None:
    collector = build(
        "s",
        {"devices": [{"name": "a", "host": "h", "community": "c", "interval_s": 30}]},
        settings(),
    )
    assert collector.describe().startswith("snmp: 1 device(s) every 30 s")
    assert isinstance(pl.DataFrame(), pl.DataFrame)


def test_sample_config_builds(tmp_path: Path) -> None:
    """collectors/snmp/sample.toml is a valid configuration (with its secrets present)."""
    data = tomllib.loads((ROOT / "collectors/snmp/sample.toml").read_text())
    [entry] = data["collectors"]
    for name in ("snmp-community", "ups1-auth", "ups1-priv"):
        (tmp_path / name).write_text("x" * 12)
    options = {k: v for k, v in entry.items() if k not in ("kind", "name")}
    collector = build(entry["name"], options, settings(secrets_dir=tmp_path))
    # Three devices written out, then one range entry for 120 PDUs.
    assert len(collector.options.devices) == 123
    assert collector.options.devices[1].v3 is not None
    last = collector.options.devices[-1]
    assert (last.name, last.host, last.community_secret) == (
        "rpdu-b120",
        "10.20.2.130",
        "snmp-community",
    )


@contextlib.contextmanager
def _late_relay(target_port: int, delay_s: float) -> Iterator[int]:
    """A UDP relay to a real agent that answers only the first copy of each request,
    ``delay_s`` late (a congested line): retries with the same request id must still
    take that answer."""
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    front.settimeout(0.05)
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    back.settimeout(2)
    stop = threading.Event()
    seen: set[bytes] = set()

    def answer(data: bytes, addr: tuple[str, int]) -> None:
        # A timer may fire after the relay closed (the test is over): nothing to relay then.
        with contextlib.suppress(OSError):
            back.sendto(data, ("127.0.0.1", target_port))
            front.sendto(back.recvfrom(65535)[0], addr)

    def pump() -> None:
        while not stop.is_set():
            try:
                data, addr = front.recvfrom(65535)
            except TimeoutError:
                continue
            if data in seen:  # a retry: same bytes, same request id
                continue
            seen.add(data)
            threading.Timer(delay_s, answer, (data, addr)).start()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield front.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        front.close()
        back.close()


SYS_UPTIME = encode_oid(parse_oid("1.3.6.1.2.1.1.3.0"))


async def test_dispatcher_retries_take_a_late_answer_and_time_out_on_schedule() -> None:
    """Timeouts come from one shared timer: an answer 0.3 s late to a 0.2 s timeout is taken
    during the retry (same request id); without a retry it is a timeout after 0.2 s (+ at
    most 0.02 s of slack); a silent device times out after (retries + 1) x 0.2 s."""
    dispatcher = UdpDispatcher()
    await dispatcher.open()
    loop = asyncio.get_running_loop()
    try:
        with snmpd([]) as agent, _late_relay(agent.port, 0.3) as relay:
            retried = V2cSession(dispatcher, "127.0.0.1", relay, SecretStr("public"), 0.2, 1)
            t0 = loop.time()
            [(oid, uptime)] = await retried.get([SYS_UPTIME])
            assert oid == SYS_UPTIME and isinstance(uptime, int)
            assert 0.3 <= loop.time() - t0 < 0.4  # 0.2 s timeout, then the late answer
            once = V2cSession(dispatcher, "127.0.0.1", relay, SecretStr("public"), 0.2, 0)
            t0 = loop.time()
            with pytest.raises(SnmpTimeoutError, match=r"1 tries of 0\.2 s"):
                await once.get([SYS_UPTIME])
            assert 0.2 <= loop.time() - t0 < 0.2 + 0.02 + 0.05  # slack, and the loop's latency
        with black_hole() as hole:
            silent = V2cSession(dispatcher, "127.0.0.1", hole, SecretStr("public"), 0.1, 2)
            t0 = loop.time()
            with pytest.raises(SnmpTimeoutError, match=r"3 tries of 0\.1 s"):
                await silent.get([SYS_UPTIME])
            assert 0.3 <= loop.time() - t0 < 0.3 + 3 * 0.01 + 0.05  # 3 x (0.1 s + <= 0.01 s)
        assert not dispatcher._pending  # nothing left behind
    finally:
        dispatcher.close()


def test_batched_histogram_equals_observe() -> None:
    """Poll latencies reach the histogram once per flush; the buckets, count and sum must be
    those that one observe() per value gives (bounds included: observe counts v <= bound)."""
    buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
    values = [0.0, 0.004, 0.005, 0.0051, 0.01, 0.3, 0.5, 2.5, 29.9, 30.0, 31.0, 1e6]
    one, batch = CollectorRegistry(), CollectorRegistry()
    each = Histogram("h", "h", buckets=buckets, registry=one)
    for v in values:
        each.observe(v)
    batched = Histogram("h", "h", buckets=buckets, registry=batch)
    _observe_many(batched, values)
    for bound in [*buckets, float("inf")]:
        le = {"le": "+Inf" if bound == float("inf") else repr(float(bound))}
        assert batch.get_sample_value("h_bucket", le) == one.get_sample_value("h_bucket", le)
    # 0.0, 0.004 and 0.005 are <= 0.005: three in the first bucket, twelve in +Inf.
    assert batch.get_sample_value("h_bucket", {"le": "0.005"}) == 3
    assert batch.get_sample_value("h_count") == len(values) == 12
    assert batch.get_sample_value("h_sum") == pytest.approx(sum(values))


async def test_pool_hands_a_freed_slot_to_the_longest_waiter() -> None:
    pool = _Pool(2)
    assert pool.take() is None and pool.take() is None  # two free slots
    first, second, third = pool.take(), pool.take(), pool.take()
    assert first is not None and second is not None and third is not None
    second.cancel()  # its poll was cancelled while waiting: skipped
    pool.give()
    assert first.done() and not third.done()
    pool.give()
    assert third.done()
    pool.give()
    pool.give()
    assert pool.take() is None and pool.take() is None and pool.take() is not None


async def test_poll_counts_reach_prometheus(sim) -> None:
    """Counters are published per flush and at the end: pue_agent_polls_total equals the
    polls made, and the latency histogram counts every good poll."""
    labels = {"collector": "snmp-test", "device": "apc-inrow"}
    before = metrics.REGISTRY.get_sample_value("pue_agent_polls_total", labels) or 0.0
    seconds = {"collector": "snmp-test"}
    observed = metrics.REGISTRY.get_sample_value("pue_agent_poll_seconds_count", seconds) or 0.0
    _, collector = await poll_once(sim, "apc-inrow")
    state = collector.states["apc-inrow"]
    assert state.polls >= 1 and state.finished >= 1 and not state.failing
    after = metrics.REGISTRY.get_sample_value("pue_agent_polls_total", labels)
    assert after == before + state.polls
    counted = metrics.REGISTRY.get_sample_value("pue_agent_poll_seconds_count", seconds)
    assert counted == observed + state.finished


async def test_lane_polls_and_community_rotation_without_restart(tmp_path: Path) -> None:
    """A healthy one-PDU v2c device is polled by the schedule itself (lane mode) with the
    readings of the full path. Its agent changes community: timeouts, logged once as
    failing; the secret file follows: the collector reads it again, builds a new session
    and recovers (no restart), back in lane mode; no community in any log."""
    old, new = "comm-before-6c2f", "comm-after-0b9e"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pdu-comm").write_text(old + "\n")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "one-get.toml").write_text(ONE_GAUGE_PROFILE)
    port = free_udp_port()
    device = {
        "name": "pdu-rot",
        "host": "127.0.0.1",
        "port": port,
        "community_secret": "pdu-comm",
        "profile": "one-get",
        "interval_s": 0.2,
        "jitter_s": 0,
        "timeout_s": 0.2,
        "retries": 0,
        "backoff_max_s": 0.4,
    }
    collector = build(
        "lane",
        {"devices": [device], "profiles_dir": str(profiles), "flush_s": 0.05},
        settings(secrets_dir=secrets),
    )
    collector.first_poll_now = True
    capture = Capture()
    ctx = CollectorContext(name="lane", settings=collector.settings, emit=capture)
    overrides = [("1.3.6.1.4.1.99.7.1.0", "integer", "4242")]
    task: asyncio.Task[None] | None = None
    with structlog.testing.capture_logs() as events:
        try:
            with snmpd(overrides, community=old, port=port):
                task = asyncio.create_task(collector.run(ctx))
                await until(lambda: "pdu-rot" in collector.states, "the collector")
                state = collector.states["pdu-rot"]
                # The first poll resolves the profile on the full path; then the lane.
                await until(lambda: state.lane_polls >= 3, "lane polls")
                assert not state.failing
            with snmpd(overrides, community=new, port=port):
                await until(lambda: state.failing, "the failure")
                failed = state.failed_polls
                await until(lambda: state.failed_polls >= failed + 1, "another failed poll")
                (secrets / "pdu-comm").write_text(new + "\n")
                await until(lambda: not state.failing, "recovery")
                lane_before, rows = state.lane_polls, sum(b.height for b in capture.batches)
                await until(lambda: state.lane_polls >= lane_before + 3, "lane polls again")
                await until(lambda: sum(b.height for b in capture.batches) > rows, "readings")
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    names = [e["event"] for e in events]
    assert names.count("device failing") == 1 and names.count("device recovered") == 1
    assert names.count("device credentials changed, new session") == 1
    assert next(e for e in events if e["event"] == "device failing")["reason"] == "timeout"
    assert old not in repr(events) and new not in repr(events)
    frame = capture.frame()
    # Every reading, first poll (full path) and lane polls alike: 4242 W and sysUpTime.
    assert set(frame.filter(pl.col("point") == "p")["value"]) == {4242.0}
    # One reading per good poll: the first (it resolves the profile) and the recovery poll
    # (made at once with the new community) take the full path, all others the lane.
    assert frame.filter(pl.col("point") == "p").height == state.lane_polls + 2
    assert set(frame["point"]) == {"p", "sys.uptime"}
    assert set(frame["quality"]) == {1}  # RECEIVE_TIME


async def test_a_device_given_by_host_name_is_polled(sim) -> None:
    """Devices are often configured by DNS name. The dispatcher matches an answer to the
    address its request went to, and recvfrom reports a number: the session resolves the
    name first, so the readings are those of the same device given by address."""
    by_address, _ = await poll_once(sim, "janitza-umg96_umg96")
    by_name, _ = await poll_once(sim, "janitza-umg96_umg96", host="localhost")
    assert by_name.height == by_address.height > 0
    assert by_name.sort("point")["value"].to_list() == by_address.sort("point")["value"].to_list()


async def test_a_host_name_that_does_not_resolve_is_a_dns_failure_not_a_timeout() -> None:
    # RFC 6761: names under .invalid never resolve.
    device = {
        "name": "ghost",
        "host": "pdu-ghost.invalid",
        "community": "public",
        "profile": "janitza-umg96",
        "interval_s": 0.2,
        "jitter_s": 0,
        "timeout_s": 0.2,
        "retries": 0,
        "backoff_max_s": 0.2,
    }
    collector = build("dns", {"devices": [device], "flush_s": 0.05}, settings())
    collector.first_poll_now = True
    with structlog.testing.capture_logs() as events:
        await run_collector(collector, until=10, polls=3)
    failing = [e for e in events if e["event"] == "device failing"]
    assert len(failing) == 1  # logged once, however often it is retried
    assert failing[0]["reason"] == "dns"
    assert "cannot resolve host name 'pdu-ghost.invalid'" in failing[0]["error"]
    assert collector.states["ghost"].finished >= 3
    dns_failures = metrics.POLL_FAILURES.labels("dns", "ghost", "dns")._value.get()
    assert dns_failures >= 3

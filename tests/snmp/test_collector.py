"""Scheduling and robustness of the collector: cadence beside black holes, failure logging,
GETBULK fallback, configuration errors, and the lean v2c path against pysnmp's."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tomllib
from pathlib import Path

import polars as pl
import pytest
import structlog

from agent.settings import ConfigError
from collectors.snmp import build
from tests.paths import ROOT
from tests.servers import free_udp_port
from tests.servers.snmp import black_hole, bulk_dropping_relay, snmpd
from tests.snmp.conftest import poll_once, run_collector, settings, value_of
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

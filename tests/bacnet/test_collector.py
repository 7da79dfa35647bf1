"""The collector as the pipeline runs it: config errors, polling, COV where the device has it."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agent.plugins import CollectorContext, build_collector
from agent.readings import validate_batch
from agent.settings import AgentSettings, ConfigError
from collectors.bacnet.collector import BacnetCollector
from tests.bacnet.conftest import FULL, MAPS, PLAIN
from tests.paths import ROOT
from tests.servers.bacnet import BacnetServer, silent_port


def options(server: BacnetServer, **extra: Any) -> dict[str, Any]:
    return {
        "local_address": "127.0.0.1:0",
        "interval_s": 0.3,
        "timeout_s": 0.5,
        "retries": 0,
        "maps_dir": str(MAPS),
        "cov_heartbeat_s": 300.0,
        "devices": [
            {
                "name": FULL,
                "address": server.address(FULL),
                "device_id": 1001,
                "map": "chiller-test",
            },
            {"name": PLAIN, "address": server.address(PLAIN), "device_id": 1002, "map": "chiller"},
        ],
        **extra,
    }


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"map": "chiller-9000"}, "devices.0.map", "unknown map 'chiller-9000'"),
        ({"objects": {"nope": "analog-input,1"}}, "devices.0.objects.nope", "no such point"),
        ({"objects": {"power": "bogus-type,1"}}, "devices.0.objects.power", "not an object"),
        ({"address": "not an address"}, "devices.0.address", "not a BACnet address"),
        ({"device_id": 4194303}, "devices.0.device_id", "less than or equal"),
    ],
)
def test_build_names_the_field(
    tmp_path: Path, server: BacnetServer, change: dict[str, Any], field: str, message: str
) -> None:
    raw = options(server)
    raw["devices"][0].update(change)
    with pytest.raises(ConfigError) as info:
        build_collector("bacnet", "plant", raw, AgentSettings(state_dir=tmp_path))
    assert f"collectors.plant.{field}" in str(info.value)
    assert message in str(info.value)


def test_broken_map_file_is_a_config_error(tmp_path: Path, server: BacnetServer) -> None:
    (tmp_path / "chiller.toml").write_text('name = "chiller"\ntitle = "x"\n')
    raw = options(server, maps_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"collectors\.plant\.maps_dir: .*chiller\.toml"):
        build_collector("bacnet", "plant", raw, AgentSettings(state_dir=tmp_path / "s"))


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_polls_and_subscribes_where_cov_is_supported(
    tmp_path: Path, server: BacnetServer
) -> None:
    raw = options(server)
    dead = silent_port()
    # A third device that never answers: it must not hold up the other two.
    raw["devices"].append(
        {"name": "dead", "address": f"127.0.0.1:{dead.__enter__()}", "device_id": 9, "map": "crah"}
    )
    collector = build_collector("bacnet", "plant", raw, AgentSettings(state_dir=tmp_path))
    assert isinstance(collector, BacnetCollector)
    assert "bacnet: 3 device(s)" in collector.describe()
    batches: list[pl.DataFrame] = []

    async def emit(batch: pl.DataFrame) -> None:
        batches.append(validate_batch(batch))

    ctx = CollectorContext(name="plant", settings=AgentSettings(state_dir=tmp_path), emit=emit)
    task = asyncio.create_task(collector.run(ctx))
    try:
        await _until(lambda: FULL in collector.cov_active and len(batches) >= 3)
        assert PLAIN not in collector.cov_active  # no COV service: polled
        # A change beyond the COV increment arrives as a notification, before the next full
        # read of the device (its heartbeat is 300 s once subscribed).
        server.set(FULL, "analog-input,1", presentValue=400.0)
        await _until(
            lambda: any(
                (b["point"] == "power").any() and 400_000.0 in b["value"].to_list()
                for b in batches
                if b["device"][0] == FULL
            )
        )
        assert collector.cov_readings > 0
        plain_polls = sum(1 for b in batches if b["device"][0] == PLAIN)
        await _until(lambda: sum(1 for b in batches if b["device"][0] == PLAIN) > plain_polls)
        await _until(lambda: "dead" in collector.pollers and collector.pollers["dead"].failing)
        assert "dead" not in collector.cov_active
    finally:
        dead.__exit__(None, None, None)
        server.set(FULL, "analog-input,1", presentValue=350.0)
        stopping = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # Subscriptions are abandoned at stop, not cancelled request by request.
    assert time.monotonic() - stopping < 1.0
    plain = pl.concat([b for b in batches if b["device"][0] == PLAIN])
    # The built-in chiller map on the plain device: 350 kW, 6.7 degC, 12.5 degC (celsius
    # there), cooling 0.030 m3/s x 5.8 K x 4190.7 kJ/(m3 K) = 729.1818 kW.
    last = {r["point"]: r["value"] for r in plain.iter_rows(named=True)}
    assert last["power"] == pytest.approx(350_000.0)
    assert last["chw.return"] == pytest.approx(12.5)
    assert last["cooling"] == pytest.approx(729.1818, rel=1e-6)


def test_sample_config_builds(tmp_path: Path) -> None:
    sample = tomllib.loads((ROOT / "collectors" / "bacnet" / "sample.toml").read_text())
    entry = sample["collectors"][0]
    options = {k: v for k, v in entry.items() if k not in ("kind", "name")}
    collector = build_collector("bacnet", entry["name"], options, AgentSettings(state_dir=tmp_path))
    assert isinstance(collector, BacnetCollector)
    assert collector.polled_devices() == ["chiller-1", *(f"crah-{i:02d}" for i in range(1, 7))]

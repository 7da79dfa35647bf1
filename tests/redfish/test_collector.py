"""The collector as the pipeline runs it: config errors, poll loops, emitted batches, logout."""

from __future__ import annotations

import asyncio
import time
import tomllib
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agent.plugins import Collector, CollectorContext, build_collector
from agent.readings import validate_batch
from agent.settings import AgentSettings, ConfigError
from collectors.redfish.options import RedfishOptions
from tests.paths import ROOT
from tests.servers.redfish import redfish_server, tree


def settings_with_secret(tmp_path: Path, value: str = "s3cret-pw") -> AgentSettings:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "bmc-pw").write_text(value + "\n")
    return AgentSettings(state_dir=tmp_path / "state", secrets_dir=secrets)


def test_build_rejects_credentials_in_url(tmp_path: Path) -> None:
    settings = settings_with_secret(tmp_path)
    options = {"devices": [{"name": "a", "url": "https://root:hunter2@10.0.0.1", "auth": "none"}]}
    with pytest.raises(ConfigError) as info:
        build_collector("redfish", "gpus", options, settings)
    assert "collectors.gpus.devices.0.url" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_build_missing_secret_names_field_not_value(tmp_path: Path) -> None:
    settings = settings_with_secret(tmp_path)
    options = {
        "devices": [
            {"name": "a", "url": "https://10.0.0.1", "username": "u", "password_secret": "nope"}
        ]
    }
    with pytest.raises(ConfigError) as info:
        build_collector("redfish", "gpus", options, settings)
    assert "collectors.gpus.devices[0].password_secret" in str(info.value)
    assert "'nope'" in str(info.value)


def test_build_requires_credentials_for_session(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs username and password_secret"):
        build_collector(
            "redfish",
            "gpus",
            {"devices": [{"name": "a", "url": "https://x"}]},
            settings_with_secret(tmp_path),
        )


async def test_collector_polls_devices_and_logs_out(tmp_path: Path) -> None:
    settings = settings_with_secret(tmp_path)
    batches: list[pl.DataFrame] = []

    async def emit(batch: pl.DataFrame) -> Any:
        batches.append(validate_batch(batch))
        return None

    with (
        redfish_server(tree("real/supermicro"), auth="session") as smc,
        redfish_server(tree("real/nvidia_gb200"), auth="basic") as gb,
        redfish_server(tree("real/dell"), auth="session") as slow,
    ):
        slow.delay_s = 0.3  # every request of this BMC is slow; the others must not wait
        options = {
            "interval_s": 0.2,
            "timeout_s": 5,
            "devices": [
                {"name": "smc", "url": smc.url, "username": "admin", "password_secret": "bmc-pw"},
                {
                    "name": "gb",
                    "url": gb.url,
                    "auth": "basic",
                    "username": "admin",
                    "password_secret": "bmc-pw",
                },
                {"name": "slow", "url": slow.url, "username": "admin", "password_secret": "bmc-pw"},
            ],
        }
        collector = build_collector("redfish", "gpus", options, settings)
        assert "3 device(s)" in collector.describe()
        task = asyncio.create_task(
            collector.run(CollectorContext(name="gpus", settings=settings, emit=emit))
        )
        started = time.monotonic()
        while time.monotonic() - started < 10:
            await asyncio.sleep(0.1)
            devices = [b["device"][0] for b in batches]
            if devices.count("smc") >= 4 and "slow" in devices:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert smc.logouts == 1 and slow.logouts == 1  # sessions are closed on stop
        assert smc.tokens == {} and slow.tokens == {}
    devices = [b["device"][0] for b in batches]
    # The slow BMC (≈ 0.3 s per request, 10+ requests to discover) did not hold up the others.
    assert devices.count("smc") >= 4
    assert devices.index("smc") < devices.index("slow")
    frame = pl.concat(batches)
    power = dict(
        frame.filter(pl.col("point") == "input.power")
        .group_by("device")
        .agg(pl.first("value"))
        .iter_rows()
    )
    # real/supermicro Chassis/1/Power 2161;
    # real/nvidia_gb200 Chassis/Chassis_0/EnvironmentMetrics 1073.190183.
    assert power["smc"] == 2161.0
    assert power["gb"] == 1073.190183
    assert "source" not in frame.columns


def test_sample_toml_is_valid(tmp_path: Path) -> None:
    sample = ROOT / "collectors/redfish/sample.toml"
    table = tomllib.loads(sample.read_text())["collectors"][0]
    options = {k: v for k, v in table.items() if k not in ("kind", "name")}
    parsed = RedfishOptions.model_validate(options)
    gpus = [f"gpu-{n:03d}" for n in range(1, 41)]
    assert [d.name for d in parsed.devices] == ["dgx-r12-u20", "r750-r03-u07", "pdu-r03-a", *gpus]
    # The range entry: urls in step with the names, credentials from [collectors.defaults].
    assert parsed.devices[-1].url == "https://10.20.30.50"
    assert (parsed.devices[-1].username, parsed.devices[-1].password_secret) == (
        "pue-reader",
        "bmc-readonly",
    )
    assert parsed.devices[2].password_secret == "pdu-readonly"  # its own setting wins
    assert parsed.devices[1].prefer == ["environment_metrics", "power", "psu_metrics", "sensors"]
    # build() with the CA file present and the secrets in the secrets directory.
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    for device in options["devices"]:
        if "ca_file" in device:
            device["ca_file"] = str(ca)
    settings = settings_with_secret(tmp_path)
    (tmp_path / "secrets" / "bmc-readonly").write_text("x")
    (tmp_path / "secrets" / "pdu-readonly").write_text("y")
    collector = build_collector("redfish", "gpu-bmcs", options, settings)
    assert isinstance(collector, Collector)
    assert collector.describe().startswith("redfish: 43 device(s) every 30 s")

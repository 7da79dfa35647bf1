"""The README's main command end to end: devices behind real protocols, a verified report."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import polars as pl

from agent.journal import Journal
from agent.store import IntervalStore
from collectors.redfish.client import ClientConfig, RedfishClient
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import load_profile
from collectors.sim.devices.apc import rack_pdu, smart_ups
from collectors.sim.devices.redfish_service import (
    GPU_SERVER_POWER,
    LiveProperty,
    RedfishService,
    gpu_server_tree,
)
from collectors.sim.devices.snmp_responder import SnmpResponder
from collectors.snmp import build
from tests.paths import ROOT
from tests.snmp.conftest import run_collector, settings, value_of


async def test_demo_snmp_tables_are_detected_like_the_real_devices() -> None:
    """The demo's own tables (no capture read) get, by auto-detection, the profiles a real
    APC Rack PDU 2G and Smart-UPS get, and read back in the PowerNet-MIB's scales."""
    responder = SnmpResponder()
    responder.add_device(
        "pdu", rack_pdu("pdu", power_w=lambda: 4321.0, energy_kwh=lambda: 1234.56, location="t")
    )
    responder.add_device(
        "ups",
        smart_ups(
            "ups",
            output_w=lambda: 5000.0,
            output_kwh=lambda: 777.7,
            input_kwh=lambda: 800.25,
            rating_w=10_000.0,
            location="t",
        ),
    )
    port = await responder.start()
    devices = [
        {"name": c, "host": "127.0.0.1", "port": port, "community": c} for c in ("pdu", "ups")
    ]
    collector = build(
        "demo-snmp",
        {"devices": devices, "defaults": {"interval_s": 3600, "jitter_s": 0}, "flush_s": 0.05},
        settings(),
    )
    collector.first_poll_now = True
    try:
        frame = (await run_collector(collector)).frame()
    finally:
        responder.close()
    chosen = {
        name: state.poller.plan.profile.name if state.poller else None
        for name, state in collector.states.items()
    }
    assert chosen == {"pdu": "apc-rpdu2", "ups": "apc-smart-ups"}
    pdu = frame.filter(pl.col("device") == "pdu")
    assert value_of(pdu, "pdu.1.power") == 432 * 10.0  # rPDU2DeviceStatusPower, 0.01 kW
    assert value_of(pdu, "pdu.1.energy") == 12345 / 10  # rPDU2DeviceStatusEnergy, 0.1 kWh
    assert value_of(pdu, "phase.1.voltage") == 230.0
    assert pdu.filter(pl.col("point").str.ends_with(".power")).height == 2 + 8  # + 8 outlets
    ups = frame.filter(pl.col("device") == "ups")
    assert value_of(ups, "output.power") == 5000.0  # upsAdvOutputActivePower, W
    assert value_of(ups, "output.energy") == 777.0  # upsAdvOutputEnergyUsage, kWh
    assert value_of(ups, "input.energy") == 80025 / 100  # upsHighPrecInputEnergyUsage
    assert value_of(ups, "output.load") == 500 / 10  # upsHighPrecOutputLoad, 0.1 %


async def test_demo_redfish_tree_gives_the_server_input_power() -> None:
    """The demo's own Redfish tree: discovery finds one counted chassis whose
    PowerControl[0].PowerConsumedWatts is the server's input power; PSUs are a breakdown."""
    live = [
        LiveProperty(GPU_SERVER_POWER, ("PowerControl", 0, "PowerConsumedWatts"), lambda: 1800.0),
        LiveProperty(GPU_SERVER_POWER, ("PowerSupplies", 0, "PowerInputWatts"), lambda: 918.0),
        LiveProperty(GPU_SERVER_POWER, ("PowerSupplies", 1, "PowerInputWatts"), lambda: 882.0),
    ]
    service = RedfishService(tree=gpu_server_tree("gpu"), live=live)
    port = await service.start()
    client = RedfishClient(ClientConfig(device="gpu", url=f"http://127.0.0.1:{port}", auth="none"))
    try:
        result = await DevicePoller(client, load_profile()).poll()
    finally:
        await client.aclose()
        await service.stop()
    assert result.errors == []
    v = dict(zip(result.frame["point"].to_list(), result.frame["value"].to_list(), strict=True))
    assert v["input.power"] == 1800.0
    assert v["chassis.1.psu.0.input.power"] == 918.0
    assert v["chassis.1.psu.1.input.power"] == 882.0


def test_demo_one_minute_over_snmp_mqtt_redfish_then_a_verified_report(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = subprocess.run(
        # 90 s: at least one minute boundary with polls well after it, so an interval is
        # settled and the aggregator has stored today's KPI (a 60 s run that starts in the
        # first seconds of a minute may end before any interval is final).
        [
            sys.executable,
            "-m",
            "agent",
            "demo",
            "--minutes",
            "1.5",
            "--pdus",
            "4",
            "--state-dir",
            str(state),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    # Live numbers arrived over each protocol within the minute.
    for protocol in ("snmp", "mqtt", "modbus", "redfish", "bacnet"):
        match = re.search(rf"readings via {protocol}\s*│\s*([\d,]+) from (\d+) devices?", out)
        assert match, f"no readings via {protocol}:\n{out[-2000:]}"
        assert int(match.group(1).replace(",", "")) > 0
    # 4 PDUs + 4 UPSes over SNMP, 10 Shelly meters over MQTT, 1 BMC over Redfish.
    assert re.search(r"readings via snmp\s*│\s*[\d,]+ from 8 devices", out)
    # Shelly meters: 10 less the grid incomers (Modbus) and the chillers (BACnet).
    assert re.search(r"readings via mqtt\s*│\s*[\d,]+ from 6 devices", out)
    assert re.search(r"readings via redfish\s*│\s*[\d,]+ from 1 device\b", out)
    # The two grid incomers: CHINT DTSU666 units 1 and 2 behind one Modbus TCP gateway.
    assert re.search(r"readings via modbus\s*│\s*[\d,]+ from 2 devices", out)
    # The two chillers: bacpypes3 devices, read through the built-in chiller map.
    assert re.search(r"readings via bacnet\s*│\s*[\d,]+ from 2 devices", out)
    assert "fixtures" not in out and "falls back" not in out
    assert "journal verified OK" in out
    # Today's PUE and the month's REF come from the store: a one-minute day is honestly
    # "insufficient data", never a number built on 0 % coverage.
    assert "stored by the aggregator at stop" in out
    final = out.split("stored by the aggregator at stop")[-1]
    assert re.search(r"PUE today \(local day, energy\)\s*│\s*insufficient data", final)
    assert "REF / green share (month)" in out
    assert re.search(r"rule findings \d{4}-\d{2}\s*│\s*\d+ ", out)
    realtime = float(out.split("PUE (realtime, power ratio)")[-1].split("│")[1].strip())
    assert 1.2 <= realtime <= 1.4

    # The busiest PDU's 31-bit register wrapped during the minute: the journal shows the
    # raw decrease as the device sent it (2^31 - 1 counts of 0.1 kWh back to ~0).
    wrapped = re.search(r"(pdu-\d+)'s 31-bit energy register wraps", out)
    assert wrapped
    journal = Journal(state / "journal" / "journal.sqlite")
    readings = pl.concat([b.frame for b in journal.iter_batches(kinds=("readings",))])
    register = readings.filter(
        (pl.col("device") == wrapped.group(1)) & (pl.col("point") == "pdu.1.energy")
    ).sort("ts")["value"]
    assert register.max() >= (2**31 - 1) * 0.1 - 1e-6
    assert register.min() < 1.0, "the register did not wrap during the demo"
    assert {b.source for b in journal.iter_batches(kinds=("readings",))} >= {
        "snmp",
        "mqtt",
        "redfish",
        "bacnet",
    }

    # The sample report was signed, verified by the demo, and verifies again independently.
    bundle = next((state / "sample-month" / "reports").glob("demo-*.zip"))
    pubkey = next((state / "sample-month" / "reports").glob("*.pub.pem"))
    verify = subprocess.run(
        [sys.executable, "-m", "agent", "verify", str(bundle), "--pubkey", str(pubkey)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The simulated month is fully covered: its PUE is a number, with its category, in the
    # band the simulator is built for (1.06 delivery + 0.16-0.26 cooling + 0.015 lighting).
    month_pue = IntervalStore(state / "sample-month" / "store").read_kpis(
        period_kind="month", metric="pue"
    )
    assert month_pue.height == 1
    row = month_pue.row(0, named=True)
    assert row["status"] == "ok"
    assert row["category"] == 2
    assert 1.2 <= row["value"] <= 1.4

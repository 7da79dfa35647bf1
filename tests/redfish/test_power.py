"""Chassis power of each real capture, served over HTTP: the values stated come from the files."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.readings import Quality, validate_batch
from collectors.redfish.client import RedfishClient
from collectors.redfish.errors import RedfishBadResponseError
from collectors.redfish.poller import DevicePoller
from collectors.redfish.profile import load_profile
from tests.redfish.conftest import config_for, poll_once, quality, values
from tests.servers.redfish import REDFISH, redfish_server, tree

DELL_PSU = "/redfish/v1/Chassis/System.Embedded.1/PowerSubsystem/PowerSupplies"


async def test_dell_r750_total_is_sum_of_psu_metrics() -> None:
    # real/dell: PowerSubsystem/PowerSupplies/PSU.Slot.1/Metrics InputPowerWatts.Reading 303.0,
    # PSU.Slot.2/Metrics 308.0. PSU metrics rank above the deprecated Power resource.
    with redfish_server(tree("real/dell")) as server:
        _, result = await poll_once(server)
    assert result.errors == []
    v = values(result.frame)
    assert v["chassis.System.Embedded.1.psu.PSU.Slot.1.input.power"] == 303.0
    assert v["chassis.System.Embedded.1.psu.PSU.Slot.2.input.power"] == 308.0
    assert v["input.power.sum_psu_metrics"] == 303.0 + 308.0
    assert quality(result.frame, "input.power.sum_psu_metrics") & Quality.DERIVED
    assert "input.power" not in v  # the name says how the total was formed
    source = result.frame.filter(result.frame["point"] == "input.power.sum_psu_metrics")["source"]
    assert source.item() == f"{DELL_PSU}/PSU.Slot.1/Metrics + {DELL_PSU}/PSU.Slot.2/Metrics"
    validate_batch(result.frame.drop("source"))


async def test_dell_r750_power_consumed_when_preferred() -> None:
    # real/dell: Chassis/System.Embedded.1/Power PowerControl[0].PowerConsumedWatts = 614;
    # PowerSupplies[].PowerInputWatts 303.0 and 309.5 are a per-PSU breakdown.
    with redfish_server(tree("real/dell")) as server:
        _, result = await poll_once(server, tiers=["power", "sensors"])
    v = values(result.frame)
    assert v["input.power"] == 614.0
    assert quality(result.frame, "input.power") == Quality.RECEIVE_TIME  # read, not derived
    assert v["chassis.System.Embedded.1.psu.0.input.power"] == 303.0
    assert v["chassis.System.Embedded.1.psu.1.input.power"] == 309.5


async def test_supermicro_hgx_h100_power_control() -> None:
    # real/supermicro: Chassis/1/Power PowerControl[0].PowerConsumedWatts = 2161.
    with redfish_server(tree("real/supermicro")) as server:
        _, result = await poll_once(server)
    v = values(result.frame)
    assert v["input.power"] == 2161.0
    assert v["chassis.1.power"] == 2161.0


async def test_dgx_h100_total_is_sum_of_psu_input_sensors() -> None:
    # real/nvidia_viking: Chassis/DGX/Power has no PowerConsumedWatts and the PSU metrics no
    # readings; Chassis/DGX/Sensors/PWR_PSU0..5 Reading = 351, 351, 312, 312, 351, 312.
    with redfish_server(tree("real/nvidia_viking")) as server:
        _, result = await poll_once(server)
    assert result.errors == []
    v = values(result.frame)
    psu = [351.0, 351.0, 312.0, 312.0, 351.0, 312.0]
    for i, watts in enumerate(psu):
        assert v[f"chassis.DGX.psu.PWR_PSU{i}.input.power"] == watts
    assert v["input.power.sum_psu_input_sensors"] == sum(psu) == 1989.0
    assert quality(result.frame, "input.power.sum_psu_input_sensors") & Quality.DERIVED
    # GPU breakdown: Chassis/HGX_GPU_SXM_n/EnvironmentMetrics PowerWatts / EnergykWh.
    assert v["gpu.HGX_GPU_SXM_1.power"] == 71.706
    assert v["gpu.HGX_GPU_SXM_1.energy"] == 15.577367869129
    assert v["gpu.HGX_GPU_SXM_8.power"] == 74.686
    assert v["gpu.HGX_GPU_SXM_8.energy"] == 16.284633071361
    assert sum(1 for p in v if p.startswith("gpu.") and p.endswith(".power")) == 8
    # HGX_Chassis_0 (a Zone, EnvironmentMetrics PowerWatts 825.38) is a breakdown only.
    assert v["chassis.HGX_Chassis_0.power"] == 825.38
    assert v["input.power.sum_psu_input_sensors"] != 1989.0 + 825.38


async def test_gb200_shelf_power() -> None:
    # real/nvidia_gb200: Chassis/Chassis_0/EnvironmentMetrics PowerWatts.Reading 1073.190183.
    # Its HGX_GPU_n EnvironmentMetrics are empty objects, so no GPU power is claimed;
    # HGX_CPU_0/EnvironmentMetrics EnergykWh 1.7066396138653117 is a CPU breakdown.
    with redfish_server(tree("real/nvidia_gb200")) as server:
        _, result = await poll_once(server)
    v = values(result.frame)
    assert v["input.power"] == 1073.190183
    assert v["cpu.HGX_CPU_0.energy"] == 1.7066396138653117
    assert not [p for p in v if p.startswith("gpu.")]


async def test_gh200_gpu_breakdown_and_no_invented_total() -> None:
    # real/nvidia_gh200: HGX_GPU_0/EnvironmentMetrics PowerWatts 84.766, EnergykWh
    # 0.21873548295276615; HGX_GPU_1 99.036 / 0.25532654353759454. No chassis of a type
    # that takes input power reports any, so there is no input.power at all.
    with redfish_server(tree("real/nvidia_gh200")) as server:
        _, result = await poll_once(server)
    v = values(result.frame)
    assert v["gpu.HGX_GPU_0.power"] == 84.766
    assert v["gpu.HGX_GPU_0.energy"] == 0.21873548295276615
    assert v["gpu.HGX_GPU_1.power"] == 99.036
    assert v["gpu.HGX_GPU_1.energy"] == 0.25532654353759454
    assert not [p for p in v if p.startswith("input.")]


async def test_dmtf_rack_server_environment_metrics_first() -> None:
    # dmtf/public-rackmount1: Chassis/1U/EnvironmentMetrics PowerWatts 374 (Power says 344).
    with redfish_server(tree("dmtf/public-rackmount1")) as server:
        _, result = await poll_once(server)
    v = values(result.frame)
    assert v["input.power"] == 374.0
    assert 344.0 not in v.values()


async def test_power_control_subsystem_entries_are_a_breakdown() -> None:
    # A variant of real/dell Power made here: PowerControl[0] as captured (614 W) plus a
    # CPU sub-system entry of 200 W. The total stays 614; the CPU entry is its own point.
    path = "/redfish/v1/Chassis/System.Embedded.1/Power"
    doc = json.loads((tree("real/dell") / "Chassis/System.Embedded.1/Power/index.json").read_text())
    cpu = dict(doc["PowerControl"][0], MemberId="1", Name="CPU Sub-system Power")
    cpu.update(PhysicalContext="CPUSubsystem", PowerConsumedWatts=200)
    doc["PowerControl"] = [cpu, doc["PowerControl"][0]]  # sub-system first: still not the total
    with redfish_server(tree("real/dell")) as server:
        server.overrides[path] = json.dumps(doc).encode()
        _, result = await poll_once(server, tiers=["power"])
    v = values(result.frame)
    assert v["input.power"] == 614.0
    assert v["chassis.System.Embedded.1.cpu_subsystem.power"] == 200.0


async def test_contained_chassis_not_counted_twice() -> None:
    # real/dell: Enclosure.Internal.0-1 has Links.ContainedBy System.Embedded.1. Here it is
    # made an "Enclosure" with an EnvironmentMetrics of 50 W: it shows as a breakdown, and
    # the server total stays the PSU sum 303.0 + 308.0.
    root = tree("real/dell")
    path = "/redfish/v1/Chassis/Enclosure.Internal.0-1"
    doc = json.loads((root / "Chassis/Enclosure.Internal.0-1/index.json").read_text())
    doc["ChassisType"] = "Enclosure"
    doc["EnvironmentMetrics"] = {"@odata.id": f"{path}/EnvironmentMetrics"}
    with redfish_server(root) as server:
        server.overrides[path] = json.dumps(doc).encode()
        server.overrides[f"{path}/EnvironmentMetrics"] = b'{"PowerWatts": {"Reading": 50}}'
        _, result = await poll_once(server)
    v = values(result.frame)
    assert v["chassis.Enclosure.Internal.0-1.power"] == 50.0
    assert v["input.power.sum_psu_metrics"] == 611.0


async def test_redfish_rack_pdu() -> None:
    # dmtf/public-pdu: RackPDUs/1/Metrics PowerWatts 6438, EnergykWh 56438;
    # Outlets/A1 PowerWatts 197.4, EnergykWh 36166; Mains/AC1 PolyPhasePowerWatts
    # Line1ToLine2 738.9; Branches/A PowerWatts 937.4.
    with redfish_server(tree("dmtf/public-pdu")) as server:
        _, result = await poll_once(server)
    assert result.errors == []
    v = values(result.frame)
    assert v["pdu.1.power"] == 6438.0
    assert v["pdu.1.energy"] == 56438.0
    assert v["pdu.1.outlet.A1.power"] == 197.4
    assert v["pdu.1.outlet.A1.energy"] == 36166.0
    assert v["pdu.1.mains.AC1.line1_to_line2.power"] == 738.9
    assert v["pdu.1.branch.A.power"] == 937.4
    validate_batch(result.frame.drop("source"))


async def test_cooling_unit_heat_load() -> None:
    # dmtf/public-cooling-unit: Chassis/CDU/Sensors/PrimaryHeatLoad ReadingType Heat, 25.48 kW.
    with redfish_server(tree("dmtf/public-cooling-unit")) as server:
        _, result = await poll_once(server)
    frame = result.frame
    row = frame.filter(frame["point"] == "chassis.CDU.heat.PrimaryHeatLoad")
    assert row["value"].item() == 25.48
    assert row["quantity"].item() == "heat_kw"


@pytest.mark.parametrize("name", ["dell/dell_powerinvalid.json", "hp/hp_powerinvalid.json"])
async def test_malformed_json_is_a_clear_error_and_loses_nothing(name: str) -> None:
    # telegraf/*invalid.json are deliberately malformed. Served as PSU.Slot.2's Metrics, the
    # error names the device, the path and the JSON fault; PSU.Slot.1 (303.0 W) still arrives.
    bad = f"{DELL_PSU}/PSU.Slot.2/Metrics"
    with redfish_server(tree("real/dell")) as server:
        client = RedfishClient(config_for(server))
        poller = DevicePoller(client, load_profile())
        first = await poller.poll()
        assert first.errors == []
        server.overrides[bad] = (REDFISH / "telegraf" / name).read_bytes()
        result = await poller.poll()
        await client.aclose()
    messages = [str(e) for e in result.errors]
    assert len(messages) == 1
    assert "'bmc-1'" in messages[0] and bad in messages[0] and "invalid JSON" in messages[0]
    assert isinstance(result.errors[0], RedfishBadResponseError)
    v = values(result.frame)
    assert v["chassis.System.Embedded.1.psu.PSU.Slot.1.input.power"] == 303.0
    assert "input.power.sum_psu_metrics" not in v  # a partial sum would understate
    assert poller.failing


async def test_malformed_json_at_discovery_is_reported() -> None:
    # The same file met while discovering: the resource is skipped, the error is reported
    # with the poll, and everything else is read (PSU.Slot.1 303.0 W).
    bad = f"{DELL_PSU}/PSU.Slot.2/Metrics"
    with redfish_server(tree("real/dell")) as server:
        server.overrides[bad] = (REDFISH / "telegraf/dell/dell_powerinvalid.json").read_bytes()
        poller, result = await poll_once(server)
    assert [type(e) for e in result.errors] == [RedfishBadResponseError]
    assert bad in str(result.errors[0]) and "line 71 column 15" in str(result.errors[0])
    assert values(result.frame)["chassis.System.Embedded.1.psu.PSU.Slot.1.input.power"] == 303.0
    assert poller.failing


def _hostile_metrics(reading: str) -> bytes:
    """PSU.Slot.2's Metrics with ``reading`` (raw JSON text) as InputPowerWatts.Reading."""
    return ('{"Id": "Metrics", "InputPowerWatts": {"Reading": ' + reading + "}}").encode()


HOSTILE_BODIES = {
    "400-digit integer": _hostile_metrics("9" * 400),  # math.isfinite raised OverflowError
    "5000-digit integer": _hostile_metrics("9" * 5000),  # beyond int_max_str_digits
    "1e309": _hostile_metrics("1e309"),
    "NaN": _hostile_metrics("NaN"),
    "-Infinity": _hostile_metrics("-Infinity"),
    "1 MB string": _hostile_metrics('"' + "x" * 1_000_000 + '"'),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json.loads
    "deep object": _hostile_metrics('{"a": ' * 5_000 + "1" + "}" * 5_000),
    "not UTF-8": b'{"Id": "\xff\xfe"}',
}


async def test_hostile_bodies_never_stop_the_poller_and_errors_stay_short() -> None:
    # Each hostile body served as PSU.Slot.2's Metrics: the poll returns (no exception),
    # names the path in a short error, and PSU.Slot.1 (303.0 W) still arrives.
    bad = f"{DELL_PSU}/PSU.Slot.2/Metrics"
    with redfish_server(tree("real/dell")) as server:
        client = RedfishClient(config_for(server))
        poller = DevicePoller(client, load_profile())
        try:
            assert (await poller.poll()).errors == []
            for label, body in HOSTILE_BODIES.items():
                server.overrides[bad] = body
                result = await poller.poll()
                assert len(result.errors) == 1, label
                message = str(result.errors[0])
                assert bad in message, label
                assert len(message) < 400, (label, len(message))
                v = values(result.frame)
                assert v["chassis.System.Embedded.1.psu.PSU.Slot.1.input.power"] == 303.0, label
                assert "input.power.sum_psu_metrics" not in v, label
                validate_batch(result.frame.drop("source"))
            del server.overrides[bad]
            back = await poller.poll()
        finally:
            await client.aclose()
    assert back.errors == []
    assert values(back.frame)["input.power.sum_psu_metrics"] == 303.0 + 308.0


_READING_TEXT = st.one_of(
    st.integers(min_value=-(10**500), max_value=10**500).map(str),
    st.floats().map(json.dumps),  # NaN, Infinity, -Infinity included
    st.sampled_from(["1e309", "-1e309", "1e308", "null", "true", '"303"', "[]", "{}"]),
    st.text(max_size=50).map(json.dumps),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "1" + "]" * n),
)


def test_fuzzed_readings_through_the_server_never_raise_and_stay_finite() -> None:
    # Hypothesis drives the values; the real HTTP server serves them as PSU.Slot.2's
    # reading. Every poll returns; whatever is journalled is a finite number.
    bad = f"{DELL_PSU}/PSU.Slot.2/Metrics"
    with redfish_server(tree("real/dell")) as server:

        @settings(max_examples=60, deadline=None)
        @given(_READING_TEXT)
        def one(reading: str) -> None:
            server.overrides[bad] = _hostile_metrics(reading)

            async def poll() -> None:
                client = RedfishClient(config_for(server))
                try:
                    result = await DevicePoller(client, load_profile()).poll()
                finally:
                    await client.aclose()
                validate_batch(result.frame.drop("source"))
                v = values(result.frame)
                assert v["chassis.System.Embedded.1.psu.PSU.Slot.1.input.power"] == 303.0
                assert all(math.isfinite(x) for x in v.values())
                assert all(len(str(e)) < 400 for e in result.errors)

            asyncio.run(poll())

        one()

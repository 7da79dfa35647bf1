"""The MQTT collector against a real mosquitto (TLS + password auth): fixtures, restarts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import polars as pl
import pytest

from agent.metrics import REGISTRY
from agent.settings import ConfigError, load_settings
from collectors.mqtt import build
from collectors.mqtt.sparkplug_b import DataType, encode_payload
from tests.mqtt.helpers import (
    SECRET_NAME,
    collector_options,
    journal_frame,
    make_collector,
    publish,
    running_agent,
    settings_for,
    wait_subscribed,
    wait_until,
)
from tests.paths import FIXTURES
from tests.servers.mosquitto import Mosquitto

SHELLY = FIXTURES / "mqtt" / "shelly"
SPARKPLUG = FIXTURES / "mqtt" / "sparkplug"


def _value(frame: pl.DataFrame, device: str, point: str) -> float:
    rows = frame.filter((pl.col("device") == device) & (pl.col("point") == point))
    assert rows.height == 1, (device, point, rows)
    return float(rows["value"][0])


async def test_shelly_fixtures_over_tls_with_password(
    tmp_path: Path, mosquitto_tls: Mosquitto
) -> None:
    collector, settings = make_collector(
        tmp_path, mosquitto_tls, "shelly-tls", mappings=["shelly_gen2"]
    )
    messages = [
        ("shellypro3em-aabbccddeeff/status/em:0", SHELLY / "pro3em__status_em0.json"),
        ("shellypro3em-aabbccddeeff/status/emdata:0", SHELLY / "pro3em__status_emdata0.json"),
        ("shellyplusplugs-aabbccddeeff/status/switch:0", SHELLY / "plusplugs__status_switch0.json"),
        ("shellyplus1pm-aabbccddeeff/status/switch:0", SHELLY / "plus1pm__status_switch0.json"),
        *(
            (
                f"shellypro4pm-aabbccddeeff/status/switch:{i}",
                SHELLY / f"pro4pm__status_switch{i}.json",
            )
            for i in range(4)
        ),
    ]
    async with running_agent(settings, collector) as agent:
        await wait_subscribed(collector)
        publish(mosquitto_tls, [(t, p.read_bytes()) for t, p in messages])
        await wait_until(lambda: collector.stats["accepted"] == len(messages), what="8 messages")
        await wait_until(lambda: agent.committed_readings > 0)
    frame = journal_frame(settings)
    em = "shellypro3em-aabbccddeeff"
    # em:0 payload: a_act_power 375.5, b 170.8, c 12.7, total_act_power 558.965 (W, scale 1).
    assert _value(frame, em, "em0.a.power") == 375.5
    assert _value(frame, em, "em0.b.power") == 170.8
    assert _value(frame, em, "em0.c.power") == 12.7
    assert _value(frame, em, "em0.total.power") == 558.965
    assert _value(frame, em, "em0.a.voltage") == 229.0
    assert _value(frame, em, "em0.c.current") == 0.428
    # n_current is null in the payload and optional in the mapping: no reading, no rejection.
    assert frame.filter(pl.col("point") == "em0.n.current").height == 0
    # emdata:0 in Wh -> kWh: 2034616.71 Wh * 0.001 = 2034.61671 kWh; total_act 2589773.39 Wh
    # -> 2589.77339 kWh.
    assert _value(frame, em, "em0.a.energy") == pytest.approx(2034.61671, abs=1e-9)
    assert _value(frame, em, "em0.total.energy") == pytest.approx(2589.77339, abs=1e-9)
    assert _value(frame, em, "em0.b.returned_energy") == pytest.approx(0.0407, abs=1e-12)
    plug = "shellyplusplugs-aabbccddeeff"
    # switch:0: apower 2.7 W; aenergy.total 7258.589 Wh -> 7.258589 kWh; temperature.tC 32.1.
    assert _value(frame, plug, "switch0.power") == 2.7
    assert _value(frame, plug, "switch0.energy") == pytest.approx(7.258589, abs=1e-12)
    assert _value(frame, plug, "switch0.temperature") == 32.1
    pro4 = "shellypro4pm-aabbccddeeff"
    for i in range(4):
        doc = json.loads((SHELLY / f"pro4pm__status_switch{i}.json").read_text())
        assert _value(frame, pro4, f"switch{i}.power") == doc["apower"]
        assert _value(frame, pro4, f"switch{i}.energy") == pytest.approx(
            doc["aenergy"]["total"] / 1000, abs=1e-12
        )
    # Status objects carry no timestamp: every reading uses the receive time, flagged (bit 1).
    assert set(frame["quality"].to_list()) == {1}
    # Readings per message: em:0 maps 19 fields, n_current null -> 18; emdata:0 8;
    # each switch 5 (apower, aenergy.total, voltage, current, temperature.tC) x 6 switches = 30.
    assert frame.height == 18 + 8 + 30


async def test_sparkplug_ndata_ddata_with_aliases_and_skew(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mapping = tmp_path / "sp.toml"
    mapping.write_text(
        """
[[rules]]
topic = "spBv1.0/+/+/+/#"
format = "sparkplug_b"
device = "{edge}"
fields = [
  { metric = "Supply Voltage", point = "supply.voltage", quantity = "voltage_v" },
  { metric = "Inputs/A", point = "inputs.a", quantity = "status_code", optional = true },
  { metric = "Power", point = "power", quantity = "power_w" },
]
""",
        encoding="utf-8",
    )
    collector, settings = make_collector(
        tmp_path, mosquitto, "sparkplug", mappings=[str(mapping)], max_skew_s=60
    )
    ndata = json.loads((SPARKPLUG / "spec_example__NDATA.json").read_text())
    now_ms = int(time.time() * 1000)
    node = "spBv1.0/Sparkplug B Devices"
    messages = [
        # The spec's NDATA: Float 12.3 at 1486144502122 ms (2017) -> outside the 60 s skew.
        (
            f"{node}/NDATA/Raspberry Pi",
            encode_payload(
                [
                    {
                        "name": m["name"],
                        "datatype": DataType.FLOAT,
                        "value": m["value"],
                        "timestamp": m["timestamp"],
                    }
                    for m in ndata["metrics"]
                ],
                timestamp_ms=ndata["timestamp"],
                seq=ndata["seq"],
            ),
        ),
        # DBIRTH declares alias 7 for "Power"; the DDATA after it sends alias only.
        (
            f"{node}/DBIRTH/Raspberry Pi/Meter",
            encode_payload(
                [{"name": "Power", "alias": 7, "datatype": DataType.DOUBLE, "value": 1500.0}],
                timestamp_ms=now_ms,
                seq=3,
            ),
        ),
        (
            f"{node}/DDATA/Raspberry Pi/Meter",
            encode_payload(
                [{"alias": 7, "datatype": DataType.DOUBLE, "value": 1520.5}],
                timestamp_ms=now_ms + 1000,
                seq=4,
            ),
        ),
        # An alias nobody declared: rejected as unknown_alias.
        (
            f"{node}/DDATA/Raspberry Pi/Meter",
            encode_payload([{"alias": 99, "datatype": DataType.DOUBLE, "value": 1.0}], seq=5),
        ),
        # DEATH carries no readings: ignored, not rejected.
        (f"{node}/DDEATH/Raspberry Pi/Meter", encode_payload([], seq=6)),
    ]
    async with running_agent(settings, collector):
        await wait_subscribed(collector)
        publish(mosquitto, messages)
        await wait_until(
            lambda: (
                collector.stats["accepted"]
                + collector.stats["ignored"]
                + collector.stats["rejected:unknown_alias"]
                == 5
            )
        )
    frame = journal_frame(settings).sort("value")
    assert frame["value"].to_list() == pytest.approx([12.300000190734863, 1500.0, 1520.5])
    # 12.3 travels as a protobuf float (single precision): 12.300000190734863 as a double.
    assert frame["device"].to_list() == ["Raspberry Pi", "Raspberry Pi/Meter", "Raspberry Pi/Meter"]
    # 2017 timestamp is far outside 60 s -> receive time, flagged 1; the others are trusted (0).
    assert frame["quality"].to_list() == [1, 0, 0]
    assert frame["ts"][2].timestamp() == pytest.approx((now_ms + 1000) / 1000)
    assert collector.stats["ignored"] == 1
    assert collector.stats["rejected:unknown_alias"] == 1
    assert (
        REGISTRY.get_sample_value(
            "pue_agent_readings_rejected_total",
            {"collector": "sparkplug", "reason": "unknown_alias"},
        )
        == 1
    )


def _seq_mapping(tmp_path: Path) -> Path:
    mapping = tmp_path / "seq.toml"
    mapping.write_text(
        """
[[rules]]
topic = "meters/+/power"
segments = "_/device"
sequence_path = "seq"
timestamp_path = "ts"
fields = [{ path = "p", point = "power", quantity = "power_w" }]
""",
        encoding="utf-8",
    )
    return mapping


async def test_qos1_published_while_stopped_arrive_once_after_restart(
    tmp_path: Path, mosquitto_tls: Mosquitto
) -> None:
    mapping = _seq_mapping(tmp_path)
    options = {"mappings": [str(mapping)], "client_id": "pue-test-restart", "qos": 1}
    first, settings = make_collector(tmp_path, mosquitto_tls, "restart", **options)
    async with running_agent(settings, first):
        await wait_subscribed(first)
        publish(mosquitto_tls, [("meters/m1/power", json.dumps({"seq": 0, "p": 0.0}).encode())])
        await wait_until(lambda: first.stats["accepted"] == 1)
        # Stop while a stream is in flight: what was received is journalled and acked.
        publish(
            mosquitto_tls,
            [
                ("meters/m1/power", json.dumps({"seq": i, "p": float(i)}).encode())
                for i in range(1, 201)
            ],
        )
    received_before = first.stats["accepted"]
    # Agent down: the broker queues these for the persistent session.
    publish(
        mosquitto_tls,
        [
            ("meters/m1/power", json.dumps({"seq": i, "p": float(i)}).encode())
            for i in range(201, 1001)
        ],
    )
    second, _ = make_collector(tmp_path, mosquitto_tls, "restart", **options)
    async with running_agent(settings, second):
        await wait_until(lambda: received_before + second.stats["accepted"] >= 1001, timeout_s=30)
    frame = journal_frame(settings)
    values = sorted(frame["value"].to_list())
    # Published values 0.0 .. 1000.0, each exactly once: none lost, none duplicated.
    assert values == [float(i) for i in range(1001)]
    assert second.stats["lost"] == 0
    assert first.stats["lost"] == 0


async def test_broker_restart_reconnects_and_resumes(tmp_path: Path, mosquitto: Mosquitto) -> None:
    mapping = _seq_mapping(tmp_path)
    collector, settings = make_collector(
        tmp_path, mosquitto, "broker-restart", mappings=[str(mapping)], client_id="pue-test-br"
    )
    async with running_agent(settings, collector):
        await wait_subscribed(collector)
        publish(
            mosquitto,
            [("meters/a/power", json.dumps({"seq": i, "p": i}).encode()) for i in range(50)],
        )
        await wait_until(lambda: collector.stats["accepted"] == 50)
        mosquitto.restart()
        await wait_subscribed(collector, sessions=2)
        publish(
            mosquitto,
            [("meters/a/power", json.dumps({"seq": i, "p": i}).encode()) for i in range(50, 100)],
        )
        await wait_until(lambda: collector.stats["accepted"] == 100)
    assert collector.connections == 2
    values = sorted(journal_frame(settings)["value"].to_list())
    assert values == [float(i) for i in range(100)]
    # Sequence 0..99 without holes: nothing counted as lost.
    assert collector.stats["lost"] == 0


async def test_sequence_gap_is_counted_as_lost(tmp_path: Path, mosquitto: Mosquitto) -> None:
    collector, settings = make_collector(
        tmp_path, mosquitto, "gaps", mappings=[str(_seq_mapping(tmp_path))], qos=0
    )
    sent = [0, 1, 2, 5, 6, 10]  # holes: 3,4 (2 lost) and 7,8,9 (3 lost) -> 5
    async with running_agent(settings, collector):
        await wait_subscribed(collector)
        publish(
            mosquitto,
            [("meters/g/power", json.dumps({"seq": s, "p": 1}).encode()) for s in sent],
            qos=0,
        )
        await wait_until(lambda: collector.stats["accepted"] == len(sent))
    assert collector.stats["lost"] == 5
    assert (
        REGISTRY.get_sample_value(
            "pue_agent_mqtt_messages_lost_total", {"collector": "gaps", "reason": "sequence_gap"}
        )
        == 5
    )


async def test_wrong_password_retries_and_never_logs_it(
    tmp_path: Path, mosquitto_tls: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path, mosquitto_tls)
    wrong = "wrong-Pa55-" + "x" * 8
    (tmp_path / "secrets" / SECRET_NAME).write_text(wrong, encoding="utf-8")
    collector = build("badpw", collector_options(mosquitto_tls, mappings=["shelly_gen2"]), settings)
    async with running_agent(settings, collector):
        await asyncio.sleep(1.0)
        # Refused (not authorised) every time, retried with backoff, never connected.
        assert collector.connections == 0
    out = capsys.readouterr()
    assert "broker connection failed" in out.err + out.out
    assert wrong not in out.err + out.out
    assert wrong not in repr(collector.connection_spec())


def test_missing_secret_is_a_config_error_naming_the_field(
    tmp_path: Path, mosquitto_tls: Mosquitto
) -> None:
    settings = load_settings(None, state_dir=tmp_path / "state", secrets_dir=tmp_path / "none")
    with pytest.raises(
        ConfigError, match=r"collectors\.m\.password_secret: secret 'mqtt_password'"
    ):
        build("m", collector_options(mosquitto_tls, mappings=["shelly_gen2"]), settings)


def test_bad_options_name_the_field(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = settings_for(tmp_path, mosquitto)
    with pytest.raises(ConfigError, match=r"collectors\.m\.qos"):
        build("m", collector_options(mosquitto, mappings=["shelly_gen2"], qos=3), settings)
    with pytest.raises(
        ConfigError, match=r"collectors\.m\.mappings: mapping 'nope' is not built in"
    ):
        build("m", collector_options(mosquitto, mappings=["nope"]), settings)

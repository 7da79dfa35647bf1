"""`pue-agent probe mqtt` end to end, and fuzzing through a real broker."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from agent.metrics import REGISTRY
from tests.mqtt.helpers import make_collector, publish, running_agent, wait_subscribed, wait_until
from tests.paths import FIXTURES, ROOT
from tests.servers.mosquitto import Mosquitto


def test_probe_prints_json_lines_from_retained_payloads(mosquitto: Mosquitto) -> None:
    payload = (FIXTURES / "mqtt" / "shelly" / "plusplugs__status_switch0.json").read_bytes()
    publish(mosquitto, [("shellyplusplugs-aabbccddeeff/status/switch:0", payload)], retain=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "probe",
            "mqtt",
            f"{mosquitto.host}:{mosquitto.port}",
            "+/status/#",
            "--mapping",
            "shelly_gen2",
            "--seconds",
            "1",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    by_point = {r["point"]: r for r in records}
    # switch:0: apower 2.7 W, aenergy.total 7258.589 Wh / 1000 = 7.258589 kWh.
    assert by_point["switch0.power"]["value"] == 2.7
    assert by_point["switch0.power"]["unit"] == "W"
    assert by_point["switch0.energy"]["value"] == 7258.589 * 0.001
    assert by_point["switch0.energy"]["unit"] == "kWh"
    assert {r["device"] for r in records} == {"shellyplusplugs-aabbccddeeff"}
    assert {r["mapping"] for r in records} == {"shelly_gen2"}
    assert len(records) == 5
    assert "1 mapped" in result.stderr


def test_probe_bad_mapping_is_a_clear_error(mosquitto: Mosquitto, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "probe",
            "mqtt",
            f"{mosquitto.host}:{mosquitto.port}",
            "#",
            "--mapping",
            str(tmp_path / "missing.toml"),
            "--seconds",
            "0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "missing.toml: cannot read" in result.stderr


async def test_thousands_of_random_messages_through_the_broker_counted_by_reason(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    mapping = tmp_path / "fuzz.toml"
    mapping.write_text(
        '[[rules]]\ntopic = "fz/+/v"\nsegments = "_/device"\n'
        'fields = [{ path = "p", point = "p", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    collector, settings = make_collector(
        tmp_path,
        mosquitto,
        "fuzz",
        mappings=[str(mapping)],
        max_payload_bytes=512,
        subscriptions=[{"topic": "fz/#", "qos": 1}],
    )
    rng = random.Random(4)
    messages: list[tuple[str, bytes]] = []
    expected = {
        "accepted": 0,
        "malformed": 0,
        "wrong_type": 0,
        "non_finite": 0,
        "missing_field": 0,
        "oversize": 0,
        "unknown_topic": 0,
    }
    for i in range(3000):
        kind = rng.choice(list(expected))
        topic = f"fz/d{i % 7}/v"
        if kind == "accepted":
            payload = json.dumps({"p": rng.uniform(-1e6, 1e6), "x": rng.random()}).encode()
        elif kind == "malformed":
            # Random bytes behind a lone "{" never form valid JSON.
            payload = b"{" + rng.randbytes(rng.randrange(0, 100))
        elif kind == "wrong_type":
            payload = json.dumps({"p": rng.choice(["1", [], {}, True, "nan"])}).encode()
        elif kind == "non_finite":
            payload = rng.choice([b'{"p": NaN}', b'{"p": Infinity}', b'{"p": -1e400}'])
        elif kind == "missing_field":
            payload = rng.choice([b"{}", b'{"p": null}', b'{"q": 5}'])
        elif kind == "oversize":
            payload = json.dumps({"p": 1, "pad": "x" * rng.randrange(520, 2000)}).encode()
        else:
            topic = f"fz/d{i % 7}/other/{rng.randrange(1000)}"
            payload = rng.randbytes(rng.randrange(0, 50))
        expected[kind] += 1
        messages.append((topic, payload))
    async with running_agent(settings, collector) as agent:
        await wait_subscribed(collector)
        publish(mosquitto, messages)
        await wait_until(
            lambda: (
                collector.stats["accepted"]
                + sum(v for k, v in collector.stats.items() if k.startswith("rejected:"))
                == 3000
            ),
            timeout_s=60,
        )
        await wait_until(lambda: agent.committed_readings == expected["accepted"])
    for reason, count in expected.items():
        if reason == "accepted":
            assert collector.stats["accepted"] == count
        else:
            assert collector.stats[f"rejected:{reason}"] == count, reason
            assert (
                REGISTRY.get_sample_value(
                    "pue_agent_readings_rejected_total", {"collector": "fuzz", "reason": reason}
                )
                == count
            )

"""Mappings a new user writes in minutes: ``probe --suggest``, timestamps, README, ``check``."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agent.cli import app
from agent.metrics import REGISTRY
from agent.readings import QUANTITIES, Quality
from agent.settings import ConfigError, load_settings
from collectors.mqtt import build
from collectors.mqtt.decode import Decoder, DecodeResult
from collectors.mqtt.mapping import Mapping, TopicRouter, load_mapping, parse_json_path
from collectors.mqtt.reference import README, regenerate
from collectors.mqtt.sparkplug_b import DataType, encode_payload
from collectors.mqtt.suggest import suggest_mapping
from tests.mqtt.helpers import (
    journal_frame,
    make_collector,
    publish,
    running_agent,
    wait_subscribed,
    wait_until,
)
from tests.paths import FIXTURES, ROOT
from tests.servers.mosquitto import Mosquitto, start_mosquitto

SHELLY = FIXTURES / "mqtt" / "shelly"
SPARKPLUG = FIXTURES / "mqtt" / "sparkplug"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One plain broker for this module's probe runs (each uses its own topics)."""
    server = start_mosquitto(tmp_path_factory.mktemp("suggest-broker"))
    try:
        yield server
    finally:
        server.stop()


def _shelly_samples() -> list[tuple[str, bytes]]:
    """Every Shelly fixture on the topic its PROVENANCE row names (``implied topic=…``)."""
    samples = []
    for line in (SHELLY / "PROVENANCE").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(\S+\.json)\t.*implied topic=(\S+)", line)
        if match:
            samples.append((match.group(2), (SHELLY / match.group(1)).read_bytes()))
    assert len(samples) == 8
    return samples


def _load(text: str) -> Mapping:
    return Mapping.model_validate(tomllib.loads(text))


def _decode(mapping: Mapping, samples: list[tuple[str, bytes]], **kw: Any) -> DecodeResult:
    decoder = Decoder(TopicRouter(mapping.rules), **kw)
    return decoder.decode([(t, p, time.time()) for t, p in samples])


def _active(mapping: Mapping) -> dict[str, tuple[str, float]]:
    """path or metric -> (quantity, scale) of the fields the suggestion made active."""
    return {
        (f.path or f.metric or ""): (f.quantity, f.scale) for r in mapping.rules for f in r.fields
    }


def _probe(broker: Mosquitto, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "probe", "mqtt", f"{broker.host}:{broker.port}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "100", "PYTHONIOENCODING": "utf-8"},
    )


# -- the suggester on the shipped payload families --------------------------------------------


def test_suggestion_for_the_shelly_fixtures_decodes_them_all() -> None:
    samples = _shelly_samples()
    suggestion = suggest_mapping(samples)
    mapping = _load(suggestion.toml)
    # One rule per topic shape, the device level (hex id with a hyphen) as "+".
    assert [r.topic for r in mapping.rules] == [
        "+/status/switch:0",
        "+/status/em:0",
        "+/status/emdata:0",
        "+/status/switch:1",
        "+/status/switch:2",
        "+/status/switch:3",
    ]
    assert {r.segments for r in mapping.rules} == {"device"}
    active = _active(mapping)
    # Key words -> quantities (Shelly API names): act_power W, aprt_power VA, pf, freq Hz...
    assert active["a_act_power"] == ("power_w", 1.0)
    assert active["total_aprt_power"] == ("apparent_power_va", 1.0)
    assert active["a_pf"] == ("power_factor", 1.0)
    assert active["a_freq"] == ("frequency_hz", 1.0)
    assert active["a_voltage"] == ("voltage_v", 1.0)
    assert active["total_current"] == ("current_a", 1.0)
    assert active["temperature.tC"] == ("temperature_c", 1.0)
    assert active["aenergy.total"] == ("energy_kwh", 1.0)
    assert active["total_act"] == ("energy_kwh", 1.0)
    # Per-minute energy resets every minute, Fahrenheit has no quantity, "id" names nothing.
    for left_out in ("aenergy.by_minute[0]", "temperature.tF", "id"):
        assert left_out not in active
    assert '# { path = "aenergy.by_minute[0]"' in suggestion.toml
    # The payload has no unit: the guess is said, next to the line.
    assert "kWh assumed (Wh: scale = 0.001)" in suggestion.toml
    # aenergy.minute_ts is the by_minute window's start, not the reading's time: comment only.
    assert all(r.timestamp_path is None for r in mapping.rules)
    assert '# timestamp_path = "aenergy.minute_ts"' in suggestion.toml
    result = _decode(mapping, samples)
    assert (result.accepted, dict(result.rejected)) == (8, {})
    frame = result.frame
    row = frame.filter(
        (frame["device"] == "shellypro3em-aabbccddeeff") & (frame["point"] == "a_act_power")
    )
    assert row["value"].to_list() == [375.5]  # pro3em__status_em0.json: "a_act_power": 375.5


def test_suggestion_for_sparkplug_maps_metrics_by_name() -> None:
    ndata = json.loads((SPARKPLUG / "spec_example__NDATA.json").read_text(encoding="utf-8"))
    topic = "spBv1.0/Sparkplug B Devices/NDATA/Raspberry Pi"
    payload = encode_payload(
        [
            {"name": m["name"], "datatype": DataType.FLOAT, "value": m["value"]}
            for m in ndata["metrics"]
        ],
        seq=ndata["seq"],
    )
    suggestion = suggest_mapping([(topic, payload)])
    mapping = _load(suggestion.toml)
    assert mapping.rules[0].format == "sparkplug_b"
    assert _active(mapping) == {"Supply Voltage": ("voltage_v", 1.0)}
    result = _decode(mapping, [(topic, payload)])
    assert result.accepted == 1
    # The spec's example value, 12.3 as a protobuf float (single precision).
    assert result.frame["value"].to_list() == pytest.approx([12.3], rel=1e-6)


def test_iso_time_custom_prefix_daily_counters_and_units_in_keys() -> None:
    topic = "site/a/b/tele/dev/SENSOR"
    doc = {
        "Time": "2026-12-06T17:00:00",
        "ENERGY": {
            "TotalStartTime": "2026-01-01T00:00:00",
            "Total": 12.5,
            "Today": 0.4,
            "Yesterday": 1.2,
            "Power": 45,
            "import_Wh": 1500,
            "powerKW": 1.5,
            "grid": {"value": 3, "unit": "kW"},
        },
    }
    suggestion = suggest_mapping([(topic, json.dumps(doc).encode())])
    mapping = _load(suggestion.toml)
    rule = mapping.rules[0]
    assert (rule.topic, rule.segments) == ("site/a/b/tele/+/SENSOR", "_/_/_/_/device")
    assert (rule.timestamp_path, rule.timestamp_format, rule.timezone) == ("Time", "iso8601", "UTC")
    active = _active(mapping)
    assert active == {
        "ENERGY.Total": ("energy_kwh", 1.0),
        "ENERGY.Power": ("power_w", 1.0),
        "ENERGY.import_Wh": ("energy_kwh", 0.001),  # Wh -> kWh
        "ENERGY.powerKW": ("power_w", 1000.0),  # kW -> W
        "ENERGY.grid.value": ("power_w", 1000.0),  # sibling unit key "kW"
    }
    assert "ENERGY.Today" in suggestion.toml and "daily/periodic counter" in suggestion.toml
    result = _decode(mapping, [(topic, json.dumps(doc).encode())], max_skew_s=10**10)
    assert result.accepted == 1
    # Zone-less "2026-12-06T17:00:00" read in UTC = 1796576400 s since the epoch.
    assert {ts.timestamp() for ts in result.frame["ts"]} == {1_796_576_400.0}
    assert result.frame["quality"].to_list() == [Quality.GOOD] * 5
    values = dict(zip(result.frame["point"], result.frame["value"], strict=True))
    assert values["energy.import_wh"] == 1.5 and values["energy.grid.value"] == 3000.0


def test_epoch_timestamp_sequence_and_device_level_option() -> None:
    samples = [
        (
            "plant/inc1/meter",
            json.dumps({"ts": 1_796_576_400_123, "seq": i, "energy_kWh": 7.0 + i}).encode(),
        )
        for i in range(3)
    ]
    mapping = _load(suggest_mapping(samples).toml)
    rule = mapping.rules[0]
    assert (rule.timestamp_path, rule.timestamp_unit, rule.sequence_path) == ("ts", "ms", "seq")
    assert rule.segments == "_/device"  # "inc1" has a digit, "plant" and "meter" do not
    forced = _load(suggest_mapping(samples, level=3).toml).rules[0]
    assert (forced.topic, forced.segments) == ("plant/inc1/+", "_/_/device")


def test_nothing_mappable_says_so_and_numbers_use_the_topic() -> None:
    nothing = suggest_mapping([("a/b", b'{"x": "text", "y": true}'), ("c/d", b"not json")])
    assert nothing.rules == 0 and "no rule could be suggested" in nothing.toml
    assert set(nothing.skipped) == {"a/b", "c/d"}
    number = suggest_mapping([("shellies/plug-1a2b3c/relay/0/power", b"41.5")])
    rule = _load(number.toml).rules[0]
    assert (rule.format, rule.fields[0].quantity) == ("number", "power_w")


# -- hypothesis: any nested JSON -> a mapping that loads and decodes its own sample -------------

_KEYS = st.sampled_from(
    [
        "Power",
        "Voltage",
        "Current",
        "Total",
        "Today",
        "ENERGY",
        "Factor",
        "Frequency",
        "ApparentPower",
        "ReactivePower",
        "energy_kWh",
        "import_Wh",
        "powerKW",
        "unit",
        "value",
        "p",
        "id",
        "temp",
        "a.b",
        "x[0]",
        "",
    ]
) | st.text(min_size=0, max_size=6)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["2026-12-06T17:00:00Z", "2026-12-06T17:00:00", "2026-13-45T99:00"])
)
_DOCS = st.dictionaries(
    _KEYS,
    st.recursive(
        _LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
        max_leaves=12,
    ),
    max_size=6,
)
_TIMES = st.none() | st.sampled_from(
    ["2026-12-06T17:00:00+01:00", "2026-12-06 17:00:00", 1_796_576_400, 1_796_576_400_000]
)


def _walk(doc: object, path: tuple[str | int, ...]) -> object:
    for part in path:
        doc = doc[part]  # type: ignore[index]
    return doc


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS, stamp=_TIMES, device=st.sampled_from(["m-01", "dev42", "x"]))
def test_fuzz_suggested_mapping_loads_and_decodes_its_sample(
    doc: dict[str, Any], stamp: object, device: str
) -> None:
    if stamp is not None:
        doc = {**doc, "Time": stamp}
    topic = f"tele/{device}/SENSOR"
    payload = json.dumps(doc).encode()
    suggestion = suggest_mapping([(topic, payload)])
    data = tomllib.loads(suggestion.toml)  # always valid TOML, even with nothing active
    if not suggestion.rules:
        assert "rules" not in data
        return
    mapping = Mapping.model_validate(data)
    result = _decode(mapping, [(topic, payload)], max_skew_s=10**10)
    assert (result.accepted, dict(result.rejected)) == (1, {})
    got = dict(zip(result.frame["point"], result.frame["value"], strict=True))
    for f in mapping.rules[0].fields:
        assert f.path is not None
        expected = float(_walk(doc, parse_json_path(f.path))) * f.scale  # type: ignore[arg-type]
        assert math.isclose(got[f.point], expected, rel_tol=1e-12), f.path
    rule = mapping.rules[0]
    if stamp is not None and rule.timestamp_path == "Time":
        # "+01:00" and the zone-less UTC reading are both 17:00 (16:00Z / 17:00Z) on 2026-12-06.
        expected_ts = {
            "2026-12-06T17:00:00+01:00": 1_796_572_800.0,
            "2026-12-06 17:00:00": 1_796_576_400.0,
            1_796_576_400: 1_796_576_400.0,
            1_796_576_400_000: 1_796_576_400.0,
        }[stamp]
        assert {ts.timestamp() for ts in result.frame["ts"]} == {expected_ts}


# -- timestamps -------------------------------------------------------------------------------


def test_iso_and_epoch_timestamps_and_bad_ones_rejected_by_reason(tmp_path: Path) -> None:
    path = tmp_path / "ts.toml"
    path.write_text(
        'timezone = "Europe/Berlin"\n'
        '[[rules]]\ntopic = "iso/+"\nsegments = "_/device"\ntimestamp_path = "t"\n'
        'timestamp_format = "iso8601"\n'
        'fields = [{ path = "p", point = "p", quantity = "power_w" }]\n'
        '[[rules]]\ntopic = "utc/+"\nsegments = "_/device"\ntimestamp_path = "t"\n'
        'timestamp_format = "iso8601"\ntimezone = "UTC"\n'
        'fields = [{ path = "p", point = "p", quantity = "power_w" }]\n'
        '[[rules]]\ntopic = "us/+"\nsegments = "_/device"\ntimestamp_path = "t"\n'
        'timestamp_unit = "us"\n'
        'fields = [{ path = "p", point = "p", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    mapping = load_mapping(path)
    # 2026-12-06 is winter time in Berlin: 18:00 local = 17:00Z = 1796576400 s.
    noon = 1_796_576_400.0
    messages = [
        ("iso/a", b'{"p": 1, "t": "2026-12-06T18:00:00"}'),  # zone-less: Europe/Berlin
        ("iso/a", b'{"p": 2, "t": "2026-12-06T17:00:00Z"}'),  # zone given: used as is
        ("iso/a", b'{"p": 3, "t": "2026-12-06T12:00:00-05:00"}'),
        ("utc/a", b'{"p": 4, "t": "2026-12-06 17:00:00.000"}'),  # rule-level zone: UTC
        ("us/a", b'{"p": 5, "t": 1796576400000000}'),
        ("iso/a", b'{"p": 6, "t": "06/12/2026 17:00"}'),  # not ISO 8601
        ("iso/a", b'{"p": 7, "t": 1796576400}'),  # a number in an ISO rule
        ("us/a", b'{"p": 8, "t": "1796576400000000"}'),  # a string in an epoch rule
        ("us/a", b'{"p": 9, "t": ' + b"9" * 400 + b"}"),  # beyond float range
        ("iso/a", b'{"p": 10}'),  # absent: the receive time, flagged
    ]
    now = noon + 5
    result = Decoder(TopicRouter(mapping.rules)).decode([(t, p, now) for t, p in messages])
    assert dict(result.rejected) == {"bad_timestamp": 4}
    frame = result.frame.sort("value")
    assert [ts.timestamp() for ts in frame["ts"]] == [noon] * 5 + [now]
    assert frame["quality"].to_list() == [Quality.GOOD] * 5 + [Quality.RECEIVE_TIME]
    # A bad zone name is a clear error naming the key.
    path.write_text(path.read_text(encoding="utf-8").replace("Europe/Berlin", "Mars/Base"))
    with pytest.raises(ConfigError, match=r"timezone.*unknown time zone 'Mars/Base'"):
        load_mapping(path)
    assert datetime(2026, 12, 6, 18, tzinfo=ZoneInfo("Europe/Berlin")).timestamp() == noon
    assert datetime(2026, 12, 6, 17, tzinfo=UTC).timestamp() == noon


async def test_collector_counts_bad_timestamps_in_its_metric(
    broker: Mosquitto, tmp_path: Path
) -> None:
    mapping = tmp_path / "iso.toml"
    mapping.write_text(
        '[[rules]]\ntopic = "isots/+"\nsegments = "_/device"\ntimestamp_path = "Time"\n'
        'timestamp_format = "iso8601"\n'
        'fields = [{ path = "p", point = "p", quantity = "power_w" }]\n',
        encoding="utf-8",
    )
    collector, settings_ = make_collector(tmp_path, broker, "isots", mappings=[str(mapping)])
    now = datetime.now(UTC).replace(microsecond=0)
    async with running_agent(settings_, collector) as agent:
        await wait_subscribed(collector)
        publish(
            broker,
            [
                ("isots/m1", json.dumps({"p": 1, "Time": now.isoformat()}).encode()),
                ("isots/m1", json.dumps({"p": 2, "Time": "06.12.2026 17:00"}).encode()),
            ],
        )
        await wait_until(
            lambda: agent.committed_readings == 1 and collector.stats["rejected:bad_timestamp"] == 1
        )
    labels = {"collector": "isots", "reason": "bad_timestamp"}
    assert REGISTRY.get_sample_value("pue_agent_readings_rejected_total", labels) == 1
    frame = journal_frame(settings_)
    assert frame["value"].to_list() == [1.0]  # the bad one is not journalled at receive time
    assert frame["ts"].to_list() == [now]
    assert frame["quality"].to_list() == [Quality.GOOD]


# -- README: generated tables and the worked example --------------------------------------------


def test_readme_reference_tables_are_what_the_code_generates() -> None:
    text = README.read_text(encoding="utf-8")
    assert regenerate(text) == text, "run: .venv/bin/python -m collectors.mqtt.reference"
    for quantity in QUANTITIES:
        assert f"| `{quantity}` |" in text


def _readme_block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert match, name
    return match.group(1)


def test_readme_worked_example_through_a_real_broker(broker: Mosquitto, tmp_path: Path) -> None:
    payload = _readme_block("payload").strip().encode()
    publish(broker, [("site/hall-1/tele/meter-07/SENSOR", payload)], retain=True)
    suggested = _probe(broker, "site/#", "--suggest", "--messages", "1", "--seconds", "10")
    assert suggested.returncode == 0, suggested.stderr
    assert suggested.stdout == _readme_block("suggestion")
    assert "suggested 1 rule(s) from 1 message(s)" in suggested.stderr
    meter = tmp_path / "meter.toml"
    meter.write_text(suggested.stdout, encoding="utf-8")
    readings = _probe(broker, "site/#", "--mapping", str(meter), "--seconds", "1")
    assert readings.returncode == 0, readings.stderr
    assert readings.stdout.replace(str(meter), "meter.toml") == _readme_block("readings")
    # The values are the payload's: Power 2150 W, Total 1234.567 kWh, Factor 0.94.
    for value in ("2150", "1234.57", "0.94"):
        assert value in readings.stdout


def test_probe_suggest_usage_errors_and_nothing_received(broker: Mosquitto) -> None:
    # In-process (the worked example above runs the real command): no interpreter start-ups.
    runner = CliRunner()
    where = f"{broker.host}:{broker.port}"

    def probe(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["probe", "mqtt", where, *args])
        return result.exit_code, result.output

    code, output = probe("x/#", "--suggest", "--mapping", "shelly_gen2")
    assert code == 2 and "either --mapping FILE or --suggest" in output
    code, output = probe("nobody/publishes/here", "--suggest", "--seconds", "0.3")
    assert code == 1 and "no message arrived" in output
    # --json: one object; with nothing mappable it carries "error" and "code" as well.
    publish(broker, [("usage/dev-9/text", b'{"state": "on"}')], retain=True)
    code, output = probe("usage/#", "--suggest", "--json", "--messages", "1")
    assert code == 1, output
    record = json.loads(output.splitlines()[0])
    assert (record["rules"], record["code"]) == (0, 1)
    assert record["not_mapped"] == {"usage/dev-9/text": "no numeric value matched a quantity"}
    tomllib.loads(record["mapping"])  # still valid TOML, every line commented out


# -- check: quantities per mapping ------------------------------------------------------------


def test_check_lists_quantities_per_mapping_and_warns_without_energy_or_power(
    tmp_path: Path,
) -> None:
    climate = tmp_path / "climate.toml"
    climate.write_text(
        '[[rules]]\ntopic = "room/+"\nsegments = "_/device"\n'
        'fields = [{ path = "t", point = "t", quantity = "temperature_c" },'
        ' { path = "h", point = "h", quantity = "humidity_pct" }]\n',
        encoding="utf-8",
    )
    settings_ = load_settings(None, state_dir=tmp_path / "state")
    collector = build(
        "m", {"host": "127.0.0.1", "mappings": ["shelly_gen2", str(climate)]}, settings_
    )
    lines = collector.describe().splitlines()
    assert lines[1] == (
        "  mapping shelly_gen2: power_w, energy_kwh, apparent_power_va, current_a, "
        "voltage_v, frequency_hz, power_factor, temperature_c"
    )
    assert lines[2] == f"  mapping {climate}: temperature_c, humidity_pct"
    assert lines[3] == (
        f"  warning: mapping {climate} produces neither energy (energy_kwh) nor power "
        "(power_w): its readings cannot enter PUE"
    )
    assert len(lines) == 4
    # The same lines in `pue-agent check`'s plan.
    config = tmp_path / "agent.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[[collectors]]\nkind = "mqtt"\nname = "m"\n'
        f'host = "127.0.0.1"\nmappings = ["shelly_gen2", "{climate}"]\n',
        encoding="utf-8",
    )
    checked = CliRunner().invoke(app, ["check", "--config", str(config)])
    assert checked.exit_code == 0, checked.output
    flat = " ".join(checked.output.split())  # the console wraps long lines
    for line in lines[1:]:
        assert " ".join(line.split()) in flat

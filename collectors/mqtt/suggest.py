"""Suggest a mapping from sample messages (``pue-agent probe mqtt … --suggest``).

The suggestion is a starting point a person reviews, so every guess that could
be wrong is written down as a TOML comment next to the line it concerns. What
is guessed, and from what:

- **the device** — the topic level that looks most like a device id (digits,
  hex runs, ``-``/``_``; following a collection word like ``tele`` or
  ``devices``; differing between topics of the same shape), which becomes the
  ``+`` of the rule's topic filter and its ``device`` segment;
- **quantities** — numeric leaves matched by the words in their keys (their
  own key first, then their parents') and by units in key suffixes or a
  sibling ``unit`` key (:data:`UNITS`), e.g. ``Power`` → ``power_w``,
  ``Total`` under ``ENERGY`` → ``energy_kwh``, ``total_kWh`` → ``energy_kwh``;
- **daily counters** (``Today``, ``Yesterday``, ``by_minute``…) are written
  commented out: they reset, so they are not energy registers;
- **the timestamp** — a top-level key with a time-like name holding an
  ISO 8601 string or an epoch number (unit from its magnitude), read with the
  decoder's own :func:`~collectors.mqtt.decode.timestamp_seconds`, so what is
  suggested is what will be decoded.

The vocabulary is generic (words and units), never a vendor's model names.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from collectors.mqtt.decode import timestamp_seconds
from collectors.mqtt.sparkplug_b import Payload, metric_value

__all__ = [
    "DAILY_WORDS",
    "QUANTITY_WORDS",
    "UNITS",
    "Suggestion",
    "device_level",
    "suggest_mapping",
    "toml_string",
]

#: Unit spellings (as written in keys or ``unit`` values) -> (quantity, scale to its unit).
UNITS: dict[str, tuple[str, float]] = {
    "w": ("power_w", 1.0),
    "kw": ("power_w", 1000.0),
    "wh": ("energy_kwh", 0.001),
    "kwh": ("energy_kwh", 1.0),
    "va": ("apparent_power_va", 1.0),
    "kva": ("apparent_power_va", 1000.0),
    "var": ("reactive_power_var", 1.0),
    "kvar": ("reactive_power_var", 1000.0),
    "vah": ("apparent_energy_kvah", 0.001),
    "kvah": ("apparent_energy_kvah", 1.0),
    "v": ("voltage_v", 1.0),
    "mv": ("voltage_v", 0.001),
    "a": ("current_a", 1.0),
    "ma": ("current_a", 0.001),
    "hz": ("frequency_hz", 1.0),
    "c": ("temperature_c", 1.0),
    "degc": ("temperature_c", 1.0),
    "°c": ("temperature_c", 1.0),
    "celsius": ("temperature_c", 1.0),
}
#: Unit spellings where case tells milli from mega: checked before the folded table.
_CASED_UNITS: dict[str, tuple[str, float]] = {
    "MW": ("power_w", 1e6),
    "mW": ("power_w", 0.001),
    "MWh": ("energy_kwh", 1000.0),
    "mWh": ("energy_kwh", 1e-6),
}

#: Words in a key -> quantity, checked in this order (the first that matches wins), on the
#: leaf's own key first and on its parents' keys only if the leaf's key says nothing.
QUANTITY_WORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("power_factor", frozenset({"pf", "factor", "cosphi", "powerfactor"})),
    ("apparent_energy_kvah", frozenset({"kvah", "vah"})),
    ("apparent_power_va", frozenset({"apparent", "aprt", "va", "kva"})),
    ("reactive_power_var", frozenset({"reactive", "react", "var", "kvar"})),
    # No single letters here (a_voltage, b_current name phases): units come from _unit_of.
    ("power_w", frozenset({"power", "apower", "watt", "watts", "kw"})),
    ("voltage_v", frozenset({"voltage", "volt", "volts"})),
    ("current_a", frozenset({"current", "amps", "amp", "ampere", "curr"})),
    ("frequency_hz", frozenset({"frequency", "freq", "hz"})),
    ("temperature_c", frozenset({"temperature", "temp", "tc", "celsius"})),
    ("humidity_pct", frozenset({"humidity", "hum", "rh"})),
    ("battery_charge_pct", frozenset({"battery", "soc", "charge"})),
    ("uptime_s", frozenset({"uptime"})),
    ("runtime_s", frozenset({"runtime"})),
    ("load_pct", frozenset({"load"})),
    (
        "energy_kwh",
        frozenset(
            {
                "energy",
                "aenergy",
                "kwh",
                "wh",
                "consumption",
                "consumed",
                "import",
                "imported",
                "export",
                "exported",
                "returned",
                "ret",
            }
        ),
    ),
    # Last: a device's own status enumeration (reported as is, never a measurement).
    ("status_code", frozenset({"status", "state", "alarm", "fault"})),
)
#: A weak hint of an energy register: taken, with a comment, only when nothing else matched.
_WEAK_ENERGY = frozenset({"total", "counter", "meter", "reading"})

#: Words naming a number that is not a measurement (meter_id, channel, rssi).
_IDENTIFIER_WORDS = frozenset(
    {
        "id",
        "serial",
        "number",
        "no",
        "index",
        "idx",
        "version",
        "channel",
        "slot",
        "port",
        "address",
        "addr",
        "rssi",
        "snr",
        "type",
        "mode",
    }
)

#: Words that make a counter reset periodically: such values are not energy registers.
DAILY_WORDS = frozenset(
    {
        "today",
        "yesterday",
        "daily",
        "day",
        "week",
        "weekly",
        "month",
        "monthly",
        "year",
        "yearly",
        "hour",
        "hourly",
        "minute",
        "period",
        "interval",
    }
)

#: Time-like key words (a timestamp candidate needs one).
_TIME_WORDS = frozenset({"time", "timestamp", "ts", "t", "date", "datetime", "epoch", "utc"})
#: Words marking a time that is not the reading's (start of a total, last reset...).
_OTHER_TIME_WORDS = frozenset(
    {
        "start",
        "since",
        "boot",
        "reset",
        "last",
        "next",
        "minute",
        "uptime",
        "begin",
        "end",
    }
)
#: Keys whose value is a per-device message counter.
_SEQUENCE_WORDS = frozenset({"seq", "sequence", "seqno"})
#: Keys holding the value when a sibling key holds its unit: {"value": 3.2, "unit": "kW"}.
_VALUE_KEYS = frozenset({"value", "val", "v", "reading"})
_UNIT_KEYS = ("unit", "units", "uom", "Unit", "Units")

#: Topic levels that name a kind of message, never a device.
_GENERIC_LEVELS = frozenset(
    {
        "tele",
        "stat",
        "cmnd",
        "status",
        "sensor",
        "sensors",
        "state",
        "data",
        "events",
        "event",
        "rpc",
        "telemetry",
        "metrics",
        "json",
        "online",
        "info",
        "result",
        "lwt",
        "up",
        "uplink",
        "devices",
        "device",
        "meters",
        "meter",
        "nodes",
        "node",
        "site",
        "sites",
        "power",
        "energy",
        "measurements",
        "readings",
        "values",
        "attributes",
        "out",
        "in",
        "msg",
        "message",
    }
)
#: Topic levels after which the device id usually follows.
_COLLECTION_LEVELS = frozenset(
    {
        "tele",
        "stat",
        "devices",
        "device",
        "meters",
        "meter",
        "nodes",
        "node",
        "sensors",
        "gateways",
        "things",
    }
)

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+")
_UNIT_SUFFIX = re.compile(r"[_\-\s]([A-Za-z°]+)$|(?<=[a-z])([A-Z][A-Za-z]*)$")
_HEX_RUN = re.compile(r"[0-9a-f]{6,}")
_POINT_BAD = re.compile(r"[^a-z0-9_]+")

#: Epoch magnitudes (2001-2096) by unit: a time-named number in one of these is a timestamp.
_EPOCH_RANGES = (("s", 1e9, 4e9), ("ms", 1e12, 4e12), ("us", 1e15, 4e15))
_MAX_LEAVES = 400
_MAX_DEPTH = 32

Path = tuple[str | int, ...]


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _comment(text: str) -> str:
    # A TOML comment may hold no control characters and must be valid UTF-8.
    return (
        "".join(ch if ch.isprintable() else "?" for ch in text)
        .encode("utf-8", "replace")
        .decode("utf-8")
    )


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(key)]


def _unit_of(key: str) -> tuple[str, float] | None:
    """A unit written as the key's last part: ``energy_kWh``, ``powerKW``, ``W``."""
    if key in _CASED_UNITS:
        return _CASED_UNITS[key]
    if key.lower() in UNITS and (len(key) > 1 or key.isupper()):
        return UNITS[key.lower()]
    match = _UNIT_SUFFIX.search(key)
    if match is None:
        return None
    unit = match.group(1) or match.group(2)
    if unit in _CASED_UNITS:
        return _CASED_UNITS[unit]
    return UNITS.get(unit.lower())


def _addressable(key: str) -> bool:
    # The mapping's JSON path grammar: a key is one or more characters other than . [ ]
    return bool(key) and not any(c in key for c in ".[]") and key.isprintable()


def _render_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _leaves(obj: object, path: Path = ()) -> Iterator[tuple[Path, object]]:
    if len(path) > _MAX_DEPTH:
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _leaves(value, (*path, i))
    else:
        yield path, obj


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


# -- topics -----------------------------------------------------------------------------------


def _level_score(levels: list[str], i: int, varying: set[int]) -> int:
    level = levels[i]
    low = level.lower()
    if not level or low in _GENERIC_LEVELS or level.startswith("$"):
        return -10
    score = 0
    if any(c.isdigit() for c in level):
        score += 2
    if _HEX_RUN.search(low):
        score += 2
    if "-" in level or "_" in level:
        score += 1
    if ":" in level:
        score -= 2  # component:id (em:0, switch:1), a part of a device
    if i > 0 and levels[i - 1].lower() in _COLLECTION_LEVELS:
        score += 3
    if i in varying:
        score += 3
    if i == len(levels) - 1 and len(levels) > 1:
        score -= 1  # the last level usually says what the message is
    return score


def device_level(topic: str, others: Sequence[str] = ()) -> tuple[int | None, str]:
    """The topic level that most likely names the device, and why (for a comment).

    Args:
        topic: One received topic.
        others: Other received topics; a level that differs between topics of the
            same shape is more likely the device.

    Returns:
        The level index (``None`` if no level looks like a device) and a note that
        says how sure the choice is.
    """
    levels = topic.split("/")
    varying: set[int] = set()
    for other in others:
        other_levels = other.split("/")
        if len(other_levels) == len(levels) and other != topic:
            diff = [i for i, (a, b) in enumerate(zip(levels, other_levels, strict=True)) if a != b]
            if len(diff) == 1:
                varying.add(diff[0])
    scores = sorted(
        ((_level_score(levels, i, varying), i) for i in range(len(levels))), reverse=True
    )
    best, index = scores[0]
    if best <= -10:
        return None, "no topic level looks like a device id: the device is the topic itself"
    runner_up = scores[1][0] if len(scores) > 1 else -10
    note = f"device = topic level {index + 1} ({levels[index]!r})"
    if best < 3 or best - runner_up < 2:
        alternative = levels[scores[1][1]] if len(scores) > 1 and runner_up > -10 else None
        note += " - check: a guess"
        if alternative is not None:
            note += f"; or level {scores[1][1] + 1} ({alternative!r})"
        note += " (--device-level N picks another)"
    return index, note


# -- quantities -------------------------------------------------------------------------------


@dataclass
class _Field:
    #: ``path = …`` (json), ``metric = …`` (sparkplug_b) or nothing (number).
    locator: str
    point: str
    quantity: str | None
    scale: float = 1.0
    optional: bool = False
    active: bool = True
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        quantity = self.quantity or "?"
        text = (
            f"{{ {self.locator}point = {toml_string(self.point)}, "
            f"quantity = {toml_string(quantity)}"
        )
        if self.scale != 1.0:
            text += f", scale = {self.scale!r}"
        if self.optional:
            text += ", optional = true"
        text += " },"
        if not self.active:
            text = "# " + text
        if self.notes:
            text += "  # " + _comment("; ".join(self.notes))
        return "  " + text


def _quantity_for(path: Path, doc: dict[object, object]) -> tuple[str | None, float, list[str]]:
    """(quantity, scale, notes) for a numeric leaf at ``path`` of ``doc``."""
    keys = [p for p in path if isinstance(p, str)]
    leaf_key = keys[-1] if keys else ""
    notes: list[str] = []
    unit: tuple[str, float] | None = None
    parent: object = doc
    for part in path[:-1]:
        parent = parent[part] if isinstance(parent, dict | list) else None  # type: ignore[index]
    if isinstance(parent, dict):
        for unit_key in (*_UNIT_KEYS, f"{leaf_key}_unit", f"{leaf_key}Unit"):
            spelled = parent.get(unit_key)
            if isinstance(spelled, str):
                unit = _CASED_UNITS.get(spelled) or UNITS.get(spelled.strip().lower())
                if unit is not None:
                    notes.append(f"unit {spelled!r} from key {unit_key!r}")
                    break
    own = _words(leaf_key)
    name_keys = keys[:-1]
    if leaf_key.lower() in _VALUE_KEYS and len(keys) > 1:
        own, name_keys = _words(keys[-2]), keys[:-2]  # {"power": {"value": 1, "unit": "W"}}
    if set(own) & _IDENTIFIER_WORDS:
        return None, 1.0, ["an identifier or setting, not a measurement"]
    every_word = {w for k in keys for w in _words(k)}
    if "f" in own and every_word & {"temperature", "temp", "t"}:
        return None, 1.0, ["degrees Fahrenheit: temperature_c is Celsius"]
    if unit is None and leaf_key.lower() not in _VALUE_KEYS:
        unit = _unit_of(leaf_key)
        if unit is not None:
            notes.append("unit from the key")
    context = [w for k in name_keys for w in _words(k)]
    quantity = _match_words(own) or _match_words(context)
    if unit is not None:
        unit_quantity, scale = unit
        if quantity is None or (
            quantity in ("power_w", "energy_kwh")
            and unit_quantity
            in ("power_w", "energy_kwh", "apparent_power_va", "apparent_energy_kvah")
        ):
            # The unit says power or energy more reliably than a name ("Total_kWh").
            return unit_quantity, scale, notes
        if quantity == unit_quantity:
            return quantity, scale, notes
        notes.append(f"check: the key says {quantity}, the unit says {unit_quantity}")
        return quantity, 1.0, notes
    if quantity is None and set(own + context) & _WEAK_ENERGY:
        notes.append("check: 'total'-like key read as an energy register")
        quantity = "energy_kwh"
    if quantity is None:
        return None, 1.0, notes
    if quantity == "energy_kwh":
        notes.append("check: no unit in the payload, kWh assumed (Wh: scale = 0.001)")
    elif quantity == "apparent_energy_kvah":
        notes.append("check: no unit in the payload, kVAh assumed (VAh: scale = 0.001)")
    return quantity, 1.0, notes


def _match_words(words: list[str]) -> str | None:
    present = set(words)
    if not present:
        return None
    for quantity, vocabulary in QUANTITY_WORDS:
        if present & vocabulary:
            return quantity
    return None


def _point_name(path: Path) -> str:
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(str(part))
        else:
            # ApparentPower -> apparent_power; anything else outside [a-z0-9_] -> "_".
            words = "_".join(_words(part)) or part.lower()
            parts.append(_POINT_BAD.sub("_", words).strip("_") or "x")
    return ".".join(parts)


# -- timestamps -------------------------------------------------------------------------------


@dataclass
class _Stamp:
    path: str
    fmt: str
    unit: str
    zoned: bool
    example: str
    top_level: bool
    #: Named as another time (start, last, ...) or not named as a time at all.
    other_time: bool


def _stamp_of(path: Path, value: object) -> _Stamp | None:
    keys = [p for p in path if isinstance(p, str)]
    if not keys or not all(_addressable(k) for k in keys):
        return None
    words = set(_words(keys[-1]))
    other = bool(words & _OTHER_TIME_WORDS)
    named = bool(words & _TIME_WORDS)
    if isinstance(value, str):
        if len(value) < 10 or value[4:5] != "-":
            return None  # a date at least: 2026-12-06
        try:
            moment = datetime.fromisoformat(value)
            timestamp_seconds(value, "iso8601", "s", UTC)
        except (ValueError, OverflowError, OSError):
            return None
        return _Stamp(
            _render_path(path),
            "iso8601",
            "s",
            moment.tzinfo is not None,
            value,
            len(path) == 1,
            other or not named,
        )
    if _is_number(value) and named:
        number = float(value)  # type: ignore[arg-type]
        for unit, low, high in _EPOCH_RANGES:
            if low <= number < high:
                return _Stamp(
                    _render_path(path), "epoch", unit, True, repr(value), len(path) == 1, other
                )
    return None


# -- the suggestion ---------------------------------------------------------------------------


@dataclass
class Suggestion:
    """A suggested mapping: its TOML text and how many rules in it are active."""

    toml: str
    rules: int
    messages: int
    topics: int
    #: Topics whose payloads could not be mapped, with why.
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class _Group:
    filter: str
    segments: str
    device: str
    device_note: str
    topics: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)


def suggest_mapping(
    samples: Sequence[tuple[str, bytes | bytearray]], *, level: int | None = None
) -> Suggestion:
    """A mapping TOML that decodes ``samples`` (topic, payload), with guesses commented.

    Args:
        samples: Received messages; several per topic make optional fields visible.
        level: Use this topic level (1-based) as the device instead of guessing.

    Returns:
        The suggestion; ``rules == 0`` when nothing numeric could be mapped.
    """
    topics = list(dict.fromkeys(t for t, _ in samples))
    groups: dict[str, _Group] = {}
    sparkplug: list[tuple[str, bytes]] = []
    for topic, payload in samples:
        if topic.startswith("spBv1.0/"):
            sparkplug.append((topic, bytes(payload)))
            continue
        levels = topic.split("/")
        if level is not None and 1 <= level <= len(levels):
            index: int | None = level - 1
            note = f"device = topic level {level} ({levels[level - 1]!r}), as asked"
        else:
            index, note = device_level(topic, topics)
        if index is None:
            group = groups.setdefault(topic, _Group(topic, "", _literal(topic), note))
        else:
            filt = "/".join("+" if i == index else lv for i, lv in enumerate(levels))
            segments = "/".join(["_"] * index + ["device"])
            group = groups.setdefault(filt, _Group(filt, segments, "{device}", note))
        if topic not in group.topics:
            group.topics.append(topic)
        group.payloads.append(bytes(payload))
    blocks: list[str] = []
    skipped: dict[str, str] = {}
    zone_less = False
    active = 0
    for group in groups.values():
        block, ok, needs_zone, why = _json_rule(group)
        blocks.append(block)
        active += ok
        zone_less |= needs_zone
        if not ok:
            skipped[group.topics[0]] = why
    if sparkplug:
        block, ok = _sparkplug_rule(sparkplug)
        blocks.append(block)
        active += ok
        if not ok:
            skipped[sparkplug[0][0]] = "no numeric Sparkplug metric matched a quantity"
    head = [
        f"# Suggested by `pue-agent probe mqtt --suggest` from {len(samples)} message(s) on "
        f"{len(topics)} topic(s).",
        "# Review every line marked 'check'; commented-out fields are left out on purpose.",
        "# Keys, defaults and the quantities: collectors/mqtt/README.md.",
        f"description = {toml_string('suggested from ' + ', '.join(topics[:3])[:200])}",
    ]
    if zone_less:
        head += [
            "# check: payload times carry no zone offset; they are read in this IANA zone:",
            'timezone = "UTC"',
        ]
    if not active:
        head.append("# no rule could be suggested: no numeric value matched a quantity")
    text = "\n".join(head) + "\n\n" + "\n\n".join(blocks) + "\n"
    return Suggestion(text, active, len(samples), len(topics), skipped)


def _literal(topic: str) -> str:
    # A device template is a format string: braces from the topic must stay literal.
    return topic.replace("{", "{{").replace("}", "}}")


def _json_rule(group: _Group) -> tuple[str, bool, bool, str]:
    """(TOML block, active?, needs a timezone?, why not active)."""
    header = [
        f"# {len(group.payloads)} message(s) on {len(group.topics)} topic(s), e.g. "
        f"{_comment(group.topics[0])}",
        f"# {_comment(group.device_note)}",
    ]
    docs: list[dict[object, object]] = []
    numbers = 0
    for payload in group.payloads:
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict):
            docs.append(doc)
        elif _is_number(doc):
            numbers += 1
    if numbers and not docs:
        return _number_rule(group, header)
    if not docs:
        why = "payload is not a JSON object or number"
        return "\n".join([*header, f"# skipped: {why}"]), False, False, why
    # Per path: how many documents hold a number there, and what else was seen.
    seen_number: Counter[Path] = Counter()
    seen_other: Counter[Path] = Counter()
    first: dict[Path, object] = {}
    order: list[Path] = []
    stamps: dict[str, list[_Stamp | None]] = defaultdict(list)
    for doc in docs:
        for count, (path, value) in enumerate(_leaves(doc)):
            if count >= _MAX_LEAVES:
                break
            if path not in first:
                first[path] = value
                order.append(path)
            if _is_number(value):
                seen_number[path] += 1
            elif value is not None:
                seen_other[path] += 1
            stamp = _stamp_of(path, value)
            if stamp is not None:
                stamps[stamp.path].append(stamp)
    lines = list(header)
    lines += [
        f"topic = {toml_string(group.filter)}",
    ]
    if group.segments:
        lines.append(f"segments = {toml_string(group.segments)}")
    else:
        lines.append(f"device = {toml_string(group.device)}")
    lines.append('format = "json"')
    stamp, stamp_lines = _pick_stamp(stamps, len(docs))
    lines += stamp_lines
    stamp_paths = set(stamps)
    sequence = _pick_sequence(order, seen_number, seen_other, first, len(docs))
    if sequence is not None:
        lines.append(f"sequence_path = {toml_string(sequence)}  # per-device counter: loss shows")
    fields: list[_Field] = []
    points: set[str] = set()
    left_out: list[str] = []
    for path in order:
        rendered = (
            _render_path(path) if all(_addressable(p) for p in path if isinstance(p, str)) else None
        )
        if not seen_number[path]:
            continue
        if rendered is None:
            left_out.append(f"{path!a}: a key the path grammar cannot name (. [ ])")
            continue
        if rendered in stamp_paths or rendered == sequence:
            continue
        doc0 = next(d for d in docs if _has_number(d, path))
        quantity, scale, notes = _quantity_for(path, doc0)
        point = _point_name(path)
        base, n = point, 2
        while point in points:
            point, n = f"{base}_{n}", n + 1
        points.add(point)
        entry = _Field(f"path = {toml_string(rendered)}, ", point, quantity, scale, notes=notes)
        if seen_number[path] < len(docs):
            entry.optional = True
            entry.notes.insert(0, f"in {seen_number[path]} of {len(docs)} messages")
        words = {w for p in path if isinstance(p, str) for w in _words(p)}
        if quantity is None:
            entry.active = False
            entry.notes.insert(0, f"no quantity matched (e.g. {_short(first[path])})")
        elif words & DAILY_WORDS:
            entry.active = False
            entry.notes = ["daily/periodic counter (resets): not a register, left out"]
        elif seen_other[path]:
            entry.active = False
            entry.notes.insert(0, "sometimes not a number: would reject those messages")
        elif scale != 1.0 and not _is_number(float(first[path]) * scale):  # type: ignore[arg-type]
            entry.active = False
            entry.notes.insert(0, "scaled value overflows")
        fields.append(entry)
    ok = any(f.active for f in fields)
    lines.append("fields = [")
    lines += [f.line() for f in fields]
    lines.append("]")
    lines += [f"# left out: {_comment(why)}" for why in left_out]
    if not ok:
        why = "no numeric value matched a quantity"
        lines.insert(2, f"# not active: {why}; uncomment fields and set their quantity")
        lines = [ln if ln.startswith("#") else "# " + ln for ln in lines]
        return "\n".join(lines), False, False, why
    return "[[rules]]\n" + "\n".join(lines), True, stamp is not None and not stamp.zoned, ""


def _has_number(doc: object, path: Path) -> bool:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return False
            doc = doc[part]
        else:
            if not isinstance(doc, dict):
                return False
            doc = doc.get(part)
    return _is_number(doc)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _pick_stamp(
    stamps: dict[str, list[_Stamp | None]], messages: int
) -> tuple[_Stamp | None, list[str]]:
    """The timestamp to use (top level, time-named, in every message) and its lines."""
    usable = [
        s[0]
        for s in stamps.values()
        if s
        and s[0] is not None
        and len(s) == messages
        and all(x is not None and (x.fmt, x.unit) == (s[0].fmt, s[0].unit) for x in s)
    ]
    chosen = next((s for s in usable if s.top_level and not s.other_time), None)
    lines: list[str] = []
    if chosen is not None:
        lines.append(f"timestamp_path = {toml_string(chosen.path)}")
        if chosen.fmt == "iso8601":
            zone = "" if chosen.zoned else "; no zone: read in `timezone`"
            lines.append(f'timestamp_format = "iso8601"  # e.g. {_comment(chosen.example)}{zone}')
        else:
            lines.append(f'timestamp_unit = "{chosen.unit}"  # epoch, e.g. {chosen.example}')
    for other in (s for s in stamps.values() if s and s[0] is not None and s[0] is not chosen):
        first = other[0]
        assert first is not None
        why = "a time, but the reading's?" if first.other_time else "nested or not in every message"
        lines.append(
            f"# timestamp_path = {toml_string(first.path)}  # check: {why} "
            f"(e.g. {_comment(first.example)})"
        )
    if chosen is None and not stamps:
        lines.append("# no timestamp in the payload: the receive time is used (flagged)")
    return chosen, lines


def _pick_sequence(
    order: list[Path],
    seen_number: Counter[Path],
    seen_other: Counter[Path],
    first: dict[Path, object],
    messages: int,
) -> str | None:
    for path in order:
        if (
            len(path) == 1
            and isinstance(path[0], str)
            and _addressable(path[0])
            and set(_words(path[0])) & _SEQUENCE_WORDS
            and seen_number[path] == messages
            and not seen_other[path]
            and isinstance(first[path], int)
        ):
            return path[0]
    return None


def _number_rule(group: _Group, header: list[str]) -> tuple[str, bool, bool, str]:
    """A rule for payloads that are a bare JSON number: the quantity comes from the topic."""
    levels = group.topics[0].split("/")
    words = [w for lv in levels if lv.lower() not in ("+",) for w in _words(lv)]
    last_words = _words(levels[-1])
    quantity = _match_words(last_words) or _match_words(words)
    unit = _unit_of(levels[-1])
    scale = 1.0
    notes: list[str] = []
    if unit is not None:
        quantity, scale = unit
    point = _point_name((levels[-1],))
    lines = [
        *header,
        f"topic = {toml_string(group.filter)}",
        f"segments = {toml_string(group.segments)}"
        if group.segments
        else f"device = {toml_string(group.device)}",
        'format = "number"  # the payload is the value',
    ]
    if quantity is not None and set(words) & DAILY_WORDS:
        notes.append("daily/periodic counter (resets): not a register")
        quantity = None
    if quantity == "energy_kwh" and unit is None:
        notes.append("check: no unit, kWh assumed (Wh: scale = 0.001)")
    entry = _Field("", point, quantity, scale, notes=notes)
    lines.append(f"fields = [\n{entry.line()}\n]")
    if quantity is None:
        why = "the topic names no quantity"
        body = "\n".join(lines)
        commented = "\n".join(ln if ln.startswith("#") else "# " + ln for ln in body.split("\n"))
        return f"# not active: {why}\n{commented}", False, False, why
    return "[[rules]]\n" + "\n".join(lines), True, False, ""


def _sparkplug_rule(samples: list[tuple[str, bytes]]) -> tuple[str, bool]:
    """One rule for all Sparkplug B topics, fields by metric name."""
    names: dict[str, object] = {}
    for _, payload in samples:
        try:
            message = Payload.FromString(payload)
        except Exception:  # noqa: BLE001, S112 - protobuf raises its own types; skip bad ones
            continue
        for metric in message.metrics:
            if metric.name and metric.name not in names:
                names[metric.name] = metric_value(metric)
    fields: list[_Field] = []
    points: set[str] = set()
    for name, value in names.items():
        if not _is_number(value):
            continue
        quantity, scale, notes = _quantity_for((name,), {name: value})
        words = set(_words(name))
        point = _point_name((name,))
        while point in points:
            point += "_"
        points.add(point)
        entry = _Field(
            f"metric = {toml_string(name)}, ", point, quantity, scale, optional=True, notes=notes
        )
        if quantity is None:
            entry.active = False
            entry.notes.insert(0, f"no quantity matched (e.g. {_short(value)})")
        elif words & DAILY_WORDS:
            entry.active = False
            entry.notes.insert(0, "daily/periodic counter (resets): not a register, left out")
        fields.append(entry)
    ok = any(f.active for f in fields)
    body = [
        f"# Sparkplug B: {len(samples)} message(s); metrics by name (optional: a DATA "
        "message carries only the metrics that changed)",
        'topic = "spBv1.0/+/+/+/#"',
        'format = "sparkplug_b"',
        'device = "{group}/{edge}"',
        "fields = [",
        *(f.line() for f in fields),
        "]",
    ]
    if not ok:
        return "\n".join("# " + ln if not ln.startswith("#") else ln for ln in body), False
    return "[[rules]]\n" + "\n".join(body), True

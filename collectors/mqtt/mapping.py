"""Payload mappings: which topics carry which readings, as data (TOML), never vendor branches.

A mapping file holds ``[[rules]]``; each rule names an MQTT topic filter, how
topic levels become variables (Telegraf-style ``segments = "device/_/component"``),
the payload format (``json``, ``number`` or ``sparkplug_b``) and ``[[rules.fields]]``
saying where a value sits (JSON path or Sparkplug metric name), which point it
becomes and its quantity, scale and whether it may be absent.

Routing a topic to a rule and rendering the device/point names is done once per
distinct topic and cached (:class:`TopicRouter`), so the per-message cost is a
dict lookup.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.readings import QUANTITIES, Quantity
from agent.settings import ConfigError, validation_problems

__all__ = [
    "BUILTIN_MAPPINGS_DIR",
    "FieldMap",
    "Mapping",
    "Route",
    "Rule",
    "TopicRouter",
    "load_mapping",
    "parse_json_path",
    "topic_matches",
]

#: Mappings shipped with the agent, referenced by bare name (``shelly_gen2``).
BUILTIN_MAPPINGS_DIR = Path(__file__).with_name("mappings")

#: Variables a Sparkplug B rule provides from the fixed Sparkplug topic namespace.
SPARKPLUG_VARIABLES = frozenset({"group", "message_type", "node", "device", "edge"})

_UTC = ZoneInfo("UTC")

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """Split ``aenergy.total`` / ``emeters[0].power`` into keys and list indexes.

    Raises:
        ValueError: if the path is empty or has characters outside the grammar.
    """
    parts: list[str | int] = []
    pos = 0
    for match in _PATH_PART.finditer(path):
        dotted = pos > 0 and path[pos] == "." and match.start() == pos + 1
        if match.start() != pos and not dotted:
            raise ValueError(f"bad JSON path {path!r} at character {pos}")
        key, index = match.groups()
        if key is not None and pos > 0 and not dotted:
            raise ValueError(f"bad JSON path {path!r}: missing '.' at character {pos}")
        parts.append(int(index) if index is not None else key)
        pos = match.end()
    if not parts or pos != len(path):
        raise ValueError(f"bad JSON path {path!r}")
    return tuple(parts)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest; ``$`` topics need a literal)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level not in ("+", t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def _zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (IANA, e.g. ``Europe/Berlin``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name like 'Europe/Berlin')"
        ) from None


def _template_names(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class FieldMap(BaseModel):
    """One value in a payload and the reading it becomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(None, description="JSON path (json format), e.g. aenergy.total.")
    metric: str | None = Field(None, description="Sparkplug B metric name (sparkplug_b format).")
    point: str = Field(description="Point name template, e.g. '{component}.power'.")
    quantity: Quantity = Field(
        description="One of the closed list of quantities (agent.readings.QUANTITIES, below); "
        "the unit is part of the name."
    )
    scale: float = Field(1.0, description="Multiplier to the quantity's unit (Wh -> kWh: 0.001).")
    optional: bool = Field(False, description="Absent or null is fine (else the message is bad).")

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_json_path(value)
        return value


class Rule(BaseModel):
    """Messages on ``topic`` in ``format`` and the readings they carry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(description="MQTT topic filter (also what the collector subscribes to).")
    segments: str = Field(
        "",
        description="Names for topic levels, '/'-separated, from the first level; '_' skips "
        "a level; may name fewer levels than the topic has (the rest stay unnamed).",
    )
    format: Literal["json", "number", "sparkplug_b"] = Field(
        "json",
        description="json (an object), number (the payload is one JSON number) or sparkplug_b.",
    )
    device: str = Field(
        "{device}",
        description="Device id template over the named segments; the default needs a "
        "segment named device.",
    )
    timestamp_path: str | None = Field(
        None, description="JSON path of a payload timestamp (absent: the receive time is used)."
    )
    timestamp_format: Literal["epoch", "iso8601"] = Field(
        "epoch",
        description="epoch: a number in timestamp_unit; iso8601: a string, with or without zone.",
    )
    timestamp_unit: Literal["s", "ms", "us"] = Field(
        "s", description="Unit of an epoch timestamp: s, ms or us."
    )
    timezone: str | None = Field(
        None,
        description="IANA zone of ISO 8601 timestamps without an offset "
        "(default: the mapping's timezone).",
    )
    sequence_path: str | None = Field(
        None, description="JSON path of a per-device message counter (detects lost messages)."
    )
    fields: list[FieldMap] = Field(
        min_length=1, description="The values each message carries (at least one)."
    )

    @field_validator("topic")
    @classmethod
    def _valid_filter(cls, value: str) -> str:
        levels = value.split("/")
        if not value or any(
            ("#" in lv and (lv != "#" or i != len(levels) - 1)) or ("+" in lv and lv != "+")
            for i, lv in enumerate(levels)
        ):
            raise ValueError(f"invalid MQTT topic filter {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        variables = self.variables()
        levels = self.topic.split("/")
        names = [s for s in self.segments.split("/") if s] if self.segments else []
        if "#" not in levels and len(names) > len(levels):
            raise ValueError(
                f"segments {self.segments!r} name {len(names)} levels but topic "
                f"{self.topic!r} has {len(levels)}"
            )
        for template in [self.device, *(f.point for f in self.fields)]:
            unknown = _template_names(template) - variables
            if unknown:
                raise ValueError(
                    f"template {template!r} uses {sorted(unknown)}; available: {sorted(variables)}"
                )
        for f in self.fields:
            if self.format == "json" and f.path is None:
                raise ValueError(f"field {f.point!r}: json rules need 'path'")
            if self.format == "sparkplug_b" and f.metric is None:
                raise ValueError(f"field {f.point!r}: sparkplug_b rules need 'metric'")
        if self.format == "number" and len(self.fields) != 1:
            raise ValueError("number rules have exactly one field (the payload is the value)")
        if self.timezone is not None:
            _zone(self.timezone)
        for path in (self.timestamp_path, self.sequence_path):
            if path is not None:
                if self.format != "json":
                    raise ValueError("timestamp_path/sequence_path apply to json rules only")
                parse_json_path(path)
        return self

    def variables(self) -> set[str]:
        """The names templates may use: named topic segments (plus Sparkplug's)."""
        names = {s for s in self.segments.split("/") if s and s != "_"}
        if self.format == "sparkplug_b":
            names |= SPARKPLUG_VARIABLES
        return names


class Mapping(BaseModel):
    """A mapping file: a description and its rules (first matching rule wins)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="Free text: which devices and topics this maps.")
    timezone: str = Field(
        "UTC",
        description="IANA zone of ISO 8601 timestamps without an offset, for rules that set none.",
    )
    rules: list[Rule] = Field(
        min_length=1, description="[[rules]]: the first whose topic filter matches decodes it."
    )

    def quantities(self) -> list[str]:
        """The quantities this mapping can produce, in the order of ``QUANTITIES``."""
        produced = {f.quantity for rule in self.rules for f in rule.fields}
        return [q for q in QUANTITIES if q in produced]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _inherit_timezone(cls, data: Any) -> Any:
        # Rules are routed on their own (TopicRouter gets rules, not files), so each rule
        # carries the zone it decodes with. A bad file-level zone is reported once, there.
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            return data
        zone = data.get("timezone", "UTC")
        try:
            _zone(zone)
        except (ValueError, TypeError):
            return data
        rules = [
            {**r, "timezone": zone} if isinstance(r, dict) and "timezone" not in r else r
            for r in data["rules"]
        ]
        return {**data, "rules": rules}


def load_mapping(ref: str | Path) -> Mapping:
    """Load a mapping by built-in name (``shelly_gen2``) or path to a TOML file.

    Raises:
        ConfigError: naming the file and the field that is wrong.
    """
    path = Path(ref)
    if isinstance(ref, str) and "/" not in ref and not ref.endswith(".toml"):
        path = BUILTIN_MAPPINGS_DIR / f"{ref}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in BUILTIN_MAPPINGS_DIR.glob("*.toml")))
            raise ConfigError(f"mapping {ref!r} is not built in (built in: {known})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"mapping {path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"mapping {path}: invalid TOML: {exc}") from exc
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"mapping {path}: {validation_problems(exc)}") from exc


@dataclass(frozen=True, slots=True)
class Route:
    """A topic resolved to its rule, with device and point names already rendered."""

    rule: Rule
    device: str
    #: Per field of the rule: (parsed JSON path or metric name, point, quantity, scale, optional).
    fields: tuple[tuple[tuple[str | int, ...] | str, str, str, float, bool], ...]
    #: Sparkplug B only: metric name -> index into ``fields``.
    by_metric: dict[str, int]
    variables: dict[str, str]
    ts_path: tuple[str | int, ...] | None
    seq_path: tuple[str | int, ...] | None
    #: Zone for ISO 8601 timestamps without an offset.
    ts_zone: ZoneInfo = _UTC


class TopicRouter:
    """Resolve topics to :class:`Route` s, caching per distinct topic."""

    def __init__(self, rules: list[Rule], *, cache_size: int = 100_000) -> None:
        """Route over ``rules`` in order; the cache is cleared when it grows past its size."""
        self.rules = rules
        self._cache: dict[str, Route | None] = {}
        self._cache_size = cache_size

    def resolve(self, topic: str) -> Route | None:
        """The route for ``topic``, or ``None`` when no rule's filter matches it."""
        try:
            return self._cache[topic]
        except KeyError:
            pass
        route = self._build(topic)
        if len(self._cache) >= self._cache_size:
            # Topics with random levels (a misbehaving publisher) must not grow memory forever.
            self._cache.clear()
        self._cache[topic] = route
        return route

    def _build(self, topic: str) -> Route | None:
        for rule in self.rules:
            if not topic_matches(rule.topic, topic):
                continue
            levels = topic.split("/")
            variables: dict[str, str] = {}
            if rule.format == "sparkplug_b":
                # spBv1.0/<group>/<type>/<node>[/<device>] is fixed by the specification.
                if len(levels) < 4 or levels[0] != "spBv1.0":
                    continue
                device = "/".join(levels[4:])
                variables.update(
                    group=levels[1],
                    message_type=levels[2],
                    node=levels[3],
                    device=device,
                    edge=f"{levels[3]}/{device}" if device else levels[3],
                )
            for name, value in zip(rule.segments.split("/"), levels, strict=False):
                if name and name != "_":
                    variables[name] = value
            fields = tuple(
                (
                    parse_json_path(f.path) if f.path is not None else (f.metric or ""),
                    f.point.format_map(variables),
                    f.quantity,
                    f.scale,
                    f.optional,
                )
                for f in rule.fields
            )
            by_metric = {f.metric: i for i, f in enumerate(rule.fields) if f.metric is not None}
            return Route(
                rule=rule,
                device=rule.device.format_map(variables),
                fields=fields,
                by_metric=by_metric,
                variables=variables,
                ts_path=parse_json_path(rule.timestamp_path) if rule.timestamp_path else None,
                seq_path=parse_json_path(rule.sequence_path) if rule.sequence_path else None,
                ts_zone=_zone(rule.timezone or "UTC"),
            )
        return None

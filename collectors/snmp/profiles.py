"""Device profiles: TOML files that say which OIDs carry which quantity, and how to match them.

A profile is pure data (``collectors/snmp/profiles/*.toml``, plus any operator
folder given as ``profiles_dir``): match rules, metrics and named quirks. The
format is described in ``collectors/snmp/README.md``. This module loads and
validates profiles (errors name the file and field) and picks the profile and
quirks that fit a device from the facts gathered at detection.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.readings import Quantity
from agent.settings import validation_problems
from collectors.snmp.ber import parse_oid

__all__ = [
    "BUILTIN_DIR",
    "DeviceFacts",
    "MatchRule",
    "Metric",
    "MetricOverride",
    "Profile",
    "ProfileError",
    "Quirk",
    "choose_profile",
    "detection_oids",
    "load_profiles",
    "matching_quirks",
    "rank_profiles",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class ProfileError(ValueError):
    """A profile file is invalid; the message names the file and the field."""


def _check_oid(value: str) -> str:
    parse_oid(value)
    return value.strip().lstrip(".")


Oid = Annotated[str, Field(description="Dotted OID")]


class MatchRule(BaseModel):
    """When a profile (or quirk) applies. Every rule given must hold."""

    model_config = ConfigDict(extra="forbid")

    #: sysObjectID prefixes; one of them must match.
    sys_object_id: list[Oid] = Field(default_factory=list)
    #: OIDs (columns, subtrees or scalars' parents) that must each have something under them.
    present: list[Oid] = Field(default_factory=list)
    #: OID -> text the value must start with (e.g. an agent part number).
    equals: dict[Oid, str] = Field(default_factory=dict)

    @field_validator("sys_object_id", "present")
    @classmethod
    def _oids(cls, values: list[str]) -> list[str]:
        return [_check_oid(v) for v in values]

    @field_validator("equals")
    @classmethod
    def _equals(cls, values: dict[str, str]) -> dict[str, str]:
        return {_check_oid(k): v for k, v in values.items()}

    def is_empty(self) -> bool:
        """True when no rule is given (such a rule never matches)."""
        return not (self.sys_object_id or self.present or self.equals)


class MetricOverride(BaseModel):
    """What a quirk may change in a metric."""

    model_config = ConfigDict(extra="forbid")

    scale: float | None = None
    offset: float | None = None
    sentinels: list[int] | None = None
    negative_is_sentinel: bool | None = None
    skip: bool | None = None


class Metric(BaseModel):
    """One OID (scalar instance, GET) or one table column (walked) and its meaning."""

    model_config = ConfigDict(extra="forbid")

    #: The MIB object name, e.g. ``rPDU2DeviceStatusPower`` (quirks refer to it).
    name: str
    #: A full instance OID, fetched with GET.
    oid: Oid | None = None
    #: A table column OID, walked (GETBULK); each row gives one reading.
    column: Oid | None = None
    #: Point name; ``{label}`` placeholders come from ``index`` and ``labels``.
    point: str
    quantity: Quantity
    #: Reading = raw x scale + offset (raw in MIB units; scale to the quantity's unit).
    scale: float = 1.0
    offset: float = 0.0
    #: Names of the index sub-identifiers of a column, in order.
    index: list[str] = Field(default_factory=list)
    #: Keep only rows whose named index parts have these values (e.g. a sensor type).
    where: dict[str, int] = Field(default_factory=dict)
    #: Label name -> column OID whose value at the same index gives the label.
    labels: dict[str, Oid] = Field(default_factory=dict)
    #: Column holding the number of decimal digits at the same index (reading x 10^-digits).
    digits_column: Oid | None = None
    #: Keep only rows whose value in another column (same index) equals the number given,
    #: e.g. ``{ "1.3.6.1.2.1.99.1.1.1.1" = 6 }`` keeps ENTITY-SENSOR-MIB watts sensors.
    where_columns: dict[Oid, int] = Field(default_factory=dict)
    #: Column whose value at the same index says whether the reading is valid now; rows
    #: whose status is not in ``status_ok`` give no reading (counted as sentinels).
    status_column: Oid | None = None
    status_ok: list[int] = Field(default_factory=lambda: [1])
    #: Column holding an ENTITY-SENSOR-MIB ``SensorDataScale`` (RFC 3433: yocto(1) ..
    #: units(9) .. yotta(17)) at the same index: reading x 10^(3 x (scale - 9)).
    si_scale_column: Oid | None = None
    #: Column holding an RFC 3433 ``SensorPrecision`` at the same index: 1..9 are decimal
    #: places (reading x 10^-precision); -8..0 mean no fractional part (no shift).
    precision_column: Oid | None = None
    #: ``"sum"``: rows that give the same point are added into one reading flagged
    #: ``DERIVED`` (a total the MIB does not have, e.g. over phases). A sum is left out
    #: when any of its rows gives no value, since a partial sum would understate it.
    aggregate: Literal["sum"] | None = None
    #: Raw values that mean "not available": no reading is produced.
    sentinels: list[int] = Field(default_factory=list)
    #: Any negative raw value means "not available" (as the MIB says for some objects).
    negative_is_sentinel: bool = False
    #: Width of a cumulative register (for wrap handling by the aggregator); raw values
    #: outside 0..2^bits-1 are not a register reading and are dropped.
    counter_bits: Literal[16, 31, 32, 63, 64] | None = None
    #: Do not read this metric (set by quirks for values a device gets wrong).
    skip: bool = False

    @field_validator(
        "oid", "column", "digits_column", "status_column", "si_scale_column", "precision_column"
    )
    @classmethod
    def _oid(cls, value: str | None) -> str | None:
        return None if value is None else _check_oid(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, values: dict[str, str]) -> dict[str, str]:
        return {k: _check_oid(v) for k, v in values.items()}

    @field_validator("where_columns")
    @classmethod
    def _where_columns(cls, values: dict[str, int]) -> dict[str, int]:
        return {_check_oid(k): v for k, v in values.items()}

    def row_columns(self) -> list[str]:
        """The other columns read at each row's index (digits, status, scale, filters, labels)."""
        found = [
            c
            for c in (
                self.digits_column,
                self.status_column,
                self.si_scale_column,
                self.precision_column,
            )
            if c is not None
        ]
        return found + list(self.where_columns) + list(self.labels.values())

    @model_validator(mode="after")
    def _shape(self) -> Metric:
        if (self.oid is None) == (self.column is None):
            raise ValueError(f"metric {self.name!r}: give exactly one of 'oid' or 'column'")
        names = {f for _, f, _, _ in string.Formatter().parse(self.point) if f}
        known = set(self.index) | set(self.labels) | {"index"}
        if names - known:
            raise ValueError(
                f"metric {self.name!r}: point {self.point!r} uses {sorted(names - known)} "
                "which are not in 'index' or 'labels'"
            )
        if self.oid is not None and (
            self.index or self.where or self.row_columns() or self.aggregate
        ):
            raise ValueError(
                f"metric {self.name!r}: index, where, labels, *_column and aggregate need 'column'"
            )
        if set(self.where) - set(self.index):
            raise ValueError(f"metric {self.name!r}: 'where' names parts not in 'index'")
        if self.aggregate is not None and (
            "index" in names or not self.index or names >= set(self.index)
        ):
            raise ValueError(
                f"metric {self.name!r}: a sum needs 'index' and a point that leaves out "
                "the index part(s) summed over"
            )
        return self


class Quirk(BaseModel):
    """A named deviation of a device family from its MIB, with the fix as overrides."""

    model_config = ConfigDict(extra="forbid")

    description: str
    match: MatchRule
    #: Strip one trailing ``.0`` from table indexes that have one sub-identifier too many.
    strip_trailing_zero_index: bool = False
    #: Metric name -> fields to override.
    metrics: dict[str, MetricOverride] = Field(default_factory=dict)


class Profile(BaseModel):
    """A device family: how to recognise it and what to read."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    #: MIB module(s) the OIDs come from, for people reading the file.
    mib: str
    match: MatchRule
    #: Higher wins when several profiles match (a generic MIB profile stays at 0).
    priority: int = 0
    #: The device's own uptime (TimeTicks); read with every poll as ``uptime_s``.
    uptime_oid: Oid = SYS_UPTIME
    #: Quantities the trial poll must read for auto-detection to choose this profile (a
    #: generic table that answers without a power sensor is no power source).
    requires: list[Quantity] = Field(default_factory=list)
    metrics: list[Metric]
    quirks: dict[str, Quirk] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use lower-case letters, digits, '-', '_'")
        if self.match.is_empty():
            raise ValueError("match: give at least one of sys_object_id, present, equals")
        names = [m.name for m in self.metrics]
        for quirk_name, quirk in self.quirks.items():
            unknown = set(quirk.metrics) - set(names)
            if unknown:
                raise ValueError(
                    f"quirks.{quirk_name}.metrics: unknown metric(s) {sorted(unknown)}"
                )
            if quirk.match.is_empty():
                raise ValueError(f"quirks.{quirk_name}.match: give at least one rule")
        return self

    def with_quirks(self, quirks: Iterable[str]) -> tuple[list[Metric], bool]:
        """The metrics with the named quirks' overrides applied, and whether to strip ``.0``.

        Raises:
            ProfileError: if a quirk name is not defined by this profile.
        """
        metrics = {m.name: m for m in self.metrics}
        strip = False
        for name in quirks:
            quirk = self.quirks.get(name)
            if quirk is None:
                known = ", ".join(sorted(self.quirks)) or "none"
                raise ProfileError(f"profile {self.name!r} has no quirk {name!r} (has: {known})")
            strip = strip or quirk.strip_trailing_zero_index
            for metric_name, override in quirk.metrics.items():
                changes = override.model_dump(exclude_none=True)
                metrics[metric_name] = metrics[metric_name].model_copy(update=changes)
        return [metrics[m.name] for m in self.metrics], strip


def _load_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    data.setdefault("name", path.stem)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {validation_problems(exc)}") from exc
    if profile.name != path.stem:
        raise ProfileError(f"{path}: name {profile.name!r} must equal the file name")
    return profile


def load_profiles(extra_dirs: Iterable[Path] = ()) -> dict[str, Profile]:
    """Load the built-in profiles, then those in ``extra_dirs`` (same name replaces).

    Raises:
        ProfileError: naming the file and field of the first invalid profile.
    """
    profiles: dict[str, Profile] = {}
    for folder in (BUILTIN_DIR, *extra_dirs):
        if not folder.is_dir():
            raise ProfileError(f"{folder}: profile folder not found")
        for path in sorted(folder.glob("*.toml")):
            profile = _load_file(path)
            profiles[profile.name] = profile
    return profiles


# -- matching -----------------------------------------------------------------------------------


@dataclass
class DeviceFacts:
    """What detection learned about a device."""

    sys_object_id: str = ""
    #: OIDs from match rules that have something under them.
    present: set[str] = field(default_factory=set)
    #: OID -> text value (for ``equals`` rules).
    values: dict[str, str] = field(default_factory=dict)


def detection_oids(profiles: Iterable[Profile]) -> tuple[list[str], list[str]]:
    """OIDs to probe for presence (GETNEXT) and to read for ``equals`` rules (GET)."""
    present: set[str] = set()
    equals: set[str] = set()
    for profile in profiles:
        rules = [profile.match, *(q.match for q in profile.quirks.values())]
        for rule in rules:
            present.update(rule.present)
            equals.update(rule.equals)
    return sorted(present, key=parse_oid), sorted(equals, key=parse_oid)


def _prefix_of(prefix: str, oid: str) -> bool:
    return oid == prefix or oid.startswith(prefix + ".")


def _score(rule: MatchRule, facts: DeviceFacts) -> tuple[int, int] | None:
    """``None`` if the rule fails, else (length of the matched sysObjectID prefix, rule count)."""
    matched_len = 0
    if rule.sys_object_id:
        hits = [p for p in rule.sys_object_id if _prefix_of(p, facts.sys_object_id)]
        if not hits:
            return None
        matched_len = max(len(parse_oid(p)) for p in hits)
    if any(oid not in facts.present for oid in rule.present):
        return None
    for oid, text in rule.equals.items():
        if not facts.values.get(oid, "").startswith(text):
            return None
    return matched_len, len(rule.present) + len(rule.equals)


def rank_profiles(profiles: Iterable[Profile], facts: DeviceFacts) -> list[Profile]:
    """Every profile whose match rules hold, best first.

    Best = highest priority, then longest matched sysObjectID prefix, then most rules,
    then name (so the order never depends on file order).
    """
    scored = []
    for profile in profiles:
        score = _score(profile.match, facts)
        if score is not None:
            scored.append(((-profile.priority, -score[0], -score[1], profile.name), profile))
    return [profile for _, profile in sorted(scored, key=lambda item: item[0])]


def choose_profile(profiles: Iterable[Profile], facts: DeviceFacts) -> Profile | None:
    """The best matching profile by its rules alone (detection also checks the readings)."""
    ranked = rank_profiles(profiles, facts)
    return ranked[0] if ranked else None


def matching_quirks(profile: Profile, facts: DeviceFacts) -> list[str]:
    """Names of the profile's quirks whose match rules hold for the device."""
    return [name for name, q in profile.quirks.items() if _score(q.match, facts) is not None]

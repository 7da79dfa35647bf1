"""The site model: meters with roles, the E_DC / E_IT formulas, PUE category and declared facts.

Loaded from ``site.toml`` (or the ``[site]`` table of the agent config) and
validated strictly: every problem is reported with the file, the field and,
where it can be found, the line, so a bad site model is a clear error and never
a silent zero.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.patterns import PatternError, expand_entry
from agent.settings import AgentSettings

__all__ = [
    "EmissionFactor",
    "Formula",
    "GridRenewableShare",
    "Meter",
    "MeterRole",
    "MeteringPoint",
    "Site",
    "SiteError",
    "SiteFacts",
    "load_site",
    "load_site_for",
    "parse_site",
]


class SiteError(ValueError):
    """The site model is invalid; each line of the message names file, field (and line)."""


class MeterRole(StrEnum):
    """What a meter measures, for forming E_DC, E_IT and the green share."""

    GRID_IMPORT = "grid_import"
    GRID_EXPORT = "grid_export"
    ONSITE_RENEWABLE = "onsite_renewable"
    GREEN_CONTRACT = "green_contract"
    IT = "it"
    COOLING = "cooling"
    POWER_LOSS = "power_loss"
    OTHER = "other"
    #: Journalled and reported, but part of no total unless a formula names it
    #: (UPS input/output meters beside PDU metering, sub-meters of a metered feeder).
    MONITOR = "monitor"
    #: Battery storage: energy into / out of the battery (issue 19). In no E_DC / E_IT total
    #: unless a formula names them; hourly matching carries the green share of the energy
    #: stored to the discharge (first in, first out: docs/green-hourly.md).
    STORAGE_CHARGE = "storage_charge"
    STORAGE_DISCHARGE = "storage_discharge"


class MeteringPoint(StrEnum):
    """Where in the power chain a meter sits (decides the PUE category an IT meter supports)."""

    INCOMER = "incomer"
    GENERATION = "generation"
    UPS_OUTPUT = "ups_output"
    PDU_OUTPUT = "pdu_output"
    IT_INPUT = "it_input"
    SUBSYSTEM = "subsystem"


#: Highest PUE category (docs/pue.md) an IT meter at each metering point supports.
CATEGORY_OF_POINT: dict[MeteringPoint, int] = {
    MeteringPoint.UPS_OUTPUT: 1,
    MeteringPoint.PDU_OUTPUT: 2,
    MeteringPoint.IT_INPUT: 3,
}


class Meter(BaseModel):
    """A device point with a role; energy from a register if it has one, else from power."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    device: str = Field(min_length=1)
    energy_point: str | None = None
    power_point: str | None = None
    role: MeterRole
    metering_point: MeteringPoint | None = None
    rating_kw: float | None = Field(None, gt=0, description="Declared rating, for plausibility.")
    register_bits: int | None = Field(None, ge=8, le=64, description="Register width for wraps.")
    register_unit_kwh: float | None = Field(
        None, gt=0, description="Register resolution in kWh (0.01 for a 10 Wh register)."
    )
    rack: str | None = Field(None, description="Rack this meter feeds (for rack occupancy).")
    flexible: bool = Field(
        False, description="Feeds load that can be shifted in time (green-window KPI)."
    )

    @model_validator(mode="after")
    def _needs_a_point(self) -> Meter:
        if self.energy_point is None and self.power_point is None:
            raise ValueError("a meter needs an energy_point (register) or a power_point")
        if (self.register_bits is None) != (self.register_unit_kwh is None):
            raise ValueError("register_bits and register_unit_kwh go together (wrap modulus)")
        return self


class Formula(BaseModel):
    """Terms summed into an energy total; a term is a meter id or glob, ``-`` subtracts."""

    model_config = ConfigDict(extra="forbid")

    terms: list[str] = Field(min_length=1)


class EmissionFactor(BaseModel):
    """Grid emission factor with its provenance (never a constant in code)."""

    model_config = ConfigDict(extra="forbid")

    kg_co2_per_kwh: float = Field(gt=0, lt=2)
    source: str = Field(min_length=3)
    year: int = Field(ge=2000, le=2100)


class GridRenewableShare(BaseModel):
    """The grid's renewable share in the site's province, from an operator-provided table.

    Given per calendar month (``by_month``: 12 fractions, January first) or per local hour
    of the day (``by_hour``: 24 fractions), one of the two. Source and year are required:
    without a stated table the grid is not a named source in the traceability rate.
    """

    model_config = ConfigDict(extra="forbid")

    province: str = Field(min_length=1)
    source: str = Field(min_length=3)
    year: int = Field(ge=2000, le=2100)
    by_month: list[float] | None = Field(None, min_length=12, max_length=12)
    by_hour: list[float] | None = Field(None, min_length=24, max_length=24)

    @model_validator(mode="after")
    def _one_table(self) -> GridRenewableShare:
        if (self.by_month is None) == (self.by_hour is None):
            raise ValueError("grid_renewable_share needs one of by_month (12) or by_hour (24)")
        if any(not 0.0 <= v <= 1.0 for v in self.by_month or self.by_hour or []):
            raise ValueError("grid_renewable_share: shares are fractions between 0 and 1")
        return self


class SiteFacts(BaseModel):
    """Declared facts the meters cannot give; reports mark them as declared."""

    model_config = ConfigDict(extra="forbid")

    racks: int | None = Field(None, ge=0)
    compute_share_pct: float | None = Field(None, ge=0, le=100)
    province: str | None = None
    project_type: Literal["new", "expansion", "retrofit", "existing"] | None = None
    policies: list[str] = Field(default_factory=list)
    rack_idle_threshold_w: float = Field(150.0, ge=0)
    equipment_purchase_cny: float | None = Field(None, ge=0)
    emission_factor: EmissionFactor | None = None
    grid_renewable_share: GridRenewableShare | None = None
    #: Racks whose load can be shifted in time: their IT meters count as ``flexible``.
    flexible_racks: list[str] = Field(default_factory=list)


class Site(BaseModel):
    """The validated site model."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1)
    name_zh: str | None = None
    #: The operating organisation and the person who signs its reports (report signature block).
    operator: str | None = None
    signer: str | None = None
    timezone: str = "Asia/Shanghai"
    pue_category: Literal[1, 2, 3]
    meters: list[Meter] = Field(min_length=1)
    e_dc: Formula | None = None
    e_it: Formula | None = None
    facts: SiteFacts = Field(default_factory=SiteFacts)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Site:
        seen: set[str] = set()
        for meter in self.meters:
            if meter.id in seen:
                raise ValueError(f"duplicate meter id {meter.id!r}")
            seen.add(meter.id)
        points = [(m.device, m.energy_point, m.power_point) for m in self.meters]
        if len(set(points)) != len(points):
            raise ValueError("two meters read the same device point")
        for name in ("e_dc", "e_it"):
            self.expand(name)  # raises on unknown meters and empty globs
        if not self.expand("e_it"):
            raise ValueError("e_it: no IT meter (role 'it') and no e_it formula")
        for meter in self.it_meters():
            if meter.metering_point is None:
                continue
            supported = CATEGORY_OF_POINT.get(meter.metering_point)
            if supported is None or supported < self.pue_category:
                raise ValueError(
                    f"pue_category {self.pue_category} needs IT metered at "
                    f"{_CATEGORY_POINT_NAMES[self.pue_category]}, but meter {meter.id!r} "
                    f"is at {meter.metering_point.value}"
                )
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone (calendar periods are computed in it)."""
        return ZoneInfo(self.timezone)

    def meter(self, meter_id: str) -> Meter:
        """Look up a meter by id."""
        for meter in self.meters:
            if meter.id == meter_id:
                return meter
        raise KeyError(meter_id)

    def _default_terms(self, name: str) -> list[str]:
        if name == "e_it":
            return [m.id for m in self.meters if m.role is MeterRole.IT]
        inputs = (MeterRole.GRID_IMPORT, MeterRole.ONSITE_RENEWABLE, MeterRole.GREEN_CONTRACT)
        terms = [m.id for m in self.meters if m.role in inputs]
        terms += [f"-{m.id}" for m in self.meters if m.role is MeterRole.GRID_EXPORT]
        return terms

    def expand(self, name: Literal["e_dc", "e_it"]) -> list[tuple[int, str]]:
        """Expand a formula into ``(sign, meter_id)`` pairs.

        Raises:
            ValueError: for a term that names no meter or a glob that matches none.
        """
        formula: Formula | None = getattr(self, name)
        terms = formula.terms if formula is not None else self._default_terms(name)
        ids = [m.id for m in self.meters]
        expanded: list[tuple[int, str]] = []
        for term in terms:
            sign = -1 if term.startswith("-") else 1
            pattern = term.lstrip("+-").strip()
            if any(ch in pattern for ch in "*?["):
                matched = fnmatch.filter(ids, pattern)
                if not matched:
                    raise ValueError(f"{name}: pattern {pattern!r} matches no meter")
                expanded += [(sign, m) for m in matched]
            elif pattern in ids:
                expanded.append((sign, pattern))
            else:
                raise ValueError(f"{name}: unknown meter {pattern!r}")
        return expanded

    def it_meters(self) -> list[Meter]:
        """The meters that form E_IT."""
        return [self.meter(m) for _, m in self.expand("e_it")]


_CATEGORY_POINT_NAMES = {1: "UPS output or later", 2: "PDU output or later", 3: "IT input"}


def _line_of(text: str, loc: tuple[int | str, ...], raw: dict[str, Any]) -> int | None:
    """Best-effort line number for a validation error location in the TOML text."""
    needle: str | None = None
    if len(loc) >= 2 and loc[0] == "meters" and isinstance(loc[1], int):
        meters = raw.get("meters") or []
        if loc[1] < len(meters) and isinstance(meters[loc[1]], dict):
            meter_id = meters[loc[1]].get("id")
            key = loc[2] if len(loc) > 2 else "id"
            if meter_id is not None:
                # Find the meter's table, then the key within it.
                match = re.search(rf'^\s*id\s*=\s*"{re.escape(str(meter_id))}"', text, re.M)
                if match:
                    start = text.count("\n", 0, match.start()) + 1
                    lines = text.splitlines()
                    for offset, line in enumerate(lines[start - 1 :], start=start):
                        if offset > start and line.strip().startswith("[["):
                            break
                        if re.match(rf"\s*{re.escape(str(key))}\s*=", line):
                            return offset
                    return start
    elif loc:
        needle = str(loc[-1]) if isinstance(loc[-1], str) else str(loc[0])
    if needle:
        match = re.search(rf"^\s*{re.escape(needle)}\s*=", text, re.M)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return None


def _expand_meter_patterns(raw: dict[str, Any], source: str, text: str) -> dict[str, Any]:
    """``raw`` with each pattern meter (``id = "pdu-[001-200]"``) expanded (agent.patterns).

    Raises:
        SiteError: one line per bad pattern, naming the meter and, where found, the line.
    """
    meters = raw.get("meters")
    if not isinstance(meters, list):
        return raw
    expanded: list[Any] = []
    problems = []
    for i, meter in enumerate(meters):
        if not isinstance(meter, dict):
            expanded.append(meter)  # the model's validation names the problem
            continue
        try:
            expanded += expand_entry(meter, "id")
        except PatternError as exc:
            meter_id = meter.get("id")
            match = (
                re.search(rf'^\s*id\s*=\s*"{re.escape(meter_id)}"', text, re.M)
                if isinstance(meter_id, str)
                else None
            )
            where = f"{source}:{text.count(chr(10), 0, match.start()) + 1}" if match else source
            problems.append(f"{where}: meters.{i}.{exc}")
    if problems:
        raise SiteError("\n".join(problems))
    return {**raw, "meters": expanded}


def parse_site(raw: dict[str, Any], *, source: str, text: str = "") -> Site:
    """Validate a site table.

    Args:
        raw: The ``[site]`` table (or the whole site file).
        source: File name used in error messages.
        text: The file's text, used to find line numbers.

    Raises:
        SiteError: one line per problem, naming file, field and line where known.
    """
    raw = _expand_meter_patterns(raw, source, text)
    try:
        return Site.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for item in exc.errors():
            loc = tuple(item["loc"])
            field = ".".join(str(p) for p in loc) or "site"
            line = _line_of(text, loc, raw) if text else None
            where = f"{source}:{line}" if line else source
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{where}: {field}: {message}")
        raise SiteError("\n".join(lines)) from exc


def load_site(path: Path) -> Site:
    """Load and validate a site file (either a top-level ``[site]`` table or bare keys).

    Raises:
        SiteError: for a missing file, a TOML syntax error (with its line) or invalid content.
    """
    if not path.is_file():
        raise SiteError(f"{path}: site file not found")
    text = path.read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(f"{path}: {exc}") from exc
    raw = document.get("site", document)
    if not isinstance(raw, dict):
        raise SiteError(f"{path}: site: expected a table")
    return parse_site(raw, source=str(path), text=text)


def load_site_for(settings: AgentSettings) -> Site | None:
    """The site model from ``site_file`` or the inline ``[site]`` table, if any.

    Raises:
        SiteError: naming the file (and line, where it can be found).
    """
    if settings.site_file is not None:
        return load_site(settings.site_file)
    if settings.site is not None:
        return parse_site(settings.site, source=str(settings.config_path or "settings"))
    return None

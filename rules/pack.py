"""Policy packs: one TOML file per policy document, validated strictly.

A pack names the document (number, issuing body, jurisdiction, dates) and
lists its checkable clauses as rules. Everything that decides a result is data
here (metric, window, comparator, threshold, facts, benefit formula), so a new
policy is a new file, not new code. ``docs/rules.md`` explains how to write one.

Loading never guesses: a pack with an error is refused, and the error names the
file, the field (with the rule id where there is one) and the reason.
"""

from __future__ import annotations

import calendar
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.settings import DEFAULT_POLICIES_DIR

__all__ = [
    "BUILTIN_DIR",
    "DEFAULT_POLICIES_DIR",
    "POLICIES_DIR_ENV",
    "Benefit",
    "Comparator",
    "FactCondition",
    "FactName",
    "LoadedPacks",
    "Pack",
    "PackError",
    "Rule",
    "configured_policies_dir",
    "load_pack",
    "load_packs",
    "parse_pack",
]

#: Packs shipped with the agent (one per policy document in docs/policies.md).
BUILTIN_DIR = Path(__file__).resolve().parent / "policies"


#: Environment variable that moves the operator's policies directory.
POLICIES_DIR_ENV = "PUE_AGENT_POLICIES_DIR"

#: ``<`` for "below" (低于), ``<=`` for "not above" / "or below" (不高于, 以下, 以内),
#: ``>`` for "more than" (大于), ``>=`` for "at least" (不少于, 以上, 达到).
Comparator = Literal["<", "<=", ">", ">="]
#: Declared site facts a rule may rely on (fields of :class:`agent.site.SiteFacts`).
FactName = Literal[
    "racks", "compute_share_pct", "province", "project_type", "equipment_purchase_cny"
]

_NUMERIC_FACTS = frozenset({"racks", "compute_share_pct", "equipment_purchase_cny"})
_ID = r"^[a-z0-9][a-z0-9.-]*$"
_METRIC = r"^[a-z][a-z0-9_]*$"


class PackError(ValueError):
    """A pack was refused; each line of the message is ``file: field: reason``."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FactCondition(_Strict):
    """A condition on a declared fact, e.g. ``racks >= 1000`` or ``project_type in [new]``.

    A site whose declared fact fails the condition is outside the rule
    (``not_applicable``); a site that has not declared the fact gets
    ``insufficient_data``: the engine never guesses a fact.
    """

    fact: FactName
    op: Literal["<", "<=", ">", ">=", "in"]
    value: float | None = None
    values: list[str] | None = None

    @model_validator(mode="after")
    def _operand_fits(self) -> FactCondition:
        if self.op == "in":
            if not self.values or self.value is not None:
                raise ValueError("op 'in' takes a non-empty 'values' list and no 'value'")
            if self.fact in _NUMERIC_FACTS:
                raise ValueError(f"fact {self.fact!r} is a number: use <, <=, > or >=")
        else:
            if self.value is None or self.values is not None:
                raise ValueError(f"op {self.op!r} takes a numeric 'value' and no 'values'")
            if self.fact not in _NUMERIC_FACTS:
                raise ValueError(f"fact {self.fact!r} is text: use op 'in'")
        return self

    def describe(self) -> str:
        """The condition as text (``racks >= 1000``)."""
        if self.op == "in":
            return f"{self.fact} in {', '.join(self.values or [])}"
        return f"{self.fact} {self.op} {self.value:g}"


class Benefit(_Strict):
    """How the clause computes the subsidy, in CNY.

    ``per_rack``: ``rate`` CNY per declared rack. ``per_kwh``: ``rate`` CNY per kWh of
    ``basis_metric`` for the evaluated month. ``share_of_fact``: ``rate`` (a fraction)
    of the declared ``basis_fact``. ``cap_cny`` bounds the result. ``upto`` marks an
    amount the clause gives as a maximum (最高, 不超过): the figure is then an upper bound.

    ``payment`` says how often the clause pays: ``once`` (一次性: the amount is shown in the
    finding of the first month the test held; later months say it is already claimable
    since then), ``annual`` (once per calendar year: the first month of the year the test
    held), ``per_period`` (every month the test holds, e.g. per kWh of that month). Default:
    ``per_period`` for ``per_kwh``, ``once`` otherwise.
    """

    kind: Literal["per_rack", "per_kwh", "share_of_fact"]
    payment: Literal["once", "annual", "per_period"] | None = None
    rate: float = Field(gt=0)
    cap_cny: float | None = Field(None, gt=0)
    basis_metric: str | None = Field(None, pattern=_METRIC)
    basis_fact: FactName | None = None
    upto: bool = False
    clause: str = Field(min_length=1, description="The wording that gives the amount.")

    @model_validator(mode="after")
    def _basis_fits(self) -> Benefit:
        if self.kind == "per_kwh" and self.basis_metric is None:
            raise ValueError("kind 'per_kwh' needs 'basis_metric' (e.g. e_dc_kwh)")
        if self.kind == "share_of_fact":
            if self.basis_fact not in _NUMERIC_FACTS:
                raise ValueError("kind 'share_of_fact' needs a numeric 'basis_fact'")
            if self.rate > 1:
                raise ValueError("kind 'share_of_fact' takes 'rate' as a fraction (0.10 = 10 %)")
        if self.kind == "per_rack" and self.basis_fact not in (None, "racks"):
            raise ValueError("kind 'per_rack' counts 'racks'; leave 'basis_fact' out")
        return self

    @property
    def paid(self) -> Literal["once", "annual", "per_period"]:
        """How often the benefit is paid (``payment``, or the kind's default)."""
        if self.payment is not None:
            return self.payment
        return "per_period" if self.kind == "per_kwh" else "once"


class Rule(_Strict):
    """One checkable clause.

    ``kind``: ``threshold`` (compare a KPI with a threshold), ``report`` (the clause
    asks for a figure, sets no threshold), ``declaration`` (decided by something the
    meters and the site model cannot carry; listed so every clause is visible).
    """

    id: str = Field(pattern=_ID)
    clause_ref: str = Field(min_length=1, description="Article / item, e.g. '(四)'.")
    clause: str = Field(min_length=1, description="The clause wording, cited verbatim.")
    title_en: str = Field(min_length=1)
    kind: Literal["threshold", "report", "declaration"] = "threshold"
    metric: str | None = Field(None, pattern=_METRIC)
    window: Literal["month", "ttm"] | None = None
    comparator: Comparator | None = None
    threshold: float | None = None
    unit: str | None = None
    first_time: bool = Field(False, description="首次: report the first period the test held.")
    requires: list[FactName] = Field(default_factory=list)
    facts: list[FactCondition] = Field(default_factory=list)
    benefit: Benefit | None = None
    declaration: str | None = None
    target_year: int | None = Field(None, ge=2000, le=2100)
    warn_margin: float | None = Field(None, ge=0)
    note: str | None = Field(None, description="How the clause was read, for the auditor.")

    @model_validator(mode="after")
    def _kind_fits(self) -> Rule:
        if self.kind == "threshold":
            missing = [
                name
                for name in ("metric", "window", "comparator", "threshold")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"a threshold rule needs {', '.join(missing)}")
        elif self.kind == "report":
            if self.metric is None or self.window is None:
                raise ValueError("a report rule needs metric and window")
            if self.comparator is not None or self.threshold is not None:
                raise ValueError("a report rule has no comparator or threshold")
        else:
            if not self.declaration:
                raise ValueError("a declaration rule needs 'declaration' (what decides it)")
            if self.metric is not None or self.comparator is not None:
                raise ValueError("a declaration rule has no metric or comparator")
        if self.first_time and self.kind != "threshold":
            raise ValueError("first_time applies to threshold rules only")
        if self.benefit is not None and self.kind != "threshold":
            raise ValueError("only a threshold rule can carry a benefit formula")
        return self

    def needed_facts(self) -> list[str]:
        """Facts that must be declared for a result: ``requires`` plus conditioned facts."""
        names: list[str] = list(self.requires)
        for condition in self.facts:
            if condition.fact not in names:
                names.append(condition.fact)
        return names


class Pack(_Strict):
    """A policy document and its rules."""

    id: str = Field(pattern=_ID)
    title_zh: str = Field(min_length=1)
    title_en: str = Field(min_length=1)
    issuer: str = Field(min_length=1, description="Issuing body.")
    document: str = Field(min_length=1, description="Document number, e.g. 晋政办发〔2024〕35号.")
    jurisdiction: str = Field(min_length=1)
    provinces: list[str] = Field(
        default_factory=list,
        description="Names the site's declared province may take; empty for a national pack.",
    )
    status: Literal["in_force", "draft"]
    binding: bool = Field(True, description="False for plan targets (预期性): results advisory.")
    published: date | None = None
    effective_from: date | None = None
    effective_to: date | None = None
    valid_years: int | None = Field(None, gt=0, le=50)
    dates_note: str | None = None
    source: str = Field(min_length=1, description="Where the text was taken from.")
    source_note: str | None = None
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Pack:
        if self.valid_years is not None:
            start = self.effective_from or self.published
            if start is None:
                raise ValueError("valid_years needs effective_from or published")
            end = _add_years(start, self.valid_years)
            if self.effective_to is None:
                # Frozen model: resolve "valid N years" to the inclusive end date here.
                object.__setattr__(self, "effective_to", end)
            elif self.effective_to != end:
                raise ValueError(
                    f"effective_to {self.effective_to} disagrees with valid_years "
                    f"{self.valid_years} from {start} (which ends {end})"
                )
            if self.effective_from is None:
                object.__setattr__(self, "effective_from", start)
        if (
            self.effective_from is not None
            and self.effective_to is not None
            and self.effective_to < self.effective_from
        ):
            raise ValueError("effective_to is before effective_from")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            if not rule.id.startswith(f"{self.id}-"):
                raise ValueError(f"rule id {rule.id!r} must start with the pack id '{self.id}-'")
        return self

    @property
    def advisory(self) -> bool:
        """Results are advisory for a draft or a non-binding plan."""
        return self.status == "draft" or not self.binding


def _add_years(start: date, years: int) -> date:
    """The last day of a validity of ``years`` years from ``start`` (inclusive)."""
    year = start.year + years
    day = min(start.day, calendar.monthrange(year, start.month)[1])
    return date.fromordinal(date(year, start.month, day).toordinal() - 1)


@dataclass
class LoadedPacks:
    """The packs that loaded, where each came from, and the refusals.

    Iterating yields the packs, so the result can be passed to ``evaluate`` directly.
    """

    packs: list[Pack] = field(default_factory=list)
    #: Pack id -> file it was loaded from.
    sources: dict[str, str] = field(default_factory=dict)
    #: One message per refused pack (``file: field: reason`` lines).
    errors: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Pack]:
        return iter(self.packs)

    def __len__(self) -> int:
        return len(self.packs)


def _field_name(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """``rules[2](shanxi-2024-35-4).comparator`` for a pydantic error location."""
    parts: list[str] = []
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            label = f"[{part}]"
            item = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                label += f"({item['id']})"
            parts.append(label)
            node = item
        else:
            parts.append(f".{part}" if parts else part)
            node = node.get(part) if isinstance(node, dict) else None
    return "".join(parts) or "(pack)"


def parse_pack(raw: dict[str, Any], *, source: str) -> Pack:
    """Validate a pack table.

    Raises:
        PackError: one line per problem, ``source: field: reason``.
    """
    try:
        return Pack.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for item in exc.errors():
            field = _field_name(tuple(item["loc"]), raw)
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"{source}: {field}: {message}")
        raise PackError("\n".join(lines)) from exc


def load_pack(path: Path) -> Pack:
    """Read and validate one pack file.

    Raises:
        PackError: naming the file, the field and the reason (TOML syntax errors with
            their line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PackError(f"{path}: (file): cannot read: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PackError(f"{path}: (toml): {exc}") from exc
    return parse_pack(raw, source=str(path))


def configured_policies_dir() -> Path:
    """The operator's policies directory: ``$PUE_AGENT_POLICIES_DIR`` or the default."""
    configured = os.environ.get(POLICIES_DIR_ENV)
    return Path(configured) if configured else DEFAULT_POLICIES_DIR


def load_packs(
    policies_dir: Path | Literal["configured"] | None = "configured", *, builtin: bool = True
) -> LoadedPacks:
    """Load the built-in packs, then the operator's ``*.toml`` from ``policies_dir``.

    A refused pack is left out and its error kept (the others still load, so one bad
    operator file does not hide every finding). An operator pack whose id matches a
    built-in replaces it, so a corrected threshold can be deployed without a release;
    of two operator packs with one id, the second (by file name) is refused.

    Args:
        policies_dir: The operator's directory (a missing one is not an error);
            ``"configured"`` means :func:`configured_policies_dir`, ``None`` built-in packs only.
        builtin: Include the packs shipped in ``rules/policies``.
    """
    if policies_dir == "configured":
        policies_dir = configured_policies_dir()
    result = LoadedPacks()
    by_id: dict[str, Pack] = {}
    if builtin:
        for path in sorted(BUILTIN_DIR.glob("*.toml")):
            _add(result, by_id, path, replace=False)
    if policies_dir is not None and policies_dir.is_dir():
        operator_ids: dict[str, str] = {}
        for path in sorted(policies_dir.glob("*.toml")):
            pack = _add(result, by_id, path, replace=True, operator_ids=operator_ids)
            if pack is not None:
                operator_ids[pack.id] = str(path)
    result.packs = list(by_id.values())
    return result


def _add(
    result: LoadedPacks,
    by_id: dict[str, Pack],
    path: Path,
    *,
    replace: bool,
    operator_ids: dict[str, str] | None = None,
) -> Pack | None:
    try:
        pack = load_pack(path)
    except PackError as exc:
        result.errors.append(str(exc))
        return None
    if operator_ids is not None and pack.id in operator_ids:
        result.errors.append(
            f"{path}: id: pack id {pack.id!r} is also used by {operator_ids[pack.id]}"
        )
        return None
    if pack.id in by_id and not replace:
        result.errors.append(f"{path}: id: duplicate pack id {pack.id!r}")
        return None
    by_id[pack.id] = pack
    result.sources[pack.id] = str(path)
    return pack

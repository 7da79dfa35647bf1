"""Draft a profile from a walk of an unknown device (``pue-agent probe snmp --suggest``).

A walk carries numbers, not MIB names, so every guess is made from the values and
written down for a person to confirm. What is guessed, and from what:

- **rows** — varbinds whose OIDs differ only in their last one or two sub-identifiers
  are taken as the columns of one table row (``entry.column.index``);
- **voltage** — a number that, at a scale of 1, 0.1, 0.01 or 0.001, is a mains voltage
  (90..500 V);
- **current and power** — in a row with a voltage, a pair of columns whose scaled values
  make P / (V x I) a power factor (0.4..1.05): the first scales tried are the common
  ones (W, 0.1 A); every other scale pair that fits as well is listed, since a walk
  cannot tell 0.1 A x 0.01 kW from 0.01 A x W;
- **apparent power** — a second column that fits with P / (V x I) within 3 % of 1, and
  above the active power;
- **frequency** — a number that scales to 49.5..50.5 or 59.5..60.5 Hz;
- **units written by the device** — a text column in the same row holding
  ``<number> <unit>`` (``229.2 V``, ``2641.8 kWh``) names the quantity and fixes the
  scale of the number column that equals it (self-describing tables);
- **energy** — only from such text: a register's unit cannot be told from one reading.

The draft loads as a profile (``match`` on the device's sysObjectID and its power
column); every metric line carries a ``CONFIRM`` comment with the arithmetic behind it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from collectors.snmp.ber import oid_str
from collectors.snmp.walk import WalkRow

__all__ = ["Candidate", "Suggestion", "suggest_profile"]

SYS_DESCR = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_OBJECT_ID = (1, 3, 6, 1, 2, 1, 1, 2, 0)
_MIB2 = (1, 3, 6, 1, 2, 1)
#: mib-2 subtrees with power data that no shipped profile reads already (UPS-MIB has
#: ``ups-mib``); the rest (interfaces, IP and TCP counters) only adds chance fits.
_MIB2_POWER = (99,)
#: Scales tried, most common first (the first that fits is proposed).
_SCALES = (1.0, 0.1, 0.01, 0.001)
_POWER_SCALES = (1.0, 10.0, 0.1, 1000.0, 100.0)
_CURRENT_SCALES = (0.1, 0.01, 0.001, 1.0)
_PF_RANGE = (0.4, 1.05)
#: The power factor of a typical IT load: among triples that fit, the nearest wins.
_TYPICAL_PF = 0.95
#: Raw values below this are taken for enumerations, flags and indexes, not measurements.
_MIN_RAW = 5
#: Rows whose V x I is below this say too little (idle outlets, rounding).
_MIN_VA = 50.0
#: At most this many columns per quantity go into the draft (the most rows first).
_MAX_PER_QUANTITY = 4
#: At most this many tables' V, I, P triples go into the draft.
_MAX_TABLES = 3
#: Text units the devices write, -> (quantity, multiplier to the quantity's unit).
_UNITS = {
    "W": ("power_w", 1.0),
    "kW": ("power_w", 1000.0),
    "VA": ("apparent_power_va", 1.0),
    "kVA": ("apparent_power_va", 1000.0),
    "Wh": ("energy_kwh", 0.001),
    "kWh": ("energy_kwh", 1.0),
    "V": ("voltage_v", 1.0),
    "A": ("current_a", 1.0),
    "Hz": ("frequency_hz", 1.0),
}
_NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(kWh|Wh|kVA|VA|kW|W|V|A|Hz)\s*$")


@dataclass
class Candidate:
    """A column (or scalar) proposed for a quantity, with the evidence behind it."""

    column: tuple[int, ...]
    quantity: str
    scale: float
    evidence: str
    alternatives: list[str] = field(default_factory=list)
    votes: int = 1


@dataclass
class Suggestion:
    """The drafted profile (TOML text) and what it is made of."""

    toml: str
    candidates: list[Candidate]


def _rows(
    walk: list[WalkRow], index_len: int
) -> dict[tuple[tuple[int, ...], tuple[int, ...]], dict[int, int | bytes]]:
    """(entry OID, index) -> {column number: value}: numbers and text of the walked subtrees."""
    rows: dict[tuple[tuple[int, ...], tuple[int, ...]], dict[int, int | bytes]] = defaultdict(dict)
    for row in walk:
        oid = row.oid
        if len(oid) < index_len + 3 or (oid[:6] == _MIB2 and oid[6] not in _MIB2_POWER):
            continue
        if isinstance(row.value, tuple):
            continue
        entry, column, index = oid[: -index_len - 1], oid[-index_len - 1], oid[-index_len:]
        rows[(entry, index)][column] = row.value
    return rows


def _fits(value: float, low: float, high: float) -> bool:
    return low <= value <= high


def _voltage_scale(raw: int) -> float | None:
    for scale in _SCALES:
        if _fits(raw * scale, 90.0, 500.0):
            return scale
    return None


def _frequency_scale(raw: int) -> float | None:
    for scale in _SCALES:
        hz = raw * scale
        if _fits(hz, 49.5, 50.5) or _fits(hz, 59.5, 60.5):
            return scale
    return None


def _row_candidates(entry: tuple[int, ...], row: dict[int, int | bytes]) -> list[Candidate]:
    found: list[Candidate] = []
    numbers = {c: v for c, v in row.items() if isinstance(v, int) and not isinstance(v, bool)}
    texts = {c: v for c, v in row.items() if isinstance(v, bytes)}
    # Units the device writes beside a number ("229.2 V" beside 2292).
    for text in texts.values():
        match = _NUMBER_UNIT.match(text.decode("utf-8", "replace"))
        if not match:
            continue
        shown, unit = float(match.group(1)), match.group(2)
        quantity, to_unit = _UNITS[unit]
        for column, raw in numbers.items():
            for digits in range(4):
                if raw != 0 and abs(raw / 10**digits - shown) <= max(
                    0.005 * abs(shown), 10.0**-digits
                ):
                    found.append(
                        Candidate(
                            (*entry, column),
                            quantity,
                            to_unit / 10**digits,
                            f"the device writes {text.decode(errors='replace')!r} beside {raw}",
                        )
                    )
                    break
    # A bare unit in a text column ("W", "kWh") names the row's value column, if it has one
    # number that is not an index or a scale; the scale is for a person to confirm.
    units = [
        _UNITS[t.decode(errors="replace").strip()]
        for t in texts.values()
        if t.decode(errors="replace").strip() in _UNITS
    ]
    measured = [c for c, v in numbers.items() if abs(v) >= _MIN_RAW]
    if len(units) == 1 and len(measured) == 1:
        quantity, to_unit = units[0]
        column = measured[0]
        found.append(
            Candidate(
                (*entry, column),
                quantity,
                to_unit,
                "a text column in the row says the unit (scale not stated: check the MIB)",
            )
        )
    for column, raw in numbers.items():
        scale = _frequency_scale(raw)
        if scale is not None:
            found.append(
                Candidate((*entry, column), "frequency_hz", scale, f"{raw} x {scale:g} Hz")
            )
    return found


_NOMINAL_V = (110.0, 115.0, 120.0, 200.0, 208.0, 220.0, 230.0, 240.0, 400.0, 415.0, 480.0)


def _nominal_distance(volts: float) -> float:
    return min(abs(volts / n - 1) for n in _NOMINAL_V)


Triple = tuple[int, float, int, float, int, float]


def _fits_row(row: dict[int, int], t: Triple) -> bool | None:
    """True/False whether a row's values make a power factor for triple ``t``; None if idle."""
    v_col, v_scale, i_col, i_scale, p_col, p_scale = t
    v, i, p = row.get(v_col), row.get(i_col), row.get(p_col)
    if v is None or i is None or p is None:
        return None
    apparent = v * v_scale * i * i_scale
    if apparent < _MIN_VA or p <= 0:
        return None
    return _fits(p * p_scale / apparent, *_PF_RANGE)


def _table_candidates(
    entry: tuple[int, ...], rows: list[dict[int, int]]
) -> tuple[tuple[int, float, float], list[Candidate]] | None:
    """The V, I, P columns of one table: the triple that fits in the most of its rows.

    Accidental fits (a threshold that looks like a voltage, a count that looks like a
    current) hold in one row; a real triple holds in every loaded row of the table.
    """
    triples: set[Triple] = set()
    for row in rows:
        plausible = {c: v for c, v in row.items() if v >= _MIN_RAW}
        for v_col, v_raw in plausible.items():
            v_scale = _voltage_scale(v_raw)
            if v_scale is None:
                continue
            for i_col in plausible:
                for p_col in plausible:
                    if len({v_col, i_col, p_col}) < 3:
                        continue
                    for i_scale in _CURRENT_SCALES:
                        for p_scale in _POWER_SCALES:
                            t = (v_col, v_scale, i_col, i_scale, p_col, p_scale)
                            if _fits_row(row, t):
                                triples.add(t)
    best: tuple[tuple[int, float, float], Triple] | None = None
    for t in triples:
        verdicts = [_fits_row(row, t) for row in rows]
        good, bad = verdicts.count(True), verdicts.count(False)
        if bad > good:
            continue
        sample = next(row for row, ok in zip(rows, verdicts, strict=True) if ok)
        volts = sample[t[0]] * t[1]
        pf = sample[t[4]] * t[5] / (volts * sample[t[2]] * t[3])
        score = (good - bad, -round(_nominal_distance(volts), 2), -abs(pf - _TYPICAL_PF))
        if best is None or score > best[0]:
            best = (score, t)
    if best is None:
        return None
    score, (v_col, v_scale, i_col, i_scale, p_col, p_scale) = best
    sample = next(row for row in rows if _fits_row(row, best[1]))
    volts, current = sample[v_col] * v_scale, sample[i_col] * i_scale
    power = sample[p_col] * p_scale
    evidence = (
        f"{score[0]} row(s) fit; e.g. {volts:g} V x {current:g} A = {volts * current:g} VA "
        f"against {power:g} W, power factor {power / (volts * current):.2f}"
    )
    # A walk cannot tell 0.1 A x 0.01 kW from 0.01 A x W: name what fits as well.
    others = [
        f"current x {i2:g} with power x {p2:g}"
        for i2 in _CURRENT_SCALES
        for p2 in _POWER_SCALES
        if (
            (i2, p2) != (i_scale, p_scale)
            and abs(i2 * p_scale - i_scale * p2) < 1e-12 * max(i2, p2)
        )
        or (
            (i2, p2) != (i_scale, p_scale)
            and abs(p2 / i2 - p_scale / i_scale) <= 1e-9 * p_scale / i_scale
        )
    ]
    found = [
        Candidate((*entry, p_col), "power_w", p_scale, evidence, others, score[0]),
        Candidate(
            (*entry, v_col),
            "voltage_v",
            v_scale,
            f"e.g. {sample[v_col]} x {v_scale:g} = {volts:g} V",
            [],
            score[0],
        ),
        Candidate((*entry, i_col), "current_a", i_scale, evidence, others, score[0]),
    ]
    for s_col, s_raw in sample.items():
        if s_col in (v_col, i_col, p_col) or s_raw < _MIN_RAW:
            continue
        for s_scale in _POWER_SCALES:
            s_va = s_raw * s_scale
            if abs(s_va / (volts * current) - 1) <= 0.03 and s_va >= power:
                found.append(
                    Candidate(
                        (*entry, s_col),
                        "apparent_power_va",
                        s_scale,
                        f"e.g. {s_va:g} VA = V x I",
                        [],
                        score[0],
                    )
                )
                break
    return score, found


def _merge(candidates: list[Candidate]) -> list[Candidate]:
    """One candidate per column: the most voted quantity and scale, the others as alternatives."""
    by_column: dict[tuple[int, ...], list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_column[c.column].append(c)
    merged = []
    for column, found in by_column.items():
        # Units written by the device outrank value ranges; then the most frequent reading.
        votes = Counter((c.quantity, c.scale) for c in found)
        written = [c for c in found if "writes" in c.evidence]
        (quantity, scale), count = (
            (
                (written[0].quantity, written[0].scale),
                votes[(written[0].quantity, written[0].scale)],
            )
            if written
            else votes.most_common(1)[0]
        )
        first = next(c for c in found if (c.quantity, c.scale) == (quantity, scale))
        others = sorted(
            {f"{q} x {s:g}" for (q, s) in votes if (q, s) != (quantity, scale)}
            | {a for c in found for a in c.alternatives}
        )
        merged.append(Candidate(column, quantity, scale, first.evidence, others, count))
    return sorted(merged, key=lambda c: c.column)


_ORDER = ("power_w", "energy_kwh", "apparent_power_va", "voltage_v", "current_a", "frequency_hz")
_POINT = {
    "power_w": "power",
    "energy_kwh": "energy",
    "apparent_power_va": "apparent_power",
    "voltage_v": "voltage",
    "current_a": "current",
    "frequency_hz": "frequency",
}


def suggest_profile(walk: list[WalkRow]) -> Suggestion:
    """Draft a profile for the device the walk came from (see the module docstring).

    Returns:
        The TOML text (loads as a profile when any power column was found) and the
        candidates it was made from.
    """
    values = {row.oid: row.value for row in walk}
    sys_object_id = values.get(SYS_OBJECT_ID)
    descr = values.get(SYS_DESCR)
    candidates: list[Candidate] = []
    tables: list[tuple[tuple[int, float, float], list[Candidate]]] = []
    for index_len in (1, 2):
        by_entry: dict[tuple[int, ...], list[dict[int, int]]] = defaultdict(list)
        for (entry, _index), row in _rows(walk, index_len).items():
            candidates += _row_candidates(entry, row)
            by_entry[entry].append({c: v for c, v in row.items() if isinstance(v, int)})
        for entry, rows in by_entry.items():
            table = _table_candidates(entry, rows)
            if table is not None:
                tables.append(table)
    # The tables whose triple fits in the most rows, nearest a nominal voltage, first.
    tables.sort(key=lambda t: t[0], reverse=True)
    for _, found in tables[:_MAX_TABLES]:
        candidates += found
    merged = [c for c in _merge(candidates) if c.quantity in _ORDER]
    # A column found under both index readings (x.y.1 and x.y with index 1) is one column:
    # keep the shorter OID (the real table column), which walks every row.
    columns = {c.column for c in merged}
    merged = [
        c for c in merged if not any(o != c.column and c.column[: len(o)] == o for o in columns)
    ]
    # The columns that fitted in the most rows first; a handful per quantity.
    merged.sort(key=lambda c: (_ORDER.index(c.quantity), -c.votes, c.column))
    kept: list[Candidate] = []
    for quantity in _ORDER:
        kept += [c for c in merged if c.quantity == quantity][:_MAX_PER_QUANTITY]
    merged = kept
    lines = [
        f"# Drafted by `pue-agent probe snmp --suggest` for {descr.decode(errors='replace')!r}"
        if isinstance(descr, bytes)
        else "# Drafted by `pue-agent probe snmp --suggest`",
        "# Every CONFIRM is a guess from the walk's values: check each OID, unit and scale",
        "# against the device's MIB, rename the metrics to their MIB names, then test the",
        "# profile against the walk (docs/snmp-profiles.md). Tables are ranked by how many",
        "# of their rows fit V x I x power factor = P: a guess from one row is weak.",
        'description = "CONFIRM: which devices this profile is for"',
        'mib = "CONFIRM: MIB module and enterprise number"',
        "priority = 20",
        "",
        "[match]",
    ]
    if isinstance(sys_object_id, tuple):
        lines.append(f'sys_object_id = ["{oid_str(sys_object_id)}"]   # this device\'s sysObjectID')
    power = [c for c in merged if c.quantity == "power_w"]
    if power:
        lines.append(f'present = ["{oid_str(power[0].column)}"]')
    elif not isinstance(sys_object_id, tuple):
        lines.append('present = ["CONFIRM: an OID the device must answer"]')
    for number, c in enumerate(merged, 1):
        column = oid_str(c.column)
        lines += [
            "",
            "[[metrics]]",
            f'name = "{_POINT[c.quantity]}_{number}"   # CONFIRM: the MIB object name',
            f'column = "{column}"',
            'index = ["i"]',
            f'point = "{_POINT[c.quantity]}.{{i}}"   # CONFIRM: name the index (phase, outlet)',
            f'quantity = "{c.quantity}"',
        ]
        if c.scale != 1.0:
            lines.append(f"scale = {c.scale:g}")
        note = f"# CONFIRM: {c.evidence}"
        if c.alternatives:
            note += f"; also fits: {', '.join(c.alternatives)}"
        lines.append(note)
    if not merged:
        lines += ["", "# No power, voltage or current column could be told from the values alone."]
    if merged and not any(c.quantity == "energy_kwh" for c in merged):
        lines += [
            "",
            "# Energy: a register's unit cannot be told from one reading. If the MIB has one,",
            "# add it here with the unit its MIB states (Wh -> scale = 0.001, 0.1 kWh -> 0.1).",
        ]
    return Suggestion("\n".join(lines) + "\n", merged)

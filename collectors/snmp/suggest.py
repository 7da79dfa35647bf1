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

Large walks (a PDU with thousands of varbinds): a table's voltage columns are chosen per
column (the scale most of its loaded rows fit), each row's power window is looked up in
its values sorted once, and only the triples that fit in the most rows are scored. Scale
pairs that fit equally (0.01 A x W, 0.1 A x 10 W) are decided for the most common scales
(W, then 0.1 A), never by search order. The draft keeps at most 16 metrics, grouped
by table (tables with a power column first), and names the candidates it leaves out.

The draft loads as a profile (``match`` on the device's sysObjectID and its power
column); every metric line carries a ``CONFIRM`` comment with the arithmetic behind it.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
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
#: At most this many metrics in a draft; weaker candidates are named in a comment.
_MAX_METRICS = 16
#: At most this many tables' V, I, P triples go into the draft.
_MAX_TABLES = 3
#: Per table, only this many (V, I, P) column triples that fit in the most rows are scored.
_MAX_TRIPLES = 200
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
) -> tuple[tuple[int, float, float, int, int], list[Candidate]] | None:
    """The V, I, P columns of one table: the triple that fits in the most of its rows.

    Accidental fits (a threshold that looks like a voltage, a count that looks like a
    current) hold in one row; a real triple holds in every loaded row of the table.
    """
    # Voltage columns first: a column whose loaded rows scale to a mains voltage at one
    # scale in at least half of them (per column, not per value: a table's column has one
    # unit). On a large walk this keeps the search to the few real voltage columns.
    volt_cols: dict[int, float] = {}
    for column in {c for row in rows for c in row}:
        loaded = [row[column] for row in rows if row.get(column, 0) >= _MIN_RAW]
        scales = Counter(s for s in map(_voltage_scale, loaded) if s is not None)
        if scales:
            scale, hits = scales.most_common(1)[0]
            if 2 * hits >= len(loaded):
                volt_cols[column] = scale
    if not volt_cols:
        return None
    # Every (V, I, P) column triple and scale pair that fits in a row, counted over rows:
    # for each V and I the power window 0.4..1.05 x V x I is looked up in the row's values
    # sorted once (bisect), instead of trying every column as P.
    counts: Counter[Triple] = Counter()
    for row in rows:
        plausible = sorted((v, c) for c, v in row.items() if v >= _MIN_RAW)
        raws = [v for v, _ in plausible]
        for v_col, v_scale in volt_cols.items():
            v_raw = row.get(v_col, 0)
            if v_raw < _MIN_RAW:
                continue
            volts = v_raw * v_scale
            for i_raw, i_col in plausible:
                if i_col == v_col:
                    continue
                for i_scale in _CURRENT_SCALES:
                    apparent = volts * i_raw * i_scale
                    if apparent < _MIN_VA:
                        continue
                    for p_scale in _POWER_SCALES:
                        low = bisect_left(raws, _PF_RANGE[0] * apparent / p_scale)
                        high = bisect_right(raws, _PF_RANGE[1] * apparent / p_scale)
                        for _, p_col in plausible[low:high]:
                            if p_col not in (v_col, i_col):
                                t = (v_col, v_scale, i_col, i_scale, p_col, p_scale)
                                if _fits_row(row, t):  # the exact test, at the window's edges
                                    counts[t] += 1
    best: tuple[tuple[int, float, float, int, int], Triple] | None = None
    # Only the triples that fit in the most rows can win: score those (a large table has
    # thousands of one-row chance fits).
    for t, _ in counts.most_common(_MAX_TRIPLES):
        verdicts = [_fits_row(row, t) for row in rows]
        good, bad = verdicts.count(True), verdicts.count(False)
        if bad > good:
            continue
        sample = next(row for row, ok in zip(rows, verdicts, strict=True) if ok)
        volts = sample[t[0]] * t[1]
        pf = sample[t[4]] * t[5] / (volts * sample[t[2]] * t[3])
        # Scale pairs with the same ratio (0.01 A x W, 0.1 A x 10 W) fit equally well: the
        # most common scales win (W before 10 W, then 0.1 A before 0.01 A), never the order
        # in which they were found; the power factor is compared rounded for the same reason.
        score = (
            good - bad,
            -round(_nominal_distance(volts), 2),
            -round(abs(pf - _TYPICAL_PF), 3),
            -_POWER_SCALES.index(t[5]),
            -_CURRENT_SCALES.index(t[3]),
        )
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
        # Votes: the rows a table's triple fits in (or how many readings agree, if more).
        rows = max(c.votes for c in found if (c.quantity, c.scale) == (quantity, scale))
        merged.append(Candidate(column, quantity, scale, first.evidence, others, max(count, rows)))
    return sorted(merged, key=lambda c: c.column)


def _by_table(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates grouped by table (entry OID): tables with power first, then by evidence.

    Within a table: power, energy, apparent power, voltage, current, frequency, so a draft
    reads table by table as a person checks it against the MIB.
    """
    tables: dict[tuple[int, ...], list[Candidate]] = defaultdict(list)
    for c in candidates:
        tables[c.column[:-1]].append(c)
    ranked = sorted(
        tables.items(),
        key=lambda item: (
            min(_ORDER.index(c.quantity) for c in item[1]),  # tables with power first
            -max(c.votes for c in item[1]),
            item[0],
        ),
    )
    return [
        c
        for _, group in ranked
        for c in sorted(group, key=lambda c: (_ORDER.index(c.quantity), c.column))
    ]


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
    tables: list[tuple[tuple[int, float, float, int, int], list[Candidate]]] = []
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
    # The columns that fitted in the most rows first; a handful per quantity, at most
    # _MAX_METRICS in all (a large walk has dozens of chance fits): the rest are named.
    merged.sort(key=lambda c: (_ORDER.index(c.quantity), -c.votes, c.column))
    kept: list[Candidate] = []
    for quantity in _ORDER:
        kept += [c for c in merged if c.quantity == quantity][:_MAX_PER_QUANTITY]
    kept = kept[:_MAX_METRICS]  # in quantity order: frequencies go before power would
    left_out = [c for c in merged if c not in kept]
    merged = _by_table(kept)
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
    shown_table: tuple[int, ...] | None = None
    for number, c in enumerate(merged, 1):
        column = oid_str(c.column)
        if c.column[:-1] != shown_table:
            shown_table = c.column[:-1]
            fit_rows = max(x.votes for x in merged if x.column[:-1] == shown_table)
            lines += [
                "",
                f"# --- table {oid_str(shown_table)}, evidence from {fit_rows} row(s)",
                "# CONFIRM: these columns are one MIB table (index = the last sub-identifier)",
            ]
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
    if left_out:
        shown = ", ".join(
            f"{oid_str(c.column)} ({c.quantity} x {c.scale:g})" for c in left_out[:10]
        )
        more = f" and {len(left_out) - 10} more" if len(left_out) > 10 else ""
        lines += [
            "",
            f"# {len(left_out)} weaker candidate column(s) left out (fewer rows fit): "
            f"{shown}{more}.",
            "# CONFIRM none of them is the power column before dropping them.",
        ]
    if merged and not any(c.quantity == "energy_kwh" for c in merged):
        lines += [
            "",
            "# Energy: a register's unit cannot be told from one reading. If the MIB has one,",
            "# add it here with the unit its MIB states (Wh -> scale = 0.001, 0.1 kWh -> 0.1).",
        ]
    return Suggestion("\n".join(lines) + "\n", merged)

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
- **energy** — only from such text: a register's unit cannot be told from one reading;
- **tables indexed by sensor type** — a second reading of the walk, in which the last
  sub-identifier is the sensor type and the OID without it the row (Raritan PDU2-MIB
  ``measurementsInletSensorValue.pdu.inlet.sensorType``: 4 voltage, 1 current, 5 power).
  V, I and P are searched among a row's types as among a table's columns, and drafted as
  the real column with every index part named and ``where = { sensor = N }``. The column
  is the longest prefix of the shape ``table.1.column`` (the table object's only child is
  its entry) whose OIDs have one length and share their index parts with another column
  of the entry. It is only believed where a fitting row also holds a fourth reading of
  the inlet (frequency, power factor or apparent power), the types fit at least two
  distinct rows (rows alike on every outlet, such as thresholds, count once), and the
  types are those most tables fit with (a MIB has one sensor-type enumeration); their
  evidence is the rows they fit over all those tables, so a one-inlet table ranks with
  the outlet table that confirms its types. Per entry the first column fitting at least
  half as many rows as the best is kept (the reading before its minimum and maximum);
  what the first reading found in that entry's columns took an index part for a column,
  and is dropped. Each reading has three table places.

Large walks (a PDU with thousands of varbinds): a table's voltage columns are chosen per
column (the scale most of its loaded rows fit), each row's power window is looked up in
its values sorted once, and only the triples that fit in the most rows are scored. Scale
pairs that fit equally (0.01 A x W, 0.1 A x 10 W) are decided for the most common scales
(W, then 0.1 A), never by search order. The draft keeps at most 16 metrics, grouped
by table (tables with a power column first), and names the candidates it leaves out.
Two tables that would give the same point name (``power.{i}``) are told apart by the
later one's place in the draft (``t2.power.{i}``), so the draft polls as it stands.

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
    #: Set when read from a table indexed by sensor type: the last index part's value
    #: (``where = { sensor = N }``); ``column`` is then the table column holding every sensor.
    sensor: int | None = None
    #: How many index parts the column's OIDs have (the last one the sensor type).
    index_len: int = 1


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


#: A table column is at least 1.3.6.1.4.1.<enterprise>.<x> long: shorter prefixes are the
#: enterprise (or mib-2) and above, which have the table's shape only by chance.
_MIN_COLUMN_LEN = 8

#: A row read by sensor type has at most this many types (PDU2-MIB's inlet rows have 7-14).
_MAX_SENSOR_TYPES = 32
#: The sensor types read as V, I, P must fit in at least this many distinct rows (over
#: every table read with them): one row of a dozen numbers fits by chance too often.
_MIN_SENSOR_ROWS = 2

_Score = tuple[int, float, float, int, int]


class _SortedOids:
    """The walk's OIDs sorted once: the OIDs under a prefix are one run, found by bisect."""

    def __init__(self, walk: list[WalkRow]) -> None:
        self._oids = sorted(row.oid for row in walk)
        self._uniform: dict[tuple[int, ...], bool] = {}
        self._index_sets: dict[tuple[int, ...], dict[int, frozenset[tuple[int, ...]]]] = {}

    def _run(self, prefix: tuple[int, ...]) -> tuple[int, int]:
        return (
            bisect_left(self._oids, prefix),
            bisect_left(self._oids, (*prefix[:-1], prefix[-1] + 1)),
        )

    def only_child(self, prefix: tuple[int, ...], child: int) -> bool:
        """Whether every walked OID under ``prefix`` is under ``prefix.child``."""
        lo, hi = self._run(prefix)
        return lo < hi and (lo, hi) == self._run((*prefix, child))

    def has_twin(self, column: tuple[int, ...]) -> bool:
        """Whether another column of the same entry has the same index parts as ``column``."""
        entry = column[:-1]
        if entry not in self._index_sets:
            lo, hi = self._run(entry)
            sets: dict[int, set[tuple[int, ...]]] = defaultdict(set)
            for oid in self._oids[lo:hi]:
                if len(oid) > len(entry) + 1:
                    sets[oid[len(entry)]].add(oid[len(entry) + 1 :])
            self._index_sets[entry] = {c: frozenset(v) for c, v in sets.items()}
        siblings = self._index_sets[entry]
        mine = siblings.get(column[-1])
        return any(c != column[-1] and index == mine for c, index in siblings.items())

    def uniform(self, prefix: tuple[int, ...]) -> bool:
        """Whether every walked OID under ``prefix`` has the same length."""
        if prefix not in self._uniform:
            lo, hi = self._run(prefix)
            self._uniform[prefix] = len({len(o) for o in self._oids[lo:hi]}) == 1
        return self._uniform[prefix]


def _sensor_column(group: tuple[int, ...], oids: _SortedOids) -> tuple[int, ...] | None:
    """The table column holding a sensor-type group (its OIDs are ``group.row.sensor``).

    The index parts are what varies across a table's rows, but on one device an index
    part may not vary (one PDU, one inlet: ``.1.1.sensorType``), so the walk alone cannot
    show where the column ends. SMIv2 does: a column is ``table.1.column`` (the table
    object's only child is its entry, ``1``), every OID under a column has the same
    length, and an entry has more than one column with the same index parts (value,
    state, minimum...). The column is the longest prefix of the group with that shape;
    the group's last two parts (row and sensor type) vary, so the column never takes
    them in. The longest, not the shortest: in a walk trimmed to one table, a prefix near
    the enterprise (``enterprise.1.x``) can have the same shape by chance. The second
    column is what tells ``table.1.column.index`` from a table numbered 1 whose entry
    would read as a column (ENTITY-SENSOR-MIB ``entPhySensorEntry`` = 99.1.1.1, whose
    entPhysicalIndex would read as a sensor type). None if no prefix has that shape
    (then the group is not read as a sensor table).
    """
    for length in range(len(group), _MIN_COLUMN_LEN - 1, -1):
        column = group[:length]
        if (
            column[-2] == 1
            and oids.only_child(column[:-2], 1)
            and oids.uniform(column)
            and oids.has_twin(column)
        ):
            return column
    return None


def _sensor_tables(
    walk: list[WalkRow],
) -> tuple[list[tuple[_Score, list[Candidate]]], set[tuple[int, ...]]]:
    """V, I, P triples in tables indexed by sensor type (one column, last index = type).

    Read the walk a second way: the row is the OID without its last sub-identifier and the
    row's "columns" are the sensor types (Raritan PDU2-MIB ``measurementsInletSensorValue``
    ``.pdu.inlet.sensorType``: 4 rmsVoltage, 1 rmsCurrent, 5 activePower). The rows under
    one table column are searched together, as a table is in the first reading.

    Returns:
        The tables found (score, candidates), and their entries (the OIDs above their
        columns).
    """
    oids = _SortedOids(walk)
    groups: dict[tuple[int, ...], dict[tuple[int, ...], dict[int, int]]] = {}
    for row in walk:
        oid, value = row.oid, row.value
        if len(oid) < _MIN_COLUMN_LEN + 2 or (oid[:6] == _MIB2 and oid[6] not in _MIB2_POWER):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            groups.setdefault(oid[:-2], {}).setdefault(oid[:-1], {})[oid[-1]] = value
    # Groups that differ in an index part before the row's last (PDU 1 and 2 of a chain)
    # are one table column: their rows are searched together.
    by_column: dict[tuple[int, ...], list[dict[int, int]]] = defaultdict(list)
    index_len: dict[tuple[int, ...], int] = {}
    for group, group_rows in groups.items():
        # A sensor-type enumeration is short; a longer "row" is a table's column read
        # across its rows (and would make the search below slow on a large table).
        if max(map(len, group_rows.values())) > _MAX_SENSOR_TYPES:
            continue
        column = _sensor_column(group, oids)
        if column is None:
            continue
        by_column[column] += group_rows.values()
        index_len[column] = len(group) + 2 - len(column)  # OIDs under a column: one length
    fitted: dict[tuple[int, ...], list[tuple[_Score, tuple[int, ...], list[Candidate]]]] = (
        defaultdict(list)
    )
    for column, column_rows in by_column.items():
        # Rows that are equal (a threshold configured alike on every outlet) are one piece
        # of evidence: a measured table differs from row to row.
        unique = list({tuple(sorted(r.items())): r for r in column_rows}.values())
        table = _table_candidates(column, unique)
        if table is not None and _corroborated(unique, table[1]):
            fitted[column[:-1]].append((table[0], column, table[1]))
    # Per table: its value, minimum and maximum columns may all fit. Keep the first column
    # that fits at least half as many rows as the best one (MIBs put the reading before
    # its minimum, maximum and thresholds).
    chosen: list[tuple[_Score, tuple[int, ...], list[Candidate]]] = []
    for fits in fitted.values():
        most = max(score[0] for score, _, _ in fits)
        chosen.append(min((f for f in fits if 2 * f[0][0] >= most), key=lambda f: f[1]))
    # A MIB has one sensor-type enumeration: the (V, I, P) types found in the most tables
    # (then rows) are the device's; a table that fits only with other types is a chance fit.
    kinds: Counter[tuple[int, ...]] = Counter()
    rows_fit: Counter[tuple[int, ...]] = Counter()
    for score, _, found in chosen:
        kinds[_sensor_kind(found)] += 1
        rows_fit[_sensor_kind(found)] += score[0]
    if not kinds:
        return [], set()
    kind = max(kinds, key=lambda k: (kinds[k], rows_fit[k]))
    if rows_fit[kind] < _MIN_SENSOR_ROWS:
        return [], set()
    # The types are evidence for every table read with them: a one-inlet table is as
    # sure as the outlet table that fits in nine rows with the same types.
    votes = rows_fit[kind]
    tables: list[tuple[_Score, list[Candidate]]] = []
    for score, column, found in chosen:
        if _sensor_kind(found) != kind:
            continue
        types = {c.quantity: c.column[-1] for c in found}
        read_as = (
            "the last index part read as a sensor type: "
            + ", ".join(f"{_POINT[q]} = {types[q]}" for q in _ORDER if q in types)
            + f" (these types fit {votes} row(s) over {kinds[kind]} table(s))"
        )
        converted = [
            Candidate(
                column,
                c.quantity,
                c.scale,
                f"{c.evidence}; {read_as}",
                c.alternatives,
                votes,
                sensor=c.column[-1],
                index_len=index_len[column],
            )
            for c in found
        ]
        tables.append((score, converted))
    return tables, {t[1][0].column[:-1] for t in tables}


def _corroborated(rows: list[dict[int, int]], found: list[Candidate]) -> bool:
    """Whether a row that fits holds a fourth reading of the same inlet or outlet.

    A row read by sensor type holds every electrical reading of its inlet: besides V, I
    and P, its frequency (50 or 60 Hz), its power factor (P / (V x I)) or its apparent
    power (V x I). A table's column read across its three phase rows holds no fourth.
    """
    scaled = {c.quantity: (c.column[-1], c.scale) for c in found}
    (v, v_scale), (i, i_scale), (p, p_scale) = (
        scaled["voltage_v"],
        scaled["current_a"],
        scaled["power_w"],
    )
    triple = (v, v_scale, i, i_scale, p, p_scale)
    for row in rows:
        if not _fits_row(row, triple):
            continue
        apparent = row[v] * v_scale * row[i] * i_scale
        pf = row[p] * p_scale / apparent
        for sensor, raw in row.items():
            if sensor in (v, i, p) or raw < _MIN_RAW:
                continue
            if (
                _frequency_scale(raw) is not None
                or any(abs(raw * s - pf) <= 0.02 for s in (0.01, 0.001))
                or any(abs(raw * s / apparent - 1) <= 0.03 for s in _POWER_SCALES)
            ):
                return True
    return False


def _sensor_kind(found: list[Candidate]) -> tuple[int, ...]:
    """The sensor types read as voltage, current and power, in that order."""
    types = {c.quantity: c.column[-1] for c in found}
    return tuple(types[q] for q in ("voltage_v", "current_a", "power_w"))


def _merge(candidates: list[Candidate]) -> list[Candidate]:
    """One candidate per column: the most voted quantity and scale, the others as alternatives."""
    # A sensor-type column holds several quantities: one candidate per (column, sensor).
    by_column: dict[tuple[tuple[int, ...], int | None], list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_column[(c.column, c.sensor)].append(c)
    merged = []
    for (column, sensor), found in by_column.items():
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
        merged.append(
            Candidate(
                column,
                quantity,
                scale,
                first.evidence,
                others,
                max(count, rows),
                sensor,
                first.index_len,
            )
        )
    return sorted(merged, key=_column_key)


def _column_key(c: Candidate) -> tuple[tuple[int, ...], int]:
    return c.column, -1 if c.sensor is None else c.sensor


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
        for c in sorted(group, key=lambda c: (_ORDER.index(c.quantity), _column_key(c)))
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
    tables: list[tuple[_Score, list[Candidate]]] = []
    for index_len in (1, 2):
        by_entry: dict[tuple[int, ...], list[dict[int, int]]] = defaultdict(list)
        for (entry, _index), row in _rows(walk, index_len).items():
            candidates += _row_candidates(entry, row)
            by_entry[entry].append({c: v for c, v in row.items() if isinstance(v, int)})
        for entry, rows in by_entry.items():
            table = _table_candidates(entry, rows)
            if table is not None:
                tables.append(table)
    # The second reading (last index part = sensor type). Where it fits, the columns of
    # that table entry hold sensors by type: what the first reading found in or below one
    # of them took an index part (outlet, sensor type) for a column, and is dropped.
    sensor_tables, sensor_entries = _sensor_tables(walk)

    def under_sensor_column(oid: tuple[int, ...]) -> bool:
        return any(oid[:length] in sensor_entries for length in range(len(oid)))

    tables = [t for t in tables if not under_sensor_column(t[1][0].column[:-1])]
    candidates = [c for c in candidates if not under_sensor_column(c.column)]
    # The tables whose triple fits in the most rows, nearest a nominal voltage, first; each
    # reading has _MAX_TABLES places (a sensor table's rows are fewer: one per inlet).
    tables.sort(key=lambda t: t[0], reverse=True)
    sensor_tables.sort(key=lambda t: t[0], reverse=True)
    for _, found in tables[:_MAX_TABLES] + sensor_tables[:_MAX_TABLES]:
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
    merged.sort(key=lambda c: (_ORDER.index(c.quantity), -c.votes, _column_key(c)))
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
    points: set[str] = set()
    tables_shown = 0
    for number, c in enumerate(merged, 1):
        column = oid_str(c.column)
        if c.column[:-1] != shown_table:
            shown_table = c.column[:-1]
            tables_shown += 1
            in_table = [x for x in merged if x.column[:-1] == shown_table]
            fit_rows = max(x.votes for x in in_table)
            lines += ["", f"# --- table {oid_str(shown_table)}, evidence from {fit_rows} row(s)"]
            if any(x.sensor is not None for x in in_table):
                lines[-1] += " (of every table read with these sensor types)"
            if any(x.sensor is None for x in in_table):
                lines.append(
                    "# CONFIRM: these columns are one MIB table (index = the last sub-identifier)"
                )
            if any(x.sensor is not None for x in in_table):
                lines += [
                    "# CONFIRM: one column holds every sensor, indexed by sensor type (the last",
                    "# index part, kept with `where`); if the MIB gives each sensor's decimal",
                    "# digits in a column, read them with digits_column instead of scale.",
                ]
        # Sensor-type columns: every index part named, the last (the type) kept by `where`.
        index = ["i"] if c.sensor is None else [*(f"i{k}" for k in range(1, c.index_len)), "sensor"]
        point = ".".join([_POINT[c.quantity]] + [f"{{{n}}}" for n in index if n != "sensor"])
        if point in points:  # two tables with the same quantity: their points must differ
            point = f"t{tables_shown}.{point}"
        points.add(point)
        lines += [
            "",
            "[[metrics]]",
            f'name = "{_POINT[c.quantity]}_{number}"   # CONFIRM: the MIB object name',
            f'column = "{column}"',
            f"index = [{', '.join(f'{chr(34)}{n}{chr(34)}' for n in index)}]",
        ]
        if c.sensor is not None:
            lines.append(
                f"where = {{ sensor = {c.sensor} }}   # CONFIRM: the MIB's sensor type for "
                f"{_POINT[c.quantity]}"
            )
        lines += [
            f'point = "{point}"   # CONFIRM: name the index (phase, outlet)',
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
            f"{oid_str(c.column)}{'' if c.sensor is None else f' sensor {c.sensor}'} "
            f"({c.quantity} x {c.scale:g})"
            for c in left_out[:10]
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

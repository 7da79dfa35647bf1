"""One device's poll: a plan compiled from its profile, run over a session, turned into readings.

The plan is compiled once per device (OIDs pre-encoded, GETs packed into PDUs,
columns to walk), so a poll is a few PDUs and one pass over the varbinds. The
device-specific adaptations (smaller PDUs after ``tooBig``, GETNEXT after a
failed GETBULK) are remembered per device in :class:`Poller`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.readings import Quality, ReadingBuffer
from collectors.snmp import ber
from collectors.snmp.ber import Value, decode_subids, encode_oid, parse_oid
from collectors.snmp.client import Session, SnmpAgentError, SnmpProtocolError, SnmpTimeoutError
from collectors.snmp.profiles import (
    SYS_OBJECT_ID,
    DeviceFacts,
    Metric,
    Profile,
    detection_oids,
)

__all__ = ["DevicePlan", "PollResult", "Poller", "detect"]

_TOO_BIG = 1
#: Point-cache marker for table rows a metric's ``where`` filters out.
_FILTERED = "\x00"
#: Largest GETBULK walk of one column, in rows: a runaway agent must not loop forever.
_MAX_WALK_ROWS = 100_000
#: Reading qualities: SNMP has no device timestamps; a profile's sum is also DERIVED.
_DIRECT = int(Quality.RECEIVE_TIME)
_DERIVED = int(Quality.RECEIVE_TIME | Quality.DERIVED)


@dataclass(slots=True)
class _Compiled:
    """A metric with its OIDs encoded and its value rule flattened for the hot path."""

    name: str
    get_oid: bytes | None
    column: bytes | None
    point: str
    quantity: str
    mul: float
    div: float
    offset: float
    sentinels: frozenset[int]
    negative_is_sentinel: bool
    limit: int | None
    index: tuple[str, ...]
    where: tuple[tuple[int, int], ...]
    labels: tuple[tuple[str, bytes], ...]
    digits: bytes | None
    #: Per-row status, SI scale, precision or a sum: such metrics take their own loop
    #: (:meth:`Poller._extended`) so plain ones keep the short path.
    extended: bool = False
    status: bytes | None = None
    status_ok: frozenset[int] = frozenset({1})
    si_scale: bytes | None = None
    precision: bytes | None = None
    #: Row filters on other columns (checked once per row, then cached with the point).
    where_cols: tuple[tuple[bytes, int], ...] = ()
    sum: bool = False
    points: dict[tuple[int, ...], str | None] = field(default_factory=dict)


def _compile(metric: Metric) -> _Compiled:
    # 19516 x 0.1 = 1951.6000000000001 but 19516 / 10 = 1951.6: divide by exact decimal divisors
    # so journalled values read like the MIB arithmetic an auditor would do.
    mul, div = metric.scale, 1.0
    if 0 < abs(metric.scale) < 1:
        inverse = 1 / metric.scale
        if abs(inverse - round(inverse)) < 1e-9:
            mul, div = (1.0 if inverse > 0 else -1.0), float(abs(round(inverse)))
    return _Compiled(
        name=metric.name,
        get_oid=encode_oid(parse_oid(metric.oid)) if metric.oid else None,
        column=encode_oid(parse_oid(metric.column)) if metric.column else None,
        point=metric.point,
        quantity=metric.quantity,
        mul=mul,
        div=div,
        offset=metric.offset,
        sentinels=frozenset(metric.sentinels),
        negative_is_sentinel=metric.negative_is_sentinel,
        limit=(1 << metric.counter_bits) if metric.counter_bits else None,
        index=tuple(metric.index),
        where=tuple((metric.index.index(k), v) for k, v in metric.where.items()),
        labels=tuple((k, encode_oid(parse_oid(v))) for k, v in metric.labels.items()),
        digits=encode_oid(parse_oid(metric.digits_column)) if metric.digits_column else None,
        extended=bool(
            metric.status_column
            or metric.si_scale_column
            or metric.precision_column
            or metric.aggregate
        ),
        status=_encoded(metric.status_column),
        status_ok=frozenset(metric.status_ok),
        si_scale=_encoded(metric.si_scale_column),
        precision=_encoded(metric.precision_column),
        where_cols=tuple((encode_oid(parse_oid(k)), v) for k, v in metric.where_columns.items()),
        sum=metric.aggregate == "sum",
    )


def _encoded(oid: str | None) -> bytes | None:
    return encode_oid(parse_oid(oid)) if oid else None


class DevicePlan:
    """What to request from one device and how to read the answers."""

    def __init__(
        self, profile: Profile, quirks: Iterable[str] = (), *, max_oids_per_pdu: int = 40
    ) -> None:
        """Compile ``profile`` with ``quirks`` applied.

        Raises:
            ProfileError: if a quirk is not defined by the profile.
        """
        self.profile = profile
        self.quirks = list(quirks)
        metrics, self.strip_trailing_zero = profile.with_quirks(self.quirks)
        self.metrics = [_compile(m) for m in metrics if not m.skip]
        self.uptime_oid = encode_oid(parse_oid(profile.uptime_oid))
        gets = [self.uptime_oid]
        columns: list[bytes] = []
        for m in self.metrics:
            if m.get_oid is not None and m.get_oid not in gets:
                gets.append(m.get_oid)
            row_cols = (m.digits, m.status, m.si_scale, m.precision, *(c for c, _ in m.where_cols))
            for col in (m.column, *row_cols, *(c for _, c in m.labels)):
                if col is not None and col not in columns:
                    columns.append(col)
        self.get_oids = gets
        self.columns = columns
        self.max_oids_per_pdu = max(1, max_oids_per_pdu)

    def describe(self) -> str:
        """``profile`` or ``profile+quirk+quirk``."""
        return "+".join([self.profile.name, *self.quirks])


@dataclass
class PollResult:
    """Counts from one poll (readings go into the buffer)."""

    readings: int = 0
    missing: int = 0
    sentinels: int = 0
    bad_values: int = 0
    bad_index: int = 0
    uptime_s: float | None = None


class Poller:
    """Polls one device with a plan; remembers what the device turned out to support."""

    def __init__(
        self,
        device: str,
        session: Session,
        plan: DevicePlan,
        *,
        max_repetitions: int = 25,
        bulk: bool = True,
    ) -> None:
        """Bind a device id, a session and a plan."""
        self.device = device
        self.session = session
        self.plan = plan
        self.max_repetitions = max(1, max_repetitions)
        self.bulk = bulk
        #: Set when GETBULK failed and GETNEXT worked (the collector logs it once).
        self.bulk_fallback = False
        self._chunk = plan.max_oids_per_pdu
        self._chunks = self._split(plan.get_oids)
        self._gets_only = _gets_only(plan)

    def _split(self, oids: list[bytes]) -> list[list[bytes]]:
        n = self._chunk
        return [oids[i : i + n] for i in range(0, len(oids), n)]

    # -- requests ---------------------------------------------------------------------------

    async def _get_all(self) -> dict[bytes, Value]:
        values: dict[bytes, Value] = {}
        chunks = self._chunks
        i = 0
        while i < len(chunks):
            chunk = chunks[i]
            try:
                varbinds = await self.session.get(chunk)
            except SnmpAgentError as exc:
                if exc.status == _TOO_BIG and self._chunk > 1:
                    # The device's buffer is smaller than our PDU: halve, remember, redo.
                    self._chunk = max(1, len(chunk) // 2)
                    self._chunks = chunks = self._split(self.plan.get_oids)
                    values.clear()
                    i = 0
                    continue
                if len(chunk) == 1:
                    values[chunk[0]] = None
                    i += 1
                    continue
                # genErr/noSuchName for the whole PDU (v1-minded agents): ask one by one.
                for oid in chunk:
                    try:
                        values.update(await self.session.get([oid]))
                    except SnmpAgentError:
                        values[oid] = None
                i += 1
                continue
            values.update(varbinds)
            i += 1
        return values

    async def _walk(self, column: bytes) -> list[tuple[bytes, Value]]:
        if self.bulk:
            try:
                return await self._walk_with(column, bulk=True)
            except (SnmpTimeoutError, SnmpProtocolError, SnmpAgentError):
                # Some agents time out or answer garbage to GETBULK: try GETNEXT before
                # declaring the device down; if that works, stay on GETNEXT.
                rows = await self._walk_with(column, bulk=False)
                self.bulk = False
                self.bulk_fallback = True
                return rows
        return await self._walk_with(column, bulk=False)

    async def _walk_with(self, column: bytes, *, bulk: bool) -> list[tuple[bytes, Value]]:
        rows: list[tuple[bytes, Value]] = []
        current = column
        last: tuple[int, ...] | None = None
        while len(rows) < _MAX_WALK_ROWS:
            if bulk:
                varbinds = await self.session.get_bulk([current], self.max_repetitions)
            else:
                varbinds = await self.session.get_next([current])
            if not varbinds:
                raise SnmpProtocolError(f"{self.session.label}: empty walk answer")
            for oid, value in varbinds:
                if not oid.startswith(column) or value is ber.END_OF_MIB_VIEW:
                    return rows
                suffix = decode_subids(oid[len(column) :])
                if last is not None and suffix <= last:
                    raise SnmpProtocolError(f"{self.session.label}: walk OIDs not increasing")
                last = suffix
                rows.append((oid, value))
            current = varbinds[-1][0]
        return rows

    # -- the poll ---------------------------------------------------------------------------

    async def poll(self, buffer: ReadingBuffer) -> PollResult:
        """Poll the device once and append its readings to ``buffer``.

        Raises:
            collectors.snmp.client.SnmpError: when the device does not answer usefully
                (nothing is appended then).
        """
        values = await self._get_all()
        tables: dict[bytes, list[tuple[bytes, Value]]] = {}
        for column in self.plan.columns:
            tables[column] = await self._walk(column)
        ts_us = int(time.time() * 1_000_000)
        return self._readings(values, tables, ts_us, buffer)

    def _readings(
        self,
        values: dict[bytes, Value],
        tables: dict[bytes, list[tuple[bytes, Value]]],
        ts_us: int,
        buffer: ReadingBuffer,
    ) -> PollResult:
        if self._gets_only is not None:
            return self._get_readings(values, self._gets_only, ts_us, buffer)
        result = PollResult()
        device = self.device
        points: list[str] = []
        quantities: list[str] = []
        out: list[float] = []
        seen: set[str] = set()
        #: Positions in ``out`` of readings that are sums (flagged DERIVED).
        derived: list[int] = []
        uptime = values.get(self.plan.uptime_oid)
        if isinstance(uptime, int) and not isinstance(uptime, bool):
            result.uptime_s = uptime / 100.0
            points.append("sys.uptime")
            quantities.append("uptime_s")
            out.append(result.uptime_s)
        suffix_maps: dict[bytes, dict[tuple[int, ...], Value]] = {}

        def by_suffix(column: bytes) -> dict[tuple[int, ...], Value]:
            found = suffix_maps.get(column)
            if found is None:
                n = len(column)
                found = {decode_subids(o[n:]): v for o, v in tables.get(column, [])}
                suffix_maps[column] = found
            return found

        for m in self.plan.metrics:
            if m.get_oid is not None:
                value = _convert(values.get(m.get_oid), m, result)
                if value is not None and m.point not in seen:
                    seen.add(m.point)
                    points.append(m.point)
                    quantities.append(m.quantity)
                    out.append(value)
                continue
            if m.extended:
                self._extended(m, by_suffix, result, seen, points, quantities, out, derived)
                continue
            assert m.column is not None
            rows = by_suffix(m.column)
            digits = by_suffix(m.digits) if m.digits is not None else None
            for suffix, raw in rows.items():
                point = m.points.get(suffix, "")
                if point == "":
                    point = self._point(m, suffix, by_suffix)
                    m.points[suffix] = point
                if point is None:
                    result.bad_index += 1
                    continue
                if point == _FILTERED:
                    continue
                value = _convert(raw, m, result)
                if value is None:
                    continue
                if digits is not None:
                    d = digits.get(suffix)
                    if not isinstance(d, int) or not 0 <= d <= 9:
                        result.bad_values += 1
                        continue
                    value = value / 10**d
                if point in seen:
                    continue
                seen.add(point)
                points.append(point)
                quantities.append(m.quantity)
                out.append(value)
        n = len(out)
        result.readings = n
        buffer.ts_us.extend([ts_us] * n)
        buffer.device.extend([device] * n)
        buffer.point.extend(points)
        buffer.quantity.extend(quantities)
        buffer.value.extend(out)
        qualities = [_DIRECT] * n
        for i in derived:
            qualities[i] = _DERIVED
        buffer.quality.extend(qualities)
        return result

    def _get_readings(
        self,
        values: dict[bytes, Value],
        gets: tuple[tuple[bytes, _Compiled, bool], ...],
        ts_us: int,
        buffer: ReadingBuffer,
    ) -> PollResult:
        """:meth:`_readings` of a GET-only plan, appended straight to the buffer's columns.

        Same readings in the same order as the general path (uptime, then metrics in plan
        order, missing and rejected values left out); a poll of every healthy PDU runs it.
        """
        result = PollResult()
        points, quantities, out = buffer.point, buffer.quantity, buffer.value
        before = len(out)
        uptime = values.get(self.plan.uptime_oid)
        if type(uptime) is int:
            result.uptime_s = uptime / 100.0
            points.append("sys.uptime")
            quantities.append("uptime_s")
            out.append(result.uptime_s)
        for oid, m, plain in gets:
            raw = values.get(oid)
            value: float | None
            if plain and type(raw) is int and -_EXACT < raw < _EXACT:
                # _convert's arithmetic for the usual case, without the call (an integer a
                # float holds exactly converts without OverflowError).
                value = raw * m.mul / m.div + m.offset
                if value - value != 0.0:  # a scale pushed it to +-inf: _convert rejects it
                    value = _convert(raw, m, result)
            else:
                value = _convert(raw, m, result)
            if value is not None:
                points.append(m.point)
                quantities.append(m.quantity)
                out.append(value)
        n = result.readings = len(out) - before
        buffer.ts_us.extend([ts_us] * n)
        buffer.device.extend([self.device] * n)
        buffer.quality.extend([_DIRECT] * n)
        return result

    def _extended(
        self,
        m: _Compiled,
        by_suffix: Callable[[bytes], dict[tuple[int, ...], Value]],
        result: PollResult,
        seen: set[str],
        points: list[str],
        quantities: list[str],
        out: list[float],
        derived: list[int],
    ) -> None:
        """Rows of a metric with a per-row status, SI scale, precision or a sum."""
        assert m.column is not None
        digits = by_suffix(m.digits) if m.digits is not None else None
        status = by_suffix(m.status) if m.status is not None else None
        si_scale = by_suffix(m.si_scale) if m.si_scale is not None else None
        precision = by_suffix(m.precision) if m.precision is not None else None
        shift = digits is not None or si_scale is not None or precision is not None
        found: dict[str, float | None] = {}
        for suffix, raw in by_suffix(m.column).items():
            point = m.points.get(suffix, "")
            if point == "":
                point = self._point(m, suffix, by_suffix)
                m.points[suffix] = point
            if point is None:
                result.bad_index += 1
                continue
            if point == _FILTERED:
                continue
            value: float | None
            if status is not None and status.get(suffix) not in m.status_ok:
                result.sentinels += 1  # the device says this sensor has no valid value now
                value = None
            else:
                value = _convert(raw, m, result)
            if value is not None and shift:
                value = _shifted(value, suffix, digits, si_scale, precision, result)
            if m.sum:
                if point in found:
                    before = found[point]
                    found[point] = None if before is None or value is None else before + value
                else:
                    found[point] = value
            elif value is not None and point not in found:
                found[point] = value
        for point, total in found.items():
            if total is None or point in seen or total - total != 0.0:
                continue
            seen.add(point)
            if m.sum:
                derived.append(len(out))
            points.append(point)
            quantities.append(m.quantity)
            out.append(total)

    def _point(
        self,
        m: _Compiled,
        suffix: tuple[int, ...],
        by_suffix: Callable[[bytes], dict[tuple[int, ...], Value]],
    ) -> str | None:
        """The point name for a table row, or ``None`` if the row is filtered out or malformed.

        Cached per (metric, index): labels from other columns are read once per row,
        which is fine since outlet numbers do not change while a device runs.
        """
        index = suffix
        if self.plan.strip_trailing_zero and len(index) == len(m.index) + 1 and index[-1] == 0:
            index = index[:-1]
        if m.index and len(index) != len(m.index):
            return None
        for pos, wanted in m.where:
            if index[pos] != wanted:
                return _FILTERED
        for column, wanted in m.where_cols:
            if by_suffix(column).get(suffix) != wanted:
                return _FILTERED
        labels: dict[str, object] = {"index": ".".join(map(str, suffix))}
        labels.update(zip(m.index, index, strict=True))
        for name, column in m.labels:
            raw = by_suffix(column).get(suffix)
            if raw is None or isinstance(raw, ber.Exception_):
                return None
            labels[name] = raw.decode("utf-8", "replace").strip() if isinstance(raw, bytes) else raw
        return m.point.format(**labels)


def _shifted(
    value: float,
    suffix: tuple[int, ...],
    digits: dict[tuple[int, ...], Value] | None,
    si_scale: dict[tuple[int, ...], Value] | None,
    precision: dict[tuple[int, ...], Value] | None,
    result: PollResult,
) -> float | None:
    """``value`` x 10^exponent from a row's digits, SI prefix and precision columns.

    The power of ten is applied once, as a multiplication or a division by an exact power
    of ten, so 2301 at precision 1 reads 230.1 and not 230.10000000000002.
    """
    exponent = 0
    if digits is not None:
        d = digits.get(suffix)
        if type(d) is not int or not 0 <= d <= 9:
            result.bad_values += 1
            return None
        exponent -= d
    if si_scale is not None:
        scale = si_scale.get(suffix)
        if type(scale) is not int or not 1 <= scale <= 17:  # RFC 3433 yocto(1)..yotta(17)
            result.bad_values += 1
            return None
        exponent += 3 * (scale - 9)  # units(9) = 10^0, kilo(10) = 10^3, milli(8) = 10^-3
    if precision is not None:
        p = precision.get(suffix)
        if type(p) is not int or not -8 <= p <= 9:
            result.bad_values += 1
            return None
        # RFC 3433: 1..9 are decimal places; -8..-1 count accurate digits and 0 means an
        # integer: neither shifts the value.
        exponent -= max(p, 0)
    if exponent > 0:
        return value * 10.0**exponent
    return value / 10.0**-exponent if exponent else value


def _gets_only(plan: DevicePlan) -> tuple[tuple[bytes, _Compiled, bool], ...] | None:
    """``(oid, metric, plain)`` of a plan that only GETs, each metric to a point of its own.

    ``None`` for any other plan. Most PDUs, UPSes and meters are such plans; their
    readings need no tables, no duplicate-point check and no per-poll lists
    (:meth:`Poller._get_readings`). ``plain``: no sentinels and no counter range, so an
    INTEGER is just scaled.
    """
    if plan.columns or any(m.get_oid is None or m.extended for m in plan.metrics):
        return None
    if len({m.point for m in plan.metrics}) != len(plan.metrics):
        return None
    return tuple(
        (m.get_oid, m, not m.sentinels and not m.negative_is_sentinel and m.limit is None)
        for m in plan.metrics
        if m.get_oid is not None
    )


#: Integers below this in magnitude convert to float exactly (2**53).
_EXACT = 1 << 53


def _convert(raw: Value, m: _Compiled, result: PollResult) -> float | None:
    """Raw varbind value -> reading value, or ``None`` (missing, sentinel or malformed)."""
    if type(raw) is int:
        if raw in m.sentinels or (m.negative_is_sentinel and raw < 0):
            result.sentinels += 1
            return None
        if m.limit is not None and not 0 <= raw < m.limit:
            result.bad_values += 1
            return None
        try:
            value = raw * m.mul / m.div + m.offset
        except OverflowError:  # a BER INTEGER may be any length; a float is not
            result.bad_values += 1
            return None
        if value - value != 0.0:  # scaling pushed it to +-inf
            result.bad_values += 1
            return None
        return value
    if isinstance(raw, bytes):
        # Some agents (Liebert flexible tables) send numbers as text.
        try:
            number = float(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            result.bad_values += 1
            return None
        if not math.isfinite(number):
            result.bad_values += 1
            return None
        if number.is_integer() and (
            int(number) in m.sentinels or (m.negative_is_sentinel and number < 0)
        ):
            result.sentinels += 1
            return None
        number = number * m.mul / m.div + m.offset
        if number - number != 0.0:  # 1e308 scaled up overflows
            result.bad_values += 1
            return None
        return number
    result.missing += 1
    return None


async def detect(session: Session, profiles: Iterable[Profile]) -> DeviceFacts:
    """Gather the facts the profiles' match rules need: sysObjectID, present OIDs, values.

    Raises:
        SnmpError: when the device does not answer.
    """
    profiles = list(profiles)
    present, equals = detection_oids(profiles)
    facts = DeviceFacts()
    get_texts = [SYS_OBJECT_ID, *equals]
    get_oids = [encode_oid(parse_oid(t)) for t in get_texts]
    for i in range(0, len(get_oids), 20):
        chunk = get_oids[i : i + 20]
        texts = get_texts[i : i + 20]
        try:
            varbinds = await session.get(chunk)
        except SnmpAgentError:
            varbinds = [(o, None) for o in chunk]
        for text, (_, value) in zip(texts, varbinds, strict=True):
            if text == SYS_OBJECT_ID:
                if isinstance(value, tuple):
                    facts.sys_object_id = ".".join(map(str, value))
            elif isinstance(value, bytes):
                facts.values[text] = value.decode("utf-8", "replace")
            elif isinstance(value, int):
                facts.values[text] = str(value)
    encoded = [encode_oid(parse_oid(t)) for t in present]
    for i in range(0, len(encoded), 20):
        chunk = encoded[i : i + 20]
        try:
            varbinds = await session.get_next(chunk)
        except SnmpAgentError:
            varbinds = []
            for oid in chunk:
                try:
                    varbinds.extend(await session.get_next([oid]))
                except SnmpAgentError:
                    varbinds.append((b"", None))
        for text, asked, (oid, value) in zip(present[i : i + 20], chunk, varbinds, strict=False):
            if oid.startswith(asked) and not isinstance(value, ber.Exception_):
                facts.present.add(text)
    return facts

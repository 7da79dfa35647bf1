"""A device's poll plan: its map's registers coalesced into requests, and the answers decoded.

Registers of the same function are read together when they are contiguous or the
hole between them is at most ``max_gap`` registers (read through and ignored), up to
125 registers per request (the Modbus limit for functions 3 and 4). Decoding turns
the registers of each value into a number by its type and word/byte order, drops
sentinels ("not available") and values that are not numbers, and flags values outside
the map's physical range ``DEVICE_SUSPECT`` (journalled, so they stay visible).
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field

from agent.readings import Quality, ReadingBuffer
from collectors.modbus.client import Bus, ModbusExceptionCodeError
from collectors.modbus.maps import REGISTER_WORDS, DeviceMap, Register

__all__ = [
    "MAX_REGISTERS",
    "Block",
    "DevicePlan",
    "PollResult",
    "coalesce",
    "decode_block",
    "needs_split",
    "poll_device",
]

#: Most registers one read request may ask for (Modbus Application Protocol, 6.3 and 6.4).
MAX_REGISTERS = 125
_ILLEGAL_DATA_ADDRESS = 2
#: Meters send no reading time: every value carries the receive time.
_GOOD = int(Quality.RECEIVE_TIME)
_SUSPECT = int(Quality.RECEIVE_TIME | Quality.DEVICE_SUSPECT)
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


@dataclass(slots=True)
class _Item:
    """A register entry flattened for the hot path."""

    point: str
    quantity: str
    address: int
    words: int
    kind: str  # "uint", "int" or "float"
    word_little: bool
    byte_little: bool
    mul: float
    div: float
    sentinels: frozenset[int]
    all_ones: int | None
    limit: int | None
    low: float
    high: float
    offset: int = 0


def _compile(r: Register, all_ones_is_sentinel: bool) -> _Item:
    assert r.type is not None
    words = REGISTER_WORDS[r.type]
    # 19516 x 0.1 = 1951.6000000000001 but 19516 / 10 = 1951.6: divide by exact decimal divisors so
    # journalled values read like the document's arithmetic (as the SNMP collector does).
    mul, div = r.scale, 1.0
    if 0 < abs(r.scale) < 1:
        inverse = 1 / r.scale
        if abs(inverse - round(inverse)) < 1e-9:
            mul, div = (1.0 if inverse > 0 else -1.0), float(abs(round(inverse)))
    low, high = r.range if r.range is not None else (-math.inf, math.inf)
    return _Item(
        point=r.point,
        quantity=r.quantity,
        address=r.address,
        words=words,
        kind="float" if r.type.startswith("float") else ("int" if r.type[0] == "i" else "uint"),
        word_little=r.word_order == "little",
        byte_little=r.byte_order == "little",
        mul=mul,
        div=div,
        sentinels=frozenset(r.sentinels),
        all_ones=(1 << (16 * words)) - 1 if all_ones_is_sentinel else None,
        limit=(1 << r.wrap_bits) if r.wrap_bits else None,
        low=low,
        high=high,
    )


@dataclass(slots=True)
class Block:
    """One read request: ``count`` registers from ``address`` with ``function``."""

    function: int
    address: int
    count: int
    items: list[_Item] = field(default_factory=list)

    @property
    def has_holes(self) -> bool:
        """Whether registers no value uses are read through."""
        return sum(i.words for i in self.items) < self.count


def coalesce(
    registers: list[tuple[int, _Item]], max_gap: int, max_registers: int = MAX_REGISTERS
) -> list[Block]:
    """Group (function, item) pairs into as few requests as the gap and size limits allow."""
    blocks: list[Block] = []
    for function in sorted({f for f, _ in registers}):
        items = sorted((i for f, i in registers if f == function), key=lambda i: i.address)
        current: Block | None = None
        for item in items:
            end = item.address + item.words
            if current is not None:
                gap = item.address - (current.address + current.count)
                if gap <= max_gap and end - current.address <= max_registers:
                    current.count = max(current.count, end - current.address)
                    current.items.append(item)
                    continue
            current = Block(function, item.address, item.words, [item])
            blocks.append(current)
    for block in blocks:
        for item in block.items:
            item.offset = item.address - block.address
    return blocks


class DevicePlan:
    """The requests that read one map, and how to decode them."""

    def __init__(
        self, device_map: DeviceMap, *, max_gap: int = 8, max_registers: int = MAX_REGISTERS
    ) -> None:
        """Compile ``device_map``; holes up to ``max_gap`` registers are read through."""
        self.map = device_map
        self.max_gap = max_gap
        self.max_registers = max(1, min(max_registers, MAX_REGISTERS))
        self._registers: list[tuple[int, _Item]] = [
            (r.function or 3, _compile(r, device_map.all_ones_is_sentinel))
            for r in device_map.registers
        ]
        self.blocks = coalesce(self._registers, max_gap, self.max_registers)

    def without_holes(self) -> DevicePlan:
        """The same map read without reading through holes (for devices that refuse it)."""
        return DevicePlan(self.map, max_gap=0, max_registers=self.max_registers)

    @property
    def registers_read(self) -> int:
        """Registers requested per poll."""
        return sum(b.count for b in self.blocks)


@dataclass
class PollResult:
    """Counts from one poll (readings go into the buffer)."""

    readings: int = 0
    sentinels: int = 0
    bad_values: int = 0
    suspect: int = 0


def _raw(item: _Item, registers: list[int]) -> int:
    """The value's registers as one unsigned integer, most significant word first."""
    o = item.offset
    if item.words == 1:
        w = registers[o]
        return ((w & 0xFF) << 8 | w >> 8) if item.byte_little else w
    words = registers[o : o + item.words]
    if item.byte_little:
        words = [(w & 0xFF) << 8 | w >> 8 for w in words]
    if item.word_little:
        words.reverse()
    raw = 0
    for w in words:
        raw = raw << 16 | w
    return raw


def decode_block(
    block: Block, registers: list[int], out: list[tuple[_Item, float, int]], result: PollResult
) -> None:
    """Decode one answer's values into ``out`` as (item, value, quality)."""
    for item in block.items:
        raw = _raw(item, registers)
        if raw == item.all_ones or raw in item.sentinels:
            result.sentinels += 1
            continue
        if item.kind == "uint":
            if item.limit is not None and raw >= item.limit:
                result.bad_values += 1
                continue
            number = float(raw)
        elif item.kind == "int":
            bits = 16 * item.words
            number = float(raw - (1 << bits) if raw >> (bits - 1) else raw)
        elif item.words == 2:
            number = _F32.unpack(raw.to_bytes(4, "big"))[0]
        else:
            number = _F64.unpack(raw.to_bytes(8, "big"))[0]
        number = number * item.mul / item.div
        if number - number != 0.0:  # NaN or infinite (as sent, or overflowed by the scale)
            result.bad_values += 1
            continue
        if item.low <= number <= item.high:
            out.append((item, number, _GOOD))
        else:
            result.suspect += 1
            out.append((item, number, _SUSPECT))


async def poll_device(
    bus: Bus,
    label: str,
    device: str,
    unit: int,
    plan: DevicePlan,
    buffer: ReadingBuffer,
    *,
    timeout_s: float,
) -> PollResult:
    """Read every block of ``plan`` from ``unit`` and append its readings to ``buffer``.

    Raises:
        ModbusError: on the first failed request (nothing is appended then).
    """
    result = PollResult()
    out: list[tuple[_Item, float, int]] = []
    for block in plan.blocks:
        registers = await bus.read(
            label, unit, block.function, block.address, block.count, timeout_s
        )
        decode_block(block, registers, out, result)
    ts_us = time.time_ns() // 1000
    n = len(out)
    result.readings = n
    buffer.ts_us.extend([ts_us] * n)
    buffer.device.extend([device] * n)
    buffer.point.extend([i.point for i, _, _ in out])
    buffer.quantity.extend([i.quantity for i, _, _ in out])
    buffer.value.extend([v for _, v, _ in out])
    buffer.quality.extend([q for _, _, q in out])
    return result


def needs_split(exc: Exception, plan: DevicePlan) -> bool:
    """Whether ``exc`` is a device refusing read-through holes (retry without them)."""
    return (
        isinstance(exc, ModbusExceptionCodeError)
        and exc.code == _ILLEGAL_DATA_ADDRESS
        and any(b.has_holes for b in plan.blocks)
    )
